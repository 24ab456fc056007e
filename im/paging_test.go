package im

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestWalkContactGroups: the page walk both the client and the dispatcher use. An empty page
// that is not complete is followed like any other (only CompleteFlag ends the walk), and an
// answer-less page is malformed.
func TestWalkContactGroups(t *testing.T) {
	pages := map[int]*GetResponse{
		0: {GroupItem: []GroupItem{{GroupName: "a", GroupID: 1}}, NextStartIndex: 5},
		5: {NextStartIndex: 9},
		9: {ContactItem: []ContactInfo{{Type: 1, ToAccount: "u"}}, CompleteFlag: 1},
	}
	var starts []int
	get := func(_ context.Context, req *GetRequest) (*GetResponse, error) {
		if req.FromAccount != "x" {
			t.Errorf("FromAccount %q", req.FromAccount)
		}
		starts = append(starts, req.StartIndex)
		return pages[req.StartIndex], nil
	}
	var visited []*GetResponse
	if err := WalkContactGroups(context.Background(), "x", get, func(p *GetResponse) { visited = append(visited, p) }); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]int{0, 5, 9}, starts); diff != "" {
		t.Errorf("start indexes (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]*GetResponse{pages[0], pages[5], pages[9]}, visited); diff != "" {
		t.Errorf("pages visited (-want +got):\n%s", diff)
	}

	none := func(context.Context, *GetRequest) (*GetResponse, error) { return nil, nil }
	err := WalkContactGroups(context.Background(), "x", none, func(*GetResponse) { t.Error("visited no answer") })
	var e *Error
	if !errors.As(err, &e) || !e.Malformed || !strings.Contains(err.Error(), "empty answer") {
		t.Errorf("no answer: %v", err)
	}
	boom := errors.New("boom")
	failing := func(context.Context, *GetRequest) (*GetResponse, error) { return nil, boom }
	if err := WalkContactGroups(context.Background(), "x", failing, func(*GetResponse) {}); err != boom {
		t.Errorf("get's error: %v", err)
	}
}
