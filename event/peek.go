package event

import "encoding/json"

// PeekType reads the event_type of a record value and validates nothing else: the type of a
// record that Parse may reject, for counting and filtering dead letters by type. It is "" when the
// value is not a JSON object with a string event_type; the result may be a type that is not Known.
func PeekType(value []byte) Type {
	var w struct {
		EventType string `json:"event_type"`
	}
	if json.Unmarshal(value, &w) != nil {
		return ""
	}
	return Type(w.EventType)
}
