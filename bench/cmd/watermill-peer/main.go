// Command watermill-peer runs the benchmark's Watermill peer: a watermill-kafka router with
// Throttle, Retry, Deduplicator and PoisonQueue. It takes the same flags as `chatgroupd run` (the
// subset it understands) and the key from CHATGROUPD_SECRET_KEY.
package main

import (
	"github.com/chatgroupd/chatgroupd/bench/peer"
	"github.com/chatgroupd/chatgroupd/bench/watermillpeer"
)

func main() { peer.Main("watermill-peer", watermillpeer.Run) }
