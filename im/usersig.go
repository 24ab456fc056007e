package im

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

// Sentinel UserSig verification failures. VerifyUserSig wraps exactly one of them, so a server
// (the simulator) can answer each with its own IM code via errors.Is.
var (
	// ErrSigMalformed: not base64url-ish, not zlib, not JSON, wrong version or missing fields.
	ErrSigMalformed = errors.New("usersig malformed")
	// ErrSigExpired: now is after TLS.time + TLS.expire.
	ErrSigExpired = errors.New("usersig expired")
	// ErrSigIdentifier: the sig was made for another identifier.
	ErrSigIdentifier = errors.New("usersig identifier mismatch")
	// ErrSigAppID: the sig was made for another SDKAppID.
	ErrSigAppID = errors.New("usersig sdkappid mismatch")
	// ErrSigSignature: the HMAC does not match (another key, or tampered content).
	ErrSigSignature = errors.New("usersig signature mismatch")
)

// maxSigBytes bounds what VerifyUserSig decodes and inflates, so hostile input stays cheap.
const maxSigBytes = 8 << 10

// sigEscaper maps standard base64 to the URL-safe alphabet TLS sig v2 uses.
var sigEscaper = strings.NewReplacer("+", "*", "/", "-", "=", "_")
var sigUnescaper = strings.NewReplacer("*", "+", "-", "/", "_", "=")

// sigDoc is the JSON document inside a v2 UserSig; field order matches the reference
// implementation.
type sigDoc struct {
	Ver        string `json:"TLS.ver"`
	Identifier string `json:"TLS.identifier"`
	SDKAppID   int64  `json:"TLS.sdkappid"`
	Expire     int64  `json:"TLS.expire"`
	Time       int64  `json:"TLS.time"`
	Sig        string `json:"TLS.sig"`
}

// sigHMAC is base64(HMAC-SHA256(key, content)); the key is used as written (a hex string is not
// decoded), which is what the reference implementation does.
func sigHMAC(key string, identifier string, sdkappid, unix, expire int64) string {
	content := "TLS.identifier:" + identifier + "\n" +
		"TLS.sdkappid:" + strconv.FormatInt(sdkappid, 10) + "\n" +
		"TLS.time:" + strconv.FormatInt(unix, 10) + "\n" +
		"TLS.expire:" + strconv.FormatInt(expire, 10) + "\n"
	h := hmac.New(sha256.New, []byte(key))
	h.Write([]byte(content))
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// GenUserSig returns a TLS sig v2 UserSig for identifier, valid from now for expire (whole
// seconds; valid up to and including now+expire).
func GenUserSig(key string, sdkappid int64, identifier string, now time.Time, expire time.Duration) (string, error) {
	switch {
	case key == "":
		return "", errors.New("usersig: empty key")
	case identifier == "":
		return "", errors.New("usersig: empty identifier")
	case expire < time.Second:
		return "", fmt.Errorf("usersig: expire %v below one second", expire)
	}
	secs := int64(expire / time.Second)
	unix := now.Unix()
	doc := sigDoc{
		Ver:        "2.0",
		Identifier: identifier,
		SDKAppID:   sdkappid,
		Expire:     secs,
		Time:       unix,
		Sig:        sigHMAC(key, identifier, sdkappid, unix, secs),
	}
	raw, err := json.Marshal(doc)
	if err != nil {
		return "", fmt.Errorf("usersig: %w", err)
	}
	var b bytes.Buffer
	zw, err := zlib.NewWriterLevel(&b, zlib.BestCompression)
	if err != nil {
		return "", fmt.Errorf("usersig: %w", err)
	}
	zw.Write(raw) // a bytes.Buffer cannot fail
	if err := zw.Close(); err != nil {
		return "", fmt.Errorf("usersig: %w", err)
	}
	return sigEscaper.Replace(base64.StdEncoding.EncodeToString(b.Bytes())), nil
}

// VerifyUserSig checks sig for sdkappid and identifier at now. The error wraps one of
// ErrSigMalformed, ErrSigExpired, ErrSigIdentifier, ErrSigAppID, ErrSigSignature. The checks run
// in that order after decoding, matching how a server reports them: the signature is checked
// last, so a sig for another identifier is reported as such even with the wrong key.
func VerifyUserSig(key string, sdkappid int64, identifier, sig string, now time.Time) error {
	doc, err := decodeUserSig(sig)
	if err != nil {
		return err
	}
	if doc.Time+doc.Expire < doc.Time { // overflow: nonsense numbers
		return fmt.Errorf("verify: %w: expire out of range", ErrSigMalformed)
	}
	if now.Unix() > doc.Time+doc.Expire {
		return fmt.Errorf("verify: %w at %d", ErrSigExpired, doc.Time+doc.Expire)
	}
	if doc.Identifier != identifier {
		return fmt.Errorf("verify: %w", ErrSigIdentifier)
	}
	if doc.SDKAppID != sdkappid {
		return fmt.Errorf("verify: %w", ErrSigAppID)
	}
	want := sigHMAC(key, doc.Identifier, doc.SDKAppID, doc.Time, doc.Expire)
	if !hmac.Equal([]byte(want), []byte(doc.Sig)) {
		return fmt.Errorf("verify: %w", ErrSigSignature)
	}
	return nil
}

// decodeUserSig undoes the URL-safe base64 and zlib layers and parses the document.
func decodeUserSig(sig string) (*sigDoc, error) {
	if sig == "" || len(sig) > maxSigBytes {
		return nil, fmt.Errorf("verify: %w: length %d", ErrSigMalformed, len(sig))
	}
	z, err := base64.StdEncoding.DecodeString(sigUnescaper.Replace(sig))
	if err != nil {
		return nil, fmt.Errorf("verify: %w: base64", ErrSigMalformed)
	}
	zr, err := zlib.NewReader(bytes.NewReader(z))
	if err != nil {
		return nil, fmt.Errorf("verify: %w: zlib header", ErrSigMalformed)
	}
	raw, err := io.ReadAll(io.LimitReader(zr, maxSigBytes+1))
	if err != nil {
		return nil, fmt.Errorf("verify: %w: zlib data", ErrSigMalformed)
	}
	if len(raw) > maxSigBytes {
		return nil, fmt.Errorf("verify: %w: too large", ErrSigMalformed)
	}
	var doc sigDoc
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("verify: %w: json", ErrSigMalformed)
	}
	if doc.Ver != "2.0" || doc.Identifier == "" || doc.Sig == "" || doc.Time <= 0 || doc.Expire <= 0 {
		return nil, fmt.Errorf("verify: %w: missing or invalid fields", ErrSigMalformed)
	}
	return &doc, nil
}

// UserSigInfo is what a UserSig says about itself, unverified.
type UserSigInfo struct {
	Identifier string
	SDKAppID   int64
	Issued     time.Time
	Expire     time.Duration
}

// Expires is the last instant the sig is valid (inclusive).
func (i UserSigInfo) Expires() time.Time { return i.Issued.Add(i.Expire) }

// DecodeUserSig reads a sig's fields without verifying its signature (VerifyUserSig does
// that). The simulator uses it to invalidate sigs by issue time (70052) and to cache
// verifications. Its error wraps ErrSigMalformed.
func DecodeUserSig(sig string) (UserSigInfo, error) {
	doc, err := decodeUserSig(sig)
	if err != nil {
		return UserSigInfo{}, err
	}
	return UserSigInfo{Identifier: doc.Identifier, SDKAppID: doc.SDKAppID, Issued: time.Unix(doc.Time, 0),
		Expire: time.Duration(doc.Expire) * time.Second}, nil
}
