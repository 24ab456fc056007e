package loadgen

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/chatgroupd/chatgroupd/event"
)

// Mix is the relative weight of each event type among the valid events of an account's life.
// The zero Mix is contract v1: creates only.
type Mix struct {
	Created, Renamed, ContactsAdded, ContactsRemoved, Deleted float64
}

// Named mixes.
var (
	// MixV1 is creates only, the stream of event contract v1.
	MixV1 = Mix{Created: 1}
	// MixLifecycle is what users do with conversation groups: mostly create them and move
	// conversations in, sometimes take some out or rename a group, rarely delete one.
	MixLifecycle = Mix{Created: 40, ContactsAdded: 35, ContactsRemoved: 10, Renamed: 10, Deleted: 5}
)

// IsV1 reports whether m produces only creates (the zero Mix does).
func (m Mix) IsV1() bool {
	return m.Renamed == 0 && m.ContactsAdded == 0 && m.ContactsRemoved == 0 && m.Deleted == 0
}

// weights returns m's weights in the order of event.Types().
func (m Mix) weights() []float64 {
	return []float64{m.Created, m.Renamed, m.ContactsAdded, m.ContactsRemoved, m.Deleted}
}

// Validate reports every problem of m, joined.
func (m Mix) Validate() error {
	var errs []error
	for i, w := range m.weights() {
		if w < 0 || math.IsNaN(w) || math.IsInf(w, 0) {
			errs = append(errs, fmt.Errorf("mix: %s weight must be a finite number >= 0, got %g", event.Types()[i], w))
		}
	}
	if !m.IsV1() && !(m.Created > 0) {
		errs = append(errs, errors.New("mix: the created weight must be > 0 (the other types act on groups created earlier)"))
	}
	return errors.Join(errs...)
}

// String is the form ParseMix reads: "v1", "lifecycle" or the weights.
func (m Mix) String() string {
	switch {
	case m.IsV1():
		return "v1"
	case m == MixLifecycle:
		return "lifecycle"
	}
	var parts []string
	for i, w := range m.weights() {
		if w > 0 {
			parts = append(parts, shortName(event.Types()[i])+"="+strconv.FormatFloat(w, 'g', -1, 64))
		}
	}
	return strings.Join(parts, ",")
}

// shortName is a type without its "contact_group." prefix.
func shortName(t event.Type) string { return strings.TrimPrefix(string(t), "contact_group.") }

// ParseMix reads a mix: "v1" (creates only), "lifecycle" (MixLifecycle), or comma-separated
// type=weight pairs with the types named as in event_type, with or without "contact_group."
// ("created=6,contacts_added=3,deleted=1"); types left out weigh 0.
func ParseMix(s string) (Mix, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "v1", "":
		return MixV1, nil
	case "lifecycle":
		return MixLifecycle, nil
	}
	var m Mix
	w := []*float64{&m.Created, &m.Renamed, &m.ContactsAdded, &m.ContactsRemoved, &m.Deleted}
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		name, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		name = strings.TrimPrefix(strings.TrimSpace(name), "contact_group.")
		i := -1
		for j, t := range event.Types() {
			if name == shortName(t) {
				i = j
			}
		}
		if !ok || i < 0 {
			return Mix{}, fmt.Errorf("mix: %q is not type=weight with a type of %s", part, typeNames())
		}
		if seen[name] {
			return Mix{}, fmt.Errorf("mix: %s given twice", name)
		}
		seen[name] = true
		f, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			return Mix{}, fmt.Errorf("mix: %s weight %q is not a number", name, val)
		}
		*w[i] = f
	}
	if err := m.Validate(); err != nil {
		return Mix{}, err
	}
	return m, nil
}

func typeNames() string {
	var s []string
	for _, t := range event.Types() {
		s = append(s, shortName(t))
	}
	return strings.Join(s, ", ")
}

// TypeCounts counts events by type.
type TypeCounts struct {
	Created, Renamed, ContactsAdded, ContactsRemoved, Deleted int
}

// Of returns the count of type t (0 for an unknown type).
func (c TypeCounts) Of(t event.Type) int {
	switch t {
	case event.TypeContactGroupCreated:
		return c.Created
	case event.TypeContactGroupRenamed:
		return c.Renamed
	case event.TypeContactGroupContactsAdded:
		return c.ContactsAdded
	case event.TypeContactGroupContactsRemoved:
		return c.ContactsRemoved
	case event.TypeContactGroupDeleted:
		return c.Deleted
	}
	return 0
}

// Total is the sum over the types.
func (c TypeCounts) Total() int {
	return c.Created + c.Renamed + c.ContactsAdded + c.ContactsRemoved + c.Deleted
}

func (c *TypeCounts) add(t event.Type) {
	switch t {
	case event.TypeContactGroupCreated:
		c.Created++
	case event.TypeContactGroupRenamed:
		c.Renamed++
	case event.TypeContactGroupContactsAdded:
		c.ContactsAdded++
	case event.TypeContactGroupContactsRemoved:
		c.ContactsRemoved++
	case event.TypeContactGroupDeleted:
		c.Deleted++
	}
}
