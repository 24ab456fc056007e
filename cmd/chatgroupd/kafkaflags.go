package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"

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
	saslPlaintext    bool
	dialTimeout      time.Duration
}

func (k *kafkaFlags) register(fs *flag.FlagSet) {
	stringFlag(fs, &k.brokers, "brokers", "", hostPortList, "Kafka bootstrap brokers, comma-separated host:port (required)")
	boolFlag(fs, &k.tls, "kafka-tls", false, "connect to Kafka with TLS")
	stringFlag(fs, &k.tlsCA, "kafka-tls-ca-file", "", anyString, "PEM CA bundle for the brokers' certificates (system roots when empty)")
	stringFlag(fs, &k.tlsCert, "kafka-tls-cert-file", "", anyString, "PEM client certificate for mutual TLS")
	stringFlag(fs, &k.tlsKey, "kafka-tls-key-file", "", anyString, "PEM client key for mutual TLS")
	boolFlag(fs, &k.tlsSkipVerify, "kafka-tls-insecure-skip-verify", false, "do not verify the brokers' certificates (testing only; logged as a warning)")
	stringFlag(fs, &k.saslMechanism, "kafka-sasl-mechanism", "", oneOf, "SASL mechanism: plain, scram-sha-256 or scram-sha-512", "", "plain", "scram-sha-256", "scram-sha-512")
	stringFlag(fs, &k.saslUsername, "kafka-sasl-username", "", anyString, "SASL username")
	stringFlag(fs, &k.saslPasswordFile, "kafka-sasl-password-file", "", anyString, "file holding the SASL password (else CHATGROUPD_KAFKA_SASL_PASSWORD)")
	boolFlag(fs, &k.saslPlaintext, "kafka-sasl-allow-plaintext", false, "allow SASL PLAIN without --kafka-tls (the password then crosses the network in clear text)")
	durationFlag(fs, &k.dialTimeout, "kafka-dial-timeout", kafkaconn.DefaultDialTimeout, 100*time.Millisecond, 5*time.Minute, "timeout for connecting to a broker")
}

// check refuses flag combinations that are wrong before anything is read or dialled.
func (k *kafkaFlags) check() error {
	if strings.TrimSpace(k.brokers) == "" {
		return errors.New("--brokers is required (comma-separated host:port)")
	}
	mech := strings.ToLower(k.saslMechanism)
	if mech == "plain" && !k.tls && !k.saslPlaintext {
		return errors.New("--kafka-sasl-mechanism plain without --kafka-tls sends the password in clear text; add --kafka-tls, or --kafka-sasl-allow-plaintext to accept that")
	}
	if mech != "" && k.saslUsername == "" {
		return fmt.Errorf("--kafka-sasl-mechanism %s needs --kafka-sasl-username", mech)
	}
	return nil
}

// warn logs the settings that weaken the connection's security.
func (k *kafkaFlags) warn(log *zap.Logger) {
	if k.tls && k.tlsSkipVerify {
		log.Warn("Kafka TLS certificates are not verified (--kafka-tls-insecure-skip-verify): anyone on the path can impersonate the brokers")
	}
	if strings.EqualFold(k.saslMechanism, "plain") && !k.tls {
		log.Warn("SASL PLAIN without TLS (--kafka-sasl-allow-plaintext): the Kafka password crosses the network in clear text")
	}
}

// password reads the SASL password: the file wins over CHATGROUPD_KAFKA_SASL_PASSWORD. Empty
// is an error when a mechanism is set.
func (k *kafkaFlags) password(getenv env) (string, error) {
	if k.saslMechanism == "" {
		return "", nil
	}
	pw := getenv("CHATGROUPD_KAFKA_SASL_PASSWORD")
	if k.saslPasswordFile != "" {
		b, err := os.ReadFile(k.saslPasswordFile)
		if err != nil {
			return "", fmt.Errorf("sasl password file: %w", err)
		}
		pw = strings.TrimSpace(string(b))
	}
	if pw == "" {
		return "", errors.New("--kafka-sasl-mechanism is set but the SASL password is empty: set CHATGROUPD_KAFKA_SASL_PASSWORD or --kafka-sasl-password-file")
	}
	return pw, nil
}

// conn validates the flags and builds the kafka-go stacks. It also returns the secrets it read
// (the SASL password), for the logger to redact. The SASL password, like the IM key, never comes
// from a flag value.
func (k *kafkaFlags) conn(getenv env) (*kafkaconn.Conn, []string, error) {
	if err := k.check(); err != nil {
		return nil, nil, err
	}
	pw, err := k.password(getenv)
	if err != nil {
		return nil, nil, err
	}
	var secrets []string
	if pw != "" {
		secrets = append(secrets, pw)
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
		SASLPassword:          pw,
		DialTimeout:           k.dialTimeout,
	}
	c, err := kafkaconn.New(cfg)
	return c, secrets, err
}

// errUnreachable is wrapped by reach's error.
var errUnreachable = errors.New("no broker answered")

// reach dials every broker (TCP, then TLS and SASL when configured) and asks it for its API
// versions, within --kafka-dial-timeout each, and succeeds as soon as one answers. kafka-go's clients keep retrying a dead broker until
// their own request timeout, so a one-shot command would sit out that timeout (15 s) whatever
// --kafka-dial-timeout said; this fails within it, naming each broker and its error.
func (k *kafkaFlags) reach(ctx context.Context, c *kafkaconn.Conn) error {
	var errs []error
	for _, b := range c.Brokers {
		dctx, cancel := context.WithTimeout(ctx, k.dialTimeout)
		conn, err := c.Dialer.DialContext(dctx, "tcp", b)
		cancel()
		if err == nil {
			// Something accepting TCP is not yet a broker (a proxy, a wrong port): it must
			// answer an ApiVersions request within the timeout too.
			_ = conn.SetDeadline(time.Now().Add(k.dialTimeout))
			_, err = conn.ApiVersions()
			conn.Close()
			if err == nil {
				return nil
			}
		}
		errs = append(errs, fmt.Errorf("%s: %w", b, err))
	}
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	// One line: the brokers' errors joined with "; ".
	return fmt.Errorf("cannot reach any Kafka broker within --kafka-dial-timeout %v: %s: %w",
		k.dialTimeout, strings.Join(msgs, "; "), errUnreachable)
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
