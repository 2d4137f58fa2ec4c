// Package envelopetest holds test helpers for code that changes the
// envelope package's process-wide settings.
package envelopetest

import (
	"testing"

	"github.com/ekm-dev/ekm/envelope"
)

// KeepWriteVersion restores envelope's process-wide write version when t
// ends, so that a test which opens an App (or runs a command) with another
// envelope write version cannot leak it into the tests after it. Tests
// that use it must not be parallel.
func KeepWriteVersion(t testing.TB) {
	t.Helper()
	v := envelope.WriteVersion()
	t.Cleanup(func() {
		if err := envelope.SetWriteVersion(v); err != nil {
			t.Error(err)
		}
	})
}
