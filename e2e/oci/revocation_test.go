package oci

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/oracle/oci-go-sdk/v65/keymanagement"

	"github.com/ekm-dev/ekm/ekmtest"
	"github.com/ekm-dev/ekm/internal/ocionboard"
	"github.com/ekm-dev/ekm/kms/oci"
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
			check(t, err)
		}
	}
	return []revocation{
		{name: "Admit policy removed", code: oci.CodeVaultNotFound,
			revoke:  func(t *testing.T, f *fixture) { check(t, f.cust.DeletePolicy(ctx)) },
			restore: func(t *testing.T, f *fixture) { check(t, f.cust.SetPolicy(ctx, f.cust.Result.Statements)) }},
		{name: "Admit narrowed to another key", code: oci.CodeKeyNotFound,
			revoke: func(t *testing.T, f *fixture) {
				v := f.env.OCI.Vendor()
				other := f.cust.Result.KeyOCID[:len(f.cust.Result.KeyOCID)-4] + "zzzz"
				check(t, f.cust.SetPolicy(ctx, ocionboard.Statements(v.TenancyOCID, v.GroupOCID, "ekm", f.cust.Result.VaultOCID, other)))
			},
			restore: func(t *testing.T, f *fixture) { check(t, f.cust.SetPolicy(ctx, f.cust.Result.Statements)) }},
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
	type latency struct {
		kind string
		d    time.Duration
	}
	var latencies []latency
	for _, rc := range revocations() {
		t.Run(rc.name, func(t *testing.T) {
			cust := env.OnboardOCI(t, nil)
			f := register(t, env, cust, strings.ReplaceAll(rc.name, " ", "-"), "", 1)
			p := f.projects[0]
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
			f.mustReadEventually(p, "after restoring access")
			if evs := keyEvents(t, env, "external_key.restored", f.ekID); len(evs) != 1 {
				t.Fatalf("external_key.restored events = %+v", evs)
			}
		})
	}
	var b strings.Builder
	for _, l := range latencies {
		fmt.Fprintf(&b, "\n  %-40s %v", l.kind, l.d.Round(time.Millisecond))
	}
	t.Logf("revocation latency (probe interval %v):%s", revocationProbeInterval, b.String())
}
