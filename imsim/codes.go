package imsim

// The IM error codes the simulator answers by itself, named for the condition that answers each
// (docs/api-notes.md, "Error classes" and "Limits"). They are the simulator's own statement of
// the documented rules rather than im's constants: were the client's table wrong, a simulator
// that borrowed it would answer the same wrong code and every test would pass. Instead
// TestClientAgreesWithSimulatorCodes holds the two against each other. Injected faults answer
// whatever code they are given.
const (
	codeNotImported      = 50001 // From_Account was never imported
	codeBadParams        = 50002 // a missing, malformed or over-long field; bad JSON
	codeNotAdmin         = 50003 // the identifier is not an app admin
	codeTimeout          = 50005 // the server gave up (a hang that ran out, an applied-then-failed call)
	codeGroupCheckFailed = 51007 // a group conversation failed its check (dismissed, not a member)
	codeTooManyContacts  = 51008 // the user's distinct grouped conversations would exceed the limit
	codeGroupNotFound    = 51009 // update or delete of a group the user does not have
	codeTooManyGroups    = 51010 // the user would have more groups than the limit
	codeNameTooLong      = 51011 // a group name over the limit
	codeFrequency        = 60007 // over the per-API calls-per-second limit
	codeAppIDRequired    = 60012 // no sdkappid in the query
	codeSigExpired       = 70001 // the UserSig expired
	codeSigEmpty         = 70002 // no UserSig in the query
	codeSigMalformed     = 70003 // the UserSig cannot be decoded
	codeSigKey           = 70009 // the UserSig was signed with another key (or tampered with)
	codeSigIdentifier    = 70013 // the UserSig was made for another identifier
	codeSigAppID         = 70014 // the UserSig was made for another SDKAppID
	codeAppIDNotFound    = 70020 // the sdkappid is not this app's
	codeSigInvalidated   = 70052 // the UserSig was issued before the key was rotated
)

// codeClass is what docs/api-notes.md ("Error classes") says a client does about a code.
type codeClass string

// The documented classes.
const (
	classTransient   codeClass = "transient"    // retry with backoff
	classRateLimited codeClass = "rate limited" // retry, and slow down
	classCredentials codeClass = "credentials"  // make a new UserSig, retry once
	classConfig      codeClass = "config/auth"  // nothing is wrong with the event: pause
	classPermanent   codeClass = "permanent"    // dead-letter; also every code not listed
)

// codeRule is one row of the simulator's code table: a code, its documented class, and when the
// simulator answers it ("" for a documented code it answers only when a fault injects it).
type codeRule struct {
	code  int
	class codeClass
	when  string
}

// codeTable is every code the documentation classifies, each with the condition the simulator
// answers it for. A code missing here is permanent, as the documentation says of unknown codes.
func codeTable() []codeRule {
	return []codeRule{
		{50004, classTransient, ""},
		{codeTimeout, classTransient, "a hang reached Config.MaxHang; an applied-then-failed call"},
		{60008, classTransient, ""},
		{60014, classTransient, ""},
		{70169, classTransient, ""},
		{70202, classTransient, ""},
		{70500, classTransient, ""},

		{codeFrequency, classRateLimited, "more than Config.RateLimit calls of one API in a second"},
		{60011, classRateLimited, ""},
		{60018, classRateLimited, ""},
		{60019, classRateLimited, ""},

		{codeSigExpired, classCredentials, "the UserSig is past TLS.time + TLS.expire"},
		{codeSigInvalidated, classCredentials, "the UserSig was issued before InvalidateSigs"},

		{60004, classConfig, ""},
		{60005, classConfig, ""},
		{60006, classConfig, ""},
		{60010, classConfig, ""},
		{codeAppIDRequired, classConfig, "no sdkappid in the query"},
		{60016, classConfig, ""},
		{60020, classConfig, ""},
		{60021, classConfig, ""},
		{60026, classConfig, ""},
		{codeSigEmpty, classConfig, "no usersig in the query"},
		{codeSigMalformed, classConfig, "the usersig does not decode (base64url, zlib, JSON, fields)"},
		{70005, classConfig, ""},
		{codeSigKey, classConfig, "the usersig's HMAC does not match Config.SecretKey"},
		{codeSigIdentifier, classConfig, "the usersig was made for another identifier"},
		{codeSigAppID, classConfig, "the usersig was made for another sdkappid"},
		{70016, classConfig, ""},
		{codeAppIDNotFound, classConfig, "the sdkappid is not Config.SDKAppID"},
		{70050, classConfig, ""},
		{codeNotAdmin, classConfig, "the identifier is not in Config.Admins"},
		{51013, classConfig, ""},

		{codeNotImported, classPermanent, "From_Account is in Config.NotImported or Imported says no"},
		{codeBadParams, classPermanent, "a bad body or field; a duplicate name by default (Config.DuplicateCode), of a create or a rename"},
		{60003, classPermanent, ""},
		{70402, classPermanent, ""},
		{codeGroupCheckFailed, classPermanent, "per item of a create or an add: a ToGroupId in Config.DismissedGroups"},
		{codeTooManyContacts, classPermanent, "per item of a create or an add: the user's distinct grouped conversations would pass Config.MaxContacts"},
		{codeGroupNotFound, classPermanent, "update or delete of a missing group (Config.MissingGroupCode)"},
		{codeTooManyGroups, classPermanent, "a create would give the user more than Config.MaxGroups groups (update and delete never do)"},
		{codeNameTooLong, classPermanent, "a group name over Config.MaxNameBytes (a create's GroupName, a rename's NewGroupName)"},
		{51012, classPermanent, ""},
	}
}
