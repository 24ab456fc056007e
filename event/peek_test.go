package event

import "testing"

func TestPeekType(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  Type
	}{
		{`{"event_type":"contact_group.renamed","group_name":""}`, TypeContactGroupRenamed}, // invalid, typed
		{`{"event_type":"contact_group.archived"}`, "contact_group.archived"},               // unknown type
		{`{"event_type":7}`, ""},
		{`{"group_name":"g"}`, ""},
		{`not json`, ""},
		{`["contact_group.created"]`, ""},
		{``, ""},
	} {
		if got := PeekType([]byte(tc.value)); got != tc.want {
			t.Errorf("PeekType(%s) = %q, want %q", tc.value, got, tc.want)
		}
	}
}

func FuzzPeekType(f *testing.F) {
	f.Add([]byte(`{"event_type":"contact_group.created"}`))
	f.Add([]byte(`{"event_type":"contact_group.deleted","event_type":"x"}`))
	f.Fuzz(func(t *testing.T, value []byte) {
		got := PeekType(value)
		// Whatever Parse accepts, PeekType names its type.
		if e, err := Parse(value); err == nil && got != e.EventType {
			t.Fatalf("Parse says %q, PeekType %q", e.EventType, got)
		}
	})
}
