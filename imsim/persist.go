package imsim

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
)

// SaveState writes every account's groups to path as JSON (atomically, via a temp file).
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
// error (first start).
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
	for name, a := range accts {
		if a == nil {
			a = newAccount()
			accts[name] = a
		}
		a.reindex()
		for _, g := range a.Groups {
			a.NextID = max(a.NextID, g.ID+1)
		}
	}
	s.mu.Lock()
	s.accounts = accts
	s.mu.Unlock()
	return nil
}
