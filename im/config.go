package im

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"
)

// regions are the primary API domains by region (docs/api-notes.md), china first.
var regions = [...]struct{ name, domain string }{
	{"china", "console.tim.qq.com"},
	{"singapore", "adminapisgp.im.qcloud.com"},
	{"seoul", "adminapikr.im.qcloud.com"},
	{"tokyo", "adminapijpn.im.qcloud.com"},
	{"frankfurt", "adminapiger.im.qcloud.com"},
	{"mumbai", "adminapiind.im.qcloud.com"},
	{"silicon-valley", "adminapiusa.im.qcloud.com"},
	{"jakarta", "adminapiidn.im.qcloud.com"},
}

// RegionDomain returns the API domain of a region name.
func RegionDomain(region string) (string, bool) {
	for _, r := range regions {
		if r.name == region {
			return r.domain, true
		}
	}
	return "", false
}

// RegionNames lists the known regions, china first.
func RegionNames() []string {
	out := make([]string, len(regions))
	for i, r := range regions {
		out[i] = r.name
	}
	return out
}

// Defaults of Config.
const (
	DefaultRegion           = "china"
	DefaultAdmin            = "administrator"
	DefaultTimeout          = 5 * time.Second
	DefaultMaxResponseBytes = 4 << 20
	DefaultSigTTL           = 24 * time.Hour
	// ServerTimeout is how long the IM server works on a request before giving up; a client
	// timeout at or below it would turn slow successes into ambiguous failures.
	ServerTimeout = 3 * time.Second
	// maxGetPages bounds GetAllContactGroups: 1000 conversations fit in 20 pages of 50, so a
	// server that keeps saying "not complete" beyond this is broken.
	maxGetPages = 200
)

// Config configures a Client. Zero values take the documented defaults.
type Config struct {
	SDKAppID  int64
	Admin     string // app admin identifier; default "administrator"
	SecretKey string
	// Region selects the API domain from Regions; default "china". BaseURL overrides it.
	Region string
	// BaseURL ("http://127.0.0.1:8080") replaces the regional https://<domain>.
	BaseURL string
	// Timeout bounds one HTTP attempt; default 5s, must exceed the server's 3s.
	Timeout time.Duration
	// MaxResponseBytes caps a response body; a larger one is an error. Default 4 MiB.
	MaxResponseBytes int64
	// SigTTL is the admin UserSig validity; it is regenerated at 80% of it. Default 24h.
	SigTTL time.Duration
	// HTTPClient replaces the default keep-alive client; its Timeout is left as is. It should
	// not follow redirects (the default refuses them): the UserSig is in the query string.
	HTTPClient *http.Client
	// Observer hears about every HTTP request (nil: nobody does).
	Observer Observer
	Logger   *zap.Logger
	Now      func() time.Time
}

// Validate reports the first configuration error, after applying defaults to a copy.
func (c Config) Validate() error {
	c.defaults()
	return c.validate()
}

func (c *Config) defaults() {
	c.Admin = cmp.Or(c.Admin, DefaultAdmin)
	c.Region = cmp.Or(c.Region, DefaultRegion)
	c.Timeout = cmp.Or(c.Timeout, DefaultTimeout)
	c.MaxResponseBytes = cmp.Or(c.MaxResponseBytes, DefaultMaxResponseBytes)
	c.SigTTL = cmp.Or(c.SigTTL, DefaultSigTTL)
}

func (c *Config) validate() error {
	switch {
	case c.SDKAppID <= 0:
		return errors.New("im config: sdkappid must be positive")
	case c.SecretKey == "":
		return errors.New("im config: secret key is empty")
	case len(c.Admin) > 32:
		return errors.New("im config: admin identifier over 32 bytes")
	case c.Timeout <= ServerTimeout:
		return fmt.Errorf("im config: timeout %v must exceed the server's %v", c.Timeout, ServerTimeout)
	case c.MaxResponseBytes < 1024:
		return fmt.Errorf("im config: max response bytes %d below 1024", c.MaxResponseBytes)
	case c.SigTTL < time.Minute:
		return fmt.Errorf("im config: sig ttl %v below one minute", c.SigTTL)
	}
	if c.BaseURL != "" {
		u, err := url.Parse(c.BaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
			return fmt.Errorf("im config: base url %q must be http(s)://host[:port][/prefix]", c.BaseURL)
		}
		return nil
	}
	if _, ok := RegionDomain(c.Region); !ok {
		return fmt.Errorf("im config: unknown region %q (want one of %s)", c.Region, strings.Join(RegionNames(), ", "))
	}
	return nil
}
