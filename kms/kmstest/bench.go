package kmstest

import (
	"context"
	"testing"

	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/kms/local"
	"github.com/ekm-dev/ekm/secret"
)

// BenchWrapUnwrap measures one Wrap+Unwrap round trip of a 32-byte key
// with aad through the provider open returns (sub-benchmark name), with
// the in-process local provider for org as the baseline in the same run.
// open is called inside its sub-benchmark, so its setup is not timed.
func BenchWrapUnwrap(b *testing.B, org string, aad kms.AAD, name string, open func(b *testing.B) kms.Provider) {
	run := func(b *testing.B, p kms.Provider) {
		ctx := context.Background()
		pt := make([]byte, 32)
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			w, err := p.Wrap(ctx, pt, aad)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := p.Unwrap(ctx, w, aad); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("baseline-local", func(b *testing.B) {
		d := local.NewDriver(secret.New())
		ps, err := d.Check(org, nil)
		if err != nil {
			b.Fatal(err)
		}
		p, err := d.Open(org, ps)
		if err != nil {
			b.Fatal(err)
		}
		run(b, p)
	})
	b.Run(name, func(b *testing.B) { run(b, open(b)) })
}
