package kafkaconn

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chatgroupd/chatgroupd/internal/configtest"
)

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.pem")
	if err := os.WriteFile(bad, []byte("not a cert"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // substring; "" means success
	}{
		{"plain ok", Config{Brokers: []string{"127.0.0.1:9092"}}, ""},
		{"no brokers", Config{}, "no brokers"},
		{"bad broker", Config{Brokers: []string{"localhost"}}, "not host:port"},
		{"unknown sasl", Config{Brokers: []string{"a:1"}, SASLMechanism: "gssapi"}, "unknown sasl mechanism"},
		{"sasl without user", Config{Brokers: []string{"a:1"}, SASLMechanism: SASLPlain}, "needs a username"},
		{"scram ok", Config{Brokers: []string{"a:1"}, SASLMechanism: SASLScramSHA512, SASLUsername: "u", SASLPassword: "p"}, ""},
		{"cert without key", Config{Brokers: []string{"a:1"}, TLS: true, TLSCertFile: "c"}, "both cert and key"},
		{"tls file without tls", Config{Brokers: []string{"a:1"}, TLSCAFile: "x"}, "without --kafka-tls"},
		{"ca not pem", Config{Brokers: []string{"a:1"}, TLS: true, TLSCAFile: bad}, "no PEM certificate"},
		{"ca missing", Config{Brokers: []string{"a:1"}, TLS: true, TLSCAFile: filepath.Join(dir, "nope")}, "no such file"},
	}
	t.Run("every problem joined", func(t *testing.T) {
		err := Config{Brokers: []string{"a", "b:1", " "}, SASLMechanism: SASLPlain, TLSCertFile: "c"}.Validate()
		configtest.Problems(t, err, `brokers: broker "a" is not host:port`, `brokers: broker " " is not host:port`,
			"sasl username: sasl plain needs a username", "tls cert file, tls key file:", "tls: tls files or insecure-skip-verify given without --kafka-tls")
		configtest.Problems(t, Config{SASLMechanism: "gssapi"}.Validate(), "brokers: no brokers", `sasl mechanism: unknown sasl mechanism "gssapi"`)
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.cfg)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				if c.Dialer == nil || c.Transport == nil || c.Client() == nil {
					t.Fatal("stacks not built")
				}
				if (tt.cfg.SASLMechanism != "") != (c.Dialer.SASLMechanism != nil) || (c.Dialer.SASLMechanism != nil) != (c.Transport.SASL != nil) {
					t.Fatal("dialer and transport disagree on SASL")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.wantErr)
			}
		})
	}
}

func TestTLSBothStacks(t *testing.T) {
	c, err := New(Config{Brokers: []string{"a:1"}, TLS: true, TLSInsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	if c.Dialer.TLS == nil || c.Transport.TLS == nil || !c.Transport.TLS.InsecureSkipVerify {
		t.Fatal("TLS must be configured on both the dialer and the transport")
	}
}
