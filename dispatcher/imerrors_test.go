package dispatcher

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/chatgroupd/chatgroupd/event"
	"github.com/chatgroupd/chatgroupd/im"
)

// brokenPagesAPI answers get_contact_group with page, whatever is asked; with advance, its
// NextStartIndex is one past the request's StartIndex.
type brokenPagesAPI struct {
	*fakeAPI
	page    *im.GetResponse
	advance bool
}

func (b *brokenPagesAPI) GetContactGroup(_ context.Context, req *im.GetRequest) (*im.GetResponse, error) {
	if b.page == nil || !b.advance {
		return b.page, nil
	}
	p := *b.page
	p.NextStartIndex = req.StartIndex + 1
	return &p, nil
}

// TestGetAllMalformedAnswers: an answer getAll can't use is a malformed *im.Error, as the im
// client makes it (Malformed set, so ambiguous and counted as "network"; ErrMalformedResponse
// wrapped). getAll once built its own without the Malformed flag.
func TestGetAllMalformedAnswers(t *testing.T) {
	tests := []struct {
		name    string
		page    *im.GetResponse
		advance bool
		want    string
	}{
		{"no answer", nil, false, "empty answer"},
		{"NextStartIndex does not advance", &im.GetResponse{BaseResponse: im.BaseResponse{ActionStatus: "OK"},
			GroupItem: []im.GroupItem{{GroupName: "g", GroupID: 1}}}, false, "NextStartIndex 0 does not advance from 0"},
		{"never complete", &im.GetResponse{BaseResponse: im.BaseResponse{ActionStatus: "OK"},
			GroupItem: []im.GroupItem{{GroupName: "g", GroupID: 1}}}, true, "not complete after"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := &brokenPagesAPI{fakeAPI: newFakeAPI(), page: tt.page, advance: tt.advance}
			h := newHarness(t, func(c *Config) { c.API = api })
			ctx := context.Background()
			r := &run{d: h.d, ev: &event.Event{FromAccount: "a", GroupName: "g"}, wait: ctx, start: h.clock.Now()}
			_, _, err := r.getAll(ctx)
			var e *im.Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v, want *im.Error", err)
			}
			if !e.Malformed || !errors.Is(err, im.ErrMalformedResponse) || e.API != im.APIGet || e.Class != im.ClassTransient ||
				e.MetricCode() != "network" {
				t.Errorf("error %+v (%v)", e, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("message %q, want it to say %q", err.Error(), tt.want)
			}
		})
	}
}
