package metricstest_test

import (
	"fmt"
	"strings"

	"github.com/chatgroupd/chatgroupd/metrics/metricstest"
)

func ExampleParse() {
	// What a scrape of a running chatgroupd returns; Scrape(ctx, client, url) fetches and parses it.
	exposition := `# TYPE chatgroupd_events_processed_total counter
chatgroupd_events_processed_total{outcome="applied"} 41
chatgroupd_events_processed_total{outcome="duplicate"} 2
# TYPE chatgroupd_consumer_lag gauge
chatgroupd_consumer_lag{partition="0",topic="chat.contact-groups"} 7
`
	s, err := metricstest.Parse(strings.NewReader(exposition))
	if err != nil {
		panic(err)
	}
	fmt.Println(s.Sum("chatgroupd_events_processed_total"))
	fmt.Println(s.Sum("chatgroupd_events_processed_total", "outcome", "applied"))
	fmt.Println(s.Has("chatgroupd_dlq_records_total"))
	fmt.Println(s.Find("chatgroupd_consumer_lag", "partition", "0")[0])
	// Output:
	// 43
	// 41
	// false
	// chatgroupd_consumer_lag{partition="0",topic="chat.contact-groups"} 7
}
