package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
)

var jsonBlock = regexp.MustCompile("(?s)```json\n(.*?)```")

// docExamples returns every JSON value in the ```json blocks of text.
func docExamples(t *testing.T, text string) [][]byte {
	t.Helper()
	var out [][]byte
	for _, m := range jsonBlock.FindAllStringSubmatch(text, -1) {
		d := json.NewDecoder(strings.NewReader(m[1]))
		for {
			var v json.RawMessage
			err := d.Decode(&v)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("a JSON example is not JSON: %v\n%s", err, m[1])
			}
			out = append(out, bytes.Clone(v))
		}
	}
	return out
}

// TestREADMEEventExamples: every event example in docs/events.md and in README.md's event
// section is a valid event, and together they show every type.
func TestREADMEEventExamples(t *testing.T) {
	events, err := os.ReadFile("../docs/events.md")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	section := string(readme)
	start := strings.Index(section, "## An event\n")
	if start < 0 {
		t.Fatal(`README.md has no "## An event" section`)
	}
	section = section[start+1:]
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	for name, text := range map[string]string{"docs/events.md": string(events), "README.md": section} {
		seen := map[Type]bool{}
		for _, v := range docExamples(t, text) {
			e, err := Parse(v)
			if err != nil {
				t.Errorf("%s: example %s: %v", name, v, err)
				continue
			}
			seen[e.EventType] = true
		}
		for _, typ := range Types() {
			if !seen[typ] {
				t.Errorf("%s has no valid example of %s", name, typ)
			}
		}
	}
}
