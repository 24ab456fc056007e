package event_test

import (
	"testing"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
)

// TestCallMatchesIMClient: the call names and request values event hands the dispatcher are the
// IM client's, so a Call can be turned into a request without a translation table.
func TestCallMatchesIMClient(t *testing.T) {
	for _, p := range []struct {
		got, want any
	}{
		{event.APICreate, im.APICreate}, {event.APIUpdate, im.APIUpdate}, {event.APIDelete, im.APIDelete},
		{event.UpdateGroupTypeRename, im.UpdateGroupTypeRename}, {event.UpdateGroupTypeContacts, im.UpdateGroupTypeAddDel},
		{event.ContactOptAdd, im.ContactOptAdd}, {event.ContactOptRemove, im.ContactOptDel},
		{event.ContactC2C, im.ContactC2C}, {event.ContactGroup, im.ContactGroup},
	} {
		if p.got != p.want {
			t.Errorf("event has %v, im has %v", p.got, p.want)
		}
	}
}
