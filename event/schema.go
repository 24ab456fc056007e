package event

import _ "embed"

// Schema is the JSON Schema (draft 2020-12) of an event value, for producers in other languages.
// A test checks it agrees with Parse on a corpus of valid and invalid records.
//
//go:embed schema.json
var Schema []byte
