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
// validates the parsed object, in which the last duplicate already won; a rename to the same name:
// a schema can't compare two properties).
func TestSchemaAgreesWithParse(t *testing.T) {
	s := compileSchema(t)
	var corpus []string
	corpus = append(corpus, good)
	for _, g := range goodV2 {
		corpus = append(corpus, g.value)
	}
	for _, tc := range invalidCases {
		if tc.name == "invalid utf8" || tc.name == "11 CJK chars is 33 bytes" || strings.HasPrefix(tc.name, "duplicate") {
			continue
		}
		corpus = append(corpus, tc.value)
	}
	for _, tc := range invalidV2Cases {
		if strings.HasPrefix(tc.name, "schema can't:") || strings.HasPrefix(tc.name, "duplicate") {
			continue
		}
		corpus = append(corpus, tc.value)
	}
	for _, typ := range []Type{TypeContactGroupCreated, TypeContactGroupContactsAdded, TypeContactGroupContactsRemoved} {
		for i := 1; i <= 100; i += 33 {
			cs := make([]string, i)
			for j := range cs {
				cs[j] = fmt.Sprintf(`{"type":%d,"%s":"p%d"}`, 1+j%2, map[int]string{0: "to_account", 1: "to_group_id"}[j%2], j)
			}
			corpus = append(corpus, `{"event_id":"e","event_type":"`+string(typ)+`","from_account":"a","seq":7,"group_name":"`+
				strings.Repeat("n", 32)+`","contacts":[`+strings.Join(cs, ",")+`]}`)
		}
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

// TestSchemaCatchesBrokenVariants: the agreement test is trusted only because it fails on a
// schema that drops a per-type rule. Each mutation removes one rule from the discriminated part;
// some record of the corpus must then be judged differently by the schema than by Parse.
func TestSchemaCatchesBrokenVariants(t *testing.T) {
	for _, tc := range []struct {
		name      string
		mutate    func(m map[string]any)
		disagrees string // a record the broken schema accepts or rejects wrongly
	}{
		{"no renamed branch", func(m map[string]any) { m["allOf"] = m["allOf"].([]any)[:1] },
			v2(renamed, ``)},
		{"contacts branch for created only", func(m map[string]any) {
			m["allOf"].([]any)[0].(map[string]any)["if"].(map[string]any)["properties"].(map[string]any)["event_type"] = map[string]any{"const": "contact_group.created"}
		}, v2(added, ``)},
		{"deleted accepts contacts", func(m map[string]any) {
			m["allOf"].([]any)[2].(map[string]any)["then"].(map[string]any)["properties"] = map[string]any{}
		}, v2(deleted, `,"contacts":[{"type":1,"to_account":"b"}]`)},
		{"v1 event_type", func(m map[string]any) {
			m["properties"].(map[string]any)["event_type"] = map[string]any{"const": "contact_group.created"}
		}, goodV2[0].value},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m map[string]any
			if err := json.Unmarshal(Schema, &m); err != nil {
				t.Fatal(err)
			}
			tc.mutate(m)
			broken, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(broken))
			if err != nil {
				t.Fatal(err)
			}
			c := jsonschema.NewCompiler()
			if err := c.AddResource("schema.json", doc); err != nil {
				t.Fatal(err)
			}
			s, err := c.Compile("schema.json")
			if err != nil {
				t.Fatal(err)
			}
			inst, err := jsonschema.UnmarshalJSON(strings.NewReader(tc.disagrees))
			if err != nil {
				t.Fatal(err)
			}
			_, perr := Parse([]byte(tc.disagrees))
			if serr := s.Validate(inst); (perr == nil) == (serr == nil) {
				t.Fatalf("the broken schema still agrees with Parse on %s (Parse: %v)", tc.disagrees, perr)
			}
		})
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
