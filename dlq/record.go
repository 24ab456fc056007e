package dlq

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/segmentio/kafka-go"
)

// isOurHeader reports whether k is a header Record appends; Parse strips exactly these from the tail of
// a record to recover the original headers.
func isOurHeader(k string) bool {
	switch k {
	case HeaderOriginalPartitionCount:
		return true
	case HeaderOriginalTopic, HeaderOriginalPartition, HeaderOriginalOffset, HeaderOriginalTimestamp,
		HeaderReason, HeaderErrorCode, HeaderErrorInfo, HeaderAttempts, HeaderFailedAt, HeaderEventID,
		HeaderFromAccount, HeaderConsumerGroup, HeaderReplayCount, HeaderResult, HeaderTruncated:
		return true
	}
	return false
}

// ourHeaderCount is how many headers Record appends at most.
const ourHeaderCount = 15

// timeFormat is RFC 3339 with the sub-second digits Kafka timestamps carry (milliseconds), so the
// original timestamp survives the round trip.
const timeFormat = time.RFC3339Nano

// Record builds the dead-letter record for orig: key, value and headers copied byte for byte, then
// the dlq-* headers of docs/dlq.md, each bounded (dlq-error-info to MaxInfoBytes, dlq-result to
// MaxResultBytes), so the letter is at most MaxAddedBytes larger than orig. dlq-replay-count is
// ReplayCount(orig.Headers) when that trusts one, else l.ReplayCount. The returned message has
// no Topic: the writer that sends it names the DLQ topic.
func Record(orig kafka.Message, l Letter, group string, failedAt time.Time) kafka.Message {
	return record(orig, l, group, failedAt, keepAll)
}

// What a letter keeps of the original record.
type keep int

const (
	keepAll   keep = iota // the whole record
	dropValue             // the value left out
	dropAll               // value, headers, dlq-result and a key over maxIDBytes left out
)

func record(orig kafka.Message, l Letter, group string, failedAt time.Time, k keep) kafka.Message {
	replayCount := ReplayCount(orig.Headers)
	if replayCount == 0 {
		replayCount = min(max(l.ReplayCount, 0), MaxReplayCount)
	}
	key, value := cloneBytes(orig.Key), cloneBytes(orig.Value)
	result := boundResult(l.Result)
	var origHeaders []kafka.Header
	var dropped []string
	if k >= dropValue && orig.Value != nil {
		value = nil
		dropped = append(dropped, "value "+strconv.Itoa(len(orig.Value))+" bytes")
	}
	if k == dropAll {
		if len(orig.Headers) > 0 {
			n := 0
			for _, h := range orig.Headers {
				n += len(h.Key) + len(h.Value)
			}
			dropped = append(dropped, "headers "+strconv.Itoa(len(orig.Headers))+" ("+strconv.Itoa(n)+" bytes)")
		}
		if len(key) > maxIDBytes {
			dropped = append(dropped, "key "+strconv.Itoa(len(key))+" bytes")
			key = nil
		}
		if len(result) > 0 {
			dropped = append(dropped, "dlq-result "+strconv.Itoa(len(result))+" bytes")
			result = nil
		}
	} else {
		origHeaders = orig.Headers
	}
	hs := make([]kafka.Header, 0, len(origHeaders)+ourHeaderCount)
	for _, h := range origHeaders {
		hs = append(hs, kafka.Header{Key: h.Key, Value: cloneBytes(h.Value)})
	}
	hs = appendLetterHeaders(hs, orig, l, group, failedAt, replayCount)
	if len(result) > 0 {
		hs = append(hs, kafka.Header{Key: HeaderResult, Value: result})
	}
	if len(dropped) > 0 {
		hs = append(hs, kafka.Header{Key: HeaderTruncated,
			Value: []byte("the DLQ topic refused the full letter as too large; left out: " + strings.Join(dropped, ", "))})
	}
	return kafka.Message{Key: key, Value: value, Headers: hs}
}

// appendLetterHeaders appends the dlq-* headers from dlq-original-topic to dlq-replay-count, each
// bounded, in the order Parse's splitHeaders expects (dlq-original-topic first).
func appendLetterHeaders(hs []kafka.Header, orig kafka.Message, l Letter, group string, failedAt time.Time, replayCount int) []kafka.Header {
	add := func(k, v string) { hs = append(hs, kafka.Header{Key: k, Value: []byte(v)}) }
	add(HeaderOriginalTopic, bound(orig.Topic, maxIDBytes))
	add(HeaderOriginalPartition, strconv.Itoa(orig.Partition))
	if l.OriginalPartitions > 0 {
		add(HeaderOriginalPartitionCount, strconv.Itoa(l.OriginalPartitions))
	}
	add(HeaderOriginalOffset, strconv.FormatInt(orig.Offset, 10))
	add(HeaderOriginalTimestamp, bound(orig.Time.UTC().Format(timeFormat), maxTimeBytes))
	add(HeaderReason, bound(l.Reason, 16))
	add(HeaderErrorCode, FormatCode(l.Code))
	add(HeaderErrorInfo, bound(l.Info, MaxInfoBytes))
	add(HeaderAttempts, strconv.Itoa(max(l.Attempts, 0)))
	add(HeaderFailedAt, bound(failedAt.UTC().Format(timeFormat), maxTimeBytes))
	if l.EventID != "" {
		add(HeaderEventID, bound(l.EventID, maxIDBytes))
	}
	if l.FromAccount != "" {
		add(HeaderFromAccount, bound(l.FromAccount, maxIDBytes))
	}
	add(HeaderConsumerGroup, bound(group, maxIDBytes))
	add(HeaderReplayCount, strconv.Itoa(replayCount))
	return hs
}

// bound cuts s to at most n bytes on a rune boundary, ending a cut string with "…".
func bound(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "…"
	cut := n - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}

// boundResult keeps dlq-result valid JSON within MaxResultBytes: first every string in it (the
// API's ResultInfo texts, ids) is cut to 64 bytes; if that is not enough, a small object says
// how large it was.
func boundResult(r []byte) []byte {
	if len(r) <= MaxResultBytes {
		return cloneBytes(r)
	}
	var v any
	if json.Unmarshal(r, &v) == nil {
		if b, err := json.Marshal(shortenStrings(v, 64)); err == nil && len(b) <= MaxResultBytes {
			return b
		}
	}
	b, _ := json.Marshal(map[string]any{"dlq_result_dropped": "over the " + strconv.Itoa(MaxResultBytes) + "-byte bound", "bytes": len(r)})
	return b
}

func shortenStrings(v any, n int) any {
	switch x := v.(type) {
	case string:
		return bound(x, n)
	case []any:
		for i := range x {
			x[i] = shortenStrings(x[i], n)
		}
	case map[string]any:
		for k, e := range x {
			x[k] = shortenStrings(e, n)
		}
	}
	return v
}

// cloneBytes copies b, keeping nil distinct from empty: Kafka tells a null key from an empty one.
func cloneBytes(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append(make([]byte, 0, len(b)), b...)
}
