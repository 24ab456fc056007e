// Command naive runs the benchmark's naive peer: the kafka-go loop a team writes first. It takes
// the same flags as `chatgroupd run` (the subset it understands) and the key from
// CHATGROUPD_SECRET_KEY.
package main

import (
	"github.com/chatgroupd/chatgroupd/bench/naive"
	"github.com/chatgroupd/chatgroupd/bench/peer"
)

func main() { peer.Main("naive", naive.Run) }
