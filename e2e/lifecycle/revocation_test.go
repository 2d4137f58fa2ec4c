package lifecycle

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/e2e/e2ekit"
	"github.com/ekm-dev/ekm/ekmtest"
	"github.com/ekm-dev/ekm/internal/azonboard"
	"github.com/ekm-dev/ekm/kms/azure"
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
	keyScope := func(f *fixture) string { return f.cust.KeyScope(f.ob.ResourceGroup, f.ob.Vault, f.ob.KeyName) }
	role := func(f *fixture, actions []string) error {
		_, err := f.cust.PutRole(ctx, azonboard.RoleGUID(f.ob.RoleDefinitionID), "EKM key encrypt/decrypt "+strings.TrimPrefix(f.ob.KeyName, f.Env.OrgID+"--"), actions)
		return err
	}
	enable := func(f *fixture, on bool) error {
		return f.cust.UpdateKey(ctx, f.ob.VaultURI, f.ob.KeyName, map[string]any{"attributes": map[string]any{"enabled": on}})
	}
	return []revocation{
		{name: "role assignment deleted", code: azure.CodeForbiddenByRBAC,
			revoke: func(t *testing.T, f *fixture) { e2ekit.Check(t, f.cust.Unassign(ctx, f.ob.AssignmentID)) },
			restore: func(t *testing.T, f *fixture) {
				id, err := f.cust.Assign(ctx, keyScope(f), f.ob.RoleDefinitionID, f.ob.ServicePrincipalID)
				e2ekit.Check(t, err)
				f.ob.AssignmentID = id
			}},
		{name: "decrypt removed from role", code: azure.CodeForbiddenByRBAC,
			revoke: func(t *testing.T, f *fixture) {
				e2ekit.Check(t, role(f, []string{"Microsoft.KeyVault/vaults/keys/read", "Microsoft.KeyVault/vaults/keys/encrypt/action"}))
			},
			restore: func(t *testing.T, f *fixture) { e2ekit.Check(t, role(f, azonboard.DataActions)) }},
		{name: "key disabled", code: azure.CodeKeyDisabled,
			revoke:  func(t *testing.T, f *fixture) { e2ekit.Check(t, enable(f, false)) },
			restore: func(t *testing.T, f *fixture) { e2ekit.Check(t, enable(f, true)) }},
		{name: "key deleted", code: azure.CodeKeyNotFound,
			revoke: func(t *testing.T, f *fixture) { e2ekit.Check(t, f.cust.DeleteKey(ctx, f.ob.VaultURI, f.ob.KeyName)) },
			// Soft delete: recovery brings back every version, so the data.
			restore: func(t *testing.T, f *fixture) { e2ekit.Check(t, f.cust.RecoverKey(ctx, f.ob.VaultURI, f.ob.KeyName)) }},
		{name: "service principal deleted", code: azure.CodeServicePrincipalMissing,
			revoke: func(t *testing.T, f *fixture) {
				e2ekit.Check(t, f.cust.DeleteServicePrincipal(ctx, f.ob.ServicePrincipalID))
			},
			// Onboarding steps 1 and 4 again: the new service principal has a
			// new object id, so the role must be assigned to it.
			restore: func(t *testing.T, f *fixture) {
				sp, err := f.cust.CreateServicePrincipal(ctx, f.Env.Emu.App().ClientID)
				e2ekit.Check(t, err)
				f.ob.ServicePrincipalID = sp
				id, err := f.cust.Assign(ctx, keyScope(f), f.ob.RoleDefinitionID, sp)
				e2ekit.Check(t, err)
				f.ob.AssignmentID = id
			}},
	}
}

// TestRevocation: for each way a customer can withdraw access, reads that
// were being served from cache are refused with customer_key_unavailable
// within the probe interval; nothing is served after the first refusal; the
// key shows unavailable with the diagnosis and an audit event; restoring
// access brings back the same bytes.
func TestRevocation(t *testing.T) {
	env := ekmtest.Start(t, ekmtest.Options{ProbeInterval: revocationProbeInterval})
	rs := &e2ekit.Revocations{ProbeInterval: revocationProbeInterval, Refusals: 5}
	for _, rc := range revocations() {
		t.Run(rc.name, func(t *testing.T) {
			f := newFixture(t, env, strings.ReplaceAll(rc.name, " ", "-"), 1)
			rs.Check(f.ExternalKey, f.Projects[0], rc.name, rc.code, func() { rc.revoke(t, f) }, func() { rc.restore(t, f) })
		})
	}
	rs.LogLatencies(t)
}
