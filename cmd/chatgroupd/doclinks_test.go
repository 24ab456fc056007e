package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The repository root as seen from this package's directory.
const repoRoot = "../.."

var (
	// mdLink matches an inline markdown link or image target: [text](target) or [text](target "title").
	mdLink = regexp.MustCompile(`\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)
	// mdHTMLAnchor is an explicit anchor: <a id="x"> or <a name="x">.
	mdHTMLAnchor = regexp.MustCompile(`(?i)<a\s+(?:id|name)="([^"]+)"`)
	mdHeading    = regexp.MustCompile(`^#{1,6}\s+(.+?)\s*#*\s*$`)
	mdSlugDrop   = regexp.MustCompile(`[^\p{L}\p{N}\- _]`)
	mdFence      = regexp.MustCompile("^\\s*(```|~~~)")
	// runbookURL is an alert's runbook link into this repository's files on GitHub.
	runbookURL = regexp.MustCompile(`runbook_url:\s*https://github\.com/chatgroupd/chatgroupd/blob/main/(\S+?)(?:#(\S+))?\s*$`)
)

// mdAnchors returns the anchors a markdown file offers the way GitHub renders it: a slug per
// heading (lower case, punctuation dropped, spaces to dashes, "-1", "-2", … for repeats) and
// every explicit <a id>. Headings inside fenced code blocks are not headings.
func mdAnchors(text string) map[string]bool {
	have := map[string]bool{}
	seen := map[string]int{}
	inFence := false
	for _, line := range strings.Split(text, "\n") {
		if mdFence.MatchString(line) {
			inFence = !inFence
			continue
		}
		for _, m := range mdHTMLAnchor.FindAllStringSubmatch(line, -1) {
			have[m[1]] = true
		}
		if inFence {
			continue
		}
		m := mdHeading.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		s := strings.ToLower(m[1])
		s = mdSlugDrop.ReplaceAllString(s, "")
		s = strings.ReplaceAll(s, " ", "-")
		if n := seen[s]; n > 0 {
			have[s+"-"+strconv.Itoa(n)] = true
		} else {
			have[s] = true
		}
		seen[s]++
	}
	return have
}

// mdLinks returns the link targets of a markdown file outside fenced code blocks.
func mdLinks(text string) []string {
	var out []string
	inFence := false
	for _, line := range strings.Split(text, "\n") {
		if mdFence.MatchString(line) {
			inFence = !inFence
			continue
		}
		if inFence {
			continue
		}
		for _, m := range mdLink.FindAllStringSubmatch(line, -1) {
			out = append(out, m[1])
		}
	}
	return out
}

// brokenLinks checks every relative link of the markdown file at path (a path under root): the
// file it names must exist and, for a markdown target, offer the #anchor. It returns one message
// per broken link.
func brokenLinks(t *testing.T, root, path string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, path))
	if err != nil {
		t.Fatal(err)
	}
	var bad []string
	for _, target := range mdLinks(string(b)) {
		if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
			continue
		}
		file, anchor, _ := strings.Cut(target, "#")
		dest := path
		if file != "" {
			dest = filepath.Join(filepath.Dir(path), file)
		}
		content, err := os.ReadFile(filepath.Join(root, dest))
		if err != nil {
			if info, serr := os.Stat(filepath.Join(root, dest)); serr == nil && info.IsDir() && anchor == "" {
				continue
			}
			bad = append(bad, path+": link "+target+": no file "+dest)
			continue
		}
		if anchor != "" && strings.HasSuffix(dest, ".md") && !mdAnchors(string(content))[anchor] {
			bad = append(bad, path+": link "+target+": "+dest+" has no anchor #"+anchor)
		}
	}
	return bad
}

// docFiles lists the markdown files whose links TestDocLinks checks, relative to root.
func docFiles(t *testing.T, root string) []string {
	t.Helper()
	files := []string{"README.md", "RELIABILITY.md", "BENCHMARKS.md", "charts/chatgroupd/README.md"}
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) < 5 {
		t.Fatalf("found only %d files in docs/; the glob is wrong", len(docs))
	}
	for _, d := range docs {
		rel, err := filepath.Rel(root, d)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, rel)
	}
	return files
}

// TestDocLinks fails when a relative link or #anchor in README.md, docs/*.md and the other
// top-level documents points nowhere (a section moved, a heading renamed, a file deleted).
func TestDocLinks(t *testing.T) {
	checked := 0
	for _, f := range docFiles(t, repoRoot) {
		b, err := os.ReadFile(filepath.Join(repoRoot, f))
		if err != nil {
			t.Fatal(err)
		}
		checked += len(mdLinks(string(b)))
		for _, msg := range brokenLinks(t, repoRoot, f) {
			t.Error(msg)
		}
	}
	if checked < 50 {
		t.Fatalf("found only %d links; the link pattern is broken", checked)
	}
}

// TestRunbookURLsResolve fails when an alert's runbook_url names a file of this repository that
// does not exist or an anchor that file does not have.
func TestRunbookURLsResolve(t *testing.T) {
	for _, rules := range []string{"charts/chatgroupd/files/alerts.yaml", "charts/chatgroupd/files/alerts_test.yaml"} {
		b, err := os.ReadFile(filepath.Join(repoRoot, rules))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, line := range strings.Split(string(b), "\n") {
			if !strings.Contains(line, "runbook_url:") {
				continue
			}
			n++
			m := runbookURL.FindStringSubmatch(line)
			if m == nil {
				t.Errorf("%s: %q is not a link into this repository", rules, strings.TrimSpace(line))
				continue
			}
			doc, err := os.ReadFile(filepath.Join(repoRoot, m[1]))
			if err != nil {
				t.Errorf("%s: runbook_url names %s: %v", rules, m[1], err)
				continue
			}
			if m[2] == "" || !mdAnchors(string(doc))[m[2]] {
				t.Errorf("%s: runbook_url %s#%s: no such anchor", rules, m[1], m[2])
			}
		}
		if n < 10 {
			t.Errorf("%s: found only %d runbook_urls", rules, n)
		}
	}
}

// TestLinkCheckerCatchesBreakage proves the checker by breaking things on purpose: a missing file,
// a missing anchor, a heading-slug anchor that exists, a repeated heading, and an anchor inside a
// code block, which GitHub does not render as a heading.
func TestLinkCheckerCatchesBreakage(t *testing.T) {
	root := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("docs/a.md", "# A\n\n## What to do, by cause\n\n## Notes\n\n## Notes\n\n<a id=\"alert-x\"></a>\n```\n## Not a heading\n```\n")
	for _, tc := range []struct {
		link string
		ok   bool
	}{
		{"docs/a.md", true},
		{"docs/a.md#what-to-do-by-cause", true},
		{"docs/a.md#notes-1", true},
		{"docs/a.md#alert-x", true},
		{"docs", true},
		{"https://example.com/x.md#nowhere", true},
		{"docs/b.md", false},
		{"docs/a.md#what-to-do", false},
		{"docs/a.md#notes-2", false},
		{"docs/a.md#not-a-heading", false},
		{"#missing", false},
	} {
		write("README.md", "# R\n\nsee [x]("+tc.link+").\n")
		bad := brokenLinks(t, root, "README.md")
		if (len(bad) == 0) != tc.ok {
			t.Errorf("link %q: broken %v, want ok=%v", tc.link, bad, tc.ok)
		}
	}
}
