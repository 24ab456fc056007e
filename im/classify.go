package im

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// ErrResponseTooLarge is wrapped by the *Error of a response body above Config.MaxResponseBytes.
var ErrResponseTooLarge = errors.New("response body too large")

// ErrMalformedResponse is wrapped by the *Error of a 200 whose body is not a valid IM answer.
var ErrMalformedResponse = errors.New("malformed response")

// MalformedError is the *Error of an HTTP 200 from api whose body is not a usable answer (detail
// says why): transient, and ambiguous since the server may have applied the call. It wraps
// ErrMalformedResponse. The client builds its own such errors here, and so should a caller
// that judges answers itself (one that pages through get_contact_group, say), so that none
// lacks the Malformed flag.
func MalformedError(api, detail string) *Error {
	return malformed(api, fmt.Errorf("%w: %s", ErrMalformedResponse, detail))
}

func malformed(api string, cause error) *Error {
	return &Error{API: api, Class: ClassTransient, HTTPStatus: http.StatusOK, Malformed: true, Err: cause}
}

// PartialResult is the *Error of a call of api answered with ErrorCode 0 whose per-conversation
// results res hold a failure, carrying res and the group g; nil when every conversation
// succeeded. Its Class and Code are those of the first failed conversation.
func PartialResult(api string, res []ContactResult, g *GroupItem) error {
	i := firstFailed(res)
	if i < 0 {
		return nil
	}
	f := res[i]
	return &Error{API: api, Class: Classify(f.ResultCode), Code: f.ResultCode, Info: f.ResultInfo,
		HTTPStatus: http.StatusOK, Partial: true, Results: res, Group: g}
}

// PartialError is the partial-result *Error of a create answered with ErrorCode 0 (see
// PartialResult): the error CreateContactGroup returns alongside r, nil when nothing failed.
func (r *CreateResponse) PartialError() error {
	return PartialResult(APICreate, createResults(r), createGroup(r))
}

// PartialError is the partial-result *Error of an update answered with ErrorCode 0 (see
// PartialResult): the error UpdateContactGroup returns alongside r, nil when nothing failed.
func (r *UpdateResponse) PartialError() error {
	return PartialResult(APIUpdate, updateResults(r), &GroupItem{GroupName: r.UpdateGroupResult.GroupName, GroupID: r.UpdateGroupResult.GroupID})
}

// decode reads an answer of api with HTTP status into resp (base being its envelope): nil for a
// success, else the *Error that classifies it. A body over maxBytes (data holds one byte more)
// or one that is not an IM answer is malformed.
func decode(api string, status int, data []byte, maxBytes int64, resp any, base *BaseResponse) *Error {
	if status != http.StatusOK {
		return &Error{API: api, Class: httpClass(status), HTTPStatus: status}
	}
	if int64(len(data)) > maxBytes {
		return malformed(api, fmt.Errorf("%w: over %d bytes", ErrResponseTooLarge, maxBytes))
	}
	if err := json.Unmarshal(data, resp); err != nil {
		return malformed(api, fmt.Errorf("%w: %v", ErrMalformedResponse, err))
	}
	switch {
	case base.ErrorCode != 0:
		return &Error{API: api, Class: Classify(base.ErrorCode), Code: base.ErrorCode, Info: base.ErrorInfo,
			HTTPStatus: status}
	case base.ActionStatus != "OK":
		// ErrorCode 0 without "OK" (or an empty object): not an answer we can trust either way.
		return MalformedError(api, fmt.Sprintf("ActionStatus %q with ErrorCode 0", base.ActionStatus))
	}
	return nil
}

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
