package dlq

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

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
			name: "network exhaustion",
			l:    Letter{Reason: ReasonExhausted, Code: CodeNetwork, Info: "connection refused", Attempts: 3},
			want: map[string]string{HeaderErrorCode: "network"},
		},
		{
			name: "timeout exhaustion",
			l:    Letter{Reason: ReasonExhausted, Code: CodeTimeout, Info: "deadline exceeded", Attempts: 3},
			want: map[string]string{HeaderErrorCode: "timeout"},
		},
		{
			name: "http status",
			l:    Letter{Reason: ReasonExhausted, Code: 503, Info: "im create: http 503", Attempts: 3},
			want: map[string]string{HeaderErrorCode: "503"},
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
	orig.Headers = append(orig.Headers, kafka.Header{Key: event.HeaderReplayCount, Value: []byte("2")},
		kafka.Header{Key: event.HeaderReplayOf, Value: []byte("chat.contact-groups.dlq/3/17")})
	got := Record(orig, Letter{Reason: ReasonRejected, ReplayCount: 0}, "g", failTime)
	if v := header(t, got.Headers, HeaderReplayCount); v != "2" {
		t.Fatalf("dlq-replay-count = %q, want the record's replay-count 2", v)
	}
	got = Record(origMessage(), Letter{Reason: ReasonRejected, ReplayCount: 1}, "g", failTime)
	if v := header(t, got.Headers, HeaderReplayCount); v != "1" {
		t.Fatalf("dlq-replay-count = %q, want the letter's 1 when the header is absent", v)
	}
}

// TestReplayCountTrust: replay-count is believed only as dlq replay writes it. A producer's own
// header, a second value, a missing or malformed replay-of, or a number past the cap is an
// original record (0), both for the consumer's dedupe and for dlq-replay-count, which read it
// through the same function.
func TestReplayCountTrust(t *testing.T) {
	rc := func(v string) kafka.Header { return kafka.Header{Key: event.HeaderReplayCount, Value: []byte(v)} }
	of := func(v string) kafka.Header { return kafka.Header{Key: event.HeaderReplayOf, Value: []byte(v)} }
	const c = "ev.dlq/0/5"
	for _, tc := range []struct {
		name string
		hs   []kafka.Header
		want int
	}{
		{"replay", []kafka.Header{rc("2"), of(c)}, 2},
		{"replay-of first", []kafka.Header{of(c), rc("1")}, 1},
		{"none", nil, 0},
		{"count without replay-of", []kafka.Header{rc("5")}, 0},
		{"two counts, first trusted before", []kafka.Header{rc("1"), rc("9"), of(c)}, 0},
		{"two replay-of", []kafka.Header{rc("1"), of(c), of(c)}, 0},
		{"malformed replay-of", []kafka.Header{rc("1"), of("nonsense")}, 0},
		{"negative partition", []kafka.Header{rc("1"), of("t/-1/5")}, 0},
		{"over the cap", []kafka.Header{rc("1001"), of(c)}, 0},
		{"at the cap", []kafka.Header{rc("1000"), of(c)}, 1000},
		{"huge", []kafka.Header{rc("99999999999999999999"), of(c)}, 0},
		{"leading zero", []kafka.Header{rc("01"), of(c)}, 0},
		{"plus sign", []kafka.Header{rc("+1"), of(c)}, 0},
		{"zero", []kafka.Header{rc("0"), of(c)}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ReplayCount(tc.hs); got != tc.want {
				t.Errorf("ReplayCount = %d, want %d", got, tc.want)
			}
			orig := origMessage()
			orig.Headers = tc.hs
			m := Record(orig, Letter{Reason: ReasonInvalid, ReplayCount: ReplayCount(tc.hs)}, "g", failTime)
			if v := header(t, m.Headers, HeaderReplayCount); v != strconv.Itoa(tc.want) {
				t.Errorf("dlq-replay-count %s, want %d", v, tc.want)
			}
		})
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

// encodedSize is the size of m as one record of a Kafka v2 record batch (offset and timestamp
// deltas 0, as for the only record of a batch): what the broker's max.message.bytes counts,
// less the fixed 61-byte batch header.
func encodedSize(m kafka.Message) int {
	vs := func(n int) int { return len(binary.AppendVarint(nil, int64(n))) }
	bytesField := func(b []byte) int {
		if b == nil {
			return vs(-1)
		}
		return vs(len(b)) + len(b)
	}
	body := 1 + vs(0) + vs(0) + bytesField(m.Key) + bytesField(m.Value) + vs(len(m.Headers))
	for _, h := range m.Headers {
		body += vs(len(h.Key)) + len(h.Key) + bytesField(h.Value)
	}
	return vs(body) + body
}

// TestRecordOverheadBound builds the largest letter Record can make (every bounded header at its
// bound, the widest numbers) and checks what it adds to the record against MaxAddedBytes, the
// margin docs/dlq.md asks the DLQ topic's max.message.bytes to have over the event topic's.
func TestRecordOverheadBound(t *testing.T) {
	big := strings.Repeat("x", 1<<20)
	orig := kafka.Message{
		Topic: strings.Repeat("t", 249), Partition: 1<<31 - 1, Offset: 1<<63 - 1,
		Time: time.Date(-9999, 1, 1, 0, 0, 0, 999_999_999, time.UTC),
		Key:  []byte("alice"), Value: []byte(`{}`),
		// replay headers: their presence must not change the bound.
		Headers: []kafka.Header{{Key: event.HeaderReplayCount, Value: []byte("1000")}, {Key: event.HeaderReplayOf, Value: []byte("d/0/1")}},
	}
	result := []byte(`"` + strings.Repeat("r", MaxResultBytes-2) + `"`) // the largest kept as is
	l := Letter{Reason: big, Code: -1 << 63, Info: big, Attempts: 1<<63 - 1, EventID: big, FromAccount: big,
		ReplayCount: 1 << 62, Result: result}
	m := Record(orig, l, big, time.Date(-9999, 12, 31, 23, 59, 59, 999_999_999, time.FixedZone("", -(23*3600+59*60))))
	added := encodedSize(m) - encodedSize(orig)
	t.Logf("worst-case bytes a dead letter adds to its record: %d (bound %d)", added, MaxAddedBytes)
	if added > MaxAddedBytes {
		t.Fatalf("a letter adds %d bytes, over MaxAddedBytes %d", added, MaxAddedBytes)
	}
	for _, h := range m.Headers {
		if len(h.Value) > MaxResultBytes {
			t.Errorf("header %s is %d bytes", h.Key, len(h.Value))
		}
	}
	if v := header(t, m.Headers, HeaderErrorInfo); len(v) > MaxInfoBytes || !utf8.ValidString(v) {
		t.Errorf("dlq-error-info is %d bytes", len(v))
	}
	typical := origMessage()
	tl := Record(typical, Letter{Reason: ReasonInvalid, Info: "invalid event: group_name: 33 bytes, at most 32 allowed"}, "chatgroupd", failTime)
	pl := Record(typical, Letter{Reason: ReasonPartial, Code: 51008, Attempts: 2, EventID: "6f1c2a9e-0c55-4a1e-9b7e-2f3f8c1d4e77", FromAccount: "alice",
		Info:   `group "g" exists but 1 of 2 conversations failed: first code 51008: contact count exceeds the limit`,
		Result: []byte(`{"GroupName":"g","GroupId":12,"Failed":[{"Type":1,"To_Account":"bob","ResultCode":51008,"ResultInfo":"contact count exceeds the limit"}]}`)}, "chatgroupd", failTime)
	t.Logf("typical letters add %d (invalid) and %d (partial) bytes", encodedSize(tl)-encodedSize(typical), encodedSize(pl)-encodedSize(typical))
	if _, err := Parse(m); err == nil {
		t.Error("a letter with a 1 MiB reason parsed") // reason is not one of the four: sanity of the test input
	}
}

// TestRecordBoundsServerText: API text (ErrorInfo, per-conversation ResultInfo) up to the 4 MiB
// response cap can't make a letter's headers unbounded; dlq-result stays valid JSON.
func TestRecordBoundsServerText(t *testing.T) {
	huge := strings.Repeat("é", 2<<20) // 4 MiB of two-byte runes: cuts must respect rune boundaries
	failed := make([]map[string]any, 100)
	for i := range failed {
		failed[i] = map[string]any{"Type": 1, "To_Account": "bob" + strconv.Itoa(i), "ResultCode": 51008, "ResultInfo": huge[:4000]}
	}
	shortenable, _ := json.Marshal(map[string]any{"GroupName": "g", "GroupId": 7, "Failed": failed})
	many := make([]map[string]any, 3000)
	for i := range many {
		many[i] = map[string]any{"Type": 1, "To_Account": "bob" + strconv.Itoa(i), "ResultCode": 51008, "ResultInfo": "x"}
	}
	tooMany, _ := json.Marshal(map[string]any{"Failed": many})
	for name, res := range map[string][]byte{"long texts": shortenable, "many items": tooMany, "not JSON": []byte(huge)} {
		t.Run(name, func(t *testing.T) {
			m := Record(origMessage(), Letter{Reason: ReasonPartial, Code: 51008, Info: huge, Result: res}, "g", failTime)
			info := header(t, m.Headers, HeaderErrorInfo)
			if len(info) > MaxInfoBytes || !utf8.ValidString(info) || !strings.HasSuffix(info, "…") {
				t.Errorf("dlq-error-info %d bytes, valid UTF-8 %v", len(info), utf8.ValidString(info))
			}
			r := header(t, m.Headers, HeaderResult)
			if len(r) > MaxResultBytes || !json.Valid([]byte(r)) {
				t.Fatalf("dlq-result %d bytes, valid JSON %v", len(r), json.Valid([]byte(r)))
			}
			if name == "long texts" && !strings.Contains(r, `"GroupId":7`) {
				t.Errorf("shortening lost the structure: %.200s", r)
			}
			if _, err := Parse(m); err != nil {
				t.Fatalf("Parse: %v", err)
			}
		})
	}
}

// TestRecordTruncated: the letter written when the DLQ topic refuses the full one keeps the
// original coordinates and says what it left out.
func TestRecordTruncated(t *testing.T) {
	orig := origMessage()
	orig.Key = []byte(strings.Repeat("k", 300))
	l := Letter{Reason: ReasonPartial, Code: 51008, Info: "x", EventID: "e-1", FromAccount: "alice", Result: []byte(`{"Failed":[]}`)}
	for _, tc := range []struct {
		k          keep
		want       []string
		key, heads bool
	}{
		{dropValue, []string{"value " + strconv.Itoa(len(orig.Value)) + " bytes"}, true, true},
		{dropAll, []string{"value ", "headers 3 (", "key 300 bytes", "dlq-result 13 bytes"}, false, false},
	} {
		m := record(orig, l, "g", failTime, tc.k)
		m.Partition, m.Offset = 0, 9
		e, err := Parse(m)
		if err != nil {
			t.Fatalf("keep %d: Parse: %v", tc.k, err)
		}
		if e.Value != nil || e.OriginalTopic != orig.Topic || e.OriginalPartition != 7 || e.OriginalOffset != 4242 || e.EventID != "e-1" {
			t.Errorf("keep %d: entry %+v", tc.k, e)
		}
		for _, w := range tc.want {
			if !strings.Contains(e.Truncated, w) {
				t.Errorf("keep %d: dlq-truncated %q lacks %q", tc.k, e.Truncated, w)
			}
		}
		if (e.Key != nil) != tc.key || (len(e.Headers) > 0) != tc.heads {
			t.Errorf("keep %d: key %v headers %d", tc.k, e.Key != nil, len(e.Headers))
		}
	}
	if e, _ := Parse(Record(orig, l, "g", failTime)); e.Truncated != "" {
		t.Errorf("a full letter says truncated: %q", e.Truncated)
	}
}

// FuzzDeadLetterRecord runs whole Kafka records (key, value, headers) through what the consumer
// does with an invalid one: event.Parse, then the dead letter. No panic; the letter is at most
// MaxAddedBytes larger than the record, parses back with the original key, value and headers,
// and its dlq-replay-count is the trusted one.
func FuzzDeadLetterRecord(f *testing.F) {
	f.Add([]byte("alice"), []byte(`{"event_id":"e","event_type":"contact_group.created","from_account":"alice","group_name":"g","contacts":[{"type":1,"to_account":"b"}],"seq":"`+strings.Repeat("A", 64<<10)+`"}`), "replay-count", []byte("3"), "replay-of", []byte("d/0/1"))
	f.Add([]byte(nil), []byte{}, "x", []byte{0, 0xff}, "replay-count", []byte("999999"))
	f.Add([]byte("k"), []byte(`{"from_account":"a","FROM_ACCOUNT":"b"}`), "dlq-reason", []byte("invalid"), "dlq-original-topic", []byte("t"))
	f.Fuzz(func(t *testing.T, key, value []byte, hk1 string, hv1 []byte, hk2 string, hv2 []byte) {
		orig := kafka.Message{Topic: "ev", Partition: 1, Offset: 2, Time: origTime, Key: key, Value: value,
			Headers: []kafka.Header{{Key: hk1, Value: hv1}, {Key: hk2, Value: hv2}}}
		ev, err := event.Parse(value)
		l := Letter{Reason: ReasonInvalid, ReplayCount: ReplayCount(orig.Headers)}
		if err != nil {
			l.Info = err.Error()
		} else {
			l.Reason, l.Code, l.Info, l.EventID, l.FromAccount = ReasonExhausted, CodeTimeout, "t", ev.EventID, ev.FromAccount
		}
		m := Record(orig, l, "g", failTime)
		if added := encodedSize(m) - encodedSize(orig); added > MaxAddedBytes {
			t.Fatalf("letter adds %d bytes", added)
		}
		m.Partition, m.Offset = 0, 0
		e, err := Parse(m)
		if err != nil {
			t.Fatalf("letter does not parse: %v", err)
		}
		if !bytes.Equal(e.Key, key) || !bytes.Equal(e.Value, value) || len(e.Headers) != 2 || e.Info != bound(l.Info, MaxInfoBytes) {
			t.Fatalf("letter changed the record: %+v", e)
		}
		if e.ReplayCount != l.ReplayCount || e.ReplayCount > MaxReplayCount {
			t.Fatalf("dlq-replay-count %d, trusted %d", e.ReplayCount, l.ReplayCount)
		}
	})
}
