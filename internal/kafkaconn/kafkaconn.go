// Package kafkaconn turns the Kafka connection settings of the command line (brokers, TLS, SASL)
// into the two kafka-go stacks that must agree: a Dialer for groups and readers, and a Transport
// for writers and the admin Client. Keeping them in one place stops the two from drifting apart.
package kafkaconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// SASL mechanisms accepted by Config.SASLMechanism.
const (
	SASLPlain       = "plain"
	SASLScramSHA256 = "scram-sha-256"
	SASLScramSHA512 = "scram-sha-512"
)

// DefaultDialTimeout bounds connecting to a broker, so an unreachable cluster fails in seconds.
const DefaultDialTimeout = 10 * time.Second

// Config is how to reach the cluster. Brokers is required; zero values of the other fields
// are off, or the default documented on them.
type Config struct {
	Brokers []string

	TLS                   bool
	TLSCAFile             string // PEM; system roots when empty
	TLSCertFile           string // client certificate (mTLS), with TLSKeyFile
	TLSKeyFile            string
	TLSInsecureSkipVerify bool

	SASLMechanism string // "", plain, scram-sha-256, scram-sha-512
	SASLUsername  string
	SASLPassword  string // from the environment or a file, never a flag value

	DialTimeout time.Duration // default DefaultDialTimeout
}

// setDefaults fills the zero fields that have a default.
func (c *Config) setDefaults() {
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
}

// Validate reports every setting that can't work, defaults applied, joined, each naming its
// field (and, for TLS, the flag). New prefixes "kafka config: ".
func (c Config) Validate() error {
	c.setDefaults()
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("brokers: no brokers"))
	}
	for _, b := range c.Brokers {
		if strings.TrimSpace(b) == "" || !strings.Contains(b, ":") {
			errs = append(errs, fmt.Errorf("brokers: broker %q is not host:port", b))
		}
	}
	switch c.SASLMechanism {
	case "":
	case SASLPlain, SASLScramSHA256, SASLScramSHA512:
		if c.SASLUsername == "" {
			errs = append(errs, fmt.Errorf("sasl username: sasl %s needs a username", c.SASLMechanism))
		}
	default:
		errs = append(errs, fmt.Errorf("sasl mechanism: unknown sasl mechanism %q (want plain, scram-sha-256 or scram-sha-512)", c.SASLMechanism))
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		errs = append(errs, errors.New("tls cert file, tls key file: tls client certificate needs both cert and key files"))
	}
	if !c.TLS && (c.TLSCAFile != "" || c.TLSCertFile != "" || c.TLSInsecureSkipVerify) {
		errs = append(errs, errors.New("tls: tls files or insecure-skip-verify given without --kafka-tls"))
	}
	return errors.Join(errs...)
}

// Conn holds the configured kafka-go stacks.
type Conn struct {
	Brokers   []string
	Dialer    *kafka.Dialer
	Transport *kafka.Transport
}

// Client returns an admin client on the shared transport.
func (c *Conn) Client() *kafka.Client {
	return &kafka.Client{Addr: kafka.TCP(c.Brokers...), Transport: c.Transport, Timeout: 10 * time.Second}
}

// Close releases the Transport's idle connections and the goroutines that keep them: call it
// once whatever used the Conn has stopped. The Conn stays usable; the Transport dials again.
func (c *Conn) Close() {
	c.Transport.CloseIdleConnections()
}

// New applies cfg's defaults, validates it and builds both stacks from it.
func New(cfg Config) (*Conn, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("kafka config: %w", err)
	}
	timeout := cfg.DialTimeout
	tlsCfg, err := cfg.tlsConfig()
	if err != nil {
		return nil, fmt.Errorf("kafka tls: %w", err)
	}
	mech, err := cfg.mechanism()
	if err != nil {
		return nil, fmt.Errorf("kafka sasl: %w", err)
	}
	return &Conn{
		Brokers:   cfg.Brokers,
		Dialer:    &kafka.Dialer{Timeout: timeout, DualStack: true, TLS: tlsCfg, SASLMechanism: mech},
		Transport: &kafka.Transport{DialTimeout: timeout, TLS: tlsCfg, SASL: mech, IdleTimeout: 30 * time.Second},
	}, nil
}

func (c *Config) tlsConfig() (*tls.Config, error) {
	if !c.TLS {
		return nil, nil
	}
	t := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.TLSInsecureSkipVerify} //nolint:gosec // operator's explicit choice
	if c.TLSCAFile != "" {
		pem, err := os.ReadFile(c.TLSCAFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", c.TLSCAFile)
		}
		t.RootCAs = pool
	}
	if c.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
		if err != nil {
			return nil, err
		}
		t.Certificates = []tls.Certificate{cert}
	}
	return t, nil
}

func (c *Config) mechanism() (sasl.Mechanism, error) {
	switch c.SASLMechanism {
	case SASLPlain:
		return plain.Mechanism{Username: c.SASLUsername, Password: c.SASLPassword}, nil
	case SASLScramSHA256:
		return scram.Mechanism(scram.SHA256, c.SASLUsername, c.SASLPassword)
	case SASLScramSHA512:
		return scram.Mechanism(scram.SHA512, c.SASLUsername, c.SASLPassword)
	}
	return nil, nil
}
