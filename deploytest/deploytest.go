// Package deploytest checks what chatgroupd ships to operators: the Helm chart, the Grafana
// dashboard and the Prometheus alert rules. It renders the chart with the pinned helm, decodes
// every manifest strictly into the Kubernetes types, and parses every PromQL expression against
// the metrics the service registers, so a typo or a renamed metric fails CI rather than production.
package deploytest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"sigs.k8s.io/yaml"
)

// KubeVersion is the Kubernetes version charts are rendered for. The helm built by `go tool`
// lacks the version stamps of a release build and would otherwise assume v1.20.
const KubeVersion = "1.31.0"

// Repo locates the files under test.
type Repo struct {
	// Root is the repository root (the directory holding tools/ and charts/).
	Root string
}

// FindRepo walks up from dir to the directory that holds tools/go.mod and charts/.
func FindRepo(dir string) (Repo, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return Repo{}, fmt.Errorf("deploytest: %w", err)
	}
	for {
		if fileExists(filepath.Join(dir, "tools", "go.mod")) && fileExists(filepath.Join(dir, "charts")) {
			return Repo{Root: dir}, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return Repo{}, errors.New("deploytest: no repository root (tools/go.mod and charts/) above the working directory")
		}
		dir = parent
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// Chart is the path of the chatgroupd chart.
func (r Repo) Chart() string { return filepath.Join(r.Root, "charts", "chatgroupd") }

// Path joins elements onto the chart directory.
func (r Repo) Path(elem ...string) string {
	return filepath.Join(append([]string{r.Chart()}, elem...)...)
}

// Helm runs helm with args and returns its standard output. It uses $HELM when set, else the
// version pinned in tools/go.mod (`go -C tools tool helm`). A failure carries helm's stderr.
func (r Repo) Helm(ctx context.Context, args ...string) ([]byte, error) {
	var cmd *exec.Cmd
	if h := os.Getenv("HELM"); h != "" {
		cmd = exec.CommandContext(ctx, h, args...)
	} else {
		cmd = exec.CommandContext(ctx, "go", append([]string{"-C", filepath.Join(r.Root, "tools"), "tool", "helm"}, args...)...)
	}
	// Keep helm away from the user's repositories, plugins and caches.
	tmp, err := os.MkdirTemp("", "deploytest-helm-")
	if err != nil {
		return nil, fmt.Errorf("helm: %w", err)
	}
	defer os.RemoveAll(tmp)
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(tmp, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(tmp, "config"),
		"HELM_DATA_HOME="+filepath.Join(tmp, "data"),
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// Template renders chart (a directory) as release "chatgroupd" in namespace "chat", with the
// given extra helm arguments (-f file, --set k=v).
func (r Repo) Template(ctx context.Context, chart string, extra ...string) ([]byte, error) {
	args := append([]string{"template", "chatgroupd", chart, "--namespace", "chat", "--kube-version", KubeVersion}, extra...)
	return r.Helm(ctx, args...)
}

// Manifest is one rendered document.
type Manifest struct {
	Source     string // the template it came from ("chatgroupd/templates/deployment.yaml")
	APIVersion string
	Kind       string
	Name       string
	YAML       []byte
}

var (
	docSep    = regexp.MustCompile(`(?m)^---[ \t]*$`)
	sourceTag = regexp.MustCompile(`(?m)^# Source: (.+)$`)
)

// SplitManifests splits helm's output into documents, skipping empty ones.
func SplitManifests(out []byte) ([]Manifest, error) {
	var ms []Manifest
	for _, doc := range docSep.Split(string(out), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			return nil, fmt.Errorf("manifest: %w\n%s", err, doc)
		}
		m := Manifest{APIVersion: head.APIVersion, Kind: head.Kind, Name: head.Metadata.Name, YAML: []byte(doc)}
		if s := sourceTag.FindStringSubmatch(doc); s != nil {
			m.Source = s[1]
		}
		if m.Kind == "" || m.APIVersion == "" || m.Name == "" {
			return nil, fmt.Errorf("manifest without apiVersion, kind or name (%s):\n%s", m.Source, doc)
		}
		ms = append(ms, m)
	}
	return ms, nil
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}
