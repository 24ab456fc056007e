package dispatcher

import (
	"context"
	"strconv"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
)

// create sends create_contact_group. It returns an outcome, or the failure to handle.
func (r *run) create(ctx context.Context) (*Outcome, string, error) {
	req := &im.CreateRequest{FromAccount: r.ev.FromAccount, GroupContactItem: []im.GroupContactItem{{
		GroupName: r.ev.GroupName, ContactItem: contactItems(r.ev.Contacts)}}}
	err := r.call(ctx, im.APICreate, func(ctx context.Context) error {
		return withPartial(r.d.cfg.API.CreateContactGroup(ctx, req))
	})
	return r.answered(ctx, im.APICreate, err)
}

// withPartial is err, or the per-item failures inside a successful answer: *im.Client reports
// a partial answer itself; an API implementation may not.
func withPartial[A interface {
	comparable
	PartialError() error
}](resp A, err error) error {
	var none A
	if err == nil && resp != none {
		return resp.PartialError()
	}
	return err
}

// answered is the end of a call whose answer may be partial: applied, partial (per-item
// failures a retry can't fix), or the failure to handle.
func (r *run) answered(ctx context.Context, api string, err error) (*Outcome, string, error) {
	if err == nil {
		return r.applied(), "", nil
	}
	if e := asIMError(api, err); e.Partial && ctx.Err() == nil && !r.retryablePartial(e) {
		return r.partial(e), "", nil
	}
	return nil, api, err
}

// createOp applies contact_group.created: create_contact_group, and after an ambiguous failure,
// for an uncertain record or a replay, a look-up first that merges into an existing group
// (Config.DuplicateNames).
type createOp struct{}

func (createOp) look(ctx context.Context, r *run) (*Outcome, string, error) {
	return r.checkExisting(ctx)
}
func (createOp) send(ctx context.Context, r *run) (*Outcome, string, error) { return r.create(ctx) }

// checkExisting looks the group up. Found: the event was applied; missing conversations are
// added. Not found: check is cleared so the caller creates.
func (r *run) checkExisting(ctx context.Context) (*Outcome, string, error) {
	lk, o, api, err := r.lookUp(ctx)
	if lk == nil {
		return o, api, err
	}
	group := findGroup(lk.groups, r.ev.GroupName)
	r.found(group != nil)
	if group == nil {
		if r.dupErr != nil {
			// Refused with the duplicate code, yet no group has the name: the code meant
			// other bad parameters.
			o := r.rejected(r.dupErr)
			return &o, "", nil
		}
		r.check = false
		return nil, "", nil
	}
	missing := missingContacts(r.ev.Contacts, lk.contacts, group.GroupID)
	if len(missing) == 0 {
		return r.applied(), "", nil
	}
	if r.d.cfg.DuplicateNames == DuplicateReject {
		o := r.duplicate(group, missing)
		return &o, "", nil
	}
	return r.addMissing(ctx, group, missing)
}

// lookup is a user's groups and grouped conversations.
type lookup struct {
	groups   []im.GroupItem
	contacts []im.ContactInfo
}

// lookUp fetches the user's groups for an existence check. Without a lookup it returns the
// outcome (a permanent answer about the account itself: rejected) or the failure to handle.
func (r *run) lookUp(ctx context.Context) (*lookup, *Outcome, string, error) {
	groups, contacts, err := r.getAll(ctx)
	if err != nil {
		if e := asIMError(im.APIGet, err); ctx.Err() == nil && !e.Partial && e.Class == im.ClassPermanent {
			// The account itself is unusable (e.g. not imported); the call would fail the same way.
			o := r.rejected(e)
			return nil, &o, "", nil
		}
		return nil, nil, im.APIGet, err
	}
	return &lookup{groups: groups, contacts: contacts}, nil, "", nil
}

// found counts an existence check by whether it found the event's group (or effect).
func (r *run) found(ok bool) {
	r.d.cfg.Metrics.UncertainChecks.WithLabelValues(strconv.FormatBool(ok)).Inc()
}

// addMissing adds the event's missing conversations to its existing group with
// update_contact_group. It returns an outcome, or the failure to handle.
func (r *run) addMissing(ctx context.Context, group *im.GroupItem, missing []im.ContactItem) (*Outcome, string, error) {
	req := &im.UpdateRequest{FromAccount: r.ev.FromAccount, UpdateType: im.UpdateTypeGroup, UpdateGroup: im.UpdateGroup{
		UpdateGroupType: im.UpdateGroupTypeAddDel, OldGroupName: r.ev.GroupName}}
	for _, c := range missing {
		req.UpdateGroup.ContactUpdateItem = append(req.UpdateGroup.ContactUpdateItem,
			im.ContactUpdateItem{ContactOptType: im.ContactOptAdd, ContactItem: c})
	}
	err := r.call(ctx, im.APIUpdate, func(ctx context.Context) error {
		return withPartial(r.d.cfg.API.UpdateContactGroup(ctx, req))
	})
	if err == nil {
		return r.applied(), "", nil
	}
	e := asIMError(im.APIUpdate, err)
	switch {
	case ctx.Err() != nil:
	case e.Partial && !r.retryablePartial(e):
		if e.Group == nil || e.Group.GroupID == 0 {
			e.Group = group
		}
		return r.partial(e), "", nil
	case !e.Partial && e.Class == im.ClassPermanent && !r.groupCheckRetry(e.Code) && e.Code != im.CodeGroupNotFound:
		// The group exists without these conversations: partly applied.
		e.Group = group
		e.Results = nil
		for _, c := range missing {
			e.Results = append(e.Results, im.ContactResult{ContactItem: c, ResultCode: e.Code, ResultInfo: e.Info})
		}
		return r.partial(e), "", nil
	}
	return nil, im.APIUpdate, err
}

// getAll walks get_contact_group's pages the way im does (im.WalkContactGroups), each page
// passing the get limiter.
func (r *run) getAll(ctx context.Context) ([]im.GroupItem, []im.ContactInfo, error) {
	var (
		groups   []im.GroupItem
		contacts []im.ContactInfo
	)
	get := func(ctx context.Context, req *im.GetRequest) (page *im.GetResponse, err error) {
		err = r.call(ctx, im.APIGet, func(ctx context.Context) error {
			var err error
			page, err = r.d.cfg.API.GetContactGroup(ctx, req)
			if err == nil && page == nil {
				err = im.MalformedError(im.APIGet, "empty answer")
			}
			return err
		})
		return page, err
	}
	err := im.WalkContactGroups(ctx, r.ev.FromAccount, get, func(page *im.GetResponse) {
		groups = append(groups, page.GroupItem...)
		contacts = append(contacts, page.ContactItem...)
	})
	if err != nil {
		return nil, nil, err
	}
	return groups, contacts, nil
}

// findGroup is the group named name, or nil.
func findGroup(groups []im.GroupItem, name string) *im.GroupItem {
	for i := range groups {
		if groups[i].GroupName == name {
			return &groups[i]
		}
	}
	return nil
}

func contactItems(cs []event.Contact) []im.ContactItem {
	out := make([]im.ContactItem, len(cs))
	for i, c := range cs {
		out[i] = im.ContactItem{Type: c.Type, ToAccount: c.ToAccount, ToGroupID: c.ToGroupID}
	}
	return out
}

// missingContacts lists the event's conversations (deduplicated) that are not in group gid.
func missingContacts(want []event.Contact, have []im.ContactInfo, gid int64) []im.ContactItem {
	in := make(map[string]bool, len(have))
	for _, c := range have {
		for _, id := range c.ContactGroupID {
			if id == gid {
				in[c.Item().Key()] = true
				break
			}
		}
	}
	var out []im.ContactItem
	for _, c := range contactItems(want) {
		if k := c.Key(); !in[k] {
			in[k] = true
			out = append(out, c)
		}
	}
	return out
}
