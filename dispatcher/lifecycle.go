package dispatcher

import (
	"context"
	"fmt"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
)

// op applies one event type (docs/events.md, contract v2). send makes the type's call; look is
// its existence check, made first after an ambiguous failure, for an uncertain record and for a
// replay, so that no event has its effect twice. Each returns an outcome, or the failure to
// handle with the API that failed; look returns neither when the call is still to be made.
type op interface {
	look(ctx context.Context, r *run) (*Outcome, string, error)
	send(ctx context.Context, r *run) (*Outcome, string, error)
}

// opFor is the op of type t; Validate has rejected unknown types before.
func opFor(t event.Type) op {
	switch t {
	case event.TypeContactGroupRenamed:
		return renameOp{}
	case event.TypeContactGroupContactsAdded:
		return contactsOp{opt: im.ContactOptAdd}
	case event.TypeContactGroupContactsRemoved:
		return contactsOp{opt: im.ContactOptDel}
	case event.TypeContactGroupDeleted:
		return deleteOp{}
	}
	return createOp{}
}

// renameOp applies contact_group.renamed: update_contact_group renaming group_name to
// new_group_name. A look-up finds it applied when the new name exists and the old one doesn't.
type renameOp struct{}

func (renameOp) look(ctx context.Context, r *run) (*Outcome, string, error) {
	lk, o, api, err := r.lookUp(ctx)
	if lk == nil {
		return o, api, err
	}
	old, renamed := findGroup(lk.groups, r.ev.GroupName), findGroup(lk.groups, r.ev.NewGroupName)
	r.found(old == nil && renamed != nil)
	switch {
	case old == nil && renamed != nil:
		return r.applied(), "", nil
	case old == nil:
		return r.groupMissing(im.APIUpdate), "", nil
	}
	// The old name is there (and the new one too, maybe: the API then refuses the rename).
	r.check = false
	return nil, "", nil
}

func (renameOp) send(ctx context.Context, r *run) (*Outcome, string, error) {
	return r.update(ctx, &im.UpdateRequest{FromAccount: r.ev.FromAccount, UpdateType: im.UpdateTypeGroup,
		UpdateGroup: im.UpdateGroup{UpdateGroupType: im.UpdateGroupTypeRename, OldGroupName: r.ev.GroupName,
			NewGroupName: r.ev.NewGroupName}})
}

// contactsOp applies contact_group.contacts_added (opt im.ContactOptAdd) and
// contact_group.contacts_removed (im.ContactOptDel): update_contact_group with one item per
// conversation. A look-up leaves only the conversations not yet in the group (adds) or still in
// it (removes) to send; none left: applied.
type contactsOp struct{ opt int }

func (c contactsOp) look(ctx context.Context, r *run) (*Outcome, string, error) {
	lk, o, api, err := r.lookUp(ctx)
	if lk == nil {
		return o, api, err
	}
	group := findGroup(lk.groups, r.ev.GroupName)
	if group == nil {
		r.found(false)
		return r.groupMissing(im.APIUpdate), "", nil
	}
	if c.opt == im.ContactOptAdd {
		r.items = missingContacts(r.ev.Contacts, lk.contacts, group.GroupID)
	} else {
		r.items = presentContacts(r.ev.Contacts, lk.contacts, group.GroupID)
	}
	r.found(len(r.items) == 0)
	if len(r.items) == 0 {
		return r.applied(), "", nil
	}
	r.check = false
	return nil, "", nil
}

func (c contactsOp) send(ctx context.Context, r *run) (*Outcome, string, error) {
	items := r.items
	if items == nil {
		items = contactItems(r.ev.Contacts)
	}
	req := &im.UpdateRequest{FromAccount: r.ev.FromAccount, UpdateType: im.UpdateTypeGroup, UpdateGroup: im.UpdateGroup{
		UpdateGroupType: im.UpdateGroupTypeAddDel, OldGroupName: r.ev.GroupName}}
	for _, it := range items {
		req.UpdateGroup.ContactUpdateItem = append(req.UpdateGroup.ContactUpdateItem,
			im.ContactUpdateItem{ContactOptType: c.opt, ContactItem: it})
	}
	return r.update(ctx, req)
}

// deleteOp applies contact_group.deleted: del_contact_group with the one name. A look-up finds
// it applied when the group is gone.
type deleteOp struct{}

func (deleteOp) look(ctx context.Context, r *run) (*Outcome, string, error) {
	lk, o, api, err := r.lookUp(ctx)
	if lk == nil {
		return o, api, err
	}
	gone := findGroup(lk.groups, r.ev.GroupName) == nil
	r.found(gone)
	if gone {
		return r.applied(), "", nil
	}
	r.check = false
	return nil, "", nil
}

func (deleteOp) send(ctx context.Context, r *run) (*Outcome, string, error) {
	req := &im.DeleteRequest{FromAccount: r.ev.FromAccount, GroupName: []string{r.ev.GroupName}}
	err := r.call(ctx, im.APIDelete, func(ctx context.Context) error {
		_, err := r.d.cfg.API.DelContactGroup(ctx, req)
		return err
	})
	if err == nil {
		return r.applied(), "", nil
	}
	return nil, im.APIDelete, err
}

// update sends an update_contact_group of a v2 event. It returns an outcome, or the failure to
// handle; failed conversations a retry can't fix make the outcome partial.
func (r *run) update(ctx context.Context, req *im.UpdateRequest) (*Outcome, string, error) {
	err := r.call(ctx, im.APIUpdate, func(ctx context.Context) error {
		return withPartial(r.d.cfg.API.UpdateContactGroup(ctx, req))
	})
	return r.answered(ctx, im.APIUpdate, err)
}

// groupMissing is the rejected outcome of a v2 event whose group a look-up did not find, as
// the API's own answer would be (51009): its create may be in the DLQ, to be replayed first.
func (r *run) groupMissing(api string) *Outcome {
	o := r.rejected(&im.Error{API: api, Class: im.ClassPermanent, Code: im.CodeGroupNotFound,
		Info: fmt.Sprintf("conversation group %q does not exist (found by a look-up)", r.ev.GroupName)})
	return &o
}

// presentContacts lists the event's conversations (deduplicated) that are in group gid.
func presentContacts(want []event.Contact, have []im.ContactInfo, gid int64) []im.ContactItem {
	missing := map[string]bool{}
	for _, c := range missingContacts(want, have, gid) {
		missing[c.Key()] = true
	}
	var out []im.ContactItem
	for _, c := range contactItems(want) {
		if k := c.Key(); !missing[k] {
			missing[k] = true // once
			out = append(out, c)
		}
	}
	return out
}
