package deploytest

import (
	"bytes"
	"encoding/json"

	"sigs.k8s.io/yaml"
)

func jsonUnmarshalStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	// Only the fields the struct names are checked; Grafana's other keys are allowed.
	return dec.Decode(v)
}

func yamlMarshal(v any) ([]byte, error) { return yaml.Marshal(v) }
