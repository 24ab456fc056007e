package consumer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
)

func TestDecodeHeartbeat(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"accepted", []byte{0, 0, 0, 0, 0, 0}, nil},
		// The throttle comes first: a throttled refusal must still read as a refusal.
		{"rebalance while throttled", []byte{0, 0, 0x01, 0xf4, 0, 27}, kafka.RebalanceInProgress},
		{"fenced", []byte{0, 0, 0, 0, 0, 82}, kafka.FencedInstanceID},
		{"short", []byte{0, 0, 0, 0, 0}, io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := decodeHeartbeat(tc.in)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("decodeHeartbeat(%x) = %v, want %v", tc.in, err, tc.want)
			}
		})
	}
}

func leaveAnswer(code int16, members ...struct {
	id, inst string
	code     int16
}) []byte {
	b := binary.BigEndian.AppendUint32(nil, 100) // throttled
	b = binary.BigEndian.AppendUint16(b, uint16(code))
	b = binary.BigEndian.AppendUint32(b, uint32(len(members)))
	for _, m := range members {
		b = appendString(b, m.id)
		b = appendNullable(b, m.inst)
		b = binary.BigEndian.AppendUint16(b, uint16(m.code))
	}
	return b
}

func TestDecodeLeave(t *testing.T) {
	type mem = struct {
		id, inst string
		code     int16
	}
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"left", leaveAnswer(0, mem{"m1", "pod-0", 0}), nil},
		{"left, no instance", leaveAnswer(0, mem{"m1", "", 0}), nil},
		{"group error", leaveAnswer(15), kafka.GroupCoordinatorNotAvailable},
		{"member unknown", leaveAnswer(0, mem{"m1", "pod-0", 25}), kafka.UnknownMemberId},
		{"member fenced", leaveAnswer(0, mem{"m1", "pod-0", 82}), kafka.FencedInstanceID},
		{"truncated member", leaveAnswer(0, mem{"m1", "pod-0", 0})[:12], io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := decodeLeave(tc.in)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("decodeLeave(%x) = %v, want %v", tc.in, err, tc.want)
			}
		})
	}
}

// FuzzDecodeGroupAnswers: broker answers are outside input; the decoders must not panic.
func FuzzDecodeGroupAnswers(f *testing.F) {
	f.Add(leaveAnswer(0, struct {
		id, inst string
		code     int16
	}{"m", "i", 0}))
	f.Add([]byte{0, 0, 0, 0, 0, 27})
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = decodeHeartbeat(b)
		_ = decodeLeave(b)
	})
}

// rwBuf is a connection: writes go to out, reads come from in.
type rwBuf struct {
	in  *bytes.Reader
	out bytes.Buffer
}

func (r *rwBuf) Read(p []byte) (int, error)  { return r.in.Read(p) }
func (r *rwBuf) Write(p []byte) (int, error) { return r.out.Write(p) }

// TestRawExchangeFraming checks the request frame (size, api key, version 3, correlation id,
// client id, body) and the answer's framing errors.
func TestRawExchangeFraming(t *testing.T) {
	answer := func(corr uint32, body []byte) []byte {
		b := binary.BigEndian.AppendUint32(nil, uint32(4+len(body)))
		b = binary.BigEndian.AppendUint32(b, corr)
		return append(b, body...)
	}
	req := &groupRawReq{key: protocol.Heartbeat, group: "g", body: []byte{9, 9}}
	if !req.Required(map[protocol.ApiKey]int16{protocol.Heartbeat: 4}) {
		t.Fatal("not required")
	}
	conn := &rwBuf{in: bytes.NewReader(answer(1, []byte{0, 0, 0, 0, 0, 27}))}
	m, err := req.RawExchange(conn)
	if err != nil {
		t.Fatal(err)
	}
	if err := decodeHeartbeat(m.(*groupRawResp).body); !errors.Is(err, kafka.RebalanceInProgress) {
		t.Fatalf("answer read as %v", err)
	}
	want := []byte{0, 0, 0, 22, 0, 12, 0, 3, 0, 0, 0, 1, 0, 10}
	want = append(want, "chatgroupd"...)
	want = append(want, 9, 9)
	if !bytes.Equal(conn.out.Bytes(), want) {
		t.Fatalf("request frame %x, want %x", conn.out.Bytes(), want)
	}
	for _, tc := range []struct {
		name    string
		in      []byte
		version int16
	}{
		{"old broker", answer(1, nil), 2},
		{"wrong correlation", answer(7, []byte{0, 0, 0, 0, 0, 0}), 3},
		{"short frame", []byte{0, 0, 0, 2, 0, 0}, 3},
		{"truncated", answer(1, []byte{0, 0, 0, 0, 0, 0})[:8], 3},
		{"empty", nil, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &groupRawReq{key: protocol.Heartbeat, group: "g"}
			r.Required(map[protocol.ApiKey]int16{protocol.Heartbeat: tc.version})
			if _, err := r.RawExchange(&rwBuf{in: bytes.NewReader(tc.in)}); err == nil {
				t.Fatal("no error")
			}
		})
	}
}
