// Package integration holds the tests that need a real Apache Kafka broker: kafka-go and kcat
// interop checks and the fault suite that kills consumers, restarts the broker and breaks the IM
// API while chatgroupd drains a topic. Every test skips unless CHATGROUPD_TEST_BROKERS is set;
// scripts/test-kafka.sh starts a broker with scripts/kafka-local.sh and sets it.
package integration
