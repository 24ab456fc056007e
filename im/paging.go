package im

import (
	"context"
	"fmt"
)

// GetPage fetches one page of get_contact_group. (*Client).GetContactGroup is one; a caller
// that must pass every page through its own rate limiter wraps it.
type GetPage func(ctx context.Context, req *GetRequest) (*GetResponse, error)

// WalkContactGroups asks get for account's pages, from StartIndex 0 and then each
// NextStartIndex, while CompleteFlag is 0, and hands every page to visit in order. The first
// error from get is returned as it is. No answer, a NextStartIndex that does not advance, or a
// server that is not complete after maxGetPages pages yields a MalformedError (transient).
func WalkContactGroups(ctx context.Context, account string, get GetPage, visit func(*GetResponse)) error {
	start := 0
	for range maxGetPages {
		page, err := get(ctx, &GetRequest{FromAccount: account, StartIndex: start})
		if err != nil {
			return err
		}
		if page == nil {
			return MalformedError(APIGet, "empty answer")
		}
		visit(page)
		if page.CompleteFlag != 0 {
			return nil
		}
		if page.NextStartIndex <= start {
			return MalformedError(APIGet, fmt.Sprintf("NextStartIndex %d does not advance from %d", page.NextStartIndex, start))
		}
		start = page.NextStartIndex
	}
	return MalformedError(APIGet, fmt.Sprintf("not complete after %d pages", maxGetPages))
}

// GetAllContactGroups walks every page (WalkContactGroups) and returns every group
// (deduplicated by id) and conversation (deduplicated).
func (c *Client) GetAllContactGroups(ctx context.Context, account string) ([]GroupItem, []ContactInfo, error) {
	var (
		groups      []GroupItem
		contacts    []ContactInfo
		seen        = map[int64]bool{}
		seenContact = map[string]bool{}
	)
	err := WalkContactGroups(ctx, account, c.GetContactGroup, func(page *GetResponse) {
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
	})
	if err != nil {
		return nil, nil, err
	}
	return groups, contacts, nil
}
