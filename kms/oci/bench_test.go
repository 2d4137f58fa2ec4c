package oci

import (
	"testing"

	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/kms/kmstest"
)

// BenchmarkWrapUnwrap measures one Wrap+Unwrap round trip (Encrypt and
// Decrypt) through the OCI Go SDK against the emulator (request signing,
// TLS over loopback, policy evaluation and AES-256-GCM in the emulator, the
// vault's endpoints cached), with the in-process local provider as the
// baseline in the same run.
func BenchmarkWrapUnwrap(b *testing.B) {
	kmstest.BenchWrapUnwrap(b, testOrg, testAAD, "oci-emulator", func(b *testing.B) kms.Provider {
		return onboard(b, testOrg, nil).open(b, emuDriver(b, nil))
	})
}
