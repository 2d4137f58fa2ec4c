package gcp

import (
	"testing"

	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/kms/kmstest"
)

// BenchmarkWrapUnwrap measures one Wrap+Unwrap round trip through the
// gapic REST client against the emulator (TLS over loopback, AES-256-GCM
// in the emulator, the federated token cached), with the in-process local
// provider as the baseline in the same run.
func BenchmarkWrapUnwrap(b *testing.B) {
	kmstest.BenchWrapUnwrap(b, testOrg, testAAD, "gcp-emulator", func(b *testing.B) kms.Provider {
		s := emu.Settings()
		s.Quota.Disabled = true // measure the client, not Google's quotas
		if err := emu.SetSettings(s); err != nil {
			b.Fatal(err)
		}
		d := newDriver(b, wayIssuer, nil)
		return open(b, d, onboard(b, d, nil))
	})
}
