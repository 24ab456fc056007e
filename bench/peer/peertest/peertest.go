// Package peertest holds the fakes the benchmark peers' tests share. A ScriptedAPI answers
// create calls from a per-group script, so a test can make a group fail transiently, then
// succeed, or fail for good.
package peertest

import (
	"context"
	"sync"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
)

// ScriptedAPI answers each create with the next error scripted for its group name; once a
// group's script is used up, its creates succeed. It is safe for concurrent use.
type ScriptedAPI struct {
	mu     sync.Mutex
	script map[string][]error
	calls  map[string]int
}

// NewScriptedAPI returns an API that plays script (group name → errors, in order).
func NewScriptedAPI(script map[string][]error) *ScriptedAPI {
	return &ScriptedAPI{script: script, calls: map[string]int{}}
}

// CreateContactGroup answers from the script of the request's first group.
func (f *ScriptedAPI) CreateContactGroup(_ context.Context, req *im.CreateRequest) (*im.CreateResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	name := req.GroupContactItem[0].GroupName
	f.calls[name]++
	if s := f.script[name]; len(s) > 0 {
		f.script[name] = s[1:]
		return nil, s[0]
	}
	return &im.CreateResponse{}, nil
}

// Calls reports how many creates named group.
func (f *ScriptedAPI) Calls(group string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[group]
}

// Event is a valid create event by alice for group, with one conversation.
func Event(id, group string) event.Event {
	return event.Event{EventID: id, EventType: event.TypeContactGroupCreated, FromAccount: "alice",
		GroupName: group, Contacts: []event.Contact{{Type: event.ContactC2C, ToAccount: "bob"}}}
}
