package oci

import (
	"net/http"
	"testing"
	"time"

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
			cached, cold := f.projects[0], f.projects[1]
			f.mustRead(cached, "before the outage")
			env.App.Keyring.EvictProject(cold.id)
			id, err := env.OCI.InjectFault(tc.fault)
			check(t, err)
			defer env.OCI.RemoveFault(id)
			f.mustRead(cached, "cached key during the outage")
			if r := f.read(cold); r.ok || r.status != http.StatusServiceUnavailable || r.code != codeTemporary {
				t.Fatalf("uncached key during the outage: want 503 %s, got %v", codeTemporary, r)
			}
			f.waitStatusNeverUnavailable("degraded", 15*time.Second)
			f.mustRead(cached, "cached key, key degraded")
			env.OCI.RemoveFault(id)
			f.waitStatusNeverUnavailable("valid", 15*time.Second)
			f.mustReadEventually(cold, "after the outage")
			f.neverRevoked()
		})
	}
}

// waitStatusNeverUnavailable waits for status and fails if the key is ever
// seen unavailable on the way: an outage is not a revocation.
func (f *fixture) waitStatusNeverUnavailable(status string, timeout time.Duration) {
	f.t.Helper()
	waitFor(f.t, timeout, "external key "+f.ekID+" to be "+status, func() bool {
		v := f.key()
		if v.Status == "unavailable" {
			f.t.Fatalf("an outage marked the key unavailable: %+v", v.StatusDetail)
		}
		return v.Status == status
	})
}

// neverRevoked asserts that nothing recorded a revocation of the key.
func (f *fixture) neverRevoked() {
	f.t.Helper()
	if u := f.env.App.Keyring.Unavailable(f.ekID); u != nil {
		f.t.Fatalf("keyring gate closed by an outage: %v", u)
	}
	if evs := keyEvents(f.t, f.env, "external_key.unavailable", f.ekID); len(evs) != 0 {
		f.t.Fatalf("external_key.unavailable recorded for an outage: %+v", evs)
	}
}
