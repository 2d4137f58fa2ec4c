package oci

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oracle/oci-go-sdk/v65/common"

	"github.com/ekm-dev/ekm/kms"
)

// panickyConfig is a configuration provider whose key fingerprint panics
// once (a bug where the OCI SDK builds a client, outside its own recover).
type panickyConfig struct {
	common.ConfigurationProvider
	armed atomic.Bool
}

func (c *panickyConfig) KeyFingerprint() (string, error) {
	if c.armed.CompareAndSwap(true, false) {
		var m map[string]int
		m["bug"]++
	}
	return c.ConfigurationProvider.KeyFingerprint()
}

// A panic while reading a vault, recovered by the call layer, ends the
// shared read for every caller: the next call on the vault reads it again
// at once instead of waiting out its timeout on a read nobody finishes.
func TestVaultReadThatPanicsIsNotLeftPending(t *testing.T) {
	c := onboard(t, testOrg, nil)
	d := emuDriver(t, func(cfg *Config) { cfg.Timeout = 3 * time.Second })
	pc := &panickyConfig{ConfigurationProvider: d.cp}
	pc.armed.Store(true)
	d.cp = pc
	p := c.open(t, d)
	ks := kms.NewKeys(kms.KeysConfig{Registry: kms.NewRegistry(d)})
	k, err := ks.Open(kms.Ref{ID: "x", OrgID: p.org, Type: Type,
		Params: kms.Params{ParamKeyOCID: p.p.key.raw, ParamVaultOCID: p.p.vault.raw, ParamRegion: p.p.region.id}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := k.Wrap(ctx, key32(), testAAD); !errors.Is(err, kms.ErrProviderPanicked) {
		t.Fatalf("wrap while the SDK panics: %v", err)
	}
	start := time.Now()
	if _, err := k.Wrap(ctx, key32(), testAAD); err != nil {
		t.Fatalf("wrap after the panic: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the wrap after the panic waited %v (a shared read left pending)", d)
	}
}
