package imsim

import (
	"bytes"
	"compress/zlib"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// The simulator checks UserSigs ("TLS sig v2", docs/api-notes.md "UserSig") with its own code
// rather than im's, so that a mistake in the client's signer is not mirrored by the server that
// tests it: TestClientSigsVerifyInSimulator holds the two against each other, and
// TestVerifyUserSigKnownAnswers holds this one against the documented vectors.

// The ways a UserSig fails verification; verifyUserSig wraps exactly one, and authLocked
// answers each with its own code.
var (
	errSigMalformed  = errors.New("usersig malformed")           // 70003
	errSigExpired    = errors.New("usersig expired")             // 70001
	errSigIdentifier = errors.New("usersig identifier mismatch") // 70013
	errSigAppID      = errors.New("usersig sdkappid mismatch")   // 70014
	errSigSignature  = errors.New("usersig signature mismatch")  // 70009
)

// maxUserSigBytes bounds what is decoded and inflated, so hostile input stays cheap.
const maxUserSigBytes = 8 << 10

// sigUnescaper undoes the URL-safe alphabet: '*', '-' and '_' stand for '+', '/' and '='.
var sigUnescaper = strings.NewReplacer("*", "+", "-", "/", "_", "=")

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

// userSigHMAC is TLS.sig: the standard base64 of HMAC-SHA256 over the four TLS.* lines, keyed
// with the secret key's characters as written.
func userSigHMAC(key, identifier string, sdkappid, unix, expire int64) string {
	content := "TLS.identifier:" + identifier + "\n" +
		"TLS.sdkappid:" + strconv.FormatInt(sdkappid, 10) + "\n" +
		"TLS.time:" + strconv.FormatInt(unix, 10) + "\n" +
		"TLS.expire:" + strconv.FormatInt(expire, 10) + "\n"
	h := hmac.New(sha256.New, []byte(key))
	h.Write([]byte(content))
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// verifyUserSig checks sig for sdkappid and identifier at now and returns what it says. After
// decoding, the checks run in the order a server reports them: expiry, identifier, sdkappid,
// and the signature last (a sig for another identifier is reported as such whatever its key).
func verifyUserSig(key string, sdkappid int64, identifier, sig string, now time.Time) (userSig, error) {
	doc, err := decodeUserSigDoc(sig)
	if err != nil {
		return userSig{}, err
	}
	switch end := doc.Time + doc.Expire; {
	case end < doc.Time: // overflow: nonsense numbers
		return userSig{}, fmt.Errorf("imsim usersig: %w: expire out of range", errSigMalformed)
	case now.Unix() > end:
		return userSig{}, fmt.Errorf("imsim usersig: %w at %d", errSigExpired, end)
	case doc.Identifier != identifier:
		return userSig{}, fmt.Errorf("imsim usersig: %w", errSigIdentifier)
	case doc.SDKAppID != sdkappid:
		return userSig{}, fmt.Errorf("imsim usersig: %w", errSigAppID)
	}
	want := userSigHMAC(key, doc.Identifier, doc.SDKAppID, doc.Time, doc.Expire)
	if !hmac.Equal([]byte(want), []byte(doc.Sig)) {
		return userSig{}, fmt.Errorf("imsim usersig: %w", errSigSignature)
	}
	return userSig{identifier: doc.Identifier, issued: time.Unix(doc.Time, 0),
		expire: time.Duration(doc.Expire) * time.Second}, nil
}

// decodeUserSigDoc undoes the URL-safe base64 and zlib layers and parses the document.
func decodeUserSigDoc(sig string) (*userSigDoc, error) {
	if sig == "" || len(sig) > maxUserSigBytes {
		return nil, fmt.Errorf("imsim usersig: %w: length %d", errSigMalformed, len(sig))
	}
	z, err := base64.StdEncoding.DecodeString(sigUnescaper.Replace(sig))
	if err != nil {
		return nil, fmt.Errorf("imsim usersig: %w: base64", errSigMalformed)
	}
	zr, err := zlib.NewReader(bytes.NewReader(z))
	if err != nil {
		return nil, fmt.Errorf("imsim usersig: %w: zlib header", errSigMalformed)
	}
	raw, err := io.ReadAll(io.LimitReader(zr, maxUserSigBytes+1))
	if err != nil {
		return nil, fmt.Errorf("imsim usersig: %w: zlib data", errSigMalformed)
	}
	if len(raw) > maxUserSigBytes {
		return nil, fmt.Errorf("imsim usersig: %w: too large", errSigMalformed)
	}
	var doc userSigDoc
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("imsim usersig: %w: json", errSigMalformed)
	}
	if doc.Ver != "2.0" || doc.Identifier == "" || doc.Sig == "" || doc.Time <= 0 || doc.Expire <= 0 {
		return nil, fmt.Errorf("imsim usersig: %w: missing or invalid fields", errSigMalformed)
	}
	return &doc, nil
}

// sigAnswer is the answer to a sig verifyUserSig refused with err.
func sigAnswer(err error) *response {
	switch {
	case errors.Is(err, errSigMalformed):
		return fail(codeSigMalformed, "usersig is invalid")
	case errors.Is(err, errSigExpired):
		return fail(codeSigExpired, "usersig expired")
	case errors.Is(err, errSigIdentifier):
		return fail(codeSigIdentifier, "identifier does not match the usersig")
	case errors.Is(err, errSigAppID):
		return fail(codeSigAppID, "sdkappid does not match the usersig")
	default:
		return fail(codeSigKey, "usersig verification failed")
	}
}
