package deploytest

import (
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/metrics"
)

// TestQueryLabelValuesMatchTheCode checks label values the queries hard-code against the code
// that produces them: api names are the IM client's, and every list of frequency-limit codes is
// exactly what im.Classify treats as rate-limited.
func TestQueryLabelValuesMatchTheCode(t *testing.T) {
	apis := map[string]bool{im.APICreate: true, im.APIGet: true, im.APIUpdate: true, im.APIDelete: true}
	var limited []string
	for c := 1; c < 100000; c++ {
		if im.Classify(c) == im.ClassRateLimited {
			limited = append(limited, strconv.Itoa(c))
		}
	}
	if len(limited) == 0 {
		t.Fatal("im.Classify reports no rate-limited code")
	}
	sort.Strings(limited)

	checkedLimited := 0
	for _, e := range append(dashboardExprs(t), alertRules(t).Exprs()...) {
		expr, err := parser.NewParser(parser.Options{}).ParseExpr(e.Query)
		if err != nil {
			t.Fatalf("%s: %v", e.Where, err)
		}
		parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
			vs, ok := n.(*parser.VectorSelector)
			if !ok {
				return nil
			}
			for _, m := range vs.LabelMatchers {
				switch {
				case m.Name == "event_type" && (m.Type == labels.MatchEqual || m.Type == labels.MatchNotEqual) &&
					m.Value != metrics.EventTypeUnknown && !slices.Contains(metrics.EventTypes(), m.Value):
					t.Errorf("%s: event_type %s %q is not a type the service counts", e.Where, m.Type, m.Value)
				case m.Name == "api" && m.Type == labels.MatchEqual && !apis[m.Value]:
					t.Errorf("%s: api=%q is not an API the IM client calls", e.Where, m.Value)
				case m.Name == "code" && (m.Type == labels.MatchRegexp || m.Type == labels.MatchNotRegexp) &&
					strings.Contains(m.Value, "60007"):
					var got []string
					for _, alt := range strings.Split(m.Value, "|") {
						if alt != "0" {
							got = append(got, alt)
						}
					}
					sort.Strings(got)
					if strings.Join(got, "|") != strings.Join(limited, "|") {
						t.Errorf("%s: frequency-limit codes %v, im.Classify says %v", e.Where, got, limited)
					}
					checkedLimited++
				}
			}
			return nil
		})
	}
	if checkedLimited < 2 {
		t.Errorf("found %d frequency-limit code lists; the alerts have two", checkedLimited)
	}
}
