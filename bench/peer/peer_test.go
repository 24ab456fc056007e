package peer

import (
	"io"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
)

func TestParseFlags(t *testing.T) {
	env := map[string]string{"CHATGROUPD_SECRET_KEY": "k", "CHATGROUPD_TOPIC": "from-env", "CHATGROUPD_RATE_LIMIT": "50"}
	getenv := func(k string) string { return env[k] }
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr bool
		check   func(t *testing.T, c Config)
	}{
		{"flags and env", []string{"--brokers", "127.0.0.1:1,127.0.0.1:2", "--im-endpoint", "http://127.0.0.1:3", "--sdkappid", "7", "--rate-limit", "100", "--metrics-addr", "127.0.0.1:0"}, false,
			func(t *testing.T, c Config) {
				if len(c.Brokers) != 2 || c.Topic != "from-env" || c.RateLimit != 100 || c.DLQTopic != "from-env.dlq" || c.SecretKey != "k" {
					t.Fatalf("config %+v", c)
				}
			}},
		{"env fills unset flags", []string{"--brokers", "b", "--im-endpoint", "http://x", "--sdkappid", "7"}, false,
			func(t *testing.T, c Config) {
				if c.RateLimit != 50 {
					t.Fatalf("rate limit %v, want 50 from the environment", c.RateLimit)
				}
			}},
		{"missing required", []string{"--topic", "t"}, true, nil},
		{"unknown flag", []string{"--brokers", "b", "--im-endpoint", "http://x", "--sdkappid", "7", "--reorder-window", "1s"}, true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _, err := ParseFlags("p", tc.args, getenv, io.Discard)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if tc.check != nil {
				tc.check(t, c)
			}
		})
	}
}

func TestBackoffFor(t *testing.T) {
	c := Config{Backoff: 100 * time.Millisecond, MaxBackoff: time.Second}
	for n, want := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 30: time.Second} {
		if got := c.BackoffFor(n); got != want {
			t.Errorf("BackoffFor(%d) = %v, want %v", n, got, want)
		}
	}
}

func TestCreateRequestAndRetryable(t *testing.T) {
	ev := &event.Event{FromAccount: "a", GroupName: "g", Contacts: []event.Contact{{Type: 1, ToAccount: "b"}, {Type: 2, ToGroupID: "@TGS#1"}}}
	r := CreateRequest(ev)
	if r.FromAccount != "a" || len(r.GroupContactItem) != 1 || r.GroupContactItem[0].GroupName != "g" ||
		r.GroupContactItem[0].ContactItem[1] != (im.ContactItem{Type: 2, ToGroupID: "@TGS#1"}) {
		t.Fatalf("request %+v", r)
	}
	for class, want := range map[im.Class]bool{im.ClassTransient: true, im.ClassRateLimited: true, im.ClassPermanent: false, im.ClassConfig: false} {
		if got := Retryable(&im.Error{Class: class}); got != want {
			t.Errorf("Retryable(%v) = %v, want %v", class, got, want)
		}
	}
}
