package imsim

import (
	"bytes"
	"compress/zlib"
	"encoding/base64"
	"encoding/hex"
	"errors"
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
		want error
	}{
		{"at issue", time.Unix(kaTime, 0), kaKey, kaID, kaAppID, nil},
		{"at time+expire", last, kaKey, kaID, kaAppID, nil},
		{"one second later", last.Add(time.Second), kaKey, kaID, kaAppID, errSigExpired},
		{"wrong key", last, strings.Repeat("0", 64), kaID, kaAppID, errSigSignature},
		{"key decoded from hex", last, string(mustHex(t, kaKey)), kaID, kaAppID, errSigSignature},
		{"wrong identifier", last, kaKey, "admin", kaAppID, errSigIdentifier},
		{"wrong sdkappid", last, kaKey, kaID, kaAppID + 1, errSigAppID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := verifyUserSig(tt.key, tt.app, tt.id, kaFullSig, tt.now)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("verifyUserSig = %v, want %v", err, tt.want)
			}
			if err == nil && (u.identifier != kaID || !u.issued.Equal(time.Unix(kaTime, 0)) ||
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
		want error
	}{
		{"well formed", doc(`"TLS.ver":"2.0","TLS.expire":100,` + base), nil},
		{"empty", "", errSigMalformed},
		{"too long", strings.Repeat("A", maxUserSigBytes+1), errSigMalformed},
		{"not base64", "!!!", errSigMalformed},
		{"not zlib", base64.StdEncoding.EncodeToString([]byte("plain text")), errSigMalformed},
		{"truncated zlib", encodeSig(`{"TLS.ver":"2.0"}`)[:12], errSigMalformed},
		{"not json", encodeSig("TLS.ver=2.0"), errSigMalformed},
		{"wrong version", doc(`"TLS.ver":"1.0","TLS.expire":100,` + base), errSigMalformed},
		{"no expire", doc(`"TLS.ver":"2.0",` + base), errSigMalformed},
		{"no sig", doc(`"TLS.ver":"2.0","TLS.expire":100,"TLS.identifier":"xiaojun","TLS.sdkappid":1400000000,"TLS.time":1700000000`), errSigMalformed},
		{"string number", doc(`"TLS.ver":"2.0","TLS.expire":"100",` + base), errSigMalformed},
		{"expire overflows", doc(`"TLS.ver":"2.0","TLS.expire":9223372036854775807,` + base), errSigMalformed},
		{"inflates past the bound", encodeSig(`{"TLS.ver":"2.0","pad":"` + strings.Repeat("x", maxUserSigBytes) + `"}`), errSigMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := verifyUserSig(kaKey, kaAppID, kaID, tt.sig, now)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Errorf("verifyUserSig = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestSigAnswer(t *testing.T) {
	for _, tt := range []struct {
		err  error
		code int
	}{
		{errSigMalformed, 70003},
		{errSigExpired, 70001},
		{errSigIdentifier, 70013},
		{errSigAppID, 70014},
		{errSigSignature, 70009},
	} {
		if got := sigAnswer(tt.err).ErrorCode; got != tt.code {
			t.Errorf("sigAnswer(%v) = %d, want %d", tt.err, got, tt.code)
		}
	}
}
