package keyring

import (
	"fmt"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/secret"
)

// BenchmarkCache times the project-key cache alone (no store, no KMS): a
// hit, a hit from every core at once, a put that evicts in a full cache
// shared by 100 orgs, and a put by one org that keeps touching new projects
// in that cache (the noisy neighbour). It uses only newCache, get and put,
// so the same file runs against an older cache for a before/after
// comparison (docs/PERFORMANCE.md).
func BenchmarkCache(b *testing.B) {
	const size, orgs = 10000, 100
	keys := func(prefix string, n int) []cacheKey {
		ks := make([]cacheKey, n)
		for i := range ks {
			ks[i] = cacheKey{orgID: fmt.Sprintf("org-%d", i%orgs), projectID: fmt.Sprintf("%s-%d", prefix, i), version: 1}
		}
		return ks
	}
	full := func() (*cache, []cacheKey, secret.Key) {
		c := newCache(time.Hour, size, time.Now)
		key := secret.New()
		ks := keys("proj", size)
		for _, k := range ks {
			c.put(k, "ek", key)
		}
		return c, ks, key
	}
	b.Run("get", func(b *testing.B) {
		c, ks, _ := full()
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			k, _, ok := c.get(ks[i%len(ks)])
			if !ok {
				b.Fatal("miss")
			}
			k.Zero()
			i++
		}
	})
	b.Run("get-parallel", func(b *testing.B) {
		c, ks, _ := full()
		b.ReportAllocs()
		b.ResetTimer() // RunParallel, unlike b.Loop, counts what came before
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				k, _, ok := c.get(ks[i%len(ks)])
				if !ok {
					b.Error("miss")
					return
				}
				k.Zero()
				i += 7
			}
		})
	})
	b.Run("put-evict", func(b *testing.B) {
		c, _, key := full()
		fresh := keys("new", 2*size)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			c.put(fresh[i%len(fresh)], "ek", key)
			i++
		}
	})
	b.Run("put-noisy", func(b *testing.B) {
		c, _, key := full()
		noisy := make([]cacheKey, 2*size)
		for i := range noisy {
			noisy[i] = cacheKey{orgID: "org-noisy", projectID: fmt.Sprintf("noisy-%d", i), version: 1}
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			c.put(noisy[i%len(noisy)], "ek", key)
			i++
		}
	})
}
