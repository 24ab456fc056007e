package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/chatgroupd/chatgroupd/internal/kafkaconn"
)

// kafkaFlags are the connection flags every Kafka-speaking command shares.
type kafkaFlags struct {
	brokers          string
	tls              bool
	tlsCA            string
	tlsCert          string
	tlsKey           string
	tlsSkipVerify    bool
	saslMechanism    string
	saslUsername     string
	saslPasswordFile string
	dialTimeout      time.Duration
}

func (k *kafkaFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&k.brokers, "brokers", "", "Kafka bootstrap brokers, comma-separated host:port (required)")
	fs.BoolVar(&k.tls, "kafka-tls", false, "connect to Kafka with TLS")
	fs.StringVar(&k.tlsCA, "kafka-tls-ca-file", "", "PEM CA bundle for the brokers' certificates (system roots when empty)")
	fs.StringVar(&k.tlsCert, "kafka-tls-cert-file", "", "PEM client certificate for mutual TLS")
	fs.StringVar(&k.tlsKey, "kafka-tls-key-file", "", "PEM client key for mutual TLS")
	fs.BoolVar(&k.tlsSkipVerify, "kafka-tls-insecure-skip-verify", false, "do not verify the brokers' certificates (testing only)")
	fs.StringVar(&k.saslMechanism, "kafka-sasl-mechanism", "", "SASL mechanism: plain, scram-sha-256 or scram-sha-512")
	fs.StringVar(&k.saslUsername, "kafka-sasl-username", "", "SASL username")
	fs.StringVar(&k.saslPasswordFile, "kafka-sasl-password-file", "", "file holding the SASL password (else CHATGROUPD_KAFKA_SASL_PASSWORD)")
	fs.DurationVar(&k.dialTimeout, "kafka-dial-timeout", 10*time.Second, "timeout for connecting to a broker")
}

// conn validates the flags and builds the kafka-go stacks. The SASL password, like the IM key,
// never comes from a flag value.
func (k *kafkaFlags) conn(getenv env) (*kafkaconn.Conn, error) {
	if strings.TrimSpace(k.brokers) == "" {
		return nil, fmt.Errorf("--brokers is required")
	}
	cfg := kafkaconn.Config{
		Brokers:               splitList(k.brokers),
		TLS:                   k.tls,
		TLSCAFile:             k.tlsCA,
		TLSCertFile:           k.tlsCert,
		TLSKeyFile:            k.tlsKey,
		TLSInsecureSkipVerify: k.tlsSkipVerify,
		SASLMechanism:         strings.ToLower(k.saslMechanism),
		SASLUsername:          k.saslUsername,
		DialTimeout:           k.dialTimeout,
	}
	if cfg.SASLMechanism != "" {
		cfg.SASLPassword = getenv("CHATGROUPD_KAFKA_SASL_PASSWORD")
		if k.saslPasswordFile != "" {
			b, err := os.ReadFile(k.saslPasswordFile)
			if err != nil {
				return nil, fmt.Errorf("sasl password file: %w", err)
			}
			cfg.SASLPassword = strings.TrimSpace(string(b))
		}
	}
	return kafkaconn.New(cfg)
}

// splitList splits a comma list, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
