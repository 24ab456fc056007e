package imsim

import (
	"encoding/json"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/chatgroupd/chatgroupd/im"
)

// apply decodes and executes one admitted call.
func (s *Server) apply(api string, body []byte) *response {
	if len(body) > maxBodyBytes {
		return fail(codeBadParams, "request body over 1 MiB")
	}
	switch api {
	case im.APICreate:
		return decodeThen(body, s.create)
	case im.APIGet:
		return decodeThen(body, s.get)
	case im.APIUpdate:
		return decodeThen(body, s.update)
	default:
		return decodeThen(body, s.del)
	}
}

// decodeThen decodes body as a request of type T and hands it to op; bad JSON answers 50002.
func decodeThen[T any](body []byte, op func(*T) *response) *response {
	var req T
	if err := json.Unmarshal(body, &req); err != nil {
		return fail(codeBadParams, "invalid JSON body")
	}
	return op(&req)
}

// imported is false for accounts that answer 50001.
func (s *Server) imported(acct string) bool {
	if s.notImp[acct] {
		return false
	}
	return s.cfg.Imported == nil || s.cfg.Imported(acct)
}

func (s *Server) checkName(name, field string) *response {
	switch {
	case name == "" || !utf8.ValidString(name):
		return fail(codeBadParams, field+" must be non-empty UTF-8")
	case s.cfg.NameUnit == NameBytes && len(name) > s.cfg.MaxNameBytes,
		s.cfg.NameUnit == NameChars && utf8.RuneCountInString(name) > s.cfg.MaxNameBytes:
		return fail(codeNameTooLong, field+" over "+strconv.Itoa(s.cfg.MaxNameBytes)+" "+s.cfg.NameUnit)
	}
	return nil
}

// accountLocked returns acct's state, creating it when create is set.
func (s *Server) accountLocked(acct string, create bool) *account {
	a := s.accounts[acct]
	if a == nil && create {
		a = newAccount()
		s.accounts[acct] = a
	}
	return a
}

// addItemLocked adds c to g, or returns the per-item failure code.
func (s *Server) addItemLocked(a *account, g *Group, c im.ContactItem) (int, string) {
	if c.Type == im.ContactGroup && s.dismiss[c.ToGroupID] {
		return codeGroupCheckFailed, "group dismissed or user not a member"
	}
	if g.has(c) && s.cfg.AddExistingCode != 0 {
		return s.cfg.AddExistingCode, "conversation already in the group"
	}
	if !g.has(c) && a.refs[c.Key()] == 0 && len(a.refs) >= s.cfg.MaxContacts {
		return codeTooManyContacts, "grouped conversations would exceed " + strconv.Itoa(s.cfg.MaxContacts)
	}
	a.add(g, c)
	return 0, ""
}

// checkCreate checks a create request before it touches any state; nil when it may go ahead.
func (s *Server) checkCreate(req *im.CreateRequest) *response {
	if msg := checkAccount(req.FromAccount); msg != "" {
		return fail(codeBadParams, msg)
	}
	if len(req.GroupContactItem) != 1 {
		return fail(codeBadParams, "GroupContactItem must hold exactly one group")
	}
	item := req.GroupContactItem[0]
	if r := s.checkName(item.GroupName, "GroupName"); r != nil {
		return r
	}
	if n := len(item.ContactItem); n == 0 || n > s.cfg.MaxContactsPerCall {
		return fail(codeBadParams, "ContactItem must hold 1-"+strconv.Itoa(s.cfg.MaxContactsPerCall)+" conversations")
	}
	for _, c := range item.ContactItem {
		if msg := checkContact(c); msg != "" {
			return fail(codeBadParams, msg)
		}
	}
	if !s.imported(req.FromAccount) {
		return fail(codeNotImported, "From_Account is not imported")
	}
	return nil
}

func (s *Server) create(req *im.CreateRequest) *response {
	if r := s.checkCreate(req); r != nil {
		return r
	}
	item := req.GroupContactItem[0]
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.accountLocked(req.FromAccount, true)
	g := a.find(item.GroupName)
	if g != nil {
		s.dupCreates++
		s.dupCount.Inc()
		switch s.cfg.DuplicateNames {
		case DuplicateReject:
			return fail(s.cfg.DuplicateCode, "GroupName already exists")
		case DuplicateAllow:
			g = nil
		}
	}
	fresh := g == nil
	if fresh {
		if len(a.Groups) >= s.cfg.MaxGroups {
			return fail(codeTooManyGroups, "more than "+strconv.Itoa(s.cfg.MaxGroups)+" conversation groups")
		}
		g = &Group{Name: item.GroupName, ID: a.NextID}
	}
	results := make([]im.ContactResult, 0, len(item.ContactItem))
	var eff effect
	okCount := 0
	for _, c := range item.ContactItem {
		had := g.has(c)
		code, info := s.addItemLocked(a, g, c)
		if code == 0 {
			okCount++
		}
		results = append(results, im.ContactResult{ContactItem: c, ResultCode: code, ResultInfo: info})
		eff.results = append(eff.results, code)
		eff.changed = append(eff.changed, code == 0 && !had)
		eff.applied = eff.applied || code == 0 && !had
	}
	if fresh {
		if okCount == 0 {
			// Nothing fit: no group. The item code becomes the top-level code.
			return fail(results[0].ResultCode, results[0].ResultInfo)
		}
		a.NextID++
		a.Groups = append(a.Groups, g)
		s.groupsCreated++
		s.created.Inc()
	}
	r := ok()
	r.effect = eff
	r.GroupResultItem = []im.GroupResultItem{{GroupItem: im.GroupItem{GroupName: g.Name, GroupID: g.ID}, ResultItem: results}}
	return r
}

func (s *Server) get(req *im.GetRequest) *response {
	if msg := checkAccount(req.FromAccount); msg != "" {
		return fail(codeBadParams, msg)
	}
	if req.StartIndex < 0 {
		return fail(codeBadParams, "StartIndex must not be negative")
	}
	if !s.imported(req.FromAccount) {
		return fail(codeNotImported, "From_Account is not imported")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	groups := []im.GroupItem{}
	all := []im.ContactInfo{}
	if a := s.accountLocked(req.FromAccount, false); a != nil {
		for _, g := range a.Groups {
			groups = append(groups, im.GroupItem{GroupName: g.Name, GroupID: g.ID})
		}
		all = a.contacts()
	}
	start := min(req.StartIndex, len(all))
	end := min(start+s.cfg.PageSize, len(all))
	page := all[start:end]
	complete := 0
	if end >= len(all) {
		complete = 1
	}
	r := ok()
	r.GroupItem, r.ContactItem, r.CompleteFlag, r.NextStartIndex = &groups, &page, &complete, &end
	return r
}

// checkUpdate checks an update request before it touches any state; nil when it may go ahead.
func (s *Server) checkUpdate(req *im.UpdateRequest) *response {
	if msg := checkAccount(req.FromAccount); msg != "" {
		return fail(codeBadParams, msg)
	}
	u := req.UpdateGroup
	if req.UpdateType != im.UpdateTypeGroup {
		return fail(codeBadParams, "UpdateType must be 1")
	}
	if u.OldGroupName == "" {
		return fail(codeBadParams, "OldGroupName is required")
	}
	switch u.UpdateGroupType {
	case im.UpdateGroupTypeRename:
		if r := s.checkName(u.NewGroupName, "NewGroupName"); r != nil {
			return r
		}
	case im.UpdateGroupTypeAddDel:
		if n := len(u.ContactUpdateItem); n == 0 || n > s.cfg.MaxContactsPerCall {
			return fail(codeBadParams, "ContactUpdateItem must hold 1-"+strconv.Itoa(s.cfg.MaxContactsPerCall)+" items")
		}
		for _, it := range u.ContactUpdateItem {
			if it.ContactOptType != im.ContactOptAdd && it.ContactOptType != im.ContactOptDel {
				return fail(codeBadParams, "ContactOptType must be 1 (add) or 2 (remove)")
			}
			if msg := checkContact(it.ContactItem); msg != "" {
				return fail(codeBadParams, msg)
			}
		}
	default:
		return fail(codeBadParams, "UpdateGroupType must be 1 (rename) or 2 (add/remove)")
	}
	if !s.imported(req.FromAccount) {
		return fail(codeNotImported, "From_Account is not imported")
	}
	return nil
}

func (s *Server) update(req *im.UpdateRequest) *response {
	if r := s.checkUpdate(req); r != nil {
		return r
	}
	u := req.UpdateGroup
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.accountLocked(req.FromAccount, false)
	var g *Group
	if a != nil {
		g = a.find(u.OldGroupName)
	}
	if g == nil {
		return fail(s.cfg.MissingGroupCode, "conversation group does not exist")
	}
	res := im.UpdateGroupResult{GroupID: g.ID}
	var eff effect
	if u.UpdateGroupType == im.UpdateGroupTypeRename {
		if other := a.find(u.NewGroupName); other != nil && other != g && s.cfg.RenameDuplicates == DuplicateReject {
			return fail(s.cfg.DuplicateCode, "NewGroupName already exists")
		}
		eff.applied = g.Name != u.NewGroupName
		g.Name = u.NewGroupName
	} else {
		// Items apply in order, each on its own: a remove before an add frees room for it, and
		// an item that fails (51007, 51008) leaves the others applied. The group exists, so the
		// answer is OK even when every item failed; the per-item codes say what happened.
		for _, it := range u.ContactUpdateItem {
			code, info := 0, ""
			had := g.has(it.ContactItem)
			switch {
			case it.ContactOptType == im.ContactOptAdd:
				code, info = s.addItemLocked(a, g, it.ContactItem)
			case !had && s.cfg.RemoveMissingCode != 0:
				code, info = s.cfg.RemoveMissingCode, "conversation not in the group"
			default:
				a.remove(g, it.ContactItem)
			}
			changed := code == 0 && had != g.has(it.ContactItem)
			eff.results = append(eff.results, code)
			eff.changed = append(eff.changed, changed)
			eff.applied = eff.applied || changed
			res.ContactResultItem = append(res.ContactResultItem, im.ContactUpdateResult{
				ContactOptType: it.ContactOptType, ContactItem: it.ContactItem, ResultCode: code, ResultInfo: info})
		}
	}
	res.GroupName = g.Name
	r := ok()
	r.effect = eff
	r.UpdateGroupResult = &res
	return r
}

func (s *Server) del(req *im.DeleteRequest) *response {
	if msg := checkAccount(req.FromAccount); msg != "" {
		return fail(codeBadParams, msg)
	}
	if n := len(req.GroupName); n == 0 || n > s.cfg.MaxGroups {
		return fail(codeBadParams, "GroupName must list 1-"+strconv.Itoa(s.cfg.MaxGroups)+" names")
	}
	if !s.imported(req.FromAccount) {
		return fail(codeNotImported, "From_Account is not imported")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.accountLocked(req.FromAccount, false)
	var gs []*Group
	for _, name := range req.GroupName {
		var g *Group
		if a != nil {
			g = a.find(name)
		}
		if g == nil {
			if s.cfg.DeleteMissingOK {
				continue
			}
			return fail(s.cfg.MissingGroupCode, "conversation group does not exist")
		}
		gs = append(gs, g)
	}
	r := ok()
	for _, g := range gs {
		if slices.Contains(a.Groups, g) { // a name listed twice is deleted once
			r.effect.deleted = append(r.effect.deleted, g.Name)
			a.deleteGroup(g)
		}
	}
	r.effect.applied = len(r.effect.deleted) > 0
	return r
}
