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
	// RateLimitPerAPI is the documented quota of each contact-group API: calls per second per
	// app, each API counted on its own. The client does not enforce it; the dispatcher's and
	// the probe's defaults derive from it.
	RateLimitPerAPI = 200
	// ServerTimeout is how long the IM server works on a request before giving up; a client
	// timeout at or below it would turn slow successes into ambiguous failures.
	ServerTimeout = 3 * time.Second
	// maxGetPages bounds WalkContactGroups: 1000 conversations fit in 20 pages of 50, so a
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

// setDefaults fills the zero fields that have a default.
func (c *Config) setDefaults() {
	c.Admin = cmp.Or(c.Admin, DefaultAdmin)
	c.Region = cmp.Or(c.Region, DefaultRegion)
	c.Timeout = cmp.Or(c.Timeout, DefaultTimeout)
	c.MaxResponseBytes = cmp.Or(c.MaxResponseBytes, DefaultMaxResponseBytes)
	c.SigTTL = cmp.Or(c.SigTTL, DefaultSigTTL)
}

// Validate reports every problem of c, defaults applied, joined, each naming its field.
func (c Config) Validate() error {
	c.setDefaults()
	var errs []error
	if c.SDKAppID <= 0 {
		errs = append(errs, errors.New("sdkappid: must be positive"))
	}
	if c.SecretKey == "" {
		errs = append(errs, errors.New("secret key: is empty"))
	}
	if len(c.Admin) > 32 {
		errs = append(errs, errors.New("admin: identifier over 32 bytes"))
	}
	if c.Timeout <= ServerTimeout {
		errs = append(errs, fmt.Errorf("timeout: %v must exceed the server's %v", c.Timeout, ServerTimeout))
	}
	if c.MaxResponseBytes < 1024 {
		errs = append(errs, fmt.Errorf("max response bytes: %d below 1024", c.MaxResponseBytes))
	}
	if c.SigTTL < time.Minute {
		errs = append(errs, fmt.Errorf("sig ttl: %v below one minute", c.SigTTL))
	}
	if c.BaseURL != "" {
		// BaseURL replaces the region, which is then not checked.
		u, err := url.Parse(c.BaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
			errs = append(errs, fmt.Errorf("base url: %q must be http(s)://host[:port][/prefix]", c.BaseURL))
		}
	} else if _, ok := RegionDomain(c.Region); !ok {
		errs = append(errs, fmt.Errorf("region: unknown region %q (want one of %s)", c.Region, strings.Join(RegionNames(), ", ")))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("im config: %w", err)
	}
	return nil
}
