package aws

import (
	"net/http"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/ekmtest"
	"github.com/ekm-dev/ekm/emulator/awscloud"
)

// TestOutage: AWS failures that are not the customer's doing — KMS
// throttling, 5xx, latency beyond the KMS timeout, connection resets, STS
// down — never revoke: cached project keys keep serving the same bytes, a
// project whose key is not cached is refused as retryable (503), the key
// shows degraded (never unavailable), and valid again once the fault
// clears. With STS down, a valid role session keeps KMS working.
func TestOutage(t *testing.T) {
	env := ekmtest.Start(t, ekmtest.Options{AWS: true, ProbeInterval: 300 * time.Millisecond, KMSTimeout: time.Second})
	for _, tc := range []struct {
		name  string
		fault awscloud.Fault
	}{
		{"KMS throttled", awscloud.Fault{Host: "kms", Operation: "kms.*", Status: 400, ErrorCode: "ThrottlingException"}},
		{"KMS 503", awscloud.Fault{Host: "kms", Operation: "kms.*", Status: 503}},
		{"KMS slow", awscloud.Fault{Host: "kms", Operation: "kms.*", Latency: awscloud.Duration(3 * time.Second)}},
		{"KMS connection reset", awscloud.Fault{Host: "kms", Operation: "kms.*", Reset: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := register(t, env, env.OnboardAWS(t, nil), "outage", "", 2)
			cached, cold := f.projects[0], f.projects[1]
			f.mustRead(cached, "before the outage")
			env.App.Keyring.EvictProject(cold.id)
			id, err := env.AWS.InjectFault(tc.fault)
			check(t, err)
			defer env.AWS.RemoveFault(id)
			f.mustRead(cached, "cached key during the outage")
			if r := f.read(cold); r.ok || r.status != http.StatusServiceUnavailable || r.code != codeTemporary {
				t.Fatalf("uncached key during the outage: want 503 %s, got %v", codeTemporary, r)
			}
			f.waitStatusNeverUnavailable("degraded", 15*time.Second)
			f.mustRead(cached, "cached key, key degraded")
			env.AWS.RemoveFault(id)
			f.waitStatusNeverUnavailable("valid", 15*time.Second)
			f.mustReadEventually(cold, "after the outage")
			f.neverRevoked()
		})
	}
	t.Run("STS down with a valid session", func(t *testing.T) {
		f := register(t, env, env.OnboardAWS(t, nil), "sts-down", "", 2)
		cold := f.projects[1]
		env.App.Keyring.EvictProject(cold.id)
		id, err := env.AWS.InjectFault(awscloud.Fault{Host: "sts", Operation: "sts.AssumeRole", Status: 503})
		check(t, err)
		defer env.AWS.RemoveFault(id)
		// The session refresh period (the probe interval) passes many times:
		// AssumeRole fails, the session is still valid, KMS keeps working.
		deadline := time.Now().Add(6 * 300 * time.Millisecond)
		for time.Now().Before(deadline) {
			f.mustReadEventually(cold, "uncached key, STS down")
			env.App.Keyring.EvictProject(cold.id)
			time.Sleep(poll)
		}
		if v := f.key(); v.Status != "valid" {
			t.Fatalf("status %s with STS down and a valid session", v.Status)
		}
		f.neverRevoked()
	})
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
