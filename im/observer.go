package im

import "time"

// Observer hears about the client's HTTP requests, so that the caller can count them (the
// service turns them into its API request metrics, docs/operations.md) without the client
// knowing how. Config.Observer nil observes nothing.
type Observer interface {
	// RequestDone reports one HTTP request of api (the re-sign retry after 70001/70052 is a
	// request of its own): code is "0" for a success, else the failure's Error.MetricCode(), and
	// took runs from building the request to the decoded answer. It is called on the calling
	// goroutine, so it must be quick and safe for concurrent use.
	RequestDone(api, code string, took time.Duration)
}

// nopObserver is the Observer of a Config without one.
type nopObserver struct{}

// RequestDone does nothing.
func (nopObserver) RequestDone(string, string, time.Duration) {}
