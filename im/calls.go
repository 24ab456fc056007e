package im

import "context"

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
