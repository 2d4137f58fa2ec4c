package azure

import (
	"testing"

	emu "github.com/ekm-dev/ekm/emulator/azurecloud"

	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/kms/kmstest"
)

// BenchmarkWrapUnwrap measures one Wrap+Unwrap round trip through the SDK
// pipeline against the emulator (TLS over loopback, RSA-2048 in the
// emulator), with the in-process local provider as the baseline.
func BenchmarkWrapUnwrap(b *testing.B) {
	kmstest.BenchWrapUnwrap(b, fakeOrg, testAAD, "azure-emulator", func(b *testing.B) kms.Provider {
		e := startEmulator(b)
		s := emu.DefaultSettings()
		s.Throttle.Disabled = true // measure the client, not Azure's limits
		if err := e.SetSettings(s); err != nil {
			b.Fatal(err)
		}
		c := onboard(b, e, onboarding{})
		return c.open(b, emuDriver(b, e, nil))
	})
}
