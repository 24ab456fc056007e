package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var updateReadme = flag.Bool("update-readme", false, "rewrite docs/configuration.md's flag reference from --help")

// configDoc is the generated flag reference; README.md links to it rather than carrying it.
const configDoc = "../../docs/configuration.md"

// documented lists every command whose flags docs/configuration.md shows.
var documented = [][]string{{"run"}, {"demo"}, {"imsim"}, {"imcheck"}, {"loadgen"}, {"dlq", "list"}, {"dlq", "replay"}, {"lane", "list"}}

type helpFlag struct{ name, typ, usage, def string }

var (
	flagLine = regexp.MustCompile(`^  --?(\S+)(?: (\S+))?$`)
	defPart  = regexp.MustCompile(`\s*\(default (.*)\)$`)
)

// helpFlags runs `chatgroupd <cmd...> --help` and parses the flag package's usage output.
func helpFlags(t *testing.T, cmd []string) []helpFlag {
	t.Helper()
	var out bytes.Buffer
	err := run(t.Context(), append(append([]string{}, cmd...), "--help"), func(string) string { return "" }, &out, &out)
	if !errors.Is(err, errHelp) {
		t.Fatalf("%v --help: %v", cmd, err)
	}
	var flags []helpFlag
	for _, line := range strings.Split(out.String(), "\n") {
		if m := flagLine.FindStringSubmatch(line); m != nil {
			flags = append(flags, helpFlag{name: m[1], typ: m[2]})
			continue
		}
		if len(flags) > 0 && strings.HasPrefix(line, "    \t") {
			f := &flags[len(flags)-1]
			u := strings.TrimSpace(line)
			if m := defPart.FindStringSubmatch(u); m != nil {
				f.def = m[1]
				u = strings.TrimSpace(u[:len(u)-len(m[0])])
			}
			f.usage = strings.TrimSpace(f.usage + " " + u)
		}
	}
	if len(flags) == 0 {
		t.Fatalf("%v --help printed no flags:\n%s", cmd, out.String())
	}
	return flags
}

func configReference(t *testing.T) string {
	var b strings.Builder
	b.WriteString("Every flag `--foo-bar` may also be set as the environment variable `CHATGROUPD_FOO_BAR`; a flag\n")
	b.WriteString("on the command line wins. Secrets never come from flag values: the IM key from\n")
	b.WriteString("`CHATGROUPD_SECRET_KEY` or `--secret-key-file`, the Kafka SASL password from\n")
	b.WriteString("`CHATGROUPD_KAFKA_SASL_PASSWORD` or `--kafka-sasl-password-file`.\n")
	for _, cmd := range documented {
		fmt.Fprintf(&b, "\n#### `chatgroupd %s`\n\n| flag | default | |\n|---|---|---|\n", strings.Join(cmd, " "))
		for _, f := range helpFlags(t, cmd) {
			def := f.def
			if def == "" {
				def = "—"
			} else {
				def = "`" + strings.ReplaceAll(def, "|", `\|`) + "`"
			}
			name := "`--" + f.name
			if f.typ != "" {
				name += " " + f.typ
			}
			fmt.Fprintf(&b, "| %s` | %s | %s |\n", name, def, strings.ReplaceAll(f.usage, "|", `\|`))
		}
	}
	return b.String()
}

const (
	refBegin = "<!-- BEGIN GENERATED CONFIG: go test ./cmd/chatgroupd -run TestREADMEConfigReference -update-readme -->\n"
	refEnd   = "<!-- END GENERATED CONFIG -->\n"
)

// TestREADMEConfigReference keeps docs/configuration.md (the flag reference README.md links to)
// equal to what the commands accept: a flag added, renamed or re-documented without the
// reference fails here.
func TestREADMEConfigReference(t *testing.T) {
	const path = configDoc
	readme, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(readme)
	i, j := strings.Index(s, refBegin), strings.Index(s, refEnd)
	if i < 0 || j < i {
		t.Fatalf("%s lacks the generated configuration markers", path)
	}
	want := configReference(t)
	got := s[i+len(refBegin) : j]
	if got == want {
		return
	}
	if *updateReadme {
		if err := os.WriteFile(path, []byte(s[:i+len(refBegin)]+want+s[j:]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("docs/configuration.md is stale; run: go test ./cmd/chatgroupd -run TestREADMEConfigReference -update-readme")
}

// TestREADMEFlagsExist fails when README.md, docs/*.md or the chart's README shows a `chatgroupd`
// command line with a flag that command doesn't accept (prose and examples drift too).
func TestREADMEFlagsExist(t *testing.T) {
	docs, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	var readme []byte
	for _, p := range append([]string{"../../README.md", "../../charts/chatgroupd/README.md"}, docs...) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		readme = append(append(readme, b...), '\n')
	}
	known := map[string]map[string]bool{}
	for _, cmd := range documented {
		key := strings.Join(cmd, " ")
		known[key] = map[string]bool{"help": true}
		for _, f := range helpFlags(t, cmd) {
			known[key][f.name] = true
		}
	}
	cmdLine := regexp.MustCompile(`chatgroupd (run|demo|imsim|imcheck|loadgen|dlq list|dlq replay)((?: +(?:--?[a-z0-9-]+(?:[= ](?:"[^"]*"|'[^']*'|[^\s\\|]+))?|\\\n))*)`)
	flagRe := regexp.MustCompile(`--([a-z0-9-]+)`)
	checked := 0
	for _, m := range cmdLine.FindAllStringSubmatch(string(readme), -1) {
		for _, f := range flagRe.FindAllStringSubmatch(m[2], -1) {
			checked++
			if !known[m[1]][f[1]] {
				t.Errorf("README shows `chatgroupd %s --%s`, which that command does not accept", m[1], f[1])
			}
		}
	}
	if checked < 10 {
		t.Fatalf("found only %d flags in README command lines; the pattern is broken", checked)
	}
}
