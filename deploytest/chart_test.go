package deploytest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

func repo(t *testing.T) Repo {
	t.Helper()
	r, err := FindRepo(".")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return c
}

// rendered is one decoded rendering of the chart.
type rendered struct {
	manifests []Manifest
	objects   map[string]any // kind/name → typed object
}

func (r rendered) only(t *testing.T, kind string) any {
	t.Helper()
	var found []any
	for k, o := range r.objects {
		if strings.HasPrefix(k, kind+"/") {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want exactly one %s, got %d", kind, len(found))
	}
	return found[0]
}

func (r rendered) has(kind string) bool {
	for k := range r.objects {
		if strings.HasPrefix(k, kind+"/") {
			return true
		}
	}
	return false
}

// newObject returns the typed object for a kind and the apiVersion it must have.
func newObject(kind string) (any, string) {
	switch kind {
	case "Deployment":
		return &appsv1.Deployment{}, "apps/v1"
	case "Service":
		return &corev1.Service{}, "v1"
	case "ServiceAccount":
		return &corev1.ServiceAccount{}, "v1"
	case "Secret":
		return &corev1.Secret{}, "v1"
	case "ConfigMap":
		return &corev1.ConfigMap{}, "v1"
	case "PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, "policy/v1"
	case "Job":
		return &batchv1.Job{}, "batch/v1"
	case "NetworkPolicy":
		return &networkingv1.NetworkPolicy{}, "networking.k8s.io/v1"
	case "ServiceMonitor":
		return &monitoringv1.ServiceMonitor{}, "monitoring.coreos.com/v1"
	case "PrometheusRule":
		return &monitoringv1.PrometheusRule{}, "monitoring.coreos.com/v1"
	}
	return nil, ""
}

// decodeStrict renders the chart and decodes every manifest into its API type, failing on any
// field the type does not have.
func decodeStrict(t *testing.T, out []byte) rendered {
	t.Helper()
	ms, err := SplitManifests(out)
	if err != nil {
		t.Fatal(err)
	}
	r := rendered{manifests: ms, objects: map[string]any{}}
	for _, m := range ms {
		obj, apiVersion := newObject(m.Kind)
		if obj == nil {
			t.Errorf("%s: kind %s has no decoder in this test; add it", m.Source, m.Kind)
			continue
		}
		if m.APIVersion != apiVersion {
			t.Errorf("%s: %s apiVersion %s, want %s", m.Source, m.Kind, m.APIVersion, apiVersion)
		}
		if err := yaml.UnmarshalStrict(m.YAML, obj); err != nil {
			t.Errorf("%s: %s %s does not decode strictly: %v", m.Source, m.Kind, m.Name, err)
			continue
		}
		key := m.Kind + "/" + m.Name
		if _, dup := r.objects[key]; dup {
			t.Errorf("%s rendered twice", key)
		}
		r.objects[key] = obj
	}
	return r
}

var renderCache sync.Map // values file → []byte

// render renders the chart with a values file (relative to the chart; "" for the defaults).
func render(t *testing.T, valuesFile string) rendered {
	t.Helper()
	r := repo(t)
	out, ok := renderCache.Load(valuesFile)
	if !ok {
		var extra []string
		if valuesFile != "" {
			extra = []string{"-f", r.Path(valuesFile)}
		}
		b, err := r.Template(ctx(t), r.Chart(), extra...)
		if err != nil {
			t.Fatal(err)
		}
		renderCache.Store(valuesFile, b)
		out = b
	}
	return decodeStrict(t, out.([]byte))
}

var valuesFiles = []string{"", "ci/all-values.yaml"}

func TestChartLint(t *testing.T) {
	r := repo(t)
	for _, vf := range valuesFiles {
		t.Run(name(vf), func(t *testing.T) {
			args := []string{"lint", "--strict", r.Chart()}
			if vf != "" {
				args = append(args, "-f", r.Path(vf))
			}
			if out, err := r.Helm(ctx(t), args...); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
		})
	}
}

func name(vf string) string {
	if vf == "" {
		return "default"
	}
	return filepath.Base(vf)
}

func TestChartRendersExpectedKinds(t *testing.T) {
	tests := []struct {
		values string
		want   []string
		absent []string
	}{
		{"", []string{"Deployment", "Service", "ServiceAccount", "PodDisruptionBudget", "ConfigMap"},
			[]string{"Secret", "ServiceMonitor", "PrometheusRule", "Job", "NetworkPolicy"}},
		{"ci/all-values.yaml", []string{"Deployment", "Service", "ServiceAccount", "PodDisruptionBudget",
			"ConfigMap", "Secret", "ServiceMonitor", "PrometheusRule", "Job", "NetworkPolicy"}, nil},
	}
	for _, tt := range tests {
		t.Run(name(tt.values), func(t *testing.T) {
			r := render(t, tt.values)
			for _, k := range tt.want {
				if !r.has(k) {
					t.Errorf("no %s rendered", k)
				}
			}
			for _, k := range tt.absent {
				if r.has(k) {
					t.Errorf("%s rendered though its toggle is off", k)
				}
			}
			for _, m := range r.manifests {
				if m.Kind == "ConfigMap" && strings.HasSuffix(m.Name, "-dashboard") {
					continue // may go to the Grafana namespace
				}
				obj := r.objects[m.Kind+"/"+m.Name]
				if obj == nil {
					continue
				}
				meta := objectMeta(obj)
				if meta.Namespace != "chat" {
					t.Errorf("%s %s in namespace %q, want the release namespace", m.Kind, m.Name, meta.Namespace)
				}
				if meta.Labels["app.kubernetes.io/instance"] != "chatgroupd" || meta.Labels["app.kubernetes.io/managed-by"] != "Helm" {
					t.Errorf("%s %s lacks the standard labels: %v", m.Kind, m.Name, meta.Labels)
				}
			}
		})
	}
}

func objectMeta(o any) metav1.ObjectMeta {
	return reflect.ValueOf(o).Elem().FieldByName("ObjectMeta").Interface().(metav1.ObjectMeta)
}

// flagValues parses --name=value arguments (a bare --name is "true").
func flagValues(args []string) map[string]string {
	out := map[string]string{}
	for _, a := range args {
		if !strings.HasPrefix(a, "--") {
			continue
		}
		k, v, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !ok {
			v = "true"
		}
		out[k] = v
	}
	return out
}

func selects(t *testing.T, what string, sel *metav1.LabelSelector, podLabels map[string]string) {
	t.Helper()
	if sel == nil || (len(sel.MatchLabels) == 0 && len(sel.MatchExpressions) == 0) {
		t.Errorf("%s: empty selector would match everything", what)
		return
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if !s.Matches(labels.Set(podLabels)) {
		t.Errorf("%s: selector %v does not match the pod labels %v", what, sel, podLabels)
	}
}

func TestDeployment(t *testing.T) {
	for _, vf := range valuesFiles {
		t.Run(name(vf), func(t *testing.T) {
			r := render(t, vf)
			d := r.only(t, "Deployment").(*appsv1.Deployment)
			pod := d.Spec.Template
			selects(t, "Deployment", d.Spec.Selector, pod.Labels)
			if len(pod.Spec.Containers) != 1 {
				t.Fatalf("want one container, got %d", len(pod.Spec.Containers))
			}
			c := pod.Spec.Containers[0]
			if len(c.Args) == 0 || c.Args[0] != "run" {
				t.Fatalf("args must start with the run subcommand: %v", c.Args)
			}
			flags := flagValues(c.Args)

			// Every flag (docs/configuration.md) that has a value in any configuration.
			for _, f := range []string{"brokers", "topic", "group", "dlq-topic", "im-region", "sdkappid", "admin",
				"rate-limit", "metrics-addr", "reorder-window", "retry-budget", "retry-lane", "fleet-budget", "shutdown-timeout", "log-level", "log-format"} {
				if flags[f] == "" {
					t.Errorf("flag --%s missing from args %v", f, c.Args)
				}
			}
			// The modes come from config.retryLane/fleetBudget: auto unless a values file says otherwise.
			wantLane, wantFleet := "auto", "auto"
			if vf == "ci/all-values.yaml" {
				wantLane, wantFleet = "on", "static"
			}
			if flags["retry-lane"] != wantLane || flags["fleet-budget"] != wantFleet {
				t.Errorf("--retry-lane=%s --fleet-budget=%s, want %s and %s", flags["retry-lane"], flags["fleet-budget"], wantLane, wantFleet)
			}
			for _, a := range c.Args {
				if strings.Contains(strings.ToLower(a), "secret-key=") || strings.Contains(strings.ToLower(a), "password") {
					t.Errorf("a secret in the args: %q", a)
				}
			}

			// Metrics port: the flag, the container port and both probes agree.
			port := containerPort(t, c, "metrics")
			if flags["metrics-addr"] != ":"+strconv.Itoa(int(port)) {
				t.Errorf("--metrics-addr=%s but the metrics port is %d", flags["metrics-addr"], port)
			}
			for _, p := range []struct {
				name  string
				probe *corev1.Probe
				path  string
			}{{"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
				if p.probe == nil || p.probe.HTTPGet == nil {
					t.Errorf("%s probe missing or not HTTP", p.name)
					continue
				}
				if p.probe.HTTPGet.Path != p.path {
					t.Errorf("%s probe path %s, want %s", p.name, p.probe.HTTPGet.Path, p.path)
				}
				if got := p.probe.HTTPGet.Port.String(); got != "metrics" && got != strconv.Itoa(int(port)) {
					t.Errorf("%s probe port %s is not the metrics port %d", p.name, got, port)
				}
			}

			// Grace period above the shutdown timeout.
			shutdown, err := time.ParseDuration(flags["shutdown-timeout"])
			if err != nil {
				t.Fatalf("--shutdown-timeout: %v", err)
			}
			if pod.Spec.TerminationGracePeriodSeconds == nil ||
				time.Duration(*pod.Spec.TerminationGracePeriodSeconds)*time.Second <= shutdown {
				t.Errorf("terminationGracePeriodSeconds %v not above --shutdown-timeout %v", pod.Spec.TerminationGracePeriodSeconds, shutdown)
			}
			for _, f := range []string{"reorder-window", "retry-budget"} {
				if _, err := time.ParseDuration(flags[f]); err != nil {
					t.Errorf("--%s=%s is not a Go duration: %v", f, flags[f], err)
				}
			}

			checkSecurity(t, pod.Spec)
			checkMounts(t, pod.Spec)
			checkSecretRefs(t, r, pod.Spec)

			if len(pod.Spec.TopologySpreadConstraints) == 0 {
				t.Error("no topologySpreadConstraints")
			}
			for _, tsc := range pod.Spec.TopologySpreadConstraints {
				selects(t, "topology spread "+tsc.TopologyKey, tsc.LabelSelector, pod.Labels)
			}
			if pod.Spec.AutomountServiceAccountToken == nil || *pod.Spec.AutomountServiceAccountToken {
				t.Error("the service account token should not be mounted")
			}
			if c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
				t.Errorf("resources incomplete: %+v", c.Resources)
			}

			pdb := r.only(t, "PodDisruptionBudget").(*policyv1.PodDisruptionBudget)
			selects(t, "PodDisruptionBudget", pdb.Spec.Selector, pod.Labels)
			if pdb.Spec.MaxUnavailable == nil && pdb.Spec.MinAvailable == nil {
				t.Error("PodDisruptionBudget allows nothing")
			}

			svc := r.only(t, "Service").(*corev1.Service)
			selects(t, "Service", &metav1.LabelSelector{MatchLabels: svc.Spec.Selector}, pod.Labels)
			if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "metrics" || svc.Spec.Ports[0].TargetPort.String() != "metrics" {
				t.Errorf("Service ports %+v: want one named metrics targeting the metrics container port", svc.Spec.Ports)
			}

			if sa := pod.Spec.ServiceAccountName; r.has("ServiceAccount") && r.objects["ServiceAccount/"+sa] == nil {
				t.Errorf("pod uses service account %q which the chart does not render", sa)
			}
		})
	}
}

// TestDeploymentAllFlags checks the TLS/SASL/endpoint flags appear when enabled, and that the
// secrets reach the process only through Secrets.
func TestDeploymentAllFlags(t *testing.T) {
	r := render(t, "ci/all-values.yaml")
	d := r.only(t, "Deployment").(*appsv1.Deployment)
	c := d.Spec.Template.Spec.Containers[0]
	flags := flagValues(c.Args)
	want := map[string]string{
		"im-endpoint":          "http://imsim.chat.svc:8080",
		"im-region":            "singapore",
		"sdkappid":             "1400000000",
		"rate-limit":           "150",
		"shutdown-timeout":     "25s",
		"kafka-tls":            "true",
		"kafka-tls-ca-file":    "/etc/chatgroupd/kafka-tls/ca.crt",
		"kafka-tls-cert-file":  "/etc/chatgroupd/kafka-tls/tls.crt",
		"kafka-tls-key-file":   "/etc/chatgroupd/kafka-tls/tls.key",
		"kafka-sasl-mechanism": "scram-sha-512",
		"kafka-sasl-username":  "chatgroupd",
		"brokers":              "kafka-0.kafka:9093,kafka-1.kafka:9093",
		"dlq-topic":            "chat.contact-groups.dead",
		"max-in-flight":        "512",
	}
	for k, v := range want {
		if flags[k] != v {
			t.Errorf("--%s=%q, want %q", k, flags[k], v)
		}
	}
	if _, ok := flags["secret-key-file"]; ok {
		t.Error("mountAsFile false must not pass --secret-key-file")
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	for _, n := range []string{"CHATGROUPD_SECRET_KEY", "CHATGROUPD_KAFKA_SASL_PASSWORD"} {
		e, ok := env[n]
		if !ok || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.Value != "" {
			t.Errorf("%s must come from a secretKeyRef: %+v", n, e)
		}
	}
	// The fake secrets of all-values.yaml appear in the Secret only.
	for _, m := range r.manifests {
		if m.Kind == "Secret" {
			continue
		}
		for _, s := range []string{"not-a-real-key", "not-a-real-password"} {
			if strings.Contains(string(m.YAML), s) {
				t.Errorf("%s %s contains the secret %q", m.Kind, m.Name, s)
			}
		}
	}
	if d.Spec.Template.Annotations["checksum/secret"] == "" {
		t.Error("no checksum/secret annotation: pods would not restart when the chart's Secret changes")
	}
}

func containerPort(t *testing.T, c corev1.Container, name string) int32 {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	t.Fatalf("container %s has no port named %s", c.Name, name)
	return 0
}

func checkSecurity(t *testing.T, spec corev1.PodSpec) {
	t.Helper()
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Error("pod securityContext.runAsNonRoot not true")
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Error("pod seccompProfile not RuntimeDefault")
	}
	for _, c := range spec.Containers {
		sc := c.SecurityContext
		if sc == nil {
			t.Errorf("container %s: no securityContext", c.Name)
			continue
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("container %s: root filesystem writable", c.Name)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("container %s: privilege escalation allowed", c.Name)
		}
		if sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || len(sc.Capabilities.Add) != 0 {
			t.Errorf("container %s: capabilities %+v, want drop ALL", c.Name, sc.Capabilities)
		}
		if sc.Privileged != nil && *sc.Privileged {
			t.Errorf("container %s: privileged", c.Name)
		}
	}
}

// checkMounts checks every mount names a volume and every file flag points into a mount.
func checkMounts(t *testing.T, spec corev1.PodSpec) {
	t.Helper()
	vols := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		vols[v.Name] = v
	}
	for _, c := range spec.Containers {
		var mounts []string
		for _, m := range c.VolumeMounts {
			if _, ok := vols[m.Name]; !ok {
				t.Errorf("container %s mounts unknown volume %s", c.Name, m.Name)
			}
			mounts = append(mounts, m.MountPath)
		}
		var files []string
		for k, v := range flagValues(c.Args) {
			if strings.HasSuffix(k, "-file") {
				files = append(files, v)
			}
		}
		for _, e := range c.Env {
			if strings.HasSuffix(e.Name, "_FILE") {
				files = append(files, e.Value)
			}
		}
		for _, f := range files {
			inside := false
			for _, m := range mounts {
				if strings.HasPrefix(f, m+"/") {
					inside = true
				}
			}
			if !inside {
				t.Errorf("container %s: file %s is in no volume mount %v", c.Name, f, mounts)
			}
		}
	}
}

// checkSecretRefs checks that references to the chart's own Secret name keys it renders.
func checkSecretRefs(t *testing.T, r rendered, spec corev1.PodSpec) {
	t.Helper()
	own := map[string]*corev1.Secret{}
	for k, o := range r.objects {
		if s, ok := o.(*corev1.Secret); ok {
			own[strings.TrimPrefix(k, "Secret/")] = s
		}
	}
	check := func(where, name, key string) {
		if s, ok := own[name]; ok {
			if _, ok := s.Data[key]; !ok {
				t.Errorf("%s refers to key %q the chart's Secret %s does not have", where, key, name)
			}
		}
	}
	for _, c := range spec.Containers {
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				check(c.Name+" env "+e.Name, e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key)
			}
		}
	}
	for _, v := range spec.Volumes {
		if v.Secret != nil {
			for _, it := range v.Secret.Items {
				check("volume "+v.Name, v.Secret.SecretName, it.Key)
			}
		}
	}
}

func TestServiceMonitorSelectsTheService(t *testing.T) {
	r := render(t, "ci/all-values.yaml")
	sm := r.only(t, "ServiceMonitor").(*monitoringv1.ServiceMonitor)
	svc := r.only(t, "Service").(*corev1.Service)
	selects(t, "ServiceMonitor", &sm.Spec.Selector, svc.Labels)
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != svc.Spec.Ports[0].Name {
		t.Errorf("ServiceMonitor endpoints %+v do not scrape the Service's port %s", sm.Spec.Endpoints, svc.Spec.Ports[0].Name)
	}
	if sm.Spec.Endpoints[0].Path != "/metrics" {
		t.Errorf("scrape path %q", sm.Spec.Endpoints[0].Path)
	}
	// The alerts select job="chatgroupd"; the job label comes from this Service label.
	if got := svc.Labels[sm.Spec.JobLabel]; got != "chatgroupd" {
		t.Errorf("jobLabel %q gives job=%q, the alert rules expect chatgroupd", sm.Spec.JobLabel, got)
	}
	if !slicesContain(sm.Spec.NamespaceSelector.MatchNames, "chat") {
		t.Errorf("namespaceSelector %+v misses the release namespace", sm.Spec.NamespaceSelector)
	}
}

func slicesContain(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func TestDashboardConfigMap(t *testing.T) {
	want, err := os.ReadFile(repo(t).Path("dashboards", "chatgroupd.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, vf := range valuesFiles {
		t.Run(name(vf), func(t *testing.T) {
			cm := render(t, vf).only(t, "ConfigMap").(*corev1.ConfigMap)
			if cm.Labels["grafana_dashboard"] != "1" {
				t.Errorf("dashboard ConfigMap labels %v lack grafana_dashboard: \"1\"", cm.Labels)
			}
			got := cm.Data["chatgroupd.json"]
			if strings.TrimSpace(got) != strings.TrimSpace(string(want)) {
				t.Error("the ConfigMap's dashboard differs from dashboards/chatgroupd.json")
			}
			if !json.Valid([]byte(got)) {
				t.Error("the ConfigMap's dashboard is not valid JSON")
			}
		})
	}
}

func TestPrometheusRuleIsTheAlertsFile(t *testing.T) {
	r := render(t, "ci/all-values.yaml")
	pr := r.only(t, "PrometheusRule").(*monitoringv1.PrometheusRule)
	file, err := os.ReadFile(repo(t).Path("files", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := ParseRules(file)
	if err != nil {
		t.Fatal(err)
	}
	got := specAsRuleFile(t, pr)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("PrometheusRule spec differs from files/alerts.yaml:\n got %+v\nwant %+v", got, want)
	}
	if len(got.Groups) == 0 || len(got.Groups[0].Rules) == 0 {
		t.Fatal("no rules rendered")
	}
}

// specAsRuleFile turns a PrometheusRule's spec back into a rule file.
func specAsRuleFile(t *testing.T, pr *monitoringv1.PrometheusRule) RuleFile {
	t.Helper()
	b, err := yaml.Marshal(pr.Spec)
	if err != nil {
		t.Fatal(err)
	}
	f, err := ParseRules(b)
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	return f
}

func TestDLQReplayJob(t *testing.T) {
	r := render(t, "ci/all-values.yaml")
	j := r.only(t, "Job").(*batchv1.Job)
	d := r.only(t, "Deployment").(*appsv1.Deployment)
	pod := j.Spec.Template.Spec
	c := pod.Containers[0]
	if c.Image != d.Spec.Template.Spec.Containers[0].Image {
		t.Errorf("Job image %s differs from the Deployment's %s", c.Image, d.Spec.Template.Spec.Containers[0].Image)
	}
	if len(c.Args) < 2 || c.Args[0] != "dlq" || c.Args[1] != "replay" {
		t.Fatalf("Job args %v, want dlq replay ...", c.Args)
	}
	flags := flagValues(c.Args)
	// --yes: replay refuses to run without it, and a Job has nobody to ask.
	for k, v := range map[string]string{"reason": "exhausted", "event-type": "renamed,contact_group.deleted", "code": "60007", "dry-run": "false", "limit": "1000", "max-replays": "3", "yes": "true"} {
		if flags[k] != v {
			t.Errorf("--%s=%q, want %q", k, flags[k], v)
		}
	}
	env := map[string]bool{}
	for _, e := range c.Env {
		env[e.Name] = true
	}
	for _, n := range []string{"CHATGROUPD_BROKERS", "CHATGROUPD_TOPIC", "CHATGROUPD_DLQ_TOPIC", "CHATGROUPD_GROUP",
		"CHATGROUPD_KAFKA_TLS", "CHATGROUPD_KAFKA_SASL_PASSWORD", "CHATGROUPD_PARTITIONER"} {
		if !env[n] {
			t.Errorf("Job lacks %s", n)
		}
	}
	noIMKey(t, r, pod)
	if pod.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("restartPolicy %s: a replay must not be re-run behind the operator's back", pod.RestartPolicy)
	}
	// Its pods must not be counted by the service's selectors.
	selector, _ := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if selector.Matches(labels.Set(j.Spec.Template.Labels)) {
		t.Error("the Deployment's selector matches the Job's pods")
	}
	checkSecurity(t, pod)
	checkMounts(t, pod)
	checkSecretRefs(t, r, pod)
}

// TestValuesRejected checks that the schema and the chart's own checks refuse bad values.
func TestValuesRejected(t *testing.T) {
	r := repo(t)
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"unknown top-level key", []string{"--set", "replicas=3"}, "replicas"},
		{"typo in a nested key", []string{"--set", "kafka.tls.enable=true"}, "enable"},
		{"wrong type", []string{"--set", "replicaCount=two"}, "replicaCount"},
		{"string where a number goes", []string{"--set-string", "im.rateLimit=fast"}, "rateLimit"},
		{"unknown region", []string{"--set", "im.region=mars"}, "region"},
		{"bad duration", []string{"--set", "config.retryBudget=1 hour"}, "retryBudget"},
		{"bad log level", []string{"--set", "config.logLevel=verbose"}, "logLevel"},
		{"bad retry lane mode", []string{"--set", "config.retryLane=yes"}, "retryLane"},
		{"bad fleet budget mode", []string{"--set", "config.fleetBudget=redis"}, "fleetBudget"},
		{"bad sasl mechanism", []string{"--set", "kafka.sasl.mechanism=gssapi"}, "mechanism"},
		{"broker without port", []string{"--set", "kafka.brokers={kafka}"}, "brokers"},
		{"grace period not above shutdown", []string{"--set", "terminationGracePeriodSeconds=20"}, "terminationGracePeriodSeconds"},
		{"sasl without username", []string{"--set", "kafka.sasl.mechanism=plain", "--set", "kafka.sasl.existingSecret=s"}, "username"},
		{"create secret without value", []string{"--set", "secretKey.create=true"}, "secretKey.value"},
		{"chart secret for sasl but key expected in it", []string{"--set", "kafka.sasl.mechanism=plain",
			"--set", "kafka.sasl.username=u", "--set", "kafka.sasl.password=p"}, "secretKey.existingSecret"},
		{"sasl plain without tls", []string{"--set", "kafka.sasl.mechanism=plain", "--set", "kafka.sasl.username=u", "--set", "kafka.sasl.existingSecret=s"}, "allowPlaintext"},
		{"http endpoint off loopback", []string{"--set", "im.endpoint=http://im.example.com"}, "allowInsecureHTTP"},
		{"code not a number", []string{"--set", "dlqReplay.code=fifty"}, "code"},
		{"unknown event type", []string{"--set", "dlqReplay.eventType=archived"}, "eventType"},
		{"half a client certificate", []string{"--set", "kafka.tls.enabled=true", "--set", "kafka.tls.existingSecret=s", "--set", "kafka.tls.certKey=tls.crt"}, "keyKey"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := r.Template(ctx(t), r.Chart(), tt.args...)
			if err == nil {
				t.Fatalf("rendered without error:\n%.400s", out)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error does not mention %q: %v", tt.wantErr, err)
			}
		})
	}
}

// TestNotes renders NOTES.txt (helm template skips it) by wrapping it in a ConfigMap in a copy
// of the chart.
func TestNotes(t *testing.T) {
	r := repo(t)
	tests := []struct {
		values  string
		want    []string
		wantNot []string
	}{
		{"", []string{"rollout status deployment/chatgroupd", "/readyz", "WARNING: im.sdkappid is not set",
			"create secret generic chatgroupd", "replicas beyond the partition count sit idle"},
			[]string{"DLQ replay Job", "ServiceMonitor"}},
		{"ci/all-values.yaml", []string{"rollout status deployment/chatgroupd", "ServiceMonitor chatgroupd",
			"logs -f job/chatgroupd-dlq-replay-1", "label grafana_dashboard=1"},
			[]string{"WARNING", "create secret generic", "not-a-real"}},
	}
	for _, tt := range tests {
		t.Run(name(tt.values), func(t *testing.T) {
			chart := copyChart(t, r.Chart())
			notes, err := os.ReadFile(filepath.Join(chart, "templates", "NOTES.txt"))
			if err != nil {
				t.Fatal(err)
			}
			wrap := "{{- define \"deploytest.notes\" -}}\n" + string(notes) + "\n{{- end }}\n"
			cm := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: |-\n    {{- include \"deploytest.notes\" . | nindent 4 }}\n"
			for p, s := range map[string]string{"_notes.tpl": wrap, "zz-notes.yaml": cm} {
				if err := os.WriteFile(filepath.Join(chart, "templates", p), []byte(s), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			var extra []string
			if tt.values != "" {
				extra = []string{"-f", filepath.Join(chart, tt.values)}
			}
			out, err := r.Template(ctx(t), chart, append(extra, "--show-only", "templates/zz-notes.yaml")...)
			if err != nil {
				t.Fatal(err)
			}
			var got corev1.ConfigMap
			if err := yaml.UnmarshalStrict(out, &got); err != nil {
				t.Fatal(err)
			}
			text := got.Data["notes"]
			for _, w := range tt.want {
				if !strings.Contains(text, w) {
					t.Errorf("NOTES lack %q:\n%s", w, text)
				}
			}
			for _, w := range tt.wantNot {
				if strings.Contains(text, w) {
					t.Errorf("NOTES contain %q:\n%s", w, text)
				}
			}
		})
	}
}

func copyChart(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "chatgroupd")
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	return dst
}

// noIMKey fails when a replay Job's pod can read the IM secret key or carries IM settings: a
// replay only moves records between Kafka topics.
func noIMKey(t *testing.T, r rendered, pod corev1.PodSpec) {
	t.Helper()
	d := r.only(t, "Deployment").(*appsv1.Deployment)
	keySecrets := map[string]bool{}
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Name == "secret-key" && v.Secret != nil {
			keySecrets[v.Secret.SecretName] = true
		}
	}
	for _, e := range d.Spec.Template.Spec.Containers[0].Env {
		if e.Name == "CHATGROUPD_SECRET_KEY" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			keySecrets[e.ValueFrom.SecretKeyRef.Name+"/"+e.ValueFrom.SecretKeyRef.Key] = true
		}
	}
	for _, c := range pod.Containers {
		for _, e := range c.Env {
			if strings.HasPrefix(e.Name, "CHATGROUPD_SECRET_KEY") || strings.HasPrefix(e.Name, "CHATGROUPD_IM_") || e.Name == "CHATGROUPD_SDKAPPID" {
				t.Errorf("replay Job gets %s: it never calls the IM API", e.Name)
			}
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && keySecrets[e.ValueFrom.SecretKeyRef.Name+"/"+e.ValueFrom.SecretKeyRef.Key] {
				t.Errorf("replay Job env %s reads the IM key", e.Name)
			}
		}
		for _, a := range c.Args {
			if strings.Contains(a, "secret-key") {
				t.Errorf("replay Job arg %q names the IM key", a)
			}
		}
	}
	for _, v := range pod.Volumes {
		if v.Name == "secret-key" || (v.Secret != nil && keySecrets[v.Secret.SecretName] && v.Secret.SecretName != saslSecretOf(r)) {
			t.Errorf("replay Job mounts %s (Secret %v), which holds the IM key", v.Name, v.Secret)
		}
	}
}

// saslSecretOf is the Secret the Deployment reads the SASL password from ("" without SASL): it
// may be the same Secret as the IM key's, and then mounting one item of it is fine.
func saslSecretOf(r rendered) string {
	d := r.objects
	for _, o := range d {
		if dep, ok := o.(*appsv1.Deployment); ok {
			for _, e := range dep.Spec.Template.Spec.Containers[0].Env {
				if e.Name == "CHATGROUPD_KAFKA_SASL_PASSWORD" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					return e.ValueFrom.SecretKeyRef.Name
				}
			}
			for _, v := range dep.Spec.Template.Spec.Volumes {
				if v.Name == "kafka-sasl" && v.Secret != nil {
					return v.Secret.SecretName
				}
			}
		}
	}
	return ""
}

// renderWith renders the chart with --set style arguments and decodes it strictly.
func renderWith(t *testing.T, args ...string) rendered {
	t.Helper()
	r := repo(t)
	out, err := r.Template(ctx(t), r.Chart(), args...)
	if err != nil {
		t.Fatal(err)
	}
	return decodeStrict(t, out)
}

// TestReplayCommandFromREADME renders exactly the helm replay line the DLQ runbook (docs/dlq.md,
// once in README.md) gives (a number
// for dlqReplay.code, which the schema refused when it wanted a string), and the filter code 0
// (invalid events), which a truthiness test would drop.
func TestReplayCommandFromREADME(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(repo(t).Root, "docs", "dlq.md"))
	if err != nil {
		t.Fatal(err)
	}
	const line = "--set dlqReplay.enabled=true --set dlqReplay.code=51010 --set dlqReplay.dryRun=true"
	if !strings.Contains(strings.Join(strings.Fields(string(readme)), " "), line) {
		t.Fatalf("docs/dlq.md no longer shows %q; keep this test on the command the runbook gives", line)
	}
	for _, tc := range []struct {
		args []string
		code string
	}{
		{strings.Fields(line), "51010"},
		{[]string{"--set", "dlqReplay.enabled=true", "--set", "dlqReplay.code=0"}, "0"},
		{[]string{"--set", "dlqReplay.enabled=true", "--set-string", `dlqReplay.code=51010\,51008`}, "51010,51008"},
	} {
		j := renderWith(t, tc.args...).only(t, "Job").(*batchv1.Job)
		flags := flagValues(j.Spec.Template.Spec.Containers[0].Args)
		if flags["code"] != tc.code {
			t.Errorf("%v: --code=%q, want %q (args %v)", tc.args, flags["code"], tc.code, j.Spec.Template.Spec.Containers[0].Args)
		}
	}
	// The default replay Job (IM key mounted as a file in the Deployment) gets no key either.
	r := renderWith(t, "--set", "dlqReplay.enabled=true")
	noIMKey(t, r, r.only(t, "Job").(*batchv1.Job).Spec.Template.Spec)
}

// TestSASLPasswordFile: with kafka.sasl.mountAsFile the password reaches the service and the
// replay Job as a mounted file, never as an environment variable.
func TestSASLPasswordFile(t *testing.T) {
	r := renderWith(t, "--set", "kafka.sasl.mechanism=scram-sha-512", "--set", "kafka.sasl.username=u",
		"--set", "kafka.sasl.existingSecret=kafka-pw", "--set", "kafka.sasl.mountAsFile=true", "--set", "dlqReplay.enabled=true")
	d := r.only(t, "Deployment").(*appsv1.Deployment)
	j := r.only(t, "Job").(*batchv1.Job)
	const file = "/etc/chatgroupd/kafka-sasl/kafka-sasl-password"
	if got := flagValues(d.Spec.Template.Spec.Containers[0].Args)["kafka-sasl-password-file"]; got != file {
		t.Errorf("Deployment --kafka-sasl-password-file=%q, want %s", got, file)
	}
	jobFile := ""
	for _, e := range j.Spec.Template.Spec.Containers[0].Env {
		if e.Name == "CHATGROUPD_KAFKA_SASL_PASSWORD_FILE" {
			jobFile = e.Value
		}
	}
	if jobFile != file {
		t.Errorf("Job CHATGROUPD_KAFKA_SASL_PASSWORD_FILE=%q, want %s", jobFile, file)
	}
	for _, pod := range []corev1.PodSpec{d.Spec.Template.Spec, j.Spec.Template.Spec} {
		for _, e := range pod.Containers[0].Env {
			if e.Name == "CHATGROUPD_KAFKA_SASL_PASSWORD" {
				t.Errorf("%s: the password is in the environment too", pod.Containers[0].Name)
			}
		}
		found := false
		for _, v := range pod.Volumes {
			if v.Name == "kafka-sasl" && v.Secret != nil && v.Secret.SecretName == "kafka-pw" {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: no kafka-sasl volume from Secret kafka-pw", pod.Containers[0].Name)
		}
		checkMounts(t, pod)
	}
}

// TestImageByDigest: image.digest pins the service and the replay Job to one image.
func TestImageByDigest(t *testing.T) {
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	r := renderWith(t, "--set", "image.repository=registry.example.com/chatgroupd", "--set", "image.tag=v1",
		"--set", "image.digest="+digest, "--set", "dlqReplay.enabled=true")
	want := "registry.example.com/chatgroupd@" + digest
	if got := r.only(t, "Deployment").(*appsv1.Deployment).Spec.Template.Spec.Containers[0].Image; got != want {
		t.Errorf("Deployment image %s, want %s", got, want)
	}
	if got := r.only(t, "Job").(*batchv1.Job).Spec.Template.Spec.Containers[0].Image; got != want {
		t.Errorf("Job image %s, want %s", got, want)
	}
}

// TestNetworkPolicy: the policy selects the service's pods (not the replay Job's), lets in only
// the metrics port, and lets out only DNS, Kafka and the IM API plus what extraEgress adds.
func TestNetworkPolicy(t *testing.T) {
	r := render(t, "ci/all-values.yaml")
	np := r.only(t, "NetworkPolicy").(*networkingv1.NetworkPolicy)
	d := r.only(t, "Deployment").(*appsv1.Deployment)
	j := r.only(t, "Job").(*batchv1.Job)
	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil {
		t.Fatal(err)
	}
	if !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Error("the NetworkPolicy does not select the service's pods")
	}
	if sel.Matches(labels.Set(j.Spec.Template.Labels)) {
		t.Error("the NetworkPolicy selects the replay Job's pods, whose traffic it does not describe")
	}
	if len(np.Spec.Ingress) != 1 || len(np.Spec.Ingress[0].Ports) != 1 || np.Spec.Ingress[0].Ports[0].Port.IntValue() != 9191 {
		t.Errorf("ingress %+v, want only the metrics port 9191", np.Spec.Ingress)
	}
	var egressPorts []int
	for _, e := range np.Spec.Egress {
		for _, p := range e.Ports {
			egressPorts = append(egressPorts, p.Port.IntValue())
		}
	}
	if fmt.Sprint(egressPorts) != "[53 53 9093 8080 3128]" {
		t.Errorf("egress ports %v, want DNS, Kafka 9093, IM 8080 and the extra 3128", egressPorts)
	}
}

// TestInstanceIDFromPodName: by default the pod's name reaches chatgroupd as
// CHATGROUPD_INSTANCE_ID (static group membership), through the Downward API, and the container
// locks it in an emptyDir mounted at --instance-lock-dir (which outlives a container restart, so
// the restarted container sees its predecessor's lock released); turned off, all three are gone.
func TestInstanceIDFromPodName(t *testing.T) {
	type found struct {
		env      *corev1.EnvVar
		flag     string
		emptyDir bool   // a volume named instance-lock, an emptyDir
		mount    string // where instance-lock is mounted
	}
	find := func(r rendered) found {
		spec := r.only(t, "Deployment").(*appsv1.Deployment).Spec.Template.Spec
		c := spec.Containers[0]
		f := found{flag: flagValues(c.Args)["instance-lock-dir"]}
		for _, e := range c.Env {
			if e.Name == "CHATGROUPD_INSTANCE_ID" {
				f.env = &e
			}
		}
		for _, v := range spec.Volumes {
			if v.Name == "instance-lock" {
				f.emptyDir = v.EmptyDir != nil
			}
		}
		for _, m := range c.VolumeMounts {
			if m.Name == "instance-lock" && !m.ReadOnly {
				f.mount = m.MountPath
			}
		}
		return f
	}
	for _, vf := range valuesFiles {
		f := find(render(t, vf))
		if e := f.env; e == nil || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "metadata.name" {
			t.Errorf("%s: CHATGROUPD_INSTANCE_ID = %+v, want the pod name from the Downward API", name(vf), e)
		}
		if f.flag == "" || !f.emptyDir || f.mount != f.flag {
			t.Errorf("%s: --instance-lock-dir=%q, instance-lock emptyDir %v mounted writable at %q; want the flag on the emptyDir's mount",
				name(vf), f.flag, f.emptyDir, f.mount)
		}
	}
	if f := find(renderWith(t, "--set", "instanceIdFromPodName=false")); f != (found{}) {
		t.Errorf("instanceIdFromPodName=false still sets %+v", f)
	}
}
