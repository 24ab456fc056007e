package imsim

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Duplicate-name behaviours (Config.DuplicateNames). The real API documents none.
const (
	// DuplicateReject answers Config.DuplicateCode and changes nothing (the default: names address
	// groups in update and delete, so they are presumably unique per user).
	DuplicateReject = "reject"
	// DuplicateMerge adds the conversations to the existing group and answers success with its id,
	// as if create were idempotent by name.
	DuplicateMerge = "merge"
	// DuplicateAllow creates a second group with the same name.
	DuplicateAllow = "allow"
)

// Other behaviours the public documentation leaves open. `chatgroupd imcheck` probes each on the
// real API and prints the Config (as imsim flags) that reproduces what it saw.
const (
	// NameBytes counts Config.MaxNameBytes in bytes of UTF-8 (the default); NameChars in
	// characters (code points).
	NameBytes = "bytes"
	NameChars = "chars"
	// WindowSliding counts the rate limit over any one-second window (t-1s, t] (the default);
	// WindowCalendar over each calendar second [s, s+1).
	WindowSliding  = "sliding"
	WindowCalendar = "calendar"
)

// Defaults of Config.
const (
	DefaultAdmin              = "administrator"
	DefaultRateLimit          = 200
	DefaultMaxGroups          = 20
	DefaultMaxContacts        = 1000
	DefaultMaxNameBytes       = 32
	DefaultMaxContactsPerCall = 100
	DefaultPageSize           = 50
	DefaultMaxHang            = 10 * time.Second
	maxBodyBytes              = 1 << 20
	maxSigCache               = 1024
)

// Config configures a Server. Zero values take the documented defaults.
type Config struct {
	SDKAppID  int64
	SecretKey string
	// Admins are the identifiers allowed to call; default {"administrator"}.
	Admins []string
	// RateLimit is accepted calls per API per sliding second; default 200.
	RateLimit          int
	MaxGroups          int // per user; default 20 (51010)
	MaxContacts        int // distinct grouped conversations per user; default 1000 (51008)
	MaxNameBytes       int // default 32 (51011)
	MaxContactsPerCall int // per create/update call; default 100 (50002)
	PageSize           int // conversations per get page; default 50
	// NotImported accounts answer 50001; so does any account Imported returns false for.
	NotImported []string
	Imported    func(account string) bool
	// DismissedGroups are ToGroupId values whose conversations fail with 51007 per item.
	DismissedGroups []string
	// DuplicateNames is DuplicateReject (default), DuplicateMerge or DuplicateAllow.
	DuplicateNames string
	// DuplicateCode answers a rejected duplicate name; default 50002.
	DuplicateCode int
	// RenameDuplicates is what a rename onto a name the user already has does: DuplicateReject
	// (default; answers DuplicateCode) or DuplicateAllow (two groups then share the name).
	RenameDuplicates string
	// AddExistingCode is the per-item ResultCode of adding a conversation that is already in the
	// group; 0 (default) is success, the add being idempotent.
	AddExistingCode int
	// RemoveMissingCode is the per-item ResultCode of removing a conversation that is not in the
	// group; 0 (default) is success.
	RemoveMissingCode int
	// MissingGroupCode answers an update or delete of a group the user does not have; default
	// 51009.
	MissingGroupCode int
	// DeleteMissingOK makes a delete of a missing group succeed instead (groups that exist among
	// its names are still deleted).
	DeleteMissingOK bool
	// NameUnit is what MaxNameBytes counts: NameBytes (default) or NameChars.
	NameUnit string
	// RateWindow is how RateLimit is counted: WindowSliding (default) or WindowCalendar.
	RateWindow string
	// MaxHang bounds a hung request; default 10s, then it answers 50005.
	MaxHang time.Duration
	Faults  Faults
	// Admin controls the /admin/ endpoints; off by default.
	Admin AdminConfig
	// Seed makes fault draws reproducible; 0 seeds from the clock.
	Seed uint64
	// CallLog keeps every API call (account, request, start, end, answer) for Calls and
	// GET /admin/calls; off by default, as it grows with every call.
	CallLog bool
	// Now is the clock of rate windows and sig expiry; default time.Now.
	Now func() time.Time
	// Registerer receives the simulator's metrics (imsim_*); nil registers nowhere.
	Registerer prometheus.Registerer
	Logger     *zap.Logger
}

func (c *Config) defaults() {
	if len(c.Admins) == 0 {
		c.Admins = []string{DefaultAdmin}
	}
	c.RateLimit = cmp.Or(c.RateLimit, DefaultRateLimit)
	c.MaxGroups = cmp.Or(c.MaxGroups, DefaultMaxGroups)
	c.MaxContacts = cmp.Or(c.MaxContacts, DefaultMaxContacts)
	c.MaxNameBytes = cmp.Or(c.MaxNameBytes, DefaultMaxNameBytes)
	c.MaxContactsPerCall = cmp.Or(c.MaxContactsPerCall, DefaultMaxContactsPerCall)
	c.PageSize = cmp.Or(c.PageSize, DefaultPageSize)
	c.DuplicateCode = cmp.Or(c.DuplicateCode, codeBadParams)
	c.DuplicateNames = cmp.Or(c.DuplicateNames, DuplicateReject)
	c.RenameDuplicates = cmp.Or(c.RenameDuplicates, DuplicateReject)
	c.MissingGroupCode = cmp.Or(c.MissingGroupCode, codeGroupNotFound)
	c.NameUnit = cmp.Or(c.NameUnit, NameBytes)
	c.RateWindow = cmp.Or(c.RateWindow, WindowSliding)
	c.MaxHang = cmp.Or(c.MaxHang, DefaultMaxHang)
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
}

// AdminConfig guards the /admin/ endpoints, which change faults and invalidate sigs.
type AdminConfig struct {
	// Enabled serves them; otherwise they answer 404.
	Enabled bool
	// Hosts are host names (without port) accepted in the Host header besides loopback ones
	// (localhost, 127.0.0.0/8, ::1).
	Hosts []string
	// Token, when set, must come as "Authorization: Bearer <token>".
	Token string
}

// Validate reports the first configuration error, after applying defaults to a copy.
func (c Config) Validate() error {
	c.defaults()
	return c.validate()
}

func (c *Config) validate() error {
	switch {
	case c.SDKAppID <= 0:
		return errors.New("imsim config: sdkappid must be positive")
	case c.SecretKey == "":
		return errors.New("imsim config: secret key is empty")
	case c.RateLimit < 0 || c.MaxGroups < 0 || c.MaxContacts < 0 || c.MaxNameBytes < 0 || c.MaxContactsPerCall < 0 || c.PageSize < 0:
		return errors.New("imsim config: limits must not be negative")
	case c.MaxHang < 0:
		return errors.New("imsim config: max hang must not be negative")
	case !slices.Contains([]string{DuplicateReject, DuplicateMerge, DuplicateAllow}, c.DuplicateNames):
		return fmt.Errorf("imsim config: duplicate names %q: want reject, merge or allow", c.DuplicateNames)
	case c.RenameDuplicates != DuplicateReject && c.RenameDuplicates != DuplicateAllow:
		return fmt.Errorf("imsim config: rename duplicates %q: want reject or allow", c.RenameDuplicates)
	case c.NameUnit != NameBytes && c.NameUnit != NameChars:
		return fmt.Errorf("imsim config: name unit %q: want bytes or chars", c.NameUnit)
	case c.RateWindow != WindowSliding && c.RateWindow != WindowCalendar:
		return fmt.Errorf("imsim config: rate window %q: want sliding or calendar", c.RateWindow)
	}
	return c.Faults.Validate()
}
