package oci

import (
	"context"
	"testing"

	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/kms/local"
	"github.com/ekm-dev/ekm/secret"
)

// BenchmarkWrapUnwrap measures one Wrap+Unwrap round trip (Encrypt and
// Decrypt) through the OCI Go SDK against the emulator (request signing,
// TLS over loopback, policy evaluation and AES-256-GCM in the emulator, the
// vault's endpoints cached), with the in-process local provider as the
// baseline in the same run.
func BenchmarkWrapUnwrap(b *testing.B) {
	run := func(b *testing.B, p kms.Provider) {
		ctx := context.Background()
		pt := make([]byte, 32)
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			w, err := p.Wrap(ctx, pt, testAAD)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := p.Unwrap(ctx, w, testAAD); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("baseline-local", func(b *testing.B) {
		d := local.NewDriver(secret.New())
		ps, err := d.Check(testOrg, nil)
		if err != nil {
			b.Fatal(err)
		}
		p, err := d.Open(testOrg, ps)
		if err != nil {
			b.Fatal(err)
		}
		run(b, p)
	})
	b.Run("oci-emulator", func(b *testing.B) {
		d := emuDriver(b, nil)
		run(b, onboard(b, testOrg, nil).open(b, d))
	})
}
