package main

import (
	"bufio"
	"os"
	"regexp"
	"strings"
	"testing"
)

// dockerignored reports whether .dockerignore's patterns exclude path, as docker matches them:
// against the whole path from the context root ("*" stays within one element, "**" spans any),
// a matched directory excluding what is under it, "!" exceptions, the last match winning.
func dockerignored(patterns []string, path string) bool {
	ignored := false
	for _, p := range patterns {
		neg := strings.HasPrefix(p, "!")
		p = strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(p, "!"), "/"), "/")
		var re strings.Builder
		for i := 0; i < len(p); i++ {
			switch {
			case strings.HasPrefix(p[i:], "**/"):
				re.WriteString("(.*/)?")
				i += 2
			case strings.HasPrefix(p[i:], "**"):
				re.WriteString(".*")
				i++
			case p[i] == '*':
				re.WriteString("[^/]*")
			case p[i] == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(p[i : i+1]))
			}
		}
		if regexp.MustCompile("^" + re.String() + "(/.*)?$").MatchString(path) {
			ignored = !neg
		}
	}
	return ignored
}

func readPatterns(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

// TestDockerBuildContext: the key file docs/deploying.md tells operators to create (and other secret files)
// never enters the image's build context (the Dockerfile does COPY . .), while the sources do.
func TestDockerBuildContext(t *testing.T) {
	patterns := readPatterns(t, "../../.dockerignore")
	readme, err := os.ReadFile("../../docs/deploying.md")
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{".env", "prod.key", "certs/client.pem", "secrets/im-secret-key"}
	for _, m := range regexp.MustCompile(`--from-file=[\w-]+=\./(\S+)`).FindAllStringSubmatch(string(readme), -1) {
		secrets = append(secrets, m[1])
	}
	if len(secrets) < 5 {
		t.Fatal("docs/deploying.md no longer suggests a key file name; update this test")
	}
	for _, s := range secrets {
		if !dockerignored(patterns, s) {
			t.Errorf(".dockerignore lets %s into the build context", s)
		}
	}
	for _, src := range []string{"go.mod", "go.sum", "cmd/chatgroupd/main.go", "event/schema.json", "internal/logging/logging.go"} {
		if dockerignored(patterns, src) {
			t.Errorf(".dockerignore excludes %s, which the build needs", src)
		}
	}
}

// TestDockerfilePinsAndVersion: every base image is pinned by digest, and the version build
// argument reaches the binary through -X main.version.
func TestDockerfilePinsAndVersion(t *testing.T) {
	b, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	args := map[string]string{}
	froms := 0
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "ARG":
			if k, v, ok := strings.Cut(f[1], "="); ok {
				args[k] = v
			}
		case "FROM":
			froms++
			img := f[1]
			if strings.HasPrefix(img, "--platform") && len(f) > 2 {
				img = f[2]
			}
			img = regexp.MustCompile(`\$\{?(\w+)\}?`).ReplaceAllStringFunc(img, func(s string) string {
				return args[strings.Trim(s, "${}")]
			})
			if !regexp.MustCompile(`^\S+:\S+@sha256:[0-9a-f]{64}$`).MatchString(img) {
				t.Errorf("FROM %s (%s) is not pinned by tag and digest", f[1], img)
			}
		}
	}
	if froms < 2 {
		t.Fatalf("found %d FROM lines; the parser is broken", froms)
	}
	if _, ok := args["VERSION"]; !ok || !strings.Contains(string(b), "-X main.version=${VERSION}") {
		t.Error("the Dockerfile does not pass the VERSION build argument to -X main.version")
	}
	mk, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mk), "--build-arg VERSION=$(VERSION)") {
		t.Error("make docker does not pass the version to docker build")
	}
}
