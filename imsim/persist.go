package imsim

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
)

// SaveState writes the whole state — every account's groups with their ids, names and
// conversations, and the next id of each account — to path as JSON (atomically, via a temp
// file), for LoadState in the next process.
func (s *Server) SaveState(path string) error {
	s.mu.Lock()
	b, err := json.MarshalIndent(s.accounts, "", " ")
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("imsim save state: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("imsim save state: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("imsim save state: %w", err)
	}
	return nil
}

// LoadState replaces the state with the one SaveState wrote to path. A missing file is not an
// error (first start). A state this simulator could not have produced under its Config (a bad
// account or name, a duplicate name or id, an invalid conversation, more groups or
// conversations than the limits) is refused with every problem named, and nothing is loaded:
// serving from it would answer codes the real API never would.
func (s *Server) LoadState(path string) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("imsim load state: %w", err)
	}
	accts := map[string]*account{}
	if err := json.Unmarshal(b, &accts); err != nil {
		return fmt.Errorf("imsim load state %s: %w", path, err)
	}
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(accts)) { // problems in one order
		a := accts[name]
		if a == nil {
			a = newAccount()
			accts[name] = a
		}
		if err := s.checkLoaded(name, a); err != nil {
			errs = append(errs, err)
			continue
		}
		a.reindex()
		for _, g := range a.Groups {
			a.NextID = max(a.NextID, g.ID+1)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("imsim load state %s: %w", path, errors.Join(errs...))
	}
	s.mu.Lock()
	s.accounts = accts
	s.mu.Unlock()
	return nil
}

// checkLoaded reports what is wrong with one loaded account, nil when it could have been served.
func (s *Server) checkLoaded(name string, a *account) error {
	var errs []error
	add := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("account %q: "+format, append([]any{name}, args...)...))
	}
	if msg := checkAccount(name); msg != "" {
		add("%s", msg)
	}
	if len(a.Groups) > s.cfg.MaxGroups {
		add("%d groups, over the limit of %d", len(a.Groups), s.cfg.MaxGroups)
	}
	names, ids, distinct := map[string]bool{}, map[int64]bool{}, map[string]bool{}
	dupsAllowed := s.cfg.DuplicateNames == DuplicateAllow || s.cfg.RenameDuplicates == DuplicateAllow
	for i, g := range a.Groups {
		if g == nil {
			add("group %d is null", i)
			continue
		}
		if r := s.checkName(g.Name, "GroupName"); r != nil {
			add("group %q: %s", g.Name, r.ErrorInfo)
		}
		if names[g.Name] && !dupsAllowed {
			add("group name %q twice (duplicate names are rejected)", g.Name)
		}
		if g.ID <= 0 || ids[g.ID] {
			add("group %q: id %d is not positive or is used twice", g.Name, g.ID)
		}
		names[g.Name], ids[g.ID] = true, true
		inGroup := map[string]bool{}
		for _, c := range g.Contacts {
			if msg := checkContact(c); msg != "" {
				add("group %q: %s", g.Name, msg)
			}
			if inGroup[c.Key()] {
				add("group %q: conversation %s twice", g.Name, c.Key())
			}
			inGroup[c.Key()], distinct[c.Key()] = true, true
		}
	}
	if len(distinct) > s.cfg.MaxContacts {
		add("%d grouped conversations, over the limit of %d", len(distinct), s.cfg.MaxContacts)
	}
	return errors.Join(errs...)
}
