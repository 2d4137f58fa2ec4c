package gcp

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/ekmtest"
	"github.com/ekm-dev/ekm/internal/gcponboard"
	kmsgcp "github.com/ekm-dev/ekm/kms/gcp"
	"github.com/ekm-dev/ekm/kms/gcp/gcptest"
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

func revocations(member func(*gcptest.Customer) string) []revocation {
	ctx := context.Background()
	v1 := func(f *fixture) string { return f.cust.KeyName() + "/cryptoKeyVersions/1" }
	var saved gcptest.Policy
	return []revocation{
		{name: "IAM binding removed", code: kmsgcp.CodePermissionDenied,
			revoke: func(t *testing.T, f *fixture) { must(t, f.cust.RemoveMember(ctx, f.cust.KeyName(), member(f.cust))) },
			restore: func(t *testing.T, f *fixture) {
				must(t, f.cust.AddMember(ctx, f.cust.KeyName(), member(f.cust), gcponboard.Roles(false)))
			}},
		{name: "provider disabled", code: kmsgcp.CodeProviderNotFound,
			revoke:  func(t *testing.T, f *fixture) { must(t, f.cust.SetProviderDisabled(ctx, true)) },
			restore: func(t *testing.T, f *fixture) { must(t, f.cust.SetProviderDisabled(ctx, false)) }},
		{name: "pool deleted", code: kmsgcp.CodeProviderNotFound,
			revoke:  func(t *testing.T, f *fixture) { must(t, f.cust.DeletePool(ctx)) },
			restore: func(t *testing.T, f *fixture) { must(t, f.cust.UndeletePool(ctx)) }},
		{name: "condition changed to exclude ekm", code: kmsgcp.CodeConditionRejected,
			revoke: func(t *testing.T, f *fixture) { must(t, f.cust.SetCondition(ctx, `assertion.sub == "someone-else"`)) },
			restore: func(t *testing.T, f *fixture) {
				must(t, f.cust.SetCondition(ctx, gcponboard.Condition(f.cust.Config.Subject)))
			}},
		{name: "primary version disabled", code: kmsgcp.CodeKeyVersionDisabled,
			revoke:  func(t *testing.T, f *fixture) { must(t, f.cust.SetVersionState(ctx, v1(f), "DISABLED")) },
			restore: func(t *testing.T, f *fixture) { must(t, f.cust.SetVersionState(ctx, v1(f), "ENABLED")) }},
		{name: "version scheduled for destruction", code: kmsgcp.CodeKeyVersionDestroyed,
			revoke: func(t *testing.T, f *fixture) { must(t, f.cust.DestroyVersion(ctx, v1(f))) },
			// Restoring a scheduled destruction leaves the version disabled.
			restore: func(t *testing.T, f *fixture) {
				must(t, f.cust.RestoreVersion(ctx, v1(f)))
				must(t, f.cust.SetVersionState(ctx, v1(f), "ENABLED"))
			}},
		{name: "key's IAM policy replaced", code: kmsgcp.CodePermissionDenied,
			revoke: func(t *testing.T, f *fixture) {
				p, err := f.cust.GetPolicy(ctx, f.cust.KeyName())
				must(t, err)
				saved = p
				must(t, f.cust.SetPolicy(ctx, f.cust.KeyName(), gcptest.Policy{Etag: p.Etag,
					Bindings: []gcponboard.Binding{{Role: kmsgcp.RoleViewer, Members: []string{"user:auditor@example.com"}}}}))
			},
			restore: func(t *testing.T, f *fixture) {
				cur, err := f.cust.GetPolicy(ctx, f.cust.KeyName())
				must(t, err)
				saved.Etag = cur.Etag
				must(t, f.cust.SetPolicy(ctx, f.cust.KeyName(), saved))
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
	type latency struct {
		kind string
		d    time.Duration
	}
	var latencies []latency
	for _, rc := range revocations(member) {
		t.Run(rc.name, func(t *testing.T) {
			f := newFixture(t, env, strings.ReplaceAll(rc.name, " ", "-"))
			f.mustRead("before revocation")
			f.waitStatus("valid", 10*time.Second)

			t0 := time.Now()
			rc.revoke(t, f)
			var refusal result
			waitFor(t, revocationBound+5*time.Second, "the first refusal", func() bool {
				refusal = f.read(f.p)
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
			for range 3 {
				r := f.read(f.p)
				if r.ok || r.code != codeRevoked {
					t.Fatalf("read after refusal: %v", r)
				}
				if strings.Contains(r.body, "plaintext of") || strings.Contains(r.body, "secret "+f.p.id) {
					t.Fatalf("refusal carries plaintext: %s", r.body)
				}
			}
			k := f.waitStatus("unavailable", 10*time.Second)
			if k.StatusDetail == nil || k.StatusDetail.Code != rc.code {
				t.Fatalf("status_detail = %+v, want code %s", k.StatusDetail, rc.code)
			}
			if evs := keyEvents(t, env, "external_key.unavailable", f.ekID); len(evs) != 1 || evs[0].field("code") != rc.code {
				t.Fatalf("external_key.unavailable events = %+v", evs)
			}

			rc.restore(t, f)
			f.waitStatus("valid", 15*time.Second)
			f.mustRead("after restoring access")
			if evs := keyEvents(t, env, "external_key.restored", f.ekID); len(evs) != 1 {
				t.Fatalf("external_key.restored events = %+v", evs)
			}
		})
	}
	for _, l := range latencies {
		t.Logf("revocation latency (probe interval %v): %-34s %v", revocationProbeInterval, l.kind, l.d.Round(time.Millisecond))
	}
}
