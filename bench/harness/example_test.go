package harness_test

import (
	"fmt"

	"github.com/chatgroupd/chatgroupd/bench/harness"
)

func ExampleSelect() {
	scs, err := harness.Select(harness.Scenarios(harness.Quick), "util-100ms,restart")
	if err != nil {
		panic(err)
	}
	for _, s := range scs {
		fmt.Println(s.Name, s.Kind, s.Latency, s.Accounts)
	}
	// Output:
	// util-100ms-10acc utilisation 100ms 10
	// util-100ms-1000acc utilisation 100ms 1000
	// restart restart 20ms 1000
}
