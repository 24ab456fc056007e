package imsim

import (
	"strconv"
	"time"
)

// authLocked checks a call's credentials from its query (rule 2 in the package doc) with s.mu
// held; nil when they are good.
func (s *Server) authLocked(appid, identifier, sig string, now time.Time) *response {
	if appid == "" {
		return fail(codeAppIDRequired, "sdkappid is required")
	}
	if id, err := strconv.ParseInt(appid, 10, 64); err != nil || id != s.cfg.SDKAppID {
		return fail(codeAppIDNotFound, "sdkappid not found")
	}
	if !s.admins[identifier] {
		return fail(codeNotAdmin, "identifier is not an app admin")
	}
	if sig == "" {
		return fail(codeSigEmpty, "usersig is empty")
	}
	info, cached := s.sigCache[sig]
	if !cached || info.identifier != identifier || now.After(info.expires()) {
		// Verifying inflates and hashes (~0.1 ms); a client reuses one sig for hours, so only
		// the first use of a sig (and every failure) pays for it.
		var refused *response
		if info, refused = verifyUserSig(s.cfg.SecretKey, s.cfg.SDKAppID, identifier, sig, now); refused != nil {
			return refused
		}
		if len(s.sigCache) >= maxSigCache {
			clear(s.sigCache)
		}
		s.sigCache[sig] = info
	}
	if info.issued.Unix() < s.invalidBefore {
		return fail(codeSigInvalidated, "usersig invalidated")
	}
	return nil
}
