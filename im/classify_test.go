package im

import (
	"errors"
	"net/http"
	"testing"
)

func TestMalformedError(t *testing.T) {
	e := MalformedError(APIGet, "NextStartIndex 3 does not advance from 3")
	if !e.Malformed || e.Class != ClassTransient || e.HTTPStatus != http.StatusOK || e.API != APIGet {
		t.Errorf("error %+v", e)
	}
	if !errors.Is(e, ErrMalformedResponse) || !e.Ambiguous() || e.MetricCode() != "network" {
		t.Errorf("Is %v, Ambiguous %v, MetricCode %q", errors.Is(e, ErrMalformedResponse), e.Ambiguous(), e.MetricCode())
	}
	if want := "im get_contact_group: transient failure: malformed response: NextStartIndex 3 does not advance from 3"; e.Error() != want {
		t.Errorf("message %q, want %q", e.Error(), want)
	}
}

func TestPartialError(t *testing.T) {
	ok := ContactResult{ContactItem: ContactItem{Type: 1, ToAccount: "bob"}}
	bad := ContactResult{ContactItem: ContactItem{Type: 1, ToAccount: "carol"}, ResultCode: CodeFrequency, ResultInfo: "slow down"}
	group := GroupItem{GroupName: "g", GroupID: 7}
	tests := []struct {
		name      string
		err       error
		api       string
		wantGroup *GroupItem
		results   int
	}{
		{"create, all ok", (&CreateResponse{GroupResultItem: []GroupResultItem{{GroupItem: group, ResultItem: []ContactResult{ok}}}}).PartialError(), "", nil, 0},
		{"create, empty", (&CreateResponse{}).PartialError(), "", nil, 0},
		{"create, one failed", (&CreateResponse{GroupResultItem: []GroupResultItem{{GroupItem: group, ResultItem: []ContactResult{ok, bad}}}}).PartialError(),
			APICreate, &group, 2},
		{"create, no group in the answer", (&CreateResponse{GroupResultItem: []GroupResultItem{{ResultItem: []ContactResult{bad}}}}).PartialError(),
			APICreate, nil, 1},
		{"update, all ok", (&UpdateResponse{UpdateGroupResult: UpdateGroupResult{GroupName: "g", GroupID: 7,
			ContactResultItem: []ContactUpdateResult{{ContactItem: ok.ContactItem}}}}).PartialError(), "", nil, 0},
		{"update, one failed", (&UpdateResponse{UpdateGroupResult: UpdateGroupResult{GroupName: "g", GroupID: 7,
			ContactResultItem: []ContactUpdateResult{{ContactItem: ok.ContactItem}, {ContactItem: bad.ContactItem, ResultCode: bad.ResultCode, ResultInfo: bad.ResultInfo}}}}).PartialError(),
			APIUpdate, &group, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.api == "" {
				if tt.err != nil {
					t.Fatalf("err = %v, want nil", tt.err)
				}
				return
			}
			var e *Error
			if !errors.As(tt.err, &e) {
				t.Fatalf("err = %v, want *Error", tt.err)
			}
			if !e.Partial || e.API != tt.api || e.Code != CodeFrequency || e.Info != "slow down" || e.Class != ClassRateLimited ||
				e.HTTPStatus != http.StatusOK || len(e.Results) != tt.results || e.Malformed || e.Ambiguous() {
				t.Errorf("error %+v", e)
			}
			if (e.Group == nil) != (tt.wantGroup == nil) || e.Group != nil && *e.Group != *tt.wantGroup {
				t.Errorf("group %+v, want %+v", e.Group, tt.wantGroup)
			}
		})
	}
}
