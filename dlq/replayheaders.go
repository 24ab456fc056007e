package dlq

import (
	"strconv"
	"strings"

	"github.com/segmentio/kafka-go"

	"github.com/chatgroupd/chatgroupd/event"
)

// MaxReplayCount caps the replay-count header chatgroupd trusts; dlq replay refuses to go past
// --max-replays long before.
const MaxReplayCount = 1000

// ReplayCount is the replay-count of an event-topic record, the one value both the consumer's
// dedupe and Record's dlq-replay-count use. It is trusted only as dlq replay writes it: exactly one
// replay-count header, a decimal in 1..MaxReplayCount, alongside exactly one replay-of header
// naming a DLQ record ("<topic>/<partition>/<offset>"). Anything else (a producer's own
// replay-count, two of them, a huge number) counts as an original record: 0, so it can neither
// dodge dedupe nor --max-replays.
func ReplayCount(hs []kafka.Header) int {
	var count, of []byte
	nc, no := 0, 0
	for _, h := range hs {
		switch h.Key {
		case event.HeaderReplayCount:
			count, nc = h.Value, nc+1
		case event.HeaderReplayOf:
			of, no = h.Value, no+1
		}
	}
	if nc != 1 || no != 1 || len(count) > 4 || !validCoordinate(string(of)) {
		return 0
	}
	n, err := strconv.Atoi(string(count))
	if err != nil || n < 1 || n > MaxReplayCount || strconv.Itoa(n) != string(count) {
		return 0
	}
	return n
}

// validCoordinate reports whether s has the form Coordinate writes.
func validCoordinate(s string) bool {
	rest, off, ok := cutLast(s)
	if !ok {
		return false
	}
	topic, part, ok := cutLast(rest)
	if !ok || topic == "" || len(topic) > 249 {
		return false
	}
	p, err1 := strconv.ParseInt(part, 10, 32)
	o, err2 := strconv.ParseInt(off, 10, 64)
	return err1 == nil && err2 == nil && p >= 0 && o >= 0
}

func cutLast(s string) (before, after string, ok bool) {
	i := strings.LastIndexByte(s, '/')
	if i < 0 {
		return "", "", false
	}
	return s[:i], s[i+1:], true
}

// Coordinate names the DLQ record as "<dlq-topic>/<partition>/<offset>", the form of the
// replay-of header and the replay ledger key.
func Coordinate(dlqTopic string, partition int, offset int64) string {
	return dlqTopic + "/" + strconv.Itoa(partition) + "/" + strconv.FormatInt(offset, 10)
}

// ReplayMessage is the record Replay produces to the main topic for e: the original key, value and
// headers, with replay-count set to e.ReplayCount+1 and replay-of naming the DLQ record.
func ReplayMessage(e *Entry, dlqTopic string) kafka.Message {
	hs := make([]kafka.Header, 0, len(e.Headers)+2)
	for _, h := range e.Headers {
		if h.Key == event.HeaderReplayCount || h.Key == event.HeaderReplayOf {
			continue
		}
		hs = append(hs, kafka.Header{Key: h.Key, Value: cloneBytes(h.Value)})
	}
	hs = append(hs,
		kafka.Header{Key: event.HeaderReplayCount, Value: []byte(strconv.Itoa(e.ReplayCount + 1))},
		kafka.Header{Key: event.HeaderReplayOf, Value: []byte(Coordinate(dlqTopic, e.Partition, e.Offset))},
	)
	return kafka.Message{Key: cloneBytes(e.Key), Value: cloneBytes(e.Value), Headers: hs}
}
