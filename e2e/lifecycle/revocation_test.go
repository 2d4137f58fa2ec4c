package lifecycle

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/ekmtest"
	"github.com/ekm-dev/ekm/internal/azonboard"
	"github.com/ekm-dev/ekm/kms/azure"
)

// revocationProbeInterval is short so the test is fast; the guarantee
// checked is relative to it.
const revocationProbeInterval = 500 * time.Millisecond

// revocationBound is the product's guarantee: a revocation is enforced
// within one probe interval (plus the KMS round trip), here with 5 s of
// margin for a loaded CI machine.
const revocationBound = revocationProbeInterval + 5*time.Second

type revocation struct {
	name string
	code string // diagnosis on the external key
	// revoke is the customer's action; restore undoes it.
	revoke, restore func(t *testing.T, f *fixture)
}

func revocations() []revocation {
	ctx := context.Background()
	check := func(t *testing.T, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	keyScope := func(f *fixture) string { return f.cust.KeyScope(f.ob.ResourceGroup, f.ob.Vault, f.ob.KeyName) }
	role := func(f *fixture, actions []string) error {
		_, err := f.cust.PutRole(ctx, azonboard.RoleGUID(f.ob.RoleDefinitionID), "EKM key encrypt/decrypt "+strings.TrimPrefix(f.ob.KeyName, f.env.OrgID+"--"), actions)
		return err
	}
	enable := func(f *fixture, on bool) error {
		return f.cust.UpdateKey(ctx, f.ob.VaultURI, f.ob.KeyName, map[string]any{"attributes": map[string]any{"enabled": on}})
	}
	return []revocation{
		{name: "role assignment deleted", code: azure.CodeForbiddenByRBAC,
			revoke: func(t *testing.T, f *fixture) { check(t, f.cust.Unassign(ctx, f.ob.AssignmentID)) },
			restore: func(t *testing.T, f *fixture) {
				id, err := f.cust.Assign(ctx, keyScope(f), f.ob.RoleDefinitionID, f.ob.ServicePrincipalID)
				check(t, err)
				f.ob.AssignmentID = id
			}},
		{name: "decrypt removed from role", code: azure.CodeForbiddenByRBAC,
			revoke: func(t *testing.T, f *fixture) {
				check(t, role(f, []string{"Microsoft.KeyVault/vaults/keys/read", "Microsoft.KeyVault/vaults/keys/encrypt/action"}))
			},
			restore: func(t *testing.T, f *fixture) { check(t, role(f, azonboard.DataActions)) }},
		{name: "key disabled", code: azure.CodeKeyDisabled,
			revoke:  func(t *testing.T, f *fixture) { check(t, enable(f, false)) },
			restore: func(t *testing.T, f *fixture) { check(t, enable(f, true)) }},
		{name: "key deleted", code: azure.CodeKeyNotFound,
			revoke: func(t *testing.T, f *fixture) { check(t, f.cust.DeleteKey(ctx, f.ob.VaultURI, f.ob.KeyName)) },
			// Soft delete: recovery brings back every version, so the data.
			restore: func(t *testing.T, f *fixture) { check(t, f.cust.RecoverKey(ctx, f.ob.VaultURI, f.ob.KeyName)) }},
		{name: "service principal deleted", code: azure.CodeServicePrincipalMissing,
			revoke: func(t *testing.T, f *fixture) { check(t, f.cust.DeleteServicePrincipal(ctx, f.ob.ServicePrincipalID)) },
			// Onboarding steps 1 and 4 again: the new service principal has a
			// new object id, so the role must be assigned to it.
			restore: func(t *testing.T, f *fixture) {
				sp, err := f.cust.CreateServicePrincipal(ctx, f.env.Emu.App().ClientID)
				check(t, err)
				f.ob.ServicePrincipalID = sp
				id, err := f.cust.Assign(ctx, keyScope(f), f.ob.RoleDefinitionID, sp)
				check(t, err)
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
	type latency struct {
		kind string
		d    time.Duration
	}
	var latencies []latency
	for _, rc := range revocations() {
		t.Run(rc.name, func(t *testing.T) {
			f := newFixture(t, env, strings.ReplaceAll(rc.name, " ", "-"), 1)
			p := f.projects[0]
			// Warm: the project key is cached (creation primed it; reads hit).
			f.mustRead(p, "before revocation")
			f.waitStatus("valid", 10*time.Second)

			t0 := time.Now()
			rc.revoke(t, f)
			var refusal result
			waitFor(t, revocationBound+5*time.Second, "the first refusal", func() bool {
				refusal = f.read(p)
				return !refusal.ok
			})
			d := time.Since(t0)
			latencies = append(latencies, latency{rc.name, d})
			t.Logf("%s: first refusal %v after the customer's action", rc.name, d.Round(time.Millisecond))
			if refusal.status != http.StatusForbidden || refusal.code != codeRevoked {
				t.Fatalf("refusal = %v", refusal)
			}
			if d > revocationBound {
				t.Errorf("revocation took %v, guarantee is %v", d, revocationBound)
			}
			// Nothing is served while access is withdrawn, and refusals carry
			// no plaintext.
			for range 5 {
				r := f.read(p)
				if r.ok || r.code != codeRevoked {
					t.Fatalf("read after refusal: %v", r)
				}
				if strings.Contains(r.body, "plaintext of") || strings.Contains(r.body, "secret "+p.id) {
					t.Fatalf("refusal carries plaintext: %s", r.body)
				}
			}
			k := f.waitStatus("unavailable", 10*time.Second)
			if k.StatusDetail == nil || k.StatusDetail.Code != rc.code {
				t.Fatalf("status_detail = %+v, want code %s", k.StatusDetail, rc.code)
			}
			evs := keyEvents(t, env, "external_key.unavailable", f.ekID)
			if len(evs) != 1 || evs[0].field("code") != rc.code {
				t.Fatalf("external_key.unavailable events = %+v", evs)
			}

			rc.restore(t, f)
			f.waitStatus("valid", 15*time.Second)
			f.mustRead(p, "after restoring access")
			if evs := keyEvents(t, env, "external_key.restored", f.ekID); len(evs) != 1 {
				t.Fatalf("external_key.restored events = %+v", evs)
			}
		})
	}
	for _, l := range latencies {
		t.Logf("revocation latency (probe interval %v): %-26s %v", revocationProbeInterval, l.kind, l.d.Round(time.Millisecond))
	}
}
