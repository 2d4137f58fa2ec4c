package oci

import (
	"testing"
	"time"

	"github.com/ekm-dev/ekm/e2e/e2ekit"
	"github.com/ekm-dev/ekm/ekmtest"
	"github.com/ekm-dev/ekm/emulator/ocicloud"
)

// TestOutage: OCI failures that are not the customer's doing — throttling
// (429 TooManyRequests), 5xx, latency beyond the KMS timeout, connection
// resets — never revoke: cached project keys keep serving the same bytes,
// a project whose key is not cached is refused as retryable (503), the key
// shows degraded (never unavailable), and valid again once the fault
// clears.
func TestOutage(t *testing.T) {
	env := start(t, ekmtest.Options{ProbeInterval: 300 * time.Millisecond, KMSTimeout: time.Second})
	for _, tc := range []struct {
		name  string
		fault ocicloud.Fault
	}{
		{"KMS throttled", ocicloud.Fault{Host: "kms", Operation: "kms.*", Status: 429}},
		{"KMS 500", ocicloud.Fault{Host: "kms", Operation: "kms.*", Status: 500}},
		{"KMS slow", ocicloud.Fault{Host: "kms", Operation: "kms.*", Latency: ocicloud.Duration(3 * time.Second)}},
		{"KMS connection reset", ocicloud.Fault{Host: "kms", Operation: "kms.*", Reset: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := register(t, env, env.OnboardOCI(t, nil), "outage", "", 2)
			f.CheckOutage(func() func() {
				id, err := env.OCI.InjectFault(tc.fault)
				e2ekit.Check(t, err)
				return func() { env.OCI.RemoveFault(id) }
			})
		})
	}
}
