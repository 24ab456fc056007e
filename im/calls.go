package im

import (
	"context"
	"fmt"
)

// CreateContactGroup creates one group. On a partial result (ErrorCode 0, some ResultCode != 0)
// it returns the response and an *Error with Partial set.
func (c *Client) CreateContactGroup(ctx context.Context, req *CreateRequest) (*CreateResponse, error) {
	resp, e := call[CreateResponse](ctx, c, APICreate, PathCreateContactGroup, req)
	if e != nil {
		e.Results, e.Group = createResults(resp), createGroup(resp)
		return nil, e
	}
	return resp, resp.PartialError()
}

// GetContactGroup fetches one page of the account's groups and grouped conversations.
func (c *Client) GetContactGroup(ctx context.Context, req *GetRequest) (*GetResponse, error) {
	resp, e := call[GetResponse](ctx, c, APIGet, PathGetContactGroup, req)
	if e != nil {
		return nil, e
	}
	return resp, nil
}

// GetAllContactGroups pages through get_contact_group while CompleteFlag == 0 and returns every
// group (deduplicated by id) and conversation (deduplicated). A server that never completes, or whose
// NextStartIndex does not advance, yields an *Error of class transient.
func (c *Client) GetAllContactGroups(ctx context.Context, account string) ([]GroupItem, []ContactInfo, error) {
	var (
		groups      []GroupItem
		contacts    []ContactInfo
		seen        = map[int64]bool{}
		seenContact = map[string]bool{}
		start       = 0
	)
	for range maxGetPages {
		page, err := c.GetContactGroup(ctx, &GetRequest{FromAccount: account, StartIndex: start})
		if err != nil {
			return nil, nil, err
		}
		for _, g := range page.GroupItem {
			if !seen[g.GroupID] {
				seen[g.GroupID] = true
				groups = append(groups, g)
			}
		}
		for _, ci := range page.ContactItem {
			// Pages can overlap when the account changes between them; keep the first copy.
			if k := ci.Item().Key(); !seenContact[k] {
				seenContact[k] = true
				contacts = append(contacts, ci)
			}
		}
		if page.CompleteFlag != 0 {
			return groups, contacts, nil
		}
		if page.NextStartIndex <= start {
			return nil, nil, MalformedError(APIGet, fmt.Sprintf("NextStartIndex %d does not advance from %d", page.NextStartIndex, start))
		}
		start = page.NextStartIndex
	}
	return nil, nil, MalformedError(APIGet, fmt.Sprintf("not complete after %d pages", maxGetPages))
}

// UpdateContactGroup renames a group or adds/removes conversations. Per-conversation failures
// come back like a partial create: the response and an *Error with Partial set.
func (c *Client) UpdateContactGroup(ctx context.Context, req *UpdateRequest) (*UpdateResponse, error) {
	resp, e := call[UpdateResponse](ctx, c, APIUpdate, PathUpdateContactGroup, req)
	if e != nil {
		e.Results = updateResults(resp)
		return nil, e
	}
	return resp, resp.PartialError()
}

// DelContactGroup deletes groups by name; a missing group is code 51009 (permanent).
func (c *Client) DelContactGroup(ctx context.Context, req *DeleteRequest) (*DeleteResponse, error) {
	resp, e := call[DeleteResponse](ctx, c, APIDelete, PathDelContactGroup, req)
	if e != nil {
		return nil, e
	}
	return resp, nil
}
