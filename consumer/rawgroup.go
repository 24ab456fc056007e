package consumer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
)

// kafka-go v0.4.51 decodes the Heartbeat and LeaveGroup answers of version 1 and later with
// the error code and the throttle time swapped (the wire has the throttle first). With no
// throttling, every refused heartbeat reads as accepted — a member never hears of a rebalance —
// and a LeaveGroup's top-level error is lost. Its Heartbeat request also lacks the group
// routing, so it reaches whichever broker is at hand rather than the coordinator. These two
// requests are therefore written and read here, in full, over kafka-go's transport (which still
// dials, authenticates and finds the coordinator): version 3, the first with group.instance.id.

// rawVersion is the version of both requests written here.
const rawVersion = 3

// groupRawReq is a Heartbeat or LeaveGroup request sent as raw bytes.
type groupRawReq struct {
	key   protocol.ApiKey
	group string
	body  []byte // the request body after the header, for rawVersion
	// version is what the broker agreed for key (set when the transport asks Required).
	version int16
}

// groupRawResp is the undecoded body of the answer.
type groupRawResp struct {
	key  protocol.ApiKey
	body []byte
}

var (
	_ protocol.GroupMessage = (*groupRawReq)(nil)
	_ protocol.RawExchanger = (*groupRawReq)(nil)
)

func (r *groupRawReq) ApiKey() protocol.ApiKey  { return r.key }
func (r *groupRawReq) Group() string            { return r.group }
func (r *groupRawResp) ApiKey() protocol.ApiKey { return r.key }

// Required implements protocol.RawExchanger: always, once the broker is known to speak rawVersion.
func (r *groupRawReq) Required(versions map[protocol.ApiKey]int16) bool {
	r.version = versions[r.key]
	return true
}

// errRawVersion: the broker does not speak the request version written here (Kafka < 2.3).
var errRawVersion = errors.New("broker too old for static membership requests")

// RawExchange implements protocol.RawExchanger: one request, one answer, on a connection the
// transport gives to this request alone.
func (r *groupRawReq) RawExchange(rw io.ReadWriter) (protocol.Message, error) {
	if r.version < rawVersion {
		return nil, fmt.Errorf("%w: api %d version %d", errRawVersion, r.key, r.version)
	}
	const correlation = 1
	msg := binary.BigEndian.AppendUint16(nil, uint16(r.key))
	msg = binary.BigEndian.AppendUint16(msg, rawVersion)
	msg = binary.BigEndian.AppendUint32(msg, correlation)
	msg = appendString(msg, "chatgroupd") // client id
	msg = append(msg, r.body...)
	frame := binary.BigEndian.AppendUint32(nil, uint32(len(msg)))
	if _, err := rw.Write(append(frame, msg...)); err != nil {
		return nil, fmt.Errorf("write: %w", err)
	}
	if f, ok := rw.(interface{ Flush() error }); ok {
		if err := f.Flush(); err != nil {
			return nil, fmt.Errorf("write: %w", err)
		}
	}
	var size [4]byte
	if _, err := io.ReadFull(rw, size[:]); err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	n := binary.BigEndian.Uint32(size[:])
	if n < 4 || n > 1<<20 {
		return nil, fmt.Errorf("read: answer of %d bytes", n)
	}
	resp := make([]byte, n)
	if _, err := io.ReadFull(rw, resp); err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if id := binary.BigEndian.Uint32(resp); id != correlation {
		return nil, fmt.Errorf("read: correlation id %d, want %d", id, correlation)
	}
	return &groupRawResp{key: r.key, body: resp[4:]}, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// appendNullable writes s, or null for "".
func appendNullable(b []byte, s string) []byte {
	if s == "" {
		return binary.BigEndian.AppendUint16(b, 0xffff)
	}
	return appendString(b, s)
}

// rawReader reads the fields of an answer, remembering the first short read.
type rawReader struct {
	b   []byte
	err error
}

func (r *rawReader) int16() int16 {
	if r.err != nil || len(r.b) < 2 {
		r.err = cmpErr(r.err, io.ErrUnexpectedEOF)
		return 0
	}
	v := int16(binary.BigEndian.Uint16(r.b))
	r.b = r.b[2:]
	return v
}

func (r *rawReader) int32() int32 {
	if r.err != nil || len(r.b) < 4 {
		r.err = cmpErr(r.err, io.ErrUnexpectedEOF)
		return 0
	}
	v := int32(binary.BigEndian.Uint32(r.b))
	r.b = r.b[4:]
	return v
}

func (r *rawReader) string() string {
	n := r.int16()
	if r.err != nil || n < 0 {
		return ""
	}
	if len(r.b) < int(n) {
		r.err = io.ErrUnexpectedEOF
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// kafkaErr is nil for code 0, else the kafka.Error (errors.Is works against kafka's codes).
func kafkaErr(code int16) error {
	if code == 0 {
		return nil
	}
	return kafka.Error(code)
}

// sendHeartbeat sends a Heartbeat v3 and returns the coordinator's error (nil: accepted).
func sendHeartbeat(ctx context.Context, rt kafka.RoundTripper, addr net.Addr, group string, gen int32, memberID, instanceID string) error {
	body := appendString(nil, group)
	body = binary.BigEndian.AppendUint32(body, uint32(gen))
	body = appendString(body, memberID)
	body = appendNullable(body, instanceID)
	m, err := rt.RoundTrip(ctx, addr, &groupRawReq{key: protocol.Heartbeat, group: group, body: body})
	if err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	resp, ok := m.(*groupRawResp)
	if !ok {
		return fmt.Errorf("heartbeat: unexpected answer %T", m)
	}
	return decodeHeartbeat(resp.body)
}

// decodeHeartbeat reads a Heartbeat v1–3 answer: throttle time, then error code.
func decodeHeartbeat(b []byte) error {
	r := &rawReader{b: b}
	r.int32()
	code := r.int16()
	if r.err != nil {
		return fmt.Errorf("heartbeat: answer: %w", r.err)
	}
	return kafkaErr(code)
}

// sendLeave sends a LeaveGroup v3 for one member (by member id and instance id) and returns
// the coordinator's error, the group's or the member's.
func sendLeave(ctx context.Context, rt kafka.RoundTripper, addr net.Addr, group, memberID, instanceID string) error {
	body := appendString(nil, group)
	body = binary.BigEndian.AppendUint32(body, 1)
	body = appendString(body, memberID)
	body = appendNullable(body, instanceID)
	m, err := rt.RoundTrip(ctx, addr, &groupRawReq{key: protocol.LeaveGroup, group: group, body: body})
	if err != nil {
		return fmt.Errorf("leave group: %w", err)
	}
	resp, ok := m.(*groupRawResp)
	if !ok {
		return fmt.Errorf("leave group: unexpected answer %T", m)
	}
	return decodeLeave(resp.body)
}

// decodeLeave reads a LeaveGroup v3 answer: throttle time, error code, then per member its id,
// instance id and error code.
func decodeLeave(b []byte) error {
	r := &rawReader{b: b}
	r.int32()
	code := r.int16()
	n := r.int32()
	var errs []error
	if err := kafkaErr(code); err != nil {
		errs = append(errs, err)
	}
	for i := int32(0); i < n && r.err == nil; i++ {
		id := r.string()
		inst := r.string()
		if err := kafkaErr(r.int16()); err != nil && r.err == nil {
			errs = append(errs, fmt.Errorf("member %q (instance %q): %w", id, inst, err))
		}
	}
	if r.err != nil {
		return fmt.Errorf("leave group: answer: %w", r.err)
	}
	return errors.Join(errs...)
}
