package azure

import (
	"context"
	"testing"

	emu "github.com/ekm-dev/ekm/emulator/azurecloud"

	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/kms/local"
	"github.com/ekm-dev/ekm/secret"
)

// BenchmarkWrapUnwrap measures one Wrap+Unwrap round trip through the SDK
// pipeline against the emulator (TLS over loopback, RSA-2048 in the
// emulator), with the in-process local provider as the baseline.
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
		ps, err := d.Check(fakeOrg, nil)
		if err != nil {
			b.Fatal(err)
		}
		p, err := d.Open(fakeOrg, ps)
		if err != nil {
			b.Fatal(err)
		}
		run(b, p)
	})
	b.Run("azure-emulator", func(b *testing.B) {
		e := startEmulator(b)
		s := emu.DefaultSettings()
		s.Throttle.Disabled = true // measure the client, not Azure's limits
		if err := e.SetSettings(s); err != nil {
			b.Fatal(err)
		}
		c := onboard(b, e, onboarding{})
		run(b, c.open(b, emuDriver(b, e, nil)))
	})
}
