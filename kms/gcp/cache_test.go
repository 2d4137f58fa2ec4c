package gcp

import (
	"context"
	"strconv"
	"testing"
)

// The driver's client cache is bounded, and dropping an entry never
// affects a provider opened from it: an org admin registering keys with
// ever new federations (each Open adds an entry) must not close, and so
// crash, the Cloud KMS client another tenant's live provider uses.
func TestClientCacheBoundKeepsLiveProvidersWorking(t *testing.T) {
	d := newDriver(t, wayIssuer, nil)
	c := onboard(t, d, nil)
	p := open(t, d, c)
	ctx := context.Background()
	w, err := p.Wrap(ctx, make([]byte, 32), testAAD)
	must(t, err)
	// Fill the cache past its bound with other federations (Open makes no
	// network call; registration's validation would follow each).
	for i := range maxCachedClients + 10 {
		ps := c.Params()
		ps[ParamWorkloadIdentityProjectNumber] = strconv.Itoa(900000000000 + i)
		if _, err := d.Open(testOrg, ps); err != nil {
			t.Fatal(err)
		}
	}
	if n := d.cachedClients(); n > maxCachedClients {
		t.Fatalf("driver caches %d clients, bound is %d", n, maxCachedClients)
	}
	// The earlier provider still works: every call kind.
	if _, err := p.Unwrap(ctx, w, testAAD); err != nil {
		t.Fatalf("unwrap on a provider whose cache entry was dropped: %v", err)
	}
	if _, err := p.Wrap(ctx, make([]byte, 32), testAAD); err != nil {
		t.Fatalf("wrap on a provider whose cache entry was dropped: %v", err)
	}
	if _, err := p.Describe(ctx); err != nil {
		t.Fatalf("describe on a provider whose cache entry was dropped: %v", err)
	}
	// Opening the key again (a new Keys entry) works too.
	p2 := open(t, d, c)
	if _, err := p2.Unwrap(ctx, w, testAAD); err != nil {
		t.Fatal(err)
	}
}

// A federation whose token exchange is refused leaves the cache at once,
// so failed registrations do not push out the federations of keys in use;
// one that works stays and is shared by later Opens.
func TestRefusedFederationLeavesCache(t *testing.T) {
	d := newDriver(t, wayIssuer, nil)
	c := onboard(t, d, nil)
	p := open(t, d, c)
	ctx := context.Background()
	_, err := p.Wrap(ctx, make([]byte, 32), testAAD)
	must(t, err)
	if n := d.cachedClients(); n != 1 {
		t.Fatalf("cached %d after one working key", n)
	}
	ps := c.Params()
	ps[ParamWorkloadIdentityProjectNumber] = "987654321098" // no such pool
	bad, err := d.open(ps)
	must(t, err)
	if n := d.cachedClients(); n != 2 {
		t.Fatalf("cached %d after opening a second identity", n)
	}
	if _, err := bad.Wrap(ctx, make([]byte, 32), testAAD); err == nil {
		t.Fatal("wrap through a pool that does not exist succeeded")
	}
	if n := d.cachedClients(); n != 1 {
		t.Fatalf("cached %d after a refused token exchange, want 1 (the working key's)", n)
	}
	if again := open(t, d, c); again.fed != p.fed || again.client != p.client {
		t.Fatal("the working key's federation is not shared with a new Open")
	}
	// The refused provider itself keeps working as before (it asks STS
	// again), rather than failing on a dropped client.
	if _, err := bad.Wrap(ctx, make([]byte, 32), testAAD); err == nil {
		t.Fatal("second wrap through a pool that does not exist succeeded")
	}
}
