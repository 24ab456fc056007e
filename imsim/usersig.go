package imsim

import (
	"bytes"
	"compress/zlib"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"strconv"
	"strings"
	"time"
)

// The simulator checks UserSigs ("TLS sig v2", docs/api-notes.md "UserSig") with its own code
// rather than im's, so that a mistake in the client's signer is not mirrored by the server that
// tests it: TestClientSigsVerifyInSimulator holds the two against each other, and
// TestVerifyUserSigKnownAnswers holds this one against the documented vectors.

// maxUserSigBytes bounds what is decoded and inflated, so hostile input stays cheap.
const maxUserSigBytes = 8 << 10

// userSigDoc is the JSON document inside a UserSig.
type userSigDoc struct {
	Ver        string `json:"TLS.ver"`
	Identifier string `json:"TLS.identifier"`
	SDKAppID   int64  `json:"TLS.sdkappid"`
	Expire     int64  `json:"TLS.expire"`
	Time       int64  `json:"TLS.time"`
	Sig        string `json:"TLS.sig"`
}

// userSig is what a verified UserSig says about itself, as the simulator caches it.
type userSig struct {
	identifier string
	issued     time.Time
	expire     time.Duration
}

// expires is the last instant the sig is valid (inclusive).
func (u userSig) expires() time.Time { return u.issued.Add(u.expire) }

// userSigHMAC is TLS.sig: the standard base64 of HMAC-SHA256 over the lines "TLS.<name>:<value>"
// for identifier, sdkappid, time and expire in that order, each ending in a newline, keyed with
// the secret key's characters as written (a hex key is not decoded).
func userSigHMAC(key, identifier string, sdkappid, unix, expire int64) string {
	h := hmac.New(sha256.New, []byte(key))
	for _, line := range [...][2]string{
		{"identifier", identifier},
		{"sdkappid", strconv.FormatInt(sdkappid, 10)},
		{"time", strconv.FormatInt(unix, 10)},
		{"expire", strconv.FormatInt(expire, 10)},
	} {
		io.WriteString(h, "TLS."+line[0]+":"+line[1]+"\n")
	}
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// verifyUserSig checks sig for sdkappid and identifier at now: what it says, or the answer that
// refuses it. After decoding, the checks run in the order a server reports them: expiry,
// identifier, sdkappid, and the signature last (a sig for another identifier is reported as
// such whatever its key).
func verifyUserSig(key string, sdkappid int64, identifier, sig string, now time.Time) (userSig, *response) {
	doc := decodeUserSigDoc(sig)
	if doc == nil {
		return userSig{}, fail(codeSigMalformed, "usersig is invalid")
	}
	switch end := doc.Time + doc.Expire; {
	case end < doc.Time: // overflow: nonsense numbers
		return userSig{}, fail(codeSigMalformed, "usersig is invalid")
	case now.Unix() > end:
		return userSig{}, fail(codeSigExpired, "usersig expired")
	case doc.Identifier != identifier:
		return userSig{}, fail(codeSigIdentifier, "identifier does not match the usersig")
	case doc.SDKAppID != sdkappid:
		return userSig{}, fail(codeSigAppID, "sdkappid does not match the usersig")
	}
	want := userSigHMAC(key, doc.Identifier, doc.SDKAppID, doc.Time, doc.Expire)
	if !hmac.Equal([]byte(want), []byte(doc.Sig)) {
		return userSig{}, fail(codeSigKey, "usersig verification failed")
	}
	return userSig{identifier: doc.Identifier, issued: time.Unix(doc.Time, 0),
		expire: time.Duration(doc.Expire) * time.Second}, nil
}

// decodeUserSigDoc returns the document inside sig, nil when there is none or it lacks a field.
func decodeUserSigDoc(sig string) *userSigDoc {
	raw := unwrapUserSig(sig)
	if raw == nil {
		return nil
	}
	var doc userSigDoc
	if json.Unmarshal(raw, &doc) != nil ||
		doc.Ver != "2.0" || doc.Identifier == "" || doc.Sig == "" || doc.Time <= 0 || doc.Expire <= 0 {
		return nil
	}
	return &doc
}

// unwrapUserSig undoes the last step of signing, the zlib stream in URL-safe base64 ('*', '-'
// and '_' for '+', '/' and '='), and returns the JSON inside; nil when there is none. Both the
// sig and what it inflates to are bounded by maxUserSigBytes.
func unwrapUserSig(sig string) []byte {
	if sig == "" || len(sig) > maxUserSigBytes {
		return nil
	}
	std := strings.NewReplacer("*", "+", "-", "/", "_", "=").Replace(sig)
	z, err := base64.StdEncoding.DecodeString(std)
	if err != nil {
		return nil
	}
	zr, err := zlib.NewReader(bytes.NewReader(z))
	if err != nil {
		return nil
	}
	raw, err := io.ReadAll(io.LimitReader(zr, maxUserSigBytes+1))
	if err != nil || len(raw) > maxUserSigBytes {
		return nil
	}
	return raw
}
