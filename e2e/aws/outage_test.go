package aws

import (
	"testing"
	"time"

	"github.com/ekm-dev/ekm/e2e/e2ekit"
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
			f.CheckOutage(func() func() {
				id, err := env.AWS.InjectFault(tc.fault)
				e2ekit.Check(t, err)
				return func() { env.AWS.RemoveFault(id) }
			})
		})
	}
	t.Run("STS down with a valid session", func(t *testing.T) {
		f := register(t, env, env.OnboardAWS(t, nil), "sts-down", "", 2)
		cold := f.Projects[1]
		env.App.Keyring.EvictProject(cold.ID)
		id, err := env.AWS.InjectFault(awscloud.Fault{Host: "sts", Operation: "sts.AssumeRole", Status: 503})
		e2ekit.Check(t, err)
		defer env.AWS.RemoveFault(id)
		// The session refresh period (the probe interval) passes many times:
		// AssumeRole fails, the session is still valid, KMS keeps working.
		deadline := time.Now().Add(6 * 300 * time.Millisecond)
		for time.Now().Before(deadline) {
			f.MustReadEventually(cold, "uncached key, STS down")
			env.App.Keyring.EvictProject(cold.ID)
			time.Sleep(e2ekit.Poll)
		}
		if v := f.View(); v.Status != "valid" {
			t.Fatalf("status %s with STS down and a valid session", v.Status)
		}
		f.NeverRevoked()
	})
}
