package lifecycle

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/ekm-dev/ekm/e2e/e2ekit"
	"github.com/ekm-dev/ekm/ekmtest"
	"github.com/ekm-dev/ekm/internal/azonboard"
	"github.com/ekm-dev/ekm/lifecycle"
)

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// TestRotationAndRekey: the customer rotates its KEK, ekm notices and
// rewraps every project key version, and the old KEK version can then be
// disabled with all data still readable; a project re-keyed to another
// external key survives the old key being disabled; every KMS call and
// every lifecycle step is in the audit log.
func TestRotationAndRekey(t *testing.T) {
	env := ekmtest.Start(t, ekmtest.Options{ProbeInterval: 200 * time.Millisecond})
	ctx := context.Background()
	a := newFixture(t, env, "rot", 2)
	// Project 0 gets a second project key version; data exists under both.
	p0 := a.Projects[0]
	p0v1 := *p0
	if _, err := env.App.Service.RotateProjectKey(ctx, "", env.OrgID, p0.ID, lifecycle.RotateOptions{}); err != nil {
		t.Fatal(err)
	}
	a.Write(p0, "v2")
	data := []*e2ekit.Project{&p0v1, p0, a.Projects[1]}
	readAll := func(what string) {
		t.Helper()
		for _, p := range data {
			a.MustRead(p, what)
		}
	}
	readAll("before rotation")

	t.Run("KEK rotation", func(t *testing.T) {
		var k e2ekit.KeyView
		e2ekit.WaitFor(t, 10*time.Second, "the probe to record the current KEK version", func() bool {
			k = a.View()
			return k.Status == "valid" && k.CurrentKEKVersion != ""
		})
		old := k.CurrentKEKVersion
		if k.KEKVersions[old] != 3 || len(k.KEKVersions) != 1 {
			t.Fatalf("kek_versions before rotation = %v", k.KEKVersions)
		}
		kid, err := a.cust.RotateKey(ctx, a.ob.VaultURI, a.ob.KeyName)
		if err != nil {
			t.Fatal(err)
		}
		// kek_versions and current_kek_version name versioned kids.
		cur := strings.TrimSuffix(old, azonboard.KeyVersion(old)) + azonboard.KeyVersion(kid)
		// The probe describes the key every 10th round: within ~2 s here.
		d := e2ekit.WaitFor(t, 20*time.Second, "every project key rewrapped under the new version", func() bool {
			k = a.View()
			return k.CurrentKEKVersion == cur && k.KEKVersions[cur] == 3 && len(k.KEKVersions) == 1
		})
		t.Logf("rotation detected and 3 project key versions rewrapped %v after the customer rotated", d.Round(time.Millisecond))
		rot := e2ekit.KeyEvents(t, env, "external_key.rotated", a.ID)
		if len(rot) != 1 || rot[0].Field("previous_version") != old || rot[0].Field("current_version") != cur {
			t.Fatalf("external_key.rotated = %+v", rot)
		}
		if rw := e2ekit.KeyEvents(t, env, "external_key.rewrapped", a.ID); len(rw) != 3 {
			t.Fatalf("external_key.rewrapped events = %d, want 3", len(rw))
		}

		// kek_versions shows nothing left on the old version: the customer
		// may disable it. Drop the cache so every read unwraps again.
		if err := a.cust.UpdateKeyVersion(ctx, a.ob.VaultURI, a.ob.KeyName, azonboard.KeyVersion(old), map[string]any{"attributes": map[string]any{"enabled": false}}); err != nil {
			t.Fatal(err)
		}
		env.App.Keyring.EvictExternalKey(a.ID)
		readAll("old KEK version disabled")
		if k := a.View(); k.Status != "valid" {
			t.Fatalf("status after disabling the old version: %s %+v", k.Status, k.StatusDetail)
		}
	})

	t.Run("re-key", func(t *testing.T) {
		admin := env.Admin()
		b := newFixture(t, env, "target", 0)
		// A target whose role assignment is gone: validated first, refused,
		// nothing changes.
		c := newFixture(t, env, "badtarget", 0)
		if err := c.cust.Unassign(ctx, c.ob.AssignmentID); err != nil {
			t.Fatal(err)
		}
		for _, bad := range []string{"extkey_0000000000000000000000000", c.ID} {
			_, err := admin.Admin.Organization.Projects.Update(ctx, p0.ID, openai.AdminOrganizationProjectUpdateParams{ExternalKeyID: openai.String(bad)})
			var oe *openai.Error
			if !errors.As(err, &oe) || oe.StatusCode/100 != 4 || oe.Param != "external_key_id" {
				t.Fatalf("re-key to %s: %v", bad, err)
			}
			pr, err := admin.Admin.Organization.Projects.Get(ctx, p0.ID)
			if err != nil || pr.ExternalKeyID != a.ID {
				t.Fatalf("project after a refused re-key: %v %s", err, pr.RawJSON())
			}
			if n := sum(a.View().KEKVersions); n != 3 {
				t.Fatalf("key A wraps %d versions after a refused re-key", n)
			}
			if n := sum(c.View().KEKVersions); n != 0 {
				t.Fatalf("refused target wraps %d versions", n)
			}
		}

		for _, p := range a.Projects {
			pr, err := admin.Admin.Organization.Projects.Update(ctx, p.ID, openai.AdminOrganizationProjectUpdateParams{ExternalKeyID: openai.String(b.ID)})
			if err != nil || pr.ExternalKeyID != b.ID {
				t.Fatalf("re-key %s: %v", p.ID, err)
			}
		}
		// Every version moved, none is left on A.
		if kb, ka := b.View(), a.View(); sum(kb.KEKVersions) != 3 || sum(ka.KEKVersions) != 0 || len(ka.APIProjectIDs) != 0 {
			t.Fatalf("after re-key: target %v, old %v (projects %v)", kb.KEKVersions, ka.KEKVersions, ka.APIProjectIDs)
		}
		// The old key disabled entirely: everything is still readable.
		if err := a.cust.UpdateKey(ctx, a.ob.VaultURI, a.ob.KeyName, map[string]any{"attributes": map[string]any{"enabled": false}}); err != nil {
			t.Fatal(err)
		}
		env.App.Keyring.EvictExternalKey(a.ID)
		env.App.Keyring.EvictExternalKey(b.ID)
		readAll("after re-key, old key disabled")
		if v, err := admin.Admin.Organization.ExternalKeys.Validate(ctx, b.ID); err != nil || v.Status != "valid" {
			t.Fatalf("validate target: %v", err)
		}
		if _, err := admin.Admin.Organization.ExternalKeys.Delete(ctx, a.ID); err != nil {
			t.Fatalf("delete the old key: %v", err)
		}
		var rekeyed []string
		for _, e := range e2ekit.AuditEvents(t, env, "project.updated") {
			if ch, ok := e.Payload["changes_requested"].(map[string]any); ok && ch["external_key_id"] == b.ID {
				rekeyed = append(rekeyed, e.Field("id"))
			}
		}
		slices.Sort(rekeyed)
		want := []string{a.Projects[0].ID, a.Projects[1].ID}
		slices.Sort(want)
		if !slices.Equal(rekeyed, want) {
			t.Fatalf("project.updated re-key events for %v, want %v", rekeyed, want)
		}
	})

	t.Run("audit", func(t *testing.T) {
		// The lifecycle is in the audit log (unavailable and restored are
		// checked in TestRevocation, degraded in TestOutage).
		for _, typ := range []string{"external_key.registered", "external_key.validated", "external_key.rotated",
			"external_key.rewrapped", "external_key.removed", "project.updated", "project.key_rotated", "kms.call"} {
			if len(e2ekit.AuditEvents(t, env, typ)) == 0 {
				t.Errorf("no %s event", typ)
			}
		}
		auditKMSCalls(t, env)
	})
}

// auditKMSCalls checks that every kms.call event names the request id ekm
// sent, and that every Key Vault request ekm sent is in some kms.call event.
func auditKMSCalls(t *testing.T, env *ekmtest.Env) {
	t.Helper()
	sent := map[string]bool{} // x-ms-client-request-id of ekm's Key Vault requests
	for _, r := range env.Emu.Requests() {
		if strings.HasSuffix(r.Host, ".vault.azure.net") && r.ClientRequestID != "" && r.Operation != "kv.challenge" {
			sent[r.ClientRequestID] = true
		}
	}
	if len(sent) == 0 {
		t.Fatal("the emulator saw no Key Vault request from ekm")
	}
	var missing []string
	e2ekit.WaitFor(t, 10*time.Second, "a kms.call event for every Key Vault request", func() bool {
		recorded := map[string]bool{}
		for _, e := range e2ekit.AuditEvents(t, env, "kms.call") {
			id := e.Field("request_id")
			if id == "" || e.Field("external_key_id") == "" || e.Field("operation") == "" || e.Field("outcome") == "" {
				t.Fatalf("incomplete kms.call event: %+v", e.Payload)
			}
			recorded[id] = true
			if ids, ok := e.Payload["request_ids"].([]any); ok {
				for _, x := range ids {
					recorded[x.(string)] = true
				}
			}
		}
		missing = missing[:0]
		for id := range sent {
			if !recorded[id] {
				missing = append(missing, id)
			}
		}
		return len(missing) == 0
	})
	// Events first, then the emulator's log: the probe keeps calling, and a
	// call is logged by the emulator around the time ekm records it, so the
	// log is polled briefly for each event's id.
	events := e2ekit.AuditEvents(t, env, "kms.call")
	var unanswered []string
	e2ekit.WaitFor(t, 5*time.Second, "Key Vault's log to show every recorded call", func() bool {
		seen := map[string]bool{}
		for _, r := range env.Emu.Requests() {
			if r.ClientRequestID != "" && r.Status != http.StatusUnauthorized {
				seen[r.ClientRequestID] = true
			}
		}
		unanswered = unanswered[:0]
		for _, e := range events {
			if e.Field("outcome") == "ok" && !seen[e.Field("request_id")] {
				unanswered = append(unanswered, e.ID+" ("+e.Field("operation")+") "+e.Field("request_id"))
			}
		}
		return len(unanswered) == 0
	})
}
