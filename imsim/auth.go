package imsim

import (
	"errors"
	"strconv"
	"time"

	"github.com/chatgroupd/chatgroupd/im"
)

func (s *Server) authLocked(appid, identifier, sig string, now time.Time) *response {
	if appid == "" {
		return fail(60012, "sdkappid is required")
	}
	if id, err := strconv.ParseInt(appid, 10, 64); err != nil || id != s.cfg.SDKAppID {
		return fail(im.CodeAppIDNotFound, "sdkappid not found")
	}
	if !s.admins[identifier] {
		return fail(im.CodeNotAdmin, "identifier is not an app admin")
	}
	if sig == "" {
		return fail(im.CodeSigEmpty, "usersig is empty")
	}
	info, cached := s.sigCache[sig]
	if !cached || info.Identifier != identifier || now.After(info.Expires()) {
		// Verifying inflates and hashes (~0.1 ms); a client reuses one sig for hours, so only
		// the first use of a sig (and every failure) pays for it.
		err := im.VerifyUserSig(s.cfg.SecretKey, s.cfg.SDKAppID, identifier, sig, now)
		switch {
		case errors.Is(err, im.ErrSigMalformed):
			return fail(im.CodeSigMismatch, "usersig is invalid")
		case errors.Is(err, im.ErrSigExpired):
			return fail(im.CodeSigExpired, "usersig expired")
		case errors.Is(err, im.ErrSigIdentifier):
			return fail(im.CodeIdentifierInvalid, "identifier does not match the usersig")
		case errors.Is(err, im.ErrSigAppID):
			return fail(im.CodeAppIDMismatch, "sdkappid does not match the usersig")
		case err != nil:
			return fail(im.CodeSigKeyMismatch, "usersig verification failed")
		}
		if info, err = im.DecodeUserSig(sig); err != nil {
			return fail(im.CodeSigMismatch, "usersig is invalid")
		}
		if len(s.sigCache) >= maxSigCache {
			clear(s.sigCache)
		}
		s.sigCache[sig] = info
	}
	if info.Issued.Unix() < s.invalidBefore {
		return fail(im.CodeSigInvalidated, "usersig invalidated")
	}
	return nil
}
