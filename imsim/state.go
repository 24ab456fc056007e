package imsim

import (
	"slices"
	"unicode/utf8"

	"github.com/chatgroupd/chatgroupd/im"
)

// Group is one conversation group as the simulator holds it.
type Group struct {
	Name     string           `json:"GroupName"`
	ID       int64            `json:"GroupId"`
	Contacts []im.ContactItem `json:"Contacts"`
}

// account is one user's groups. refs counts, per conversation key, the groups holding it: the
// 1000 limit is on distinct conversations across all groups (a conversation in two groups counts
// once), which is how the limit reads in the API page.
type account struct {
	Groups []*Group `json:"Groups"`
	NextID int64    `json:"NextID"`
	refs   map[string]int
}

func newAccount() *account { return &account{NextID: 1, refs: map[string]int{}} }

func (a *account) reindex() {
	a.refs = map[string]int{}
	for _, g := range a.Groups {
		for _, c := range g.Contacts {
			a.refs[c.Key()]++
		}
	}
}

func (a *account) find(name string) *Group {
	for _, g := range a.Groups {
		if g.Name == name {
			return g
		}
	}
	return nil
}

func (g *Group) has(c im.ContactItem) bool {
	return slices.ContainsFunc(g.Contacts, func(x im.ContactItem) bool { return x.Key() == c.Key() })
}

// add puts c into g; the caller checked the limits.
func (a *account) add(g *Group, c im.ContactItem) {
	if g.has(c) {
		return
	}
	g.Contacts = append(g.Contacts, c)
	a.refs[c.Key()]++
}

func (a *account) remove(g *Group, c im.ContactItem) {
	i := slices.IndexFunc(g.Contacts, func(x im.ContactItem) bool { return x.Key() == c.Key() })
	if i < 0 {
		return
	}
	g.Contacts = slices.Delete(g.Contacts, i, i+1)
	if a.refs[c.Key()]--; a.refs[c.Key()] <= 0 {
		delete(a.refs, c.Key())
	}
}

func (a *account) deleteGroup(g *Group) {
	for _, c := range slices.Clone(g.Contacts) {
		a.remove(g, c)
	}
	a.Groups = slices.DeleteFunc(a.Groups, func(x *Group) bool { return x == g })
}

// contacts lists distinct grouped conversations in first-grouped order with their group ids.
func (a *account) contacts() []im.ContactInfo {
	var out []im.ContactInfo
	idx := map[string]int{}
	for _, g := range a.Groups {
		for _, c := range g.Contacts {
			i, ok := idx[c.Key()]
			if !ok {
				i = len(out)
				idx[c.Key()] = i
				out = append(out, im.ContactInfo{Type: c.Type, ToAccount: c.ToAccount, ToGroupID: c.ToGroupID})
			}
			out[i].ContactGroupID = append(out[i].ContactGroupID, g.ID)
		}
	}
	return out
}

func (g *Group) clone() Group {
	return Group{Name: g.Name, ID: g.ID, Contacts: slices.Clone(g.Contacts)}
}

// checkContact reports what is wrong with one conversation item, or "".
func checkContact(c im.ContactItem) string {
	switch c.Type {
	case im.ContactC2C:
		if c.ToAccount == "" || len(c.ToAccount) > 32 {
			return "To_Account must be 1-32 bytes for Type 1"
		}
	case im.ContactGroup:
		if c.ToGroupID == "" || len(c.ToGroupID) > 48 {
			return "ToGroupId must be 1-48 bytes for Type 2"
		}
	default:
		return "Type must be 1 (c2c) or 2 (group)"
	}
	return ""
}

// checkAccount reports what is wrong with a From_Account, or "".
func checkAccount(s string) string {
	if s == "" || len(s) > 32 || !utf8.ValidString(s) {
		return "From_Account must be 1-32 bytes of UTF-8"
	}
	return ""
}
