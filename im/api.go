// Package im is a client for the Tencent Cloud IM REST API's conversation-group family
// (v4/recentcontact/*_contact_group), with UserSig v2 signing and typed, classified errors.
// Callers branch on Error.Class to decide between retrying, re-signing, pausing and dead-lettering.
package im

import (
	"errors"
	"fmt"
	"strconv"
	"unicode"
	"unicode/utf8"
)

// API paths of the conversation-group family, relative to the base URL.
const (
	PathCreateContactGroup = "/v4/recentcontact/create_contact_group"
	PathGetContactGroup    = "/v4/recentcontact/get_contact_group"
	PathUpdateContactGroup = "/v4/recentcontact/update_contact_group"
	PathDelContactGroup    = "/v4/recentcontact/del_contact_group"
)

// API names used in metrics labels and errors.
const (
	APICreate = "create_contact_group"
	APIGet    = "get_contact_group"
	APIUpdate = "update_contact_group"
	APIDelete = "del_contact_group"
)

// Contact types.
const (
	ContactC2C   = 1
	ContactGroup = 2
)

// ContactItem is one conversation: Type 1 with ToAccount, or Type 2 with ToGroupID.
type ContactItem struct {
	Type      int    `json:"Type"`
	ToAccount string `json:"To_Account,omitempty"`
	ToGroupID string `json:"ToGroupId,omitempty"`
}

// Key identifies the conversation independent of its JSON form ("1:alice", "2:@TGS#123").
func (c ContactItem) Key() string {
	if c.Type == ContactGroup {
		return "2:" + c.ToGroupID
	}
	return strconv.Itoa(c.Type) + ":" + c.ToAccount
}

// BaseResponse is the envelope every API answers with.
type BaseResponse struct {
	ActionStatus string `json:"ActionStatus"`
	ErrorCode    int    `json:"ErrorCode"`
	ErrorInfo    string `json:"ErrorInfo"`
	ErrorDisplay string `json:"ErrorDisplay,omitempty"`
}

// GroupContactItem is one group to create.
type GroupContactItem struct {
	GroupName   string        `json:"GroupName"`
	ContactItem []ContactItem `json:"ContactItem"`
}

// CreateRequest is the body of create_contact_group. The API accepts one group per call.
type CreateRequest struct {
	FromAccount      string             `json:"From_Account"`
	GroupContactItem []GroupContactItem `json:"GroupContactItem"`
}

// GroupItem names a conversation group.
type GroupItem struct {
	GroupName string `json:"GroupName"`
	GroupID   int64  `json:"GroupId"`
}

// ContactResult is the per-conversation outcome of a create or update.
type ContactResult struct {
	ContactItem ContactItem `json:"ContactItem"`
	ResultCode  int         `json:"ResultCode"`
	ResultInfo  string      `json:"ResultInfo"`
}

// GroupResultItem is the outcome for one created group.
type GroupResultItem struct {
	GroupItem  GroupItem       `json:"GroupItem"`
	ResultItem []ContactResult `json:"ResultItem"`
}

// CreateResponse is the answer of create_contact_group.
type CreateResponse struct {
	BaseResponse
	GroupResultItem []GroupResultItem `json:"GroupResultItem"`
}

// GetRequest is the body of get_contact_group.
type GetRequest struct {
	FromAccount string `json:"From_Account"`
	StartIndex  int    `json:"StartIndex"`
}

// ContactInfo is a conversation with the groups it belongs to.
type ContactInfo struct {
	Type           int     `json:"Type"`
	ToAccount      string  `json:"To_Account,omitempty"`
	ToGroupID      string  `json:"ToGroupId,omitempty"`
	ContactGroupID []int64 `json:"ContactGroupId"`
	StandardMark   string  `json:"StandardMark,omitempty"`
	CustomMark     string  `json:"CustomMark,omitempty"`
	ContactFlag    int     `json:"ContactFlag,omitempty"`
	Timestamp      int64   `json:"Timestamp,omitempty"`
}

// Item returns the conversation as a ContactItem.
func (c ContactInfo) Item() ContactItem {
	return ContactItem{Type: c.Type, ToAccount: c.ToAccount, ToGroupID: c.ToGroupID}
}

// GetResponse is one page of get_contact_group. Page while CompleteFlag == 0.
type GetResponse struct {
	BaseResponse
	GroupItem      []GroupItem   `json:"GroupItem"`
	ContactItem    []ContactInfo `json:"ContactItem"`
	CompleteFlag   int           `json:"CompleteFlag"`
	NextStartIndex int           `json:"NextStartIndex"`
}

// Update types.
const (
	UpdateTypeGroup       = 1
	UpdateGroupTypeRename = 1
	UpdateGroupTypeAddDel = 2
	ContactOptAdd         = 1
	ContactOptDel         = 2
)

// ContactUpdateItem adds or removes one conversation.
type ContactUpdateItem struct {
	ContactOptType int         `json:"ContactOptType"`
	ContactItem    ContactItem `json:"ContactItem"`
}

// UpdateGroup describes the change to one group.
type UpdateGroup struct {
	UpdateGroupType   int                 `json:"UpdateGroupType"`
	OldGroupName      string              `json:"OldGroupName"`
	NewGroupName      string              `json:"NewGroupName,omitempty"`
	ContactUpdateItem []ContactUpdateItem `json:"ContactUpdateItem,omitempty"`
}

// UpdateRequest is the body of update_contact_group.
type UpdateRequest struct {
	FromAccount string      `json:"From_Account"`
	UpdateType  int         `json:"UpdateType"`
	UpdateGroup UpdateGroup `json:"UpdateGroup"`
}

// ContactUpdateResult is the per-conversation outcome of an update.
type ContactUpdateResult struct {
	ContactOptType int         `json:"ContactOptType"`
	ContactItem    ContactItem `json:"ContactItem"`
	ResultCode     int         `json:"ResultCode"`
	ResultInfo     string      `json:"ResultInfo"`
}

// UpdateGroupResult is the outcome for the updated group.
type UpdateGroupResult struct {
	GroupName         string                `json:"GroupName"`
	GroupID           int64                 `json:"GroupId"`
	ContactResultItem []ContactUpdateResult `json:"ContactResultItem"`
}

// UpdateResponse is the answer of update_contact_group.
type UpdateResponse struct {
	BaseResponse
	UpdateGroupResult UpdateGroupResult `json:"UpdateGroupResult"`
}

// DeleteRequest is the body of del_contact_group.
type DeleteRequest struct {
	FromAccount string   `json:"From_Account"`
	GroupName   []string `json:"GroupName"`
}

// DeleteResponse is the answer of del_contact_group.
type DeleteResponse struct {
	BaseResponse
}

// Class says what a caller should do about a failure (docs/api-notes.md, "Error classes").
type Class int

const (
	// ClassPermanent: this request can't succeed as is; dead-letter it. Unknown codes land here.
	ClassPermanent Class = iota
	// ClassTransient: retry with backoff (server errors, timeouts, HTTP 5xx, network).
	ClassTransient
	// ClassRateLimited: transient, and the caller must slow down (60007, 60011, 60018, 60019).
	ClassRateLimited
	// ClassCredentials: the UserSig expired or was invalidated; re-sign and retry (70001, 70052).
	ClassCredentials
	// ClassConfig: the app's configuration is wrong (appid, key, admin, region, plan); no event is
	// at fault, so stop consuming until it is fixed.
	ClassConfig
)

// String is the class name used in messages and logs ("transient", "rate_limited", ...).
func (c Class) String() string {
	switch c {
	case ClassTransient:
		return "transient"
	case ClassRateLimited:
		return "rate_limited"
	case ClassCredentials:
		return "credentials"
	case ClassConfig:
		return "config"
	default:
		return "permanent"
	}
}

// Well-known codes chatgroupd branches on.
const (
	CodeOK                = 0
	CodeNotImported       = 50001
	CodeBadParams         = 50002
	CodeNotAdmin          = 50003
	CodeInternal          = 50004
	CodeTimeout           = 50005
	CodeGroupCheckFailed  = 51007
	CodeTooManyContacts   = 51008
	CodeGroupNotFound     = 51009
	CodeTooManyGroups     = 51010
	CodeNameTooLong       = 51011
	CodeTooManyPinned     = 51012
	CodeNotUltimate       = 51013
	CodeFrequency         = 60007
	CodeSigExpired        = 70001
	CodeSigInvalidated    = 70052
	CodeSigMismatch       = 70003 // UserSig illegal: cannot be decoded
	CodeAppIDMismatch     = 70014 // the UserSig was made for another SDKAppID
	CodeIdentifierInvalid = 70013 // the UserSig was made for another identifier
	CodeSigEmpty          = 70002 // no UserSig in the request
	CodeSigKeyMismatch    = 70009 // the UserSig was signed with another key
	CodeAppIDNotFound     = 70020 // the SDKAppID is unknown
	CodeParamsJSON        = 60003 // the request body is not valid JSON (public code)
)

// Classify maps an IM code to its class. Unknown codes are permanent (the code is kept).
func Classify(code int) Class {
	switch code {
	case 50004, 50005, 60008, 60014, 70169, 70202, 70500:
		return ClassTransient
	case 60007, 60011, 60018, 60019:
		return ClassRateLimited
	case 70001, 70052:
		return ClassCredentials
	case 60004, 60005, 60006, 60010, 60012, 60016, 60020, 60021, 60026,
		70002, 70003, 70005, 70009, 70013, 70014, 70016, 70020, 70050, 50003, 51013:
		return ClassConfig
	default:
		return ClassPermanent
	}
}

// Ambiguous reports whether a failure with this class/cause may have been applied by the server
// anyway (timeouts, 5xx, 50004/50005, network errors after the request was sent). After an
// ambiguous failure a create must be checked with get_contact_group before it is sent again.
func (e *Error) Ambiguous() bool {
	switch {
	case e.Code == CodeInternal || e.Code == CodeTimeout:
		return true
	case e.HTTPStatus >= 500:
		return true
	case e.Network, e.Malformed:
		return true
	}
	return false
}

// Error is a failed or partially failed call. Its message never contains the UserSig.
type Error struct {
	API        string // APICreate, ...
	Class      Class
	Code       int    // top-level ErrorCode, or the first non-zero ResultCode for a partial result
	Info       string // ErrorInfo or the first non-zero ResultInfo
	HTTPStatus int    // 0 when no response was received
	Network    bool   // no (complete) HTTP response: connection error, timeout, truncated body
	// Malformed is true for an HTTP 200 whose body is not a usable answer (bad JSON, over the size
	// cap, ErrorCode 0 without "OK"). The server may have applied the call, so it is transient and
	// ambiguous; its metric code is "network" like other answers we could not read.
	Malformed bool
	// Partial is true when the call succeeded overall (ErrorCode 0) but some conversations failed;
	// Results then carries every per-conversation outcome and Group the created group.
	Partial bool
	Group   *GroupItem
	Results []ContactResult
	Err     error // underlying cause (network or decode), already redacted
}

// Error says which API failed and how; server text in it is bounded and quoted (boundInfo).
func (e *Error) Error() string {
	var s string
	switch {
	case e.Partial:
		s = fmt.Sprintf("im %s: partial result: code %d: %s", e.API, e.Code, boundInfo(e.Info))
	case e.Code != 0:
		s = fmt.Sprintf("im %s: code %d (%s): %s", e.API, e.Code, e.Class, boundInfo(e.Info))
	case e.HTTPStatus != 0 && e.HTTPStatus != 200:
		s = fmt.Sprintf("im %s: http %d", e.API, e.HTTPStatus)
	default:
		s = fmt.Sprintf("im %s: %s failure", e.API, e.Class)
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the underlying cause (network, decode), nil for an answer with an IM code.
func (e *Error) Unwrap() error { return e.Err }

// MaxInfoBytes bounds the server's ErrorInfo/ResultInfo text in an Error's message: the server
// decides its length (up to the response cap), and the message reaches logs and DLQ headers.
const MaxInfoBytes = 256

// boundInfo cuts server text to MaxInfoBytes on a rune boundary, marking the cut, and quotes it
// when it holds anything but printable text, so control characters never reach a log raw.
func boundInfo(s string) string {
	if len(s) > MaxInfoBytes {
		n := MaxInfoBytes
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n] + "…"
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// MetricCode is the value of the `code` label for this failure: the IM code, "http_<status>" or
// "network".
func (e *Error) MetricCode() string {
	switch {
	case e.Code != 0:
		return strconv.Itoa(e.Code)
	case e.HTTPStatus != 0 && e.HTTPStatus != 200:
		return "http_" + strconv.Itoa(e.HTTPStatus)
	default:
		return "network"
	}
}

// ClassOf returns the class of err: an *Error's class, ClassTransient for any other error.
func ClassOf(err error) Class {
	var e *Error
	if errors.As(err, &e) {
		return e.Class
	}
	return ClassTransient
}
