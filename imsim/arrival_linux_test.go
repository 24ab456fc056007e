//go:build linux

package imsim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/im"
)

// A connection of the arrival listener reports when the kernel received the bytes, not when
// the server read them: a reader that gets round to them late still sees the early time.
func TestArrivalListenerStampsReceiveTime(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	aln := newArrivalListener(ln)
	defer aln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := aln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	ac, ok := server.(*arrivalConn)
	if !ok {
		t.Fatalf("accepted %T, want *arrivalConn", server)
	}
	if !ac.arrived().IsZero() {
		t.Fatal("arrival time before anything was read")
	}
	// Stamping is switched on for the whole stack a little after the first socket asks for it;
	// a segment received before that carries no stamp (arrived stays zero, the handler's start
	// counts). Write until one is stamped.
	var at, before, wrote, read time.Time
	const lateRead = 300 * time.Millisecond // the server is "starved" this long
	buf := make([]byte, 16)
	for i := 0; i < 10 && at.IsZero(); i++ {
		before = time.Now()
		if _, err := client.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		wrote = time.Now()
		time.Sleep(lateRead)
		n, err := server.Read(buf)
		read = time.Now()
		if err != nil || string(buf[:n]) != "hello" {
			t.Fatalf("read %q, %v", buf[:n], err)
		}
		at = ac.arrived()
	}
	if at.IsZero() {
		t.Fatal("no kernel receive stamp in 10 segments")
	}
	// The kernel stamps the segment while the client's write runs (loopback); the bound after
	// the write is loose so that a slow scheduler can't fail it, and still far from the read.
	if at.Before(before.Add(-time.Millisecond)) || at.After(wrote.Add(lateRead/3)) {
		t.Errorf("arrived %v, want between the write's start %v and shortly after its end %v (read at %v)",
			at.Format("15:04:05.000000"), before.Format("15:04:05.000000"), wrote.Format("15:04:05.000000"), read.Format("15:04:05.000000"))
	}
	// Deadlines still apply to the recvmsg reads (the HTTP server's timeouts rest on them).
	if err := server.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if _, err := server.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read past its deadline: %v, want a deadline error", err)
	}
	if err := server.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	client.Close()
	if n, err := server.Read(buf); n != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("read after the client closed: %d, %v; want 0, EOF", n, err)
	}
}

// Serve with the call log on records each call's arrival, no later than its handler's start.
func TestServeLogsArrival(t *testing.T) {
	sim, err := New(Config{SDKAppID: testAppID, SecretKey: testKey, Seed: 1, CallLog: true})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sim.Serve(ctx, ln, nil) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	sig, err := im.GenUserSig(testKey, testAppID, DefaultAdmin, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	q := url.Values{"sdkappid": {fmt.Sprint(testAppID)}, "identifier": {DefaultAdmin}, "usersig": {sig},
		"random": {"1"}, "contenttype": {"json"}}
	for range 2 { // the second on a kept-alive connection
		b, _ := json.Marshal(im.GetRequest{FromAccount: "bob"})
		resp, err := http.Post("http://"+ln.Addr().String()+im.PathGetContactGroup+"?"+q.Encode(), "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	calls := sim.Calls()
	if len(calls) != 2 {
		t.Fatalf("%d calls logged, want 2", len(calls))
	}
	for i, c := range calls {
		if c.Arrived.IsZero() || c.Arrived.After(c.Start) || c.Start.Sub(c.Arrived) > 5*time.Second {
			t.Errorf("call %d: arrived %v, started %v: want an arrival shortly before the start", i, c.Arrived, c.Start)
		}
	}
	if !calls[1].Arrived.After(calls[0].Arrived) {
		t.Errorf("second call's arrival %v not after the first's %v: stale stamp of a kept-alive connection", calls[1].Arrived, calls[0].Arrived)
	}
}
