package imcheck

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// Match values of a Row.
const (
	MatchYes       = "yes"
	MatchNo        = "NO"
	MatchNotProbed = "not probed"
)

// Row is one line of the report: an assumption, what the simulator answered, what the probed
// API answered, and whether they agree.
type Row struct {
	ID         string
	Assumption string
	Simulator  string
	Real       string
	Match      string
}

// Compare lines up the observations of a reference (simulator) run and a probed run.
func Compare(sim, real []Observation) []Row {
	find := func(obs []Observation, id string) Observation {
		for _, o := range obs {
			if o.ID == id {
				return o
			}
		}
		return Observation{ID: id, Value: notProbedPrefix + "missing from the transcript"}
	}
	rows := make([]Row, 0, len(assumptions))
	for _, a := range assumptions {
		s, r := find(sim, a.id), find(real, a.id)
		m := MatchYes
		switch {
		case !s.Probed || !r.Probed:
			m = MatchNotProbed
		case s.Value != r.Value:
			m = MatchNo
		}
		rows = append(rows, Row{ID: a.id, Assumption: a.text, Simulator: s.Value, Real: r.Value, Match: m})
	}
	return rows
}

// Differing returns the ids of rows whose Match is MatchNo.
func Differing(rows []Row) []string {
	var out []string
	for _, r := range rows {
		if r.Match == MatchNo {
			out = append(out, r.ID)
		}
	}
	return out
}

// WriteTable prints rows as an aligned table: assumption, simulator, real, match.
func WriteTable(w io.Writer, rows []Row) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ASSUMPTION\tSIMULATOR\tREAL\tMATCH")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.ID, r.Simulator, r.Real, r.Match)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("imcheck table: %w", err)
	}
	return nil
}

// IMSimFlags returns the `chatgroupd imsim` flags that make the simulator answer as obs
// observed, one per behaviour, in report order. Behaviours observed but not expressible as a
// flag (a code at top level where the simulator answers per item, say) yield none: the table
// still shows them as differing.
func IMSimFlags(obs []Observation) []string {
	var out []string
	seen := map[string]bool{}
	for _, o := range obs {
		if !o.Probed {
			continue
		}
		for _, f := range o.IMSimFlags {
			name, _, _ := strings.Cut(f, "=")
			if !seen[name] {
				seen[name] = true
				out = append(out, f)
			}
		}
	}
	return out
}
