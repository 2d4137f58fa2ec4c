package keyring_test

import (
	"context"
	"testing"

	"github.com/ekm-dev/ekm/kms/local"
	"github.com/ekm-dev/ekm/lifecycle/lifecycletest"
)

// BenchmarkKey times the hot path: a cached project key (what almost every
// request does) and a miss that unwraps through the KMS call layer with the
// local driver (the floor of a cache miss; a real KMS adds its latency).
// Figures and the command are in docs/PERFORMANCE.md.
func BenchmarkKey(b *testing.B) {
	e := lifecycletest.New(b, lifecycletest.Options{CacheSize: 1000})
	ek := e.ExternalKey(b, local.Type)
	pid, pk := e.Project(b, &ek)
	pk.Zero()
	ctx := context.Background()
	b.Run("hit", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				k, err := e.Keyring.Key(ctx, e.Org, pid, 1)
				if err != nil {
					b.Error(err)
					return
				}
				k.Zero()
			}
		})
	})
	b.Run("miss-local", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			e.Keyring.EvictProject(pid)
			k, err := e.Keyring.Key(ctx, e.Org, pid, 1)
			if err != nil {
				b.Fatal(err)
			}
			k.Zero()
		}
	})
}
