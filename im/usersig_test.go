package im

import (
	"bytes"
	"compress/zlib"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

// Known answers for the UserSig algorithm described in docs/api-notes.md ("UserSig").
const (
	katKey      = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e"
	katAppID    = 1400000000
	katTime     = 1700000000
	katFullSig  = "eAEBrABT-3siVExTLnZlciI6IjIuMCIsIlRMUy5pZGVudGlmaWVyIjoieGlhb2p1biIsIlRMUy5zZGthcHBpZCI6MTQwMDAwMDAwMCwiVExTLmV4cGlyZSI6MTU1NTIwMDAsIlRMUy50aW1lIjoxNzAwMDAwMDAwLCJUTFMuc2lnIjoiTHZBN2QvSXc3Z1NzbnNrdlZ6QkRQT0NDRGJ1TkN3NEdId1RDMGJpcCtCND0ifQrfwzH8"
	katFullExp  = 15552000
	katFullID   = "xiaojun"
	katFullHMAC = "LvA7d/Iw7gSsnskvVzBDPOCCDbuNCw4GHwTC0bip+B4="
)

func decodeForTest(t *testing.T, sig string) sigDoc {
	t.Helper()
	z, err := base64.StdEncoding.DecodeString(sigUnescaper.Replace(sig))
	if err != nil {
		t.Fatal(err)
	}
	zr, err := zlib.NewReader(bytes.NewReader(z))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	var d sigDoc
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestUserSigKnownAnswers(t *testing.T) {
	tests := []struct {
		id     string
		expire time.Duration
		want   string
	}{
		{"xiaojun", 15552000 * time.Second, "LvA7d/Iw7gSsnskvVzBDPOCCDbuNCw4GHwTC0bip+B4="},
		{"admin", 86400 * time.Second, "4lUxqF/B+QS/FhzU388MWw47s2GIKgpTCF1WmWL/l5Y="},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			now := time.Unix(katTime, 0)
			sig, err := GenUserSig(katKey, katAppID, tt.id, now, tt.expire)
			if err != nil {
				t.Fatal(err)
			}
			d := decodeForTest(t, sig)
			if d.Sig != tt.want {
				t.Errorf("TLS.sig = %q, want %q", d.Sig, tt.want)
			}
			if d.Ver != "2.0" || d.Identifier != tt.id || d.SDKAppID != katAppID || d.Time != katTime || d.Expire != int64(tt.expire/time.Second) {
				t.Errorf("doc = %+v", d)
			}
			if err := VerifyUserSig(katKey, katAppID, tt.id, sig, now); err != nil {
				t.Errorf("verify own sig: %v", err)
			}
		})
	}
}

func TestUserSigCompleteVector(t *testing.T) {
	d := decodeForTest(t, katFullSig)
	if d.Sig != katFullHMAC || d.Identifier != katFullID || d.Expire != katFullExp {
		t.Fatalf("decoded %+v", d)
	}
	// Our generator emits the same document (only the compression level differs).
	sig, err := GenUserSig(katKey, katAppID, katFullID, time.Unix(katTime, 0), katFullExp*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := decodeForTest(t, sig); got != d {
		t.Errorf("generated doc %+v, vector %+v", got, d)
	}
	last := time.Unix(katTime+katFullExp, 0) // 1715552000, valid inclusive
	tests := []struct {
		name string
		now  time.Time
		key  string
		id   string
		app  int64
		want error
	}{
		{"at issue", time.Unix(katTime, 0), katKey, katFullID, katAppID, nil},
		{"at time+expire", last, katKey, katFullID, katAppID, nil},
		{"one second later", last.Add(time.Second), katKey, katFullID, katAppID, ErrSigExpired},
		{"wrong key", last, strings.Repeat("0", 64), katFullID, katAppID, ErrSigSignature},
		{"wrong identifier", last, katKey, "admin", katAppID, ErrSigIdentifier},
		{"wrong appid", last, katKey, katFullID, katAppID + 1, ErrSigAppID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := VerifyUserSig(tt.key, tt.app, tt.id, katFullSig, tt.now)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Errorf("VerifyUserSig = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestVerifyUserSigMalformed(t *testing.T) {
	now := time.Unix(katTime, 0)
	mk := func(doc string) string {
		var b bytes.Buffer
		zw := zlib.NewWriter(&b)
		zw.Write([]byte(doc))
		zw.Close()
		return sigEscaper.Replace(base64.StdEncoding.EncodeToString(b.Bytes()))
	}
	tests := map[string]string{
		"empty":          "",
		"truncated":      katFullSig[:len(katFullSig)/2],
		"cut last char":  katFullSig[:len(katFullSig)-1],
		"not base64":     "!!!!",
		"not zlib":       sigEscaper.Replace(base64.StdEncoding.EncodeToString([]byte("hello world"))),
		"not json":       mk("nope"),
		"wrong version":  mk(`{"TLS.ver":"1.0","TLS.identifier":"xiaojun","TLS.sdkappid":1400000000,"TLS.expire":10,"TLS.time":1700000000,"TLS.sig":"x"}`),
		"no sig":         mk(`{"TLS.ver":"2.0","TLS.identifier":"xiaojun","TLS.sdkappid":1400000000,"TLS.expire":10,"TLS.time":1700000000}`),
		"string numbers": mk(`{"TLS.ver":"2.0","TLS.identifier":"xiaojun","TLS.sdkappid":"1400000000","TLS.expire":10,"TLS.time":1700000000,"TLS.sig":"x"}`),
		"huge":           strings.Repeat("A", maxSigBytes+4),
		"overflow":       mk(`{"TLS.ver":"2.0","TLS.identifier":"xiaojun","TLS.sdkappid":1400000000,"TLS.expire":9223372036854775807,"TLS.time":1700000000,"TLS.sig":"x"}`),
	}
	for name, sig := range tests {
		t.Run(name, func(t *testing.T) {
			err := VerifyUserSig(katKey, katAppID, katFullID, sig, now)
			if !errors.Is(err, ErrSigMalformed) {
				t.Errorf("VerifyUserSig = %v, want ErrSigMalformed", err)
			}
		})
	}
}

func TestGenUserSigRejectsBadInput(t *testing.T) {
	now := time.Unix(katTime, 0)
	for _, tc := range []struct {
		key, id string
		exp     time.Duration
	}{{"", "a", time.Hour}, {"k", "", time.Hour}, {"k", "a", 0}} {
		if _, err := GenUserSig(tc.key, 1, tc.id, now, tc.exp); err == nil {
			t.Errorf("GenUserSig(%q,%q,%v) = nil error", tc.key, tc.id, tc.exp)
		}
	}
}

func FuzzVerifyUserSig(f *testing.F) {
	f.Add(katFullSig)
	f.Add(katFullSig[:40])
	f.Add("")
	f.Add("eAE_")
	f.Fuzz(func(t *testing.T, sig string) {
		err := VerifyUserSig(katKey, katAppID, katFullID, sig, time.Unix(katTime, 0))
		if err == nil {
			// Anything that verifies must decode to the right identity.
			d, derr := decodeUserSig(sig)
			if derr != nil || d.Identifier != katFullID || d.SDKAppID != katAppID {
				t.Fatalf("accepted %q: %+v %v", sig, d, derr)
			}
			return
		}
		n := 0
		for _, s := range []error{ErrSigMalformed, ErrSigExpired, ErrSigIdentifier, ErrSigAppID, ErrSigSignature} {
			if errors.Is(err, s) {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("error %v wraps %d sentinels", err, n)
		}
		if strings.Contains(err.Error(), sig) && len(sig) > 8 {
			t.Fatalf("error echoes the sig: %v", err)
		}
	})
}

func TestDecodeUserSig(t *testing.T) {
	info, err := DecodeUserSig(katFullSig)
	if err != nil {
		t.Fatal(err)
	}
	if info.Identifier != katFullID || info.SDKAppID != katAppID || info.Issued.Unix() != katTime ||
		info.Expires().Unix() != katTime+katFullExp {
		t.Errorf("info %+v", info)
	}
	if _, err := DecodeUserSig(katFullSig[:30]); !errors.Is(err, ErrSigMalformed) {
		t.Errorf("truncated: %v", err)
	}
}
