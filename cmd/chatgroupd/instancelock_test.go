package main

import (
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/chatgroupd/chatgroupd/internal/instancelock"
)

// TestLockInstance: the replica takes over only when it holds the lock, and otherwise runs on
// as without --instance-lock-dir, saying why.
func TestLockInstance(t *testing.T) {
	notADir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notADir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		dir, id  string
		prepare  func(t *testing.T, dir string) // before lockInstance
		wantLock bool
		wantPrev string
		wantLog  zapcore.Level // level of the one log line, or DebugLevel for none
	}{
		{name: "off", id: "replica-0", wantLog: zapcore.DebugLevel},
		{name: "no instance id", dir: "dir", wantLog: zapcore.DebugLevel},
		{name: "first", dir: "dir", id: "replica-0", wantLock: true, wantLog: zapcore.InfoLevel},
		{name: "after a dead predecessor", dir: "dir", id: "replica-0", prepare: func(t *testing.T, dir string) {
			l, _, err := instancelock.Acquire(dir, "replica-0", "dead-member")
			if err != nil {
				t.Fatal(err)
			}
			l.Close()
		}, wantLock: true, wantPrev: "dead-member", wantLog: zapcore.InfoLevel},
		{name: "predecessor alive", dir: "dir", id: "replica-0", prepare: func(t *testing.T, dir string) {
			l, _, err := instancelock.Acquire(dir, "replica-0", "live-member")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
		}, wantLog: zapcore.WarnLevel},
		{name: "unusable dir", dir: notADir, id: "replica-0", wantLog: zapcore.ErrorLevel},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := tc.dir
			if dir == "dir" {
				dir = t.TempDir()
			}
			if tc.prepare != nil {
				tc.prepare(t, dir)
			}
			core, logs := observer.New(zapcore.InfoLevel)
			lock, prev := lockInstance(serviceFlags{instanceLockDir: dir, instanceID: tc.id}, "me", zap.New(core))
			if lock != nil {
				defer lock.Close()
			}
			if (lock != nil) != tc.wantLock || prev != tc.wantPrev {
				t.Errorf("lockInstance = %v, %q; want lock %v, %q", lock, prev, tc.wantLock, tc.wantPrev)
			}
			all := logs.All()
			if tc.wantLog == zapcore.DebugLevel {
				if len(all) != 0 {
					t.Errorf("logged %v, want nothing", all)
				}
				return
			}
			if len(all) != 1 || all[0].Level != tc.wantLog {
				t.Errorf("logged %v, want one %v line", all, tc.wantLog)
			}
		})
	}
}
