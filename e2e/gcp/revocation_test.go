package gcp

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/e2e/e2ekit"
	"github.com/ekm-dev/ekm/ekmtest"
	"github.com/ekm-dev/ekm/internal/gcponboard"
	kmsgcp "github.com/ekm-dev/ekm/kms/gcp"
	"github.com/ekm-dev/ekm/kms/gcp/gcptest"
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

func revocations(member func(*gcptest.Customer) string) []revocation {
	ctx := context.Background()
	v1 := func(f *fixture) string { return f.cust.KeyName() + "/cryptoKeyVersions/1" }
	var saved gcptest.Policy
	return []revocation{
		{name: "IAM binding removed", code: kmsgcp.CodePermissionDenied,
			revoke: func(t *testing.T, f *fixture) {
				e2ekit.Check(t, f.cust.RemoveMember(ctx, f.cust.KeyName(), member(f.cust)))
			},
			restore: func(t *testing.T, f *fixture) {
				e2ekit.Check(t, f.cust.AddMember(ctx, f.cust.KeyName(), member(f.cust), gcponboard.Roles(false)))
			}},
		{name: "provider disabled", code: kmsgcp.CodeProviderNotFound,
			revoke:  func(t *testing.T, f *fixture) { e2ekit.Check(t, f.cust.SetProviderDisabled(ctx, true)) },
			restore: func(t *testing.T, f *fixture) { e2ekit.Check(t, f.cust.SetProviderDisabled(ctx, false)) }},
		{name: "pool deleted", code: kmsgcp.CodeProviderNotFound,
			revoke:  func(t *testing.T, f *fixture) { e2ekit.Check(t, f.cust.DeletePool(ctx)) },
			restore: func(t *testing.T, f *fixture) { e2ekit.Check(t, f.cust.UndeletePool(ctx)) }},
		{name: "condition changed to exclude ekm", code: kmsgcp.CodeConditionRejected,
			revoke: func(t *testing.T, f *fixture) {
				e2ekit.Check(t, f.cust.SetCondition(ctx, `assertion.sub == "someone-else"`))
			},
			restore: func(t *testing.T, f *fixture) {
				e2ekit.Check(t, f.cust.SetCondition(ctx, gcponboard.Condition(f.cust.Config.Subject)))
			}},
		{name: "primary version disabled", code: kmsgcp.CodeKeyVersionDisabled,
			revoke:  func(t *testing.T, f *fixture) { e2ekit.Check(t, f.cust.SetVersionState(ctx, v1(f), "DISABLED")) },
			restore: func(t *testing.T, f *fixture) { e2ekit.Check(t, f.cust.SetVersionState(ctx, v1(f), "ENABLED")) }},
		{name: "version scheduled for destruction", code: kmsgcp.CodeKeyVersionDestroyed,
			revoke: func(t *testing.T, f *fixture) { e2ekit.Check(t, f.cust.DestroyVersion(ctx, v1(f))) },
			// Restoring a scheduled destruction leaves the version disabled.
			restore: func(t *testing.T, f *fixture) {
				e2ekit.Check(t, f.cust.RestoreVersion(ctx, v1(f)))
				e2ekit.Check(t, f.cust.SetVersionState(ctx, v1(f), "ENABLED"))
			}},
		{name: "key's IAM policy replaced", code: kmsgcp.CodePermissionDenied,
			revoke: func(t *testing.T, f *fixture) {
				p, err := f.cust.GetPolicy(ctx, f.cust.KeyName())
				e2ekit.Check(t, err)
				saved = p
				e2ekit.Check(t, f.cust.SetPolicy(ctx, f.cust.KeyName(), gcptest.Policy{Etag: p.Etag,
					Bindings: []gcponboard.Binding{{Role: kmsgcp.RoleViewer, Members: []string{"user:auditor@example.com"}}}}))
			},
			restore: func(t *testing.T, f *fixture) {
				cur, err := f.cust.GetPolicy(ctx, f.cust.KeyName())
				e2ekit.Check(t, err)
				saved.Etag = cur.Etag
				e2ekit.Check(t, f.cust.SetPolicy(ctx, f.cust.KeyName(), saved))
			}},
	}
}

// TestRevocation: for each way a customer can withdraw access, reads that
// were being served from cache are refused with customer_key_unavailable
// within the probe interval + 5 s; nothing is served after the first
// refusal; the key shows unavailable with the diagnosis and one audit
// event; restoring access brings back the same bytes. Latencies are logged
// (docs/PERFORMANCE.md).
func TestRevocation(t *testing.T) {
	env := start(t, ekmtest.GCPIssuer, ekmtest.Options{ProbeInterval: revocationProbeInterval})
	subject := env.GCPIdentity(t)["subject"]
	member := func(c *gcptest.Customer) string {
		return kmsgcp.Member(c.Config.ProjectNumber, c.Config.PoolID, subject)
	}
	rs := &e2ekit.Revocations{ProbeInterval: revocationProbeInterval, Refusals: 3}
	for _, rc := range revocations(member) {
		t.Run(rc.name, func(t *testing.T) {
			f := newFixture(t, env, strings.ReplaceAll(rc.name, " ", "-"))
			rs.Check(f.ExternalKey, f.p, rc.name, rc.code, func() { rc.revoke(t, f) }, func() { rc.restore(t, f) })
		})
	}
	rs.LogLatencies(t)
}
