package keyring

import (
	"fmt"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/secret"
)

func orgKeys(org string, n int) []cacheKey {
	ks := make([]cacheKey, n)
	for i := range ks {
		ks[i] = cacheKey{orgID: org, projectID: fmt.Sprintf("%s-proj-%d", org, i), version: 1}
	}
	return ks
}

func cached(c *cache, ks []cacheKey) int {
	n := 0
	for _, k := range ks {
		c.mu.Lock()
		_, ok := c.m[k] // not get: that would refresh the LRU order
		c.mu.Unlock()
		if ok {
			n++
		}
	}
	return n
}

// One org touching many projects recycles its own share of a full cache:
// the other orgs' keys stay, and the noisy org keeps its most recent ones.
func TestCacheOrgShareProtectsOtherOrgs(t *testing.T) {
	key := secret.New()
	c := newCache(time.Hour, 100, time.Now).withOrgShare(0.25) // 25 entries per org once full
	b := orgKeys("org-b", 40)
	for _, k := range b {
		c.put(k, "ek-b", key)
	}
	a := orgKeys("org-a", 1000)
	for _, k := range a {
		c.put(k, "ek-a", key)
	}
	if n := cached(c, b); n != 40 {
		t.Fatalf("org B kept %d of its 40 keys while org A filled the cache, want 40", n)
	}
	if n := c.len(); n != 100 {
		t.Fatalf("cache holds %d, bound 100", n)
	}
	// A holds what B leaves (60 > its share of 25, as the cache was not full
	// when it started) and those are its most recent keys.
	if n := cached(c, a[len(a)-60:]); n != 60 {
		t.Fatalf("org A holds %d of its 60 newest keys, want 60", n)
	}

	// B, over its share too now, recycles its own entries: A's stay.
	for _, k := range orgKeys("org-b2", 200) {
		c.put(cacheKey{orgID: "org-b", projectID: k.projectID, version: 1}, "ek-b", key)
	}
	if na, nb := orgLen(c, "org-a"), orgLen(c, "org-b"); na != 60 || nb != 40 {
		t.Fatalf("after B's burst: A holds %d, B holds %d; want 60 and 40", na, nb)
	}
	// An org under its share makes room by plain LRU: here A's oldest.
	for _, k := range orgKeys("org-c", 10) {
		c.put(k, "ek-c", key)
	}
	if na, nb, nc := orgLen(c, "org-a"), orgLen(c, "org-b"), orgLen(c, "org-c"); na != 50 || nb != 40 || nc != 10 {
		t.Fatalf("after C's puts: A %d, B %d, C %d; want 50, 40, 10", na, nb, nc)
	}
}

func orgLen(c *cache, org string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if l := c.orgs[org]; l != nil {
		return l.Len()
	}
	return 0
}

// With one org the cache is one LRU of its full size: the cap binds only
// when another org needs room.
func TestCacheOrgShareLoneOrgUsesAll(t *testing.T) {
	key := secret.New()
	c := newCache(time.Hour, 50, time.Now).withOrgShare(0.25)
	a := orgKeys("org-a", 80)
	for _, k := range a {
		c.put(k, "ek", key)
	}
	if n := cached(c, a[30:]); n != 50 {
		t.Fatalf("lone org holds %d of its 50 newest keys, want 50", n)
	}
	// A get refreshes an entry in its org's order too: the refreshed key
	// survives the next put of its org.
	if _, _, ok := c.get(a[30]); !ok {
		t.Fatal("miss")
	}
	c.put(cacheKey{orgID: "org-a", projectID: "new", version: 1}, "ek", key)
	if cached(c, a[30:31]) != 1 || cached(c, a[31:32]) != 0 {
		t.Fatal("the org's least recently used key was not the one evicted")
	}
	// Removal paths keep the per-org lists in step.
	c.evictExternalKey("ek")
	c.mu.Lock()
	orgs := len(c.orgs)
	c.mu.Unlock()
	if c.len() != 0 || orgs != 0 {
		t.Fatalf("after evicting everything: %d entries, %d org lists", c.len(), orgs)
	}
}

func TestCacheOrgShareConfig(t *testing.T) {
	for _, tc := range []struct {
		share float64
		want  int
	}{{0, 2500}, {0.5, 5000}, {1, 10000}, {2, 10000}, {-1, 10000}, {0.00001, 1}} {
		k := New(Config{CacheSize: 10000, CacheOrgShare: tc.share})
		if k.cache.orgMax != tc.want {
			t.Errorf("CacheOrgShare %v: %d entries per org, want %d", tc.share, k.cache.orgMax, tc.want)
		}
	}
}
