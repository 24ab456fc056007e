package instancelock_test

import (
	"errors"
	"fmt"
	"os"

	"github.com/chatgroupd/chatgroupd/internal/instancelock"
)

func ExampleAcquire() {
	dir, _ := os.MkdirTemp("", "locks")
	defer os.RemoveAll(dir)

	// The first process of replica-0 finds no predecessor.
	l, prev, _ := instancelock.Acquire(dir, "replica-0", "member-a")
	fmt.Printf("previous: %q\n", prev)

	// While it lives (even frozen), its successor must not take over.
	_, _, err := instancelock.Acquire(dir, "replica-0", "member-b")
	fmt.Println(errors.Is(err, instancelock.ErrHeld))

	// Once it is gone, the successor learns whom it succeeds.
	l.Close()
	l, prev, _ = instancelock.Acquire(dir, "replica-0", "member-b")
	defer l.Close()
	fmt.Printf("previous: %q\n", prev)
	// Output:
	// previous: ""
	// true
	// previous: "member-a"
}
