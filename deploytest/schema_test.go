package deploytest

import (
	"encoding/json"
	"os"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

type schemaNode struct {
	Type                 any                    `json:"type"`
	Properties           map[string]*schemaNode `json:"properties"`
	AdditionalProperties any                    `json:"additionalProperties"`
}

// TestSchemaMatchesValues keeps values.schema.json and values.yaml in step: every strict object
// of the schema lists exactly the keys values.yaml has there, so no value goes undocumented
// and the schema carries no stale key.
func TestSchemaMatchesValues(t *testing.T) {
	r := repo(t)
	sb, err := os.ReadFile(r.Path("values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var schema schemaNode
	if err := json.Unmarshal(sb, &schema); err != nil {
		t.Fatal(err)
	}
	vb, err := os.ReadFile(r.Path("values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(vb, &values); err != nil {
		t.Fatal(err)
	}
	checked := 0
	var walk func(path string, s *schemaNode, v map[string]any)
	walk = func(path string, s *schemaNode, v map[string]any) {
		if allowed, ok := s.AdditionalProperties.(bool); ok && !allowed {
			checked++
			var inSchema, inValues []string
			for k := range s.Properties {
				if _, ok := v[k]; !ok && k != "global" {
					inSchema = append(inSchema, k)
				}
			}
			for k := range v {
				if _, ok := s.Properties[k]; !ok {
					inValues = append(inValues, k)
				}
			}
			sort.Strings(inSchema)
			sort.Strings(inValues)
			if len(inSchema) > 0 {
				t.Errorf("%s: schema keys missing from values.yaml: %s", path, strings.Join(inSchema, ", "))
			}
			if len(inValues) > 0 {
				t.Errorf("%s: values.yaml keys missing from the schema: %s", path, strings.Join(inValues, ", "))
			}
		}
		for k, sub := range s.Properties {
			if child, ok := v[k].(map[string]any); ok {
				walk(path+"."+k, sub, child)
			}
		}
	}
	walk("", &schema, values)
	if checked < 10 {
		t.Errorf("only %d strict objects checked; is additionalProperties still false?", checked)
	}
}
