// Package instancelock proves that the previous process of a replica is dead: each process holds
// an exclusive lock on a file named after its instance id, which the kernel drops when the
// process dies, and leaves its member id in it for the next one.
package instancelock

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// ErrHeld is returned by Acquire when another open lock file (another process, or another
// Acquire in this one) holds the lock: its holder may be alive, if frozen, so nothing it owns may
// be taken over.
var ErrHeld = errors.New("instance lock held by another process")

// maxContent bounds what Acquire reads of the previous holder's member id; a member id is far
// shorter, so a longer file was not written by Acquire.
const maxContent = 4096

// Lock is a held instance lock. The zero value is not usable; get one from Acquire.
type Lock struct {
	mu   sync.Mutex
	f    *os.File
	path string
}

// Acquire takes the exclusive lock on <dir>/<instanceID>.lock without waiting, creating dir
// (0o700) and the file (0o600) if needed. It returns ErrHeld (wrapped) if another holder has it.
// On success it returns the member id the previous holder wrote ("" if none) and leaves member
// in the file in its place. The lock lasts until Close or until the process dies; the file is
// opened close-on-exec, so a child process does not keep it past its parent.
func Acquire(dir, instanceID, member string) (*Lock, string, error) {
	if err := validate(dir, instanceID, member); err != nil {
		return nil, "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", fmt.Errorf("instancelock: %w", err)
	}
	path := filepath.Join(dir, instanceID+".lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, "", fmt.Errorf("instancelock: %w", err)
	}
	held, err := tryLock(f)
	if err == nil && held {
		err = fmt.Errorf("instancelock: %s: %w", path, ErrHeld)
	} else if err != nil {
		err = fmt.Errorf("instancelock: lock %s: %w", path, err)
	}
	if err != nil {
		f.Close()
		return nil, "", err
	}
	prev, err := swap(f, member)
	if err != nil {
		f.Close() // drops the lock: a holder that could not record itself is no holder
		return nil, "", fmt.Errorf("instancelock: %s: %w", path, err)
	}
	return &Lock{f: f, path: path}, prev, nil
}

// validate refuses what would put the lock file outside dir, or a member id the next holder
// would read back differently.
func validate(dir, instanceID, member string) error {
	switch {
	case dir == "":
		return errors.New("instancelock: empty directory")
	case instanceID == "":
		return errors.New("instancelock: empty instance id")
	case strings.ContainsAny(instanceID, `/\`+"\x00"):
		return fmt.Errorf("instancelock: instance id %q has a path separator or NUL", instanceID)
	case strings.ContainsAny(member, "\r\n\x00") || strings.TrimSpace(member) != member:
		return fmt.Errorf("instancelock: member id %q has a line break, NUL or outer space", member)
	}
	return nil
}

// swap reads the previous holder's member id and replaces it with member, synced, so a holder
// that dies right after Acquire still names itself to the next.
func swap(f *os.File, member string) (string, error) {
	b, err := io.ReadAll(io.LimitReader(f, maxContent))
	if err != nil {
		return "", err
	}
	if err := f.Truncate(0); err != nil {
		return "", err
	}
	if _, err := f.WriteAt([]byte(member+"\n"), 0); err != nil {
		return "", err
	}
	if err := f.Sync(); err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// Path is the lock file's path.
func (l *Lock) Path() string { return l.path }

// Close releases the lock; later calls do nothing. The file stays, with the member id in it, for
// the next holder to read.
func (l *Lock) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
