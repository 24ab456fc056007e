//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package instancelock

import (
	"errors"
	"os"
)

// tryLock fails where syscall has no flock: without a lock the kernel drops at death, nothing
// proves a predecessor dead.
func tryLock(*os.File) (bool, error) {
	return false, errors.New("no flock on this platform")
}
