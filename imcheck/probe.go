// Package imcheck is a conformance probe of the IM conversation-group API. It runs a fixed
// script of calls on one or two test accounts, records every exchange in a stable JSON
// transcript (the UserSig redacted), and concludes one Observation per assumption the
// simulator (package imsim) makes where the public documentation is silent: duplicate names,
// paging, idempotence of add and remove, missing groups, the name limit, the group and
// conversation limits and how the rate window is counted. Compare lines those up with the same
// script run against the simulator, and IMSimFlags says how to configure the simulator to
// answer like the probed API.
//
// The probe only touches groups whose names start with its run's prefix, refuses an account that
// already has groups unless told otherwise, paces itself well under the API's budget and deletes
// every group it created before it returns, also when its context is cancelled.
package imcheck

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/chatgroupd/chatgroupd/im"
)

// Defaults and bounds of Config.
const (
	DefaultRate           = 5.0
	MaxRate               = im.RateLimitPerAPI / 4.0 // a quarter of the documented quota per API
	DefaultWindowLimit    = im.RateLimitPerAPI
	DefaultCleanupTimeout = time.Minute
	// convsPerGroup is how many conversations one create carries when filling the account; the
	// newest documentation caps a create at 100.
	convsPerGroup = 100
	// limitGroups and limitConvs are the documented per-user limits the probe tests.
	limitGroups = 20
	limitConvs  = 1000
	maxPages    = 100
)

// Observation ids, in the order of the report.
const (
	RowDuplicateName   = "duplicate-name"
	RowNamesPerUser    = "names-per-user"
	RowRenameExisting  = "rename-onto-existing"
	RowAddExisting     = "add-existing"
	RowRemoveMissing   = "remove-missing"
	RowUpdateMissing   = "update-missing-group"
	RowDeleteMissing   = "delete-missing-group"
	RowNameLimit       = "name-limit"
	RowGroupLimit      = "group-limit"
	RowConvLimit       = "conversation-limit"
	RowPageSize        = "page-size"
	RowNextStartIndex  = "next-start-index"
	RowPaging          = "paging"
	RowPerItem60007    = "per-item-60007"
	RowRateWindow      = "rate-window"
	notProbedPrefix    = "not probed: "
	setupFailedPrefix  = "setup failed: "
	rateWindowAttempts = 2
)

// assumptions are the rows of the report, in order, with what each one checks.
var assumptions = []struct{ id, text string }{
	{RowDuplicateName, "create with a name the user already has: refused (with which code), merged or a second group"},
	{RowNamesPerUser, "group names are per user: another account may use the same name"},
	{RowRenameExisting, "rename onto a name the user already has"},
	{RowAddExisting, "add of a conversation already in the group (idempotent add)"},
	{RowRemoveMissing, "remove of a conversation not in the group (idempotent remove)"},
	{RowUpdateMissing, "update of a group the user does not have"},
	{RowDeleteMissing, "del_contact_group of a group the user does not have"},
	{RowNameLimit, "group name limit: length and unit (bytes of UTF-8 or characters) and code"},
	{RowGroupLimit, "conversation groups per user, and the code beyond"},
	{RowConvLimit, "grouped conversations per user, and how the one beyond fails"},
	{RowPageSize, "get_contact_group conversations per page"},
	{RowNextStartIndex, "NextStartIndex is the offset of the next page's first conversation"},
	{RowPaging, "paging across pages returns every conversation exactly once"},
	{RowPerItem60007, "a frequency limit (60007) never comes back per item"},
	{RowRateWindow, "the per-API limit is counted over a sliding second, not per calendar second"},
}

// Assumptions returns the row ids in report order.
func Assumptions() []string {
	out := make([]string, len(assumptions))
	for i, a := range assumptions {
		out[i] = a.id
	}
	return out
}

// Config configures a probe run.
type Config struct {
	// Client is the IM client's configuration: credentials and endpoint. The probe wraps its
	// HTTPClient's transport (or a default one) to pace and record calls.
	Client im.Config
	// Account is the test account the script runs on. Required: the probe never guesses one.
	Account string
	// Account2 is an optional second test account (checks that names are per user).
	Account2 string
	// Rate is calls per second, 1 to MaxRate; default DefaultRate. Negative: unpaced (only for
	// a simulator in this process).
	Rate float64
	// AllowExistingGroups lets the probe run on an account that has groups. It then touches
	// only its own and skips the limit and paging rows, whose counts the groups would skew.
	AllowExistingGroups bool
	// ProbeRateWindow runs the rate-window row: a burst of WindowLimit get_contact_group calls
	// at once (the full per-second budget of that API for the app), then one call every 50 ms
	// for about a second. Off by default, as it spends a second of get_contact_group budget.
	ProbeRateWindow bool
	// WindowLimit is the API's calls per second; default DefaultWindowLimit, the documented
	// im.RateLimitPerAPI.
	WindowLimit int
	// CleanupTimeout bounds the final clean-up, which runs on a fresh context when the run's
	// own has ended; default one minute.
	CleanupTimeout time.Duration
	// Now and Sleep replace the clock of the rate-window row (tests; the in-process reference).
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
	// OnCall is called after the n-th call is recorded (tests interrupt runs with it).
	OnCall func(n int)
	Logger *zap.Logger
}

// setDefaults fills the zero fields that have a default.
func (c *Config) setDefaults() {
	c.Rate = cmp.Or(c.Rate, DefaultRate)
	c.WindowLimit = cmp.Or(c.WindowLimit, DefaultWindowLimit)
	c.CleanupTimeout = cmp.Or(c.CleanupTimeout, DefaultCleanupTimeout)
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Sleep == nil {
		c.Sleep = sleep
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
}

// Validate reports every problem of c, defaults applied, joined, each naming its field; the
// client's own problems come last.
func (c Config) Validate() error {
	c.setDefaults()
	var errs []error
	if c.Account == "" {
		errs = append(errs, errors.New("account: a test account is required (the probe never picks one)"))
	}
	if c.Account2 != "" && c.Account2 == c.Account {
		errs = append(errs, errors.New("account2: the second test account must differ from the first"))
	}
	if len(c.Account) > 32 {
		errs = append(errs, errors.New("account: accounts are at most 32 bytes"))
	}
	if len(c.Account2) > 32 {
		errs = append(errs, errors.New("account2: accounts are at most 32 bytes"))
	}
	if c.Rate > MaxRate {
		errs = append(errs, fmt.Errorf("rate: %g over %g calls/s", c.Rate, MaxRate))
	}
	if c.Rate > 0 && c.Rate < 1 {
		// A call waits for its turn inside the client's per-call timeout.
		errs = append(errs, fmt.Errorf("rate: %g below 1 call/s", c.Rate))
	}
	if c.WindowLimit < 1 {
		errs = append(errs, fmt.Errorf("window limit: %d below 1", c.WindowLimit))
	}
	if c.CleanupTimeout <= 0 {
		errs = append(errs, errors.New("cleanup timeout: must be positive"))
	}
	if len(errs) > 0 {
		errs = []error{fmt.Errorf("imcheck config: %w", errors.Join(errs...))}
	}
	if err := c.Client.Validate(); err != nil {
		errs = append(errs, err) // already prefixed "im config: "
	}
	return errors.Join(errs...)
}

// ErrAccountHasGroups is returned when a test account already has groups and
// Config.AllowExistingGroups is not set; nothing was changed.
var ErrAccountHasGroups = errors.New("imcheck: test account already has conversation groups")

// ErrLeftover is returned when the clean-up could not delete every group the probe created;
// Transcript.Leftover names them.
var ErrLeftover = errors.New("imcheck: groups left behind")

// Run runs the script and returns its transcript. The transcript is returned also with an error
// (interrupted, refused account, clean-up failure), holding what was done until then.
func Run(ctx context.Context, cfg Config) (*Transcript, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p, err := newProber(cfg)
	if err != nil {
		return nil, err
	}
	t := &Transcript{Format: Format, Target: p.c.BaseURL(), SDKAppID: cfg.Client.SDKAppID,
		Admin: cmp.Or(cfg.Client.Admin, im.DefaultAdmin), Accounts: p.accounts(), Prefix: p.prefix,
		Started: cfg.Now().UTC().Truncate(time.Second), Calls: []Call{}, Observations: []Observation{}, Leftover: []string{}}
	err = p.run(ctx)
	if ctx.Err() != nil && p.touched {
		p.log.Warn("imcheck: interrupted; deleting the groups it created", zap.Duration("within", cfg.CleanupTimeout))
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.CleanupTimeout)
	defer cancel()
	if p.touched {
		if left := p.cleanupAll(withStep(cctx, "cleanup")); len(left) > 0 {
			t.Leftover = left
			err = errors.Join(err, fmt.Errorf("%w: %s", ErrLeftover, strings.Join(t.Leftover, ", ")))
		}
	}
	t.Calls = p.rec.snapshot()
	t.Observations = p.observations()
	return t, err
}

type prober struct {
	cfg    Config
	c      *im.Client
	rec    *recorder
	prefix string
	log    *zap.Logger

	touched   bool // a create was sent: clean up
	existing  bool // an account had groups (allowed)
	obs       map[string]Observation
	items     int
	itemCodes map[int]int
}

func newProber(cfg Config) (*prober, error) {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("imcheck: %w", err)
	}
	p := &prober{cfg: cfg, prefix: "ick" + hex.EncodeToString(b[:])[:5], log: cfg.Logger,
		obs: map[string]Observation{}, itemCodes: map[int]int{}}
	hc := cfg.Client.HTTPClient
	var next http.RoundTripper = http.DefaultTransport.(*http.Transport).Clone()
	if hc != nil && hc.Transport != nil {
		next = hc.Transport
	}
	p.rec = &recorder{next: next, onCall: cfg.OnCall}
	if cfg.Rate > 0 {
		p.rec.pace = rate.NewLimiter(rate.Limit(cfg.Rate), 1)
	}
	ic := cfg.Client
	ic.HTTPClient = &http.Client{Transport: p.rec,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	c, err := im.New(ic)
	if err != nil {
		return nil, fmt.Errorf("imcheck: %w", err)
	}
	p.c = c
	return p, nil
}

func (p *prober) accounts() []string {
	if p.cfg.Account2 == "" {
		return []string{p.cfg.Account}
	}
	return []string{p.cfg.Account, p.cfg.Account2}
}

func (p *prober) observe(id, value string, flags ...string) {
	p.obs[id] = Observation{ID: id, Probed: !strings.HasPrefix(value, notProbedPrefix), Value: value, IMSimFlags: flags}
}

func (p *prober) observations() []Observation {
	out := make([]Observation, 0, len(assumptions))
	for _, a := range assumptions {
		o, ok := p.obs[a.id]
		if !ok {
			o = Observation{ID: a.id, Value: notProbedPrefix + "the run ended before this step"}
		}
		o.Assumption = a.text
		out = append(out, o)
	}
	return out
}

func (p *prober) run(ctx context.Context) error {
	if err := p.preflight(withStep(ctx, "preflight")); err != nil {
		return err
	}
	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"duplicate-name", p.duplicateName},
		{"rename-onto-existing", p.renameOntoExisting},
		{"idempotence", p.idempotence},
		{"missing-group", p.missingGroup},
		{"name-limit", p.nameLimit},
		{"limits-and-paging", p.limitsAndPaging},
		{"rate-window", p.rateWindow},
	}
	for _, s := range steps {
		sctx := withStep(ctx, s.name)
		if err := s.fn(sctx); err != nil {
			return fmt.Errorf("imcheck %s: %w", s.name, err)
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("imcheck %s: %w", s.name, err)
		}
		if p.touched {
			if left := p.cleanupAll(sctx); len(left) > 0 {
				if err := ctx.Err(); err != nil {
					return fmt.Errorf("imcheck %s: %w", s.name, err)
				}
				return fmt.Errorf("%w after %s: %s", ErrLeftover, s.name, strings.Join(left, ", "))
			}
		}
	}
	if p.items == 0 {
		p.observe(RowPerItem60007, notProbedPrefix+"no per-item results came back")
	} else if n := p.itemCodes[im.CodeFrequency]; n > 0 {
		p.observe(RowPerItem60007, "seen (the simulator never answers it per item)")
	} else {
		p.observe(RowPerItem60007, "none seen")
	}
	return nil
}

// preflight refuses accounts with groups (unless allowed) before anything is created.
func (p *prober) preflight(ctx context.Context) error {
	for _, acct := range p.accounts() {
		groups, _, err := p.c.GetAllContactGroups(ctx, acct)
		if err != nil {
			return fmt.Errorf("imcheck preflight %s: %w", acct, err)
		}
		if len(groups) == 0 {
			continue
		}
		if !p.cfg.AllowExistingGroups {
			return fmt.Errorf("%w: %s has %d (use --allow-existing-groups to probe anyway)", ErrAccountHasGroups, acct, len(groups))
		}
		p.existing = true
		for _, g := range groups {
			if strings.HasPrefix(g.GroupName, p.prefix) { // 1 in 16^5; never delete what is not ours
				return fmt.Errorf("imcheck preflight: %s already has a group named %q with this run's prefix; run again", acct, g.GroupName)
			}
		}
	}
	return nil
}

// cleanupAll deletes every group of the run's prefix on every account and returns those still
// there afterwards.
func (p *prober) cleanupAll(ctx context.Context) []string {
	var left []string
	for _, acct := range p.accounts() {
		for _, n := range p.cleanup(ctx, acct) {
			left = append(left, acct+"/"+n)
		}
	}
	return left
}

func (p *prober) cleanup(ctx context.Context, acct string) []string {
	var mine []string
	for range 3 {
		groups, _, err := p.c.GetAllContactGroups(ctx, acct)
		if err != nil {
			p.log.Warn("imcheck: cleanup listing failed", zap.String("account", acct), zap.Error(err))
			// Unknown is not clean: report it, whatever an earlier round saw.
			mine = []string{"(unknown: could not list the groups: " + err.Error() + ")"}
			if ctx.Err() != nil {
				break
			}
			continue
		}
		mine = mine[:0]
		for _, g := range groups {
			if strings.HasPrefix(g.GroupName, p.prefix) {
				mine = append(mine, g.GroupName)
			}
		}
		if len(mine) == 0 {
			return nil
		}
		for _, n := range mine {
			if _, err := p.c.DelContactGroup(ctx, &im.DeleteRequest{FromAccount: acct, GroupName: []string{n}}); err != nil {
				p.log.Warn("imcheck: cleanup delete failed", zap.String("group", n), zap.Error(err))
			}
		}
	}
	return mine
}

func (p *prober) name(s string) string { return p.prefix + "-" + s }

func peer(i int) im.ContactItem {
	return im.ContactItem{Type: im.ContactC2C, ToAccount: fmt.Sprintf("imcheck-peer-%04d", i)}
}

func peers(from, to int) []im.ContactItem {
	out := make([]im.ContactItem, 0, to-from)
	for i := from; i < to; i++ {
		out = append(out, peer(i))
	}
	return out
}

// answer is what one call came back with, reduced to what observations compare.
type answer struct {
	top   int   // top-level ErrorCode
	items []int // per-item ResultCodes
	group im.GroupItem
	err   error // no IM answer: network, HTTP status, malformed body
}

func (a answer) ok() bool {
	return a.err == nil && a.top == 0 && !slices.ContainsFunc(a.items, func(c int) bool { return c != 0 })
}

// String is the comparable form: "ok", "code 51009", "item code 51008", "error: ...".
func (a answer) String() string {
	switch {
	case a.err != nil:
		return "error: " + a.err.Error()
	case a.top != 0:
		return "code " + strconv.Itoa(a.top)
	}
	var codes []string
	for _, c := range a.items {
		if s := strconv.Itoa(c); c != 0 && !slices.Contains(codes, s) {
			codes = append(codes, s)
		}
	}
	if len(codes) > 0 {
		return "item code " + strings.Join(codes, ",")
	}
	return "ok"
}

// itemCode is the single non-zero per-item code, or 0.
func (a answer) itemCode() int {
	for _, c := range a.items {
		if c != 0 {
			return c
		}
	}
	return 0
}

func (p *prober) answerOf(err error, items []int, group *im.GroupItem) answer {
	a := classify(err, items, group)
	p.items += len(a.items)
	for _, c := range a.items {
		p.itemCodes[c]++
	}
	return a
}

// classify reduces a call's result to an answer.
func classify(err error, items []int, group *im.GroupItem) answer {
	a := answer{items: items}
	if group != nil {
		a.group = *group
	}
	var e *im.Error
	switch {
	case err == nil:
	case errors.As(err, &e) && e.Partial:
		a.items = a.items[:0]
		for _, r := range e.Results {
			a.items = append(a.items, r.ResultCode)
		}
		if e.Group != nil {
			a.group = *e.Group
		}
	case errors.As(err, &e) && e.Code != 0:
		a.top = e.Code
	default:
		a.err = err
	}
	return a
}

func (p *prober) create(ctx context.Context, acct, name string, contacts ...im.ContactItem) answer {
	p.touched = true
	resp, err := p.c.CreateContactGroup(ctx, &im.CreateRequest{FromAccount: acct,
		GroupContactItem: []im.GroupContactItem{{GroupName: name, ContactItem: contacts}}})
	var items []int
	var group *im.GroupItem
	if resp != nil {
		for _, g := range resp.GroupResultItem {
			if group == nil {
				gi := g.GroupItem
				group = &gi
			}
			for _, r := range g.ResultItem {
				items = append(items, r.ResultCode)
			}
		}
	}
	return p.answerOf(err, items, group)
}

func (p *prober) update(ctx context.Context, acct string, u im.UpdateGroup) answer {
	resp, err := p.c.UpdateContactGroup(ctx, &im.UpdateRequest{FromAccount: acct, UpdateType: im.UpdateTypeGroup, UpdateGroup: u})
	var items []int
	var group *im.GroupItem
	if resp != nil {
		group = &im.GroupItem{GroupName: resp.UpdateGroupResult.GroupName, GroupID: resp.UpdateGroupResult.GroupID}
		for _, r := range resp.UpdateGroupResult.ContactResultItem {
			items = append(items, r.ResultCode)
		}
	}
	return p.answerOf(err, items, group)
}

func addDel(group string, opt int, cs ...im.ContactItem) im.UpdateGroup {
	u := im.UpdateGroup{UpdateGroupType: im.UpdateGroupTypeAddDel, OldGroupName: group}
	for _, c := range cs {
		u.ContactUpdateItem = append(u.ContactUpdateItem, im.ContactUpdateItem{ContactOptType: opt, ContactItem: c})
	}
	return u
}

func (p *prober) del(ctx context.Context, acct, name string) answer {
	_, err := p.c.DelContactGroup(ctx, &im.DeleteRequest{FromAccount: acct, GroupName: []string{name}})
	return p.answerOf(err, nil, nil)
}

func setupFailed(what string, a answer) string {
	return setupFailedPrefix + what + ": " + a.String()
}

func (p *prober) duplicateName(ctx context.Context) error {
	n := p.name("dup")
	first := p.create(ctx, p.cfg.Account, n, peer(1))
	if !first.ok() {
		p.observe(RowDuplicateName, setupFailed("first create", first))
		return ctx.Err()
	}
	second := p.create(ctx, p.cfg.Account, n, peer(2))
	switch {
	case second.err != nil || len(second.items) > 0 && !second.ok():
		p.observe(RowDuplicateName, second.String())
	case second.top != 0:
		p.observe(RowDuplicateName, "refused: code "+strconv.Itoa(second.top),
			"--duplicate-names=reject", "--duplicate-code="+strconv.Itoa(second.top))
	default:
		// Accepted: count the groups of that name rather than trust the answer's GroupId.
		switch count, err := p.countNamed(ctx, p.cfg.Account, n); {
		case err != nil:
			p.observe(RowDuplicateName, "accepted, then listing failed: "+classify(err, nil, nil).String())
		case count == 1:
			p.observe(RowDuplicateName, "merged into the existing group", "--duplicate-names=merge")
		case count == 2:
			p.observe(RowDuplicateName, "a second group with the same name", "--duplicate-names=allow")
		default:
			p.observe(RowDuplicateName, fmt.Sprintf("accepted, then %d groups with the name", count))
		}
	}
	if p.cfg.Account2 == "" {
		p.observe(RowNamesPerUser, notProbedPrefix+"no second account (--account2)")
		return ctx.Err()
	}
	if other := p.create(ctx, p.cfg.Account2, n, peer(1)); other.ok() {
		p.observe(RowNamesPerUser, "yes")
	} else {
		p.observe(RowNamesPerUser, "no: "+other.String())
	}
	return ctx.Err()
}

// countNamed counts acct's groups called name.
func (p *prober) countNamed(ctx context.Context, acct, name string) (int, error) {
	groups, _, err := p.c.GetAllContactGroups(ctx, acct)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, g := range groups {
		if g.GroupName == name {
			n++
		}
	}
	return n, nil
}

func (p *prober) renameOntoExisting(ctx context.Context) error {
	a, b := p.name("ren1"), p.name("ren2")
	for _, n := range []string{a, b} {
		if r := p.create(ctx, p.cfg.Account, n, peer(1)); !r.ok() {
			p.observe(RowRenameExisting, setupFailed("create", r))
			return ctx.Err()
		}
	}
	r := p.update(ctx, p.cfg.Account, im.UpdateGroup{UpdateGroupType: im.UpdateGroupTypeRename, OldGroupName: a, NewGroupName: b})
	switch {
	case r.top != 0:
		p.observe(RowRenameExisting, "refused: code "+strconv.Itoa(r.top), "--rename-duplicates=reject")
	case r.ok():
		p.observe(RowRenameExisting, "allowed: two groups share the name", "--rename-duplicates=allow")
	default:
		p.observe(RowRenameExisting, r.String())
	}
	return ctx.Err()
}

func (p *prober) idempotence(ctx context.Context) error {
	n := p.name("idem")
	if r := p.create(ctx, p.cfg.Account, n, peer(1)); !r.ok() {
		p.observe(RowAddExisting, setupFailed("create", r))
		p.observe(RowRemoveMissing, setupFailed("create", r))
		return ctx.Err()
	}
	add := p.update(ctx, p.cfg.Account, addDel(n, im.ContactOptAdd, peer(1)))
	p.observe(RowAddExisting, add.String(), itemFlag("--add-existing-code", add)...)
	rm := p.update(ctx, p.cfg.Account, addDel(n, im.ContactOptDel, peer(2)))
	p.observe(RowRemoveMissing, rm.String(), itemFlag("--remove-missing-code", rm)...)
	return ctx.Err()
}

// itemFlag is the simulator flag reproducing a per-item answer (none for top-level failures,
// which the simulator can't give for these calls).
func itemFlag(flag string, a answer) []string {
	if a.err != nil || a.top != 0 {
		return nil
	}
	return []string{flag + "=" + strconv.Itoa(a.itemCode())}
}

func (p *prober) missingGroup(ctx context.Context) error {
	n := p.name("none")
	up := p.update(ctx, p.cfg.Account, addDel(n, im.ContactOptAdd, peer(1)))
	var flags []string
	if up.top != 0 {
		flags = []string{"--missing-group-code=" + strconv.Itoa(up.top)}
	}
	p.observe(RowUpdateMissing, up.String(), flags...)
	if up.ok() { // the update made the group: the clean-up after this step deletes it
		p.touched = true
	}
	del := p.del(ctx, p.cfg.Account, n)
	switch {
	case del.top != 0:
		p.observe(RowDeleteMissing, del.String(), "--delete-missing-ok=false")
	case del.ok():
		p.observe(RowDeleteMissing, del.String(), "--delete-missing-ok=true")
	default:
		p.observe(RowDeleteMissing, del.String())
	}
	return ctx.Err()
}

// pad returns the run's name for s padded with 'n' to exactly bytes bytes.
func (p *prober) pad(s string, bytes int) string {
	n := p.name(s)
	return n + strings.Repeat("n", bytes-len(n))
}

func (p *prober) nameLimit(ctx context.Context) error {
	limit, code := 0, 0
	for _, l := range []int{32, 64} {
		if r := p.create(ctx, p.cfg.Account, p.pad("a", l), peer(1)); !r.ok() {
			if limit == 0 {
				p.observe(RowNameLimit, fmt.Sprintf("%d ASCII bytes refused: %s", l, r))
				return ctx.Err()
			}
			break
		}
		r := p.create(ctx, p.cfg.Account, p.pad("b", l+1), peer(1))
		if r.top != 0 {
			limit, code = l, r.top
			break
		}
		if !r.ok() {
			p.observe(RowNameLimit, fmt.Sprintf("%d ASCII bytes: %s", l+1, r))
			return ctx.Err()
		}
		limit = -l // l+1 accepted: try the next candidate
	}
	if limit <= 0 {
		p.observe(RowNameLimit, fmt.Sprintf("%d ASCII bytes accepted", 1-limit))
		return ctx.Err()
	}
	// More bytes than the limit in fewer characters: accepted only if characters are counted.
	base := p.name("c")
	k := (limit-len(base))/3 + 1
	mixed := base + strings.Repeat("群", k)
	unit := "bytes"
	r := p.create(ctx, p.cfg.Account, mixed, peer(1))
	switch {
	case r.ok() && utf8.RuneCountInString(mixed) <= limit:
		unit = "chars"
	case r.top == code:
	default:
		p.observe(RowNameLimit, fmt.Sprintf("%d bytes in %d characters: %s", len(mixed), utf8.RuneCountInString(mixed), r))
		return ctx.Err()
	}
	p.observe(RowNameLimit, fmt.Sprintf("%d %s, beyond: code %d", limit, unit, code),
		"--max-name-length="+strconv.Itoa(limit), "--name-unit="+unit)
	return ctx.Err()
}

// limitsAndPaging fills the account to the documented limits (1000 conversations in 10
// groups of 100, then 10 groups of one conversation already grouped), tries one beyond each,
// and pages through the result.
func (p *prober) limitsAndPaging(ctx context.Context) error {
	if p.existing {
		for _, id := range []string{RowGroupLimit, RowConvLimit, RowPageSize, RowNextStartIndex, RowPaging} {
			p.observe(id, notProbedPrefix+"the account has groups of its own")
		}
		return nil
	}
	acct := p.cfg.Account
	fail := func(what string, a answer) error {
		for _, id := range []string{RowGroupLimit, RowConvLimit, RowPageSize, RowNextStartIndex, RowPaging} {
			if _, done := p.obs[id]; !done {
				p.observe(id, setupFailed(what, a))
			}
		}
		return ctx.Err()
	}
	full := limitConvs / convsPerGroup
	for i := range full {
		if r := p.create(ctx, acct, p.name(fmt.Sprintf("g%02d", i+1)), peers(i*convsPerGroup+1, (i+1)*convsPerGroup+1)...); !r.ok() {
			return fail(fmt.Sprintf("group %d of %d conversations", i+1, convsPerGroup), r)
		}
	}
	beyond := p.update(ctx, acct, addDel(p.name("g01"), im.ContactOptAdd, peer(limitConvs+1)))
	switch {
	case beyond.ok():
		p.observe(RowConvLimit, fmt.Sprintf("conversation %d accepted", limitConvs+1))
	case beyond.err != nil:
		p.observe(RowConvLimit, beyond.String())
	default:
		p.observe(RowConvLimit, fmt.Sprintf("%d, beyond: %s", limitConvs, beyond), "--max-contacts="+strconv.Itoa(limitConvs))
	}
	grouped := limitConvs
	if beyond.ok() {
		grouped++
	}
	// Groups 11-20 hold a conversation already grouped, so only the group count grows.
	for i := full; i < limitGroups; i++ {
		if r := p.create(ctx, acct, p.name(fmt.Sprintf("g%02d", i+1)), peer(1)); !r.ok() {
			p.observe(RowGroupLimit, fmt.Sprintf("group %d refused: %s", i+1, r))
			return p.paging(ctx, acct, grouped)
		}
	}
	r := p.create(ctx, acct, p.name(fmt.Sprintf("g%02d", limitGroups+1)), peer(1))
	switch {
	case r.ok():
		p.observe(RowGroupLimit, fmt.Sprintf("group %d accepted", limitGroups+1))
	case r.top != 0:
		p.observe(RowGroupLimit, fmt.Sprintf("%d, beyond: code %d", limitGroups, r.top), "--max-groups="+strconv.Itoa(limitGroups))
	default:
		p.observe(RowGroupLimit, r.String())
	}
	return p.paging(ctx, acct, grouped)
}

// paging walks get_contact_group from StartIndex 0 while CompleteFlag is 0; the account holds
// want distinct conversations.
func (p *prober) paging(ctx context.Context, acct string, want int) error {
	var (
		start, total, pages, firstPage int
		seen                           = map[string]int{}
		offsets                        = true
		complete                       bool
	)
	for pages < maxPages {
		page, err := p.c.GetContactGroup(ctx, &im.GetRequest{FromAccount: acct, StartIndex: start})
		if err != nil {
			a := p.answerOf(err, nil, nil)
			p.observe(RowPageSize, setupFailed("page "+strconv.Itoa(pages+1), a))
			p.observe(RowNextStartIndex, setupFailed("page "+strconv.Itoa(pages+1), a))
			p.observe(RowPaging, setupFailed("page "+strconv.Itoa(pages+1), a))
			return ctx.Err()
		}
		pages++
		if pages == 1 {
			firstPage = len(page.ContactItem)
		}
		for _, c := range page.ContactItem {
			seen[c.Item().Key()]++
		}
		total += len(page.ContactItem)
		if page.CompleteFlag != 0 {
			complete = true
			break
		}
		if page.NextStartIndex != total {
			offsets = false
		}
		if page.NextStartIndex <= start {
			break // no progress: the paging row says complete=false
		}
		start = page.NextStartIndex
	}
	switch {
	case pages == 1 && complete:
		p.observe(RowPageSize, fmt.Sprintf("all %d in one page", firstPage), "--page-size="+strconv.Itoa(max(firstPage, limitConvs)))
	default:
		p.observe(RowPageSize, strconv.Itoa(firstPage), "--page-size="+strconv.Itoa(firstPage))
	}
	switch {
	case pages == 1:
		p.observe(RowNextStartIndex, notProbedPrefix+"one page only")
	case offsets:
		p.observe(RowNextStartIndex, "offset")
	default:
		p.observe(RowNextStartIndex, "not an offset (see the transcript)")
	}
	repeated := 0
	for _, n := range seen {
		repeated += n - 1
	}
	if complete && len(seen) == want && repeated == 0 {
		p.observe(RowPaging, "complete: every conversation exactly once")
	} else {
		p.observe(RowPaging, fmt.Sprintf("complete=%t, %d of %d conversations, %d repeated", complete, len(seen), want, repeated))
	}
	return ctx.Err()
}

// rateWindow tells a sliding window from calendar seconds: after a burst of WindowLimit calls
// (the whole budget), one call every 50 ms. A sliding window refuses them until the burst is a
// second old; calendar seconds accept them from the next second boundary, less than a second
// after the burst. A boundary can fall in the last stretch before the burst's second is over,
// where the two look alike, so a second attempt is made half a second later in phase.
func (p *prober) rateWindow(ctx context.Context) error {
	if !p.cfg.ProbeRateWindow {
		p.observe(RowRateWindow, notProbedPrefix+"needs --probe-rate-window")
		return nil
	}
	const (
		trickle    = 50 * time.Millisecond
		horizon    = 1300 * time.Millisecond
		early      = 900 * time.Millisecond
		settle     = 1500 * time.Millisecond
		firstPhase = 300 * time.Millisecond
		phaseGap   = 500 * time.Millisecond
	)
	ctx = unpaced(ctx)
	get := func() answer {
		_, err := p.c.GetContactGroup(ctx, &im.GetRequest{FromAccount: p.cfg.Account})
		return classify(err, nil, nil)
	}
	var lastFirst time.Duration
	for attempt := range rateWindowAttempts {
		// Start at a chosen phase of our clock's second, the attempts half a second apart: a
		// server second boundary that makes one attempt look sliding can't do so for both.
		phase := time.Duration(p.cfg.Now().UnixNano() % int64(time.Second))
		target := firstPhase + time.Duration(attempt)*phaseGap
		wait := (target - phase + time.Second) % time.Second
		if err := p.cfg.Sleep(ctx, settle+wait); err != nil {
			return err
		}
		t0 := p.cfg.Now()
		refused := 0
		for _, a := range p.burst(get, p.cfg.WindowLimit) {
			if !a.ok() {
				refused++
			}
		}
		if refused > 0 {
			p.observe(RowRateWindow, fmt.Sprintf("inconclusive: %d of a %d-call burst refused (something else uses this API's budget?)", refused, p.cfg.WindowLimit))
			return ctx.Err()
		}
		first := time.Duration(-1)
		for p.cfg.Now().Sub(t0) < horizon {
			if err := p.cfg.Sleep(ctx, trickle); err != nil {
				return err
			}
			sent := p.cfg.Now().Sub(t0)
			if a := get(); a.ok() {
				first = sent
				break
			} else if a.top != im.CodeFrequency {
				p.observe(RowRateWindow, "inconclusive: "+a.String())
				return ctx.Err()
			}
		}
		if first < 0 {
			p.observe(RowRateWindow, fmt.Sprintf("inconclusive: still refused %v after a full burst", horizon))
			return ctx.Err()
		}
		if first < early {
			p.observe(RowRateWindow, "calendar", "--rate-window=calendar")
			return ctx.Err()
		}
		lastFirst = first
	}
	p.log.Debug("imcheck: rate window sliding", zap.Duration("first_accepted_after", lastFirst))
	p.observe(RowRateWindow, "sliding", "--rate-window=sliding")
	return ctx.Err()
}

// burst makes n calls of fn at once (at most 32 in flight) and returns their answers.
func (p *prober) burst(fn func() answer, n int) []answer {
	out := make([]answer, n)
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out[i] = fn()
		}()
	}
	wg.Wait()
	return out
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
