package gcp

import (
	"context"
	"testing"

	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/kms/local"
	"github.com/ekm-dev/ekm/secret"
)

// BenchmarkWrapUnwrap measures one Wrap+Unwrap round trip through the
// gapic REST client against the emulator (TLS over loopback, AES-256-GCM
// in the emulator, the federated token cached), with the in-process local
// provider as the baseline in the same run.
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
	b.Run("gcp-emulator", func(b *testing.B) {
		s := emu.Settings()
		s.Quota.Disabled = true // measure the client, not Google's quotas
		if err := emu.SetSettings(s); err != nil {
			b.Fatal(err)
		}
		d := newDriver(b, wayIssuer, nil)
		run(b, open(b, d, onboard(b, d, nil)))
	})
}
