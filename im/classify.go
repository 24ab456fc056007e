package im

import (
	"errors"
	"net/http"
)

// ErrResponseTooLarge is wrapped by the *Error of a response body above Config.MaxResponseBytes.
var ErrResponseTooLarge = errors.New("response body too large")

// ErrMalformedResponse is wrapped by the *Error of a 200 whose body is not a valid IM answer.
var ErrMalformedResponse = errors.New("malformed response")

func createResults(r *CreateResponse) []ContactResult {
	var out []ContactResult
	for _, g := range r.GroupResultItem {
		out = append(out, g.ResultItem...)
	}
	return out
}

func createGroup(r *CreateResponse) *GroupItem {
	if len(r.GroupResultItem) == 0 || (r.GroupResultItem[0].GroupItem == GroupItem{}) {
		return nil
	}
	g := r.GroupResultItem[0].GroupItem
	return &g
}

func firstFailed(res []ContactResult) int {
	for i, r := range res {
		if r.ResultCode != 0 {
			return i
		}
	}
	return -1
}

func partialError(api string, res []ContactResult, g *GroupItem) *Error {
	f := res[firstFailed(res)]
	return &Error{API: api, Class: Classify(f.ResultCode), Code: f.ResultCode, Info: f.ResultInfo,
		HTTPStatus: http.StatusOK, Partial: true, Results: res, Group: g}
}

func updateResults(r *UpdateResponse) []ContactResult {
	var out []ContactResult
	for _, x := range r.UpdateGroupResult.ContactResultItem {
		out = append(out, ContactResult{ContactItem: x.ContactItem, ResultCode: x.ResultCode, ResultInfo: x.ResultInfo})
	}
	return out
}

// httpClass classifies a non-200 status. The API itself always answers 200, so anything else
// comes from a proxy or a wrong endpoint: 5xx/408 are transient, 429 rate-limited, and other
// statuses (404 wrong base URL, 403 blocked) are config — no event is at fault for them.
func httpClass(status int) Class {
	switch {
	case status >= 500 || status == http.StatusRequestTimeout:
		return ClassTransient
	case status == http.StatusTooManyRequests:
		return ClassRateLimited
	case status >= 400:
		return ClassConfig
	}
	return ClassTransient // 1xx/3xx (redirects are not followed): unusable, try again
}
