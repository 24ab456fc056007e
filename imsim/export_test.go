package imsim

import "time"

// What the external tests (package imsim_test, which may import im as well) need of the
// simulator's own code table and UserSig verifier.

// CodeRule is a row of codeTable.
type CodeRule struct {
	Code  int
	Class string
	When  string
}

// CodeTable returns codeTable's rows.
func CodeTable() []CodeRule {
	var out []CodeRule
	for _, r := range codeTable() {
		out = append(out, CodeRule{Code: r.code, Class: string(r.class), When: r.when})
	}
	return out
}

// SimCode names the code the simulator answers for each condition it checks itself.
var SimCode = map[string]int{
	"NotImported": codeNotImported,
	"BadParams":   codeBadParams,
	// DuplicateName is what a create or rename onto an existing name answers by default
	// (Config.DuplicateCode).
	"DuplicateName":    codeBadParams,
	"NotAdmin":         codeNotAdmin,
	"Timeout":          codeTimeout,
	"GroupCheckFailed": codeGroupCheckFailed,
	"TooManyContacts":  codeTooManyContacts,
	"GroupNotFound":    codeGroupNotFound,
	"TooManyGroups":    codeTooManyGroups,
	"NameTooLong":      codeNameTooLong,
	"Frequency":        codeFrequency,
	"AppIDRequired":    codeAppIDRequired,
	"SigExpired":       codeSigExpired,
	"SigEmpty":         codeSigEmpty,
	"SigMalformed":     codeSigMalformed,
	"SigKey":           codeSigKey,
	"SigIdentifier":    codeSigIdentifier,
	"SigAppID":         codeSigAppID,
	"AppIDNotFound":    codeAppIDNotFound,
	"SigInvalidated":   codeSigInvalidated,
}

// VerifyUserSig is verifyUserSig, with the code the simulator answers a refused sig (0 when
// it verifies).
func VerifyUserSig(key string, sdkappid int64, identifier, sig string, now time.Time) (issued time.Time, expire time.Duration, code int) {
	u, refused := verifyUserSig(key, sdkappid, identifier, sig, now)
	if refused != nil {
		return time.Time{}, 0, refused.ErrorCode
	}
	return u.issued, u.expire, 0
}
