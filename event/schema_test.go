package event

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

func compileSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(Schema))
	if err != nil {
		t.Fatalf("schema.json is not JSON: %v", err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("schema.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("schema.json")
	if err != nil {
		t.Fatalf("compile schema: %v", err)
	}
	return s
}

// TestSchemaAgreesWithParse keeps the published JSON Schema and the Go validator in step: every
// record either both accept or both reject. The only cases skipped are those a JSON Schema can't
// express (byte lengths of non-ASCII text, invalid UTF-8, the 1 MiB cap, duplicate keys: a schema
// validates the parsed object, in which the last duplicate already won).
func TestSchemaAgreesWithParse(t *testing.T) {
	s := compileSchema(t)
	var corpus []string
	corpus = append(corpus, good)
	for _, tc := range invalidCases {
		if tc.name == "invalid utf8" || tc.name == "11 CJK chars is 33 bytes" || strings.HasPrefix(tc.name, "duplicate") {
			continue
		}
		corpus = append(corpus, tc.value)
	}
	for i := 1; i <= 100; i += 33 {
		cs := make([]string, i)
		for j := range cs {
			cs[j] = fmt.Sprintf(`{"type":%d,"%s":"p%d"}`, 1+j%2, map[int]string{0: "to_account", 1: "to_group_id"}[j%2], j)
		}
		corpus = append(corpus, `{"event_id":"e","event_type":"contact_group.created","from_account":"a","seq":7,"group_name":"`+
			strings.Repeat("n", 32)+`","contacts":[`+strings.Join(cs, ",")+`]}`)
	}
	for _, v := range corpus {
		_, perr := Parse([]byte(v))
		var serr error
		if inst, err := jsonschema.UnmarshalJSON(strings.NewReader(v)); err != nil {
			serr = err
		} else {
			serr = s.Validate(inst)
		}
		if (perr == nil) != (serr == nil) {
			t.Errorf("disagree on %.120s\n  Parse: %v\n  schema: %v", v, perr, serr)
		}
	}
}

func TestSchemaIsValidJSON(t *testing.T) {
	var m map[string]any
	if err := json.Unmarshal(Schema, &m); err != nil {
		t.Fatal(err)
	}
	if m["$schema"] == nil || m["required"] == nil {
		t.Fatal("schema lacks $schema or required")
	}
}
