package oci

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/oracle/oci-go-sdk/v65/keymanagement"

	"github.com/ekm-dev/ekm/e2e/e2ekit"
	"github.com/ekm-dev/ekm/ekmtest"
	"github.com/ekm-dev/ekm/internal/ocionboard"
	"github.com/ekm-dev/ekm/kms/oci"
)

// revocationProbeInterval is short so the test is fast; the guarantee
// checked is relative to it.
const revocationProbeInterval = 500 * time.Millisecond

type revocation struct {
	name string
	code string // diagnosis on the external key
	// revoke is the customer's action; restore undoes it.
	revoke, restore func(t *testing.T, f *fixture)
}

func revocations() []revocation {
	ctx := context.Background()
	act := func(action string) func(t *testing.T, f *fixture) {
		return func(t *testing.T, f *fixture) {
			m := f.cust.Management(t)
			id := &f.cust.Result.KeyOCID
			var err error
			switch action {
			case "disable":
				_, err = m.DisableKey(ctx, keymanagement.DisableKeyRequest{KeyId: id})
			case "enable":
				_, err = m.EnableKey(ctx, keymanagement.EnableKeyRequest{KeyId: id})
			case "schedule-deletion":
				_, err = m.ScheduleKeyDeletion(ctx, keymanagement.ScheduleKeyDeletionRequest{KeyId: id})
			case "cancel-deletion":
				_, err = m.CancelKeyDeletion(ctx, keymanagement.CancelKeyDeletionRequest{KeyId: id})
			}
			e2ekit.Check(t, err)
		}
	}
	return []revocation{
		{name: "Admit policy removed", code: oci.CodeVaultNotFound,
			revoke:  func(t *testing.T, f *fixture) { e2ekit.Check(t, f.cust.DeletePolicy(ctx)) },
			restore: func(t *testing.T, f *fixture) { e2ekit.Check(t, f.cust.SetPolicy(ctx, f.cust.Result.Statements)) }},
		{name: "Admit narrowed to another key", code: oci.CodeKeyNotFound,
			revoke: func(t *testing.T, f *fixture) {
				v := f.Env.OCI.Vendor()
				other := f.cust.Result.KeyOCID[:len(f.cust.Result.KeyOCID)-4] + "zzzz"
				e2ekit.Check(t, f.cust.SetPolicy(ctx, ocionboard.Statements(v.TenancyOCID, v.GroupOCID, "ekm", f.cust.Result.VaultOCID, other)))
			},
			restore: func(t *testing.T, f *fixture) { e2ekit.Check(t, f.cust.SetPolicy(ctx, f.cust.Result.Statements)) }},
		{name: "key disabled", code: oci.CodeKeyDisabled, revoke: act("disable"), restore: act("enable")},
		// Cancelling restores the state the key had before (ENABLED).
		{name: "key deletion scheduled then cancelled", code: oci.CodeKeyPendingDeletion,
			revoke: act("schedule-deletion"), restore: act("cancel-deletion")},
	}
}

// TestRevocation: for each way a customer can withdraw access in OCI,
// reads that were being served from cache are refused with
// customer_key_unavailable within the probe interval (+ 5 s); nothing is
// served after the first refusal; the key shows unavailable with the
// diagnosis and one audit event; restoring access brings back the same
// bytes. The latency of each kind is logged (docs/PERFORMANCE.md):
//
//	go test -race -count=1 -run TestRevocation -v ./e2e/oci
func TestRevocation(t *testing.T) {
	env := start(t, ekmtest.Options{ProbeInterval: revocationProbeInterval})
	rs := &e2ekit.Revocations{ProbeInterval: revocationProbeInterval, Refusals: 5, ReadEventually: true}
	for _, rc := range revocations() {
		t.Run(rc.name, func(t *testing.T) {
			f := register(t, env, env.OnboardOCI(t, nil), strings.ReplaceAll(rc.name, " ", "-"), "", 1)
			rs.Check(f.ExternalKey, f.Projects[0], rc.name, rc.code, func() { rc.revoke(t, f) }, func() { rc.restore(t, f) })
		})
	}
	rs.LogLatencies(t)
}
