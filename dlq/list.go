package dlq

import "context"

// Listing is what List found, with the counts an operator needs to trust it.
type Listing struct {
	Entries    []Entry
	Scanned    int // DLQ records read
	Malformed  int // skipped: not chatgroupd DLQ records (SkipMalformed)
	Duplicates int // letters collapsed into an earlier one for the same original record
	// LedgerMalformed counts replay-ledger records that could not be read and were skipped: the
	// letters they were about show as not replayed.
	LedgerMalformed int
	FilteredOut     int
}

// Scan is List with the counts: records read, malformed, duplicate letters and unreadable
// ledger records.
func Scan(ctx context.Context, cfg ToolConfig, f Filter) (Listing, error) {
	if err := f.Validate(); err != nil {
		return Listing{}, err
	}
	t, err := openTools(cfg)
	if err != nil {
		return Listing{}, err
	}
	defer t.close()
	s, err := t.read(ctx, f)
	if err != nil {
		return Listing{}, err
	}
	return Listing{Entries: s.entries, Scanned: s.scanned, Malformed: s.malformed, Duplicates: s.duplicates,
		LedgerMalformed: s.ledgerMalformed, FilteredOut: s.filteredOut}, nil
}

// List returns the DLQ records matching f, read from the start of the DLQ topic to its end as of
// the call, in (partition, offset) order, each marked with whether it was already replayed.
// Letters duplicated by a retried DLQ write appear once (Entry.Duplicates counts the others).
// A record without our headers is an error wrapping ErrNotDLQRecord, unless cfg.SkipMalformed
// (then it is logged and skipped).
func List(ctx context.Context, cfg ToolConfig, f Filter) ([]Entry, error) {
	l, err := Scan(ctx, cfg, f)
	if err != nil {
		return nil, err
	}
	return l.Entries, nil
}
