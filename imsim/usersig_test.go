package imsim

import (
	"bytes"
	"compress/zlib"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"
	"time"
)

// The known answers of docs/api-notes.md ("UserSig"), stated here again rather than taken from
// im's tests, so the simulator's verifier is checked against the documentation alone.
const (
	kaKey     = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e"
	kaAppID   = 1400000000
	kaTime    = 1700000000
	kaExpire  = 15552000
	kaID      = "xiaojun"
	kaFullSig = "eAEBrABT-3siVExTLnZlciI6IjIuMCIsIlRMUy5pZGVudGlmaWVyIjoieGlhb2p1biIsIlRMUy5zZGthcHBpZCI6MTQwMDAwMDAwMCwiVExTLmV4cGlyZSI6MTU1NTIwMDAsIlRMUy50aW1lIjoxNzAwMDAwMDAwLCJUTFMuc2lnIjoiTHZBN2QvSXc3Z1NzbnNrdlZ6QkRQT0NDRGJ1TkN3NEdId1RDMGJpcCtCND0ifQrfwzH8"
)

func TestUserSigHMACKnownAnswers(t *testing.T) {
	for _, tt := range []struct {
		id     string
		expire int64
		want   string
	}{
		{"xiaojun", 15552000, "LvA7d/Iw7gSsnskvVzBDPOCCDbuNCw4GHwTC0bip+B4="},
		{"admin", 86400, "4lUxqF/B+QS/FhzU388MWw47s2GIKgpTCF1WmWL/l5Y="},
	} {
		if got := userSigHMAC(kaKey, tt.id, kaAppID, kaTime, tt.expire); got != tt.want {
			t.Errorf("TLS.sig for %s = %q, want %q", tt.id, got, tt.want)
		}
	}
}

func TestVerifyUserSigKnownAnswers(t *testing.T) {
	last := time.Unix(kaTime+kaExpire, 0) // valid up to and including this second
	tests := []struct {
		name string
		now  time.Time
		key  string
		id   string
		app  int64
		want int
	}{
		{"at issue", time.Unix(kaTime, 0), kaKey, kaID, kaAppID, 0},
		{"at time+expire", last, kaKey, kaID, kaAppID, 0},
		{"one second later", last.Add(time.Second), kaKey, kaID, kaAppID, 70001},
		{"wrong key", last, strings.Repeat("0", 64), kaID, kaAppID, 70009},
		{"key decoded from hex", last, string(mustHex(t, kaKey)), kaID, kaAppID, 70009},
		{"wrong identifier", last, kaKey, "admin", kaAppID, 70013},
		{"wrong sdkappid", last, kaKey, kaID, kaAppID + 1, 70014},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, refused := verifyUserSig(tt.key, tt.app, tt.id, kaFullSig, tt.now)
			if got := answerCode(refused); got != tt.want {
				t.Fatalf("verifyUserSig answers %d, want %d", got, tt.want)
			}
			if refused == nil && (u.identifier != kaID || !u.issued.Equal(time.Unix(kaTime, 0)) ||
				u.expire != kaExpire*time.Second || !u.expires().Equal(last)) {
				t.Errorf("verified %+v", u)
			}
		})
	}
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// encodeSig wraps a JSON document the way a UserSig does: zlib, base64, URL-safe alphabet.
func encodeSig(doc string) string {
	var b bytes.Buffer
	zw := zlib.NewWriter(&b)
	zw.Write([]byte(doc))
	zw.Close()
	return strings.NewReplacer("+", "*", "/", "-", "=", "_").Replace(base64.StdEncoding.EncodeToString(b.Bytes()))
}

func TestVerifyUserSigMalformed(t *testing.T) {
	now := time.Unix(kaTime, 0)
	good := userSigHMAC(kaKey, kaID, kaAppID, kaTime, 100)
	doc := func(fields string) string { return encodeSig("{" + fields + "}") }
	base := `"TLS.identifier":"xiaojun","TLS.sdkappid":1400000000,"TLS.time":1700000000,"TLS.sig":"` + good + `"`
	tests := []struct {
		name string
		sig  string
		want int
	}{
		{"well formed", doc(`"TLS.ver":"2.0","TLS.expire":100,` + base), 0},
		{"empty", "", 70003},
		{"too long", strings.Repeat("A", maxUserSigBytes+1), 70003},
		{"not base64", "!!!", 70003},
		{"not zlib", base64.StdEncoding.EncodeToString([]byte("plain text")), 70003},
		{"truncated zlib", encodeSig(`{"TLS.ver":"2.0"}`)[:12], 70003},
		{"not json", encodeSig("TLS.ver=2.0"), 70003},
		{"wrong version", doc(`"TLS.ver":"1.0","TLS.expire":100,` + base), 70003},
		{"no expire", doc(`"TLS.ver":"2.0",` + base), 70003},
		{"no sig", doc(`"TLS.ver":"2.0","TLS.expire":100,"TLS.identifier":"xiaojun","TLS.sdkappid":1400000000,"TLS.time":1700000000`), 70003},
		{"string number", doc(`"TLS.ver":"2.0","TLS.expire":"100",` + base), 70003},
		{"expire overflows", doc(`"TLS.ver":"2.0","TLS.expire":9223372036854775807,` + base), 70003},
		{"inflates past the bound", encodeSig(`{"TLS.ver":"2.0","pad":"` + strings.Repeat("x", maxUserSigBytes) + `"}`), 70003},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, refused := verifyUserSig(kaKey, kaAppID, kaID, tt.sig, now)
			if got := answerCode(refused); got != tt.want {
				t.Errorf("verifyUserSig answers %d, want %d", got, tt.want)
			}
		})
	}
}

// answerCode is the code of a refusal, 0 for none.
func answerCode(r *response) int {
	if r == nil {
		return 0
	}
	return r.ErrorCode
}
