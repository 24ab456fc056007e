package im_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/chatgroupd/chatgroupd/im"
	"github.com/chatgroupd/chatgroupd/imsim"
)

func BenchmarkGenUserSig(b *testing.B) {
	now := time.Unix(1700000000, 0)
	for b.Loop() {
		if _, err := im.GenUserSig(simKey, simAppID, "administrator", now, 24*time.Hour); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyUserSig(b *testing.B) {
	now := time.Unix(1700000000, 0)
	sig, _ := im.GenUserSig(simKey, simAppID, "administrator", now, 24*time.Hour)
	for b.Loop() {
		if err := im.VerifyUserSig(simKey, simAppID, "administrator", sig, now); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCreateAgainstSimulator measures one create round trip over loopback keep-alive
// (client encode/decode, simulator auth and apply); the simulator's rate limit is lifted.
func BenchmarkCreateAgainstSimulator(b *testing.B) {
	sim, err := imsim.New(imsim.Config{SDKAppID: simAppID, SecretKey: simKey, RateLimit: 1 << 30, MaxGroups: 1 << 30, MaxContacts: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(sim)
	defer srv.Close()
	c, err := im.New(im.Config{SDKAppID: simAppID, SecretKey: simKey, BaseURL: srv.URL})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		acct := fmt.Sprintf("user%d", i%1000)
		if _, err := c.CreateContactGroup(ctx, group(acct, fmt.Sprintf("g%d", i), "bob")); err != nil {
			b.Fatal(err)
		}
	}
}
