package dlq

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/chatgroupd/chatgroupd/event"
)

var (
	origTime = time.Date(2026, 11, 29, 10, 0, 0, 123_000_000, time.UTC)
	failTime = time.Date(2026, 11, 29, 10, 5, 1, 456_000_000, time.FixedZone("CST", 8*3600))
)

func origMessage() kafka.Message {
	return kafka.Message{
		Topic: "chat.contact-groups", Partition: 7, Offset: 4242, Time: origTime,
		Key:   []byte("alice"),
		Value: []byte(`{"event_id":"e-1","event_type":"contact_group.created","from_account":"alice","group_name":"g","contacts":[{"type":1,"to_account":"bob"}]}`),
		Headers: []kafka.Header{
			{Key: "traceparent", Value: []byte("00-abc-def-01")},
			{Key: "bin", Value: []byte{0, 0xff, 0xfe, '\n'}},
			{Key: "traceparent", Value: []byte("second")}, // duplicate names are kept, in order
		},
	}
}

func header(t *testing.T, hs []kafka.Header, key string) string {
	t.Helper()
	v, ok := lastHeader(hs, key)
	if !ok {
		t.Fatalf("header %s missing", key)
	}
	return string(v)
}

func TestRecordEveryReason(t *testing.T) {
	result := []byte(`{"GroupId":"g1","GroupName":"g","Failed":[{"To_Account":"bob","ResultCode":51008}]}`)
	cases := []struct {
		name   string
		l      Letter
		want   map[string]string
		absent []string
	}{
		{
			name: "invalid",
			l:    Letter{Reason: ReasonInvalid, Code: 0, Info: "invalid event: contacts: required field missing", Attempts: 0},
			want: map[string]string{HeaderReason: "invalid", HeaderErrorCode: "0", HeaderAttempts: "0",
				HeaderErrorInfo: "invalid event: contacts: required field missing", HeaderReplayCount: "0"},
			absent: []string{HeaderEventID, HeaderFromAccount, HeaderResult},
		},
		{
			name: "rejected",
			l:    Letter{Reason: ReasonRejected, Code: 51010, Info: "more than 20 groups", Attempts: 1, EventID: "e-1", FromAccount: "alice", Result: []byte(`{"Failed":[]}`)},
			want: map[string]string{HeaderReason: "rejected", HeaderErrorCode: "51010", HeaderAttempts: "1",
				HeaderEventID: "e-1", HeaderFromAccount: "alice", HeaderResult: `{"Failed":[]}`},
		},
		{
			name: "partial",
			l:    Letter{Reason: ReasonPartial, Code: 51008, Info: "1 of 1 conversations failed", Attempts: 2, EventID: "e-1", FromAccount: "alice", Result: result},
			want: map[string]string{HeaderReason: "partial", HeaderErrorCode: "51008", HeaderAttempts: "2", HeaderResult: string(result)},
		},
		{
			name:   "exhausted",
			l:      Letter{Reason: ReasonExhausted, Code: 50004, Info: "retry budget 1h0m0s spent", Attempts: 37, EventID: "e-1", FromAccount: "alice"},
			want:   map[string]string{HeaderReason: "exhausted", HeaderErrorCode: "50004", HeaderAttempts: "37"},
			absent: []string{HeaderResult},
		},
		{
			name: "negative code (http/network mapped by the dispatcher)",
			l:    Letter{Reason: ReasonExhausted, Code: -1, Info: "network", Attempts: 3},
			want: map[string]string{HeaderErrorCode: "-1"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			orig := origMessage()
			got := Record(orig, tc.l, "chatgroupd", failTime)
			checkCopied(t, orig, got)
			common := map[string]string{
				HeaderOriginalTopic:     "chat.contact-groups",
				HeaderOriginalPartition: "7",
				HeaderOriginalOffset:    "4242",
				HeaderOriginalTimestamp: "2026-11-29T10:00:00.123Z",
				HeaderFailedAt:          "2026-11-29T02:05:01.456Z",
				HeaderConsumerGroup:     "chatgroupd",
				HeaderErrorInfo:         tc.l.Info,
			}
			for k, v := range common {
				if g := header(t, got.Headers, k); g != v {
					t.Errorf("%s = %q, want %q", k, g, v)
				}
			}
			for k, v := range tc.want {
				if g := header(t, got.Headers, k); g != v {
					t.Errorf("%s = %q, want %q", k, g, v)
				}
			}
			for _, k := range tc.absent {
				if _, ok := lastHeader(got.Headers, k); ok {
					t.Errorf("header %s present, want absent", k)
				}
			}
			// And it reads back.
			got.Partition, got.Offset = 1, 2
			e, err := Parse(got)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if e.Reason != tc.l.Reason || e.Code != tc.l.Code || e.Info != tc.l.Info || e.Attempts != tc.l.Attempts ||
				e.EventID != tc.l.EventID || e.FromAccount != tc.l.FromAccount || !bytes.Equal(e.Result, tc.l.Result) {
				t.Errorf("Parse = %+v, want the letter %+v", e, tc.l)
			}
			if !e.OriginalTime.Equal(origTime) || !e.FailedAt.Equal(failTime) || e.OriginalPartition != 7 || e.OriginalOffset != 4242 {
				t.Errorf("Parse times/coordinates = %v %v %d %d", e.OriginalTime, e.FailedAt, e.OriginalPartition, e.OriginalOffset)
			}
			sameHeaders(t, e.Headers, orig.Headers)
		})
	}
}

// checkCopied asserts key, value and the original headers (as a prefix) are byte-for-byte copies
// that share no memory with the original.
func checkCopied(t *testing.T, orig, got kafka.Message) {
	t.Helper()
	if !bytes.Equal(got.Key, orig.Key) || !bytes.Equal(got.Value, orig.Value) {
		t.Fatalf("key/value not copied: %q %q", got.Key, got.Value)
	}
	if len(got.Headers) < len(orig.Headers) {
		t.Fatalf("%d headers, want at least the %d original ones", len(got.Headers), len(orig.Headers))
	}
	sameHeaders(t, got.Headers[:len(orig.Headers)], orig.Headers)
	if len(orig.Value) > 0 && &got.Value[0] == &orig.Value[0] {
		t.Fatal("value aliases the original's memory")
	}
}

func sameHeaders(t *testing.T, got, want []kafka.Header) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("headers %v, want %v", got, want)
	}
	for i := range want {
		if got[i].Key != want[i].Key || !bytes.Equal(got[i].Value, want[i].Value) {
			t.Fatalf("header %d = %s:%q, want %s:%q", i, got[i].Key, got[i].Value, want[i].Key, want[i].Value)
		}
	}
}

func TestRecordReplayCountFromHeader(t *testing.T) {
	orig := origMessage()
	orig.Headers = append(orig.Headers, kafka.Header{Key: event.HeaderReplayCount, Value: []byte("2")})
	got := Record(orig, Letter{Reason: ReasonRejected, ReplayCount: 0}, "g", failTime)
	if v := header(t, got.Headers, HeaderReplayCount); v != "2" {
		t.Fatalf("dlq-replay-count = %q, want the record's replay-count 2", v)
	}
	got = Record(origMessage(), Letter{Reason: ReasonRejected, ReplayCount: 1}, "g", failTime)
	if v := header(t, got.Headers, HeaderReplayCount); v != "1" {
		t.Fatalf("dlq-replay-count = %q, want the letter's 1 when the header is absent", v)
	}
}

func TestRecordNilKeyAndEmptyValue(t *testing.T) {
	orig := kafka.Message{Topic: "t", Key: nil, Value: []byte{}, Time: origTime}
	got := Record(orig, Letter{Reason: ReasonInvalid}, "g", failTime)
	if got.Key != nil {
		t.Errorf("key = %q, want nil (a null key stays null)", got.Key)
	}
	if got.Value == nil || len(got.Value) != 0 {
		t.Errorf("value = %#v, want empty non-nil", got.Value)
	}
}

func TestParseErrors(t *testing.T) {
	good := Record(origMessage(), Letter{Reason: ReasonRejected, Code: 50001, Info: "x", Attempts: 1, FromAccount: "alice"}, "g", failTime)
	set := func(key, value string) kafka.Message {
		m := good
		m.Headers = append([]kafka.Header(nil), good.Headers...)
		for i := range m.Headers {
			if m.Headers[i].Key == key {
				m.Headers[i].Value = []byte(value)
			}
		}
		return m
	}
	drop := func(key string) kafka.Message {
		m := good
		m.Headers = nil
		for _, h := range good.Headers {
			if h.Key != key {
				m.Headers = append(m.Headers, h)
			}
		}
		return m
	}
	cases := []struct {
		name   string
		m      kafka.Message
		header string
	}{
		{"no headers at all", kafka.Message{Key: []byte("k"), Value: []byte("v")}, HeaderReason},
		{"only original headers", origMessage(), HeaderReason},
		{"missing reason", drop(HeaderReason), HeaderReason},
		{"unknown reason", set(HeaderReason, "lost"), HeaderReason},
		{"missing topic", drop(HeaderOriginalTopic), HeaderOriginalTopic},
		{"bad partition", set(HeaderOriginalPartition, "seven"), HeaderOriginalPartition},
		{"negative offset", set(HeaderOriginalOffset, "-3"), HeaderOriginalOffset},
		{"bad timestamp", set(HeaderOriginalTimestamp, "yesterday"), HeaderOriginalTimestamp},
		{"bad code", set(HeaderErrorCode, "5e4"), HeaderErrorCode},
		{"missing info", drop(HeaderErrorInfo), HeaderErrorInfo},
		{"bad attempts", set(HeaderAttempts, ""), HeaderAttempts},
		{"bad failed-at", set(HeaderFailedAt, "2026-11-29 10:00"), HeaderFailedAt},
		{"missing group", drop(HeaderConsumerGroup), HeaderConsumerGroup},
		{"bad replay count", set(HeaderReplayCount, "-1"), HeaderReplayCount},
		{"account not UTF-8", set(HeaderFromAccount, "\xff"), HeaderFromAccount},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.m.Partition, tc.m.Offset = 3, 99
			_, err := Parse(tc.m)
			if !errors.Is(err, ErrNotDLQRecord) {
				t.Fatalf("Parse error %v, want ErrNotDLQRecord", err)
			}
			var he *HeaderError
			if !errors.As(err, &he) || he.Header != tc.header || he.Partition != 3 || he.Offset != 99 {
				t.Fatalf("Parse error %#v, want a HeaderError for %s at 3/99", err, tc.header)
			}
			if !strings.Contains(err.Error(), "partition 3 offset 99") {
				t.Errorf("error %q does not say which record", err)
			}
		})
	}
	bad := set(HeaderResult, "{")
	bad.Headers = append(bad.Headers, kafka.Header{Key: HeaderResult, Value: []byte("{not json")})
	if _, err := Parse(bad); !errors.Is(err, ErrNotDLQRecord) {
		t.Errorf("malformed dlq-result: err %v, want ErrNotDLQRecord", err)
	}
}

// An original header that shares a dlq-* name (say the record came from another tool's DLQ) is
// kept as an original header, not mistaken for ours.
func TestParseKeepsOriginalDLQNamedHeaders(t *testing.T) {
	orig := origMessage()
	orig.Headers = append(orig.Headers, kafka.Header{Key: HeaderEventID, Value: []byte("theirs")})
	m := Record(orig, Letter{Reason: ReasonInvalid}, "g", failTime) // no event id known
	e, err := Parse(m)
	if err != nil {
		t.Fatal(err)
	}
	if e.EventID != "" {
		t.Errorf("EventID = %q, want empty: the original's header is not ours", e.EventID)
	}
	sameHeaders(t, e.Headers, orig.Headers)
}

func TestReplayMessage(t *testing.T) {
	orig := origMessage()
	orig.Headers = append(orig.Headers,
		kafka.Header{Key: event.HeaderReplayCount, Value: []byte("1")},
		kafka.Header{Key: event.HeaderReplayOf, Value: []byte("old/0/1")})
	d := Record(orig, Letter{Reason: ReasonPartial, Code: 51008}, "g", failTime)
	d.Partition, d.Offset = 2, 17
	e, err := Parse(d)
	if err != nil {
		t.Fatal(err)
	}
	r := ReplayMessage(e, "chat.contact-groups.dlq")
	if !bytes.Equal(r.Key, orig.Key) || !bytes.Equal(r.Value, orig.Value) {
		t.Fatal("replay changed key or value")
	}
	want := append(append([]kafka.Header(nil), origMessage().Headers...),
		kafka.Header{Key: event.HeaderReplayCount, Value: []byte("2")},
		kafka.Header{Key: event.HeaderReplayOf, Value: []byte("chat.contact-groups.dlq/2/17")})
	sameHeaders(t, r.Headers, want)
}

func FuzzParse(f *testing.F) {
	good := Record(origMessage(), Letter{Reason: ReasonPartial, Code: 51008, Info: "x", Result: []byte(`{}`)}, "g", failTime)
	f.Add("dlq-reason", "partial", "dlq-error-code", "51008")
	f.Add("dlq-original-offset", "-1", "x", "y")
	f.Add("dlq-failed-at", "2026-13-01T00:00:00Z", "dlq-result", "{")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		m := good
		m.Headers = append(append([]kafka.Header(nil), good.Headers...),
			kafka.Header{Key: k1, Value: []byte(v1)}, kafka.Header{Key: k2, Value: []byte(v2)})
		e, err := Parse(m)
		if err != nil {
			if !errors.Is(err, ErrNotDLQRecord) {
				t.Fatalf("error %v does not match ErrNotDLQRecord", err)
			}
			return
		}
		if !ValidReason(e.Reason) || e.Attempts < 0 || e.ReplayCount < 0 || e.OriginalOffset < 0 {
			t.Fatalf("Parse accepted a bad entry: %+v", e)
		}
		// Whatever Parse accepts must survive a replay and a second dead letter.
		again := Record(kafka.Message{Topic: "t", Key: e.Key, Value: e.Value, Headers: ReplayMessage(e, "d").Headers}, Letter{Reason: e.Reason}, "g", failTime)
		if _, err := Parse(again); err != nil {
			t.Fatalf("re-dead-lettered record does not parse: %v", err)
		}
	})
}

func ExampleRecord() {
	orig := kafka.Message{
		Topic: "chat.contact-groups", Partition: 3, Offset: 1207,
		Time: time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC),
		Key:  []byte("alice"), Value: []byte(`{"event_id":"e-1"}`),
	}
	l := Letter{Reason: ReasonRejected, Code: 51010, Info: "alice already has 20 conversation groups",
		Attempts: 1, EventID: "e-1", FromAccount: "alice"}
	m := Record(orig, l, "chatgroupd", time.Date(2026, 11, 29, 10, 0, 1, 0, time.UTC))
	for _, h := range m.Headers {
		fmt.Printf("%s: %s\n", h.Key, h.Value)
	}
	// Output:
	// dlq-original-topic: chat.contact-groups
	// dlq-original-partition: 3
	// dlq-original-offset: 1207
	// dlq-original-timestamp: 2026-11-29T10:00:00Z
	// dlq-reason: rejected
	// dlq-error-code: 51010
	// dlq-error-info: alice already has 20 conversation groups
	// dlq-attempts: 1
	// dlq-failed-at: 2026-11-29T10:00:01Z
	// dlq-event-id: e-1
	// dlq-from-account: alice
	// dlq-consumer-group: chatgroupd
	// dlq-replay-count: 0
}
