package dlq

import "github.com/segmentio/kafka-go"

// lastHeader is the value of the last header named key.
func lastHeader(hs []kafka.Header, key string) ([]byte, bool) {
	for i := len(hs) - 1; i >= 0; i-- {
		if hs[i].Key == key {
			return hs[i].Value, true
		}
	}
	return nil, false
}
