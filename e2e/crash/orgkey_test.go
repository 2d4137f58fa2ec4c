package crash

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/client"
	"github.com/ekm-dev/ekm/e2e/e2ekit"
	"github.com/ekm-dev/ekm/emulator/azurecloud"
	"github.com/ekm-dev/ekm/store"
)

// TestOrgKeyMigrationKilled is organization-wide EKM end to end on the Azure
// emulator: an org with 20 projects on the operator's key, each holding a
// file; the operator sets the org's key and requires EKM (`ekm org set-key
// --require`), is killed with SIGKILL midway through moving the projects,
// and runs the command again to finish; every project then is under the
// customer's key with every version rewrapped, and never half-moved in
// between. Revoking the key in Azure makes every project refuse within the
// probe interval + 5 s; restoring it brings every file back, identical.
func TestOrgKeyMigrationKilled(t *testing.T) {
	t.Parallel()
	rng := newRand(t)
	ctx := context.Background()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil { // a data dir only its owner can read
		t.Fatal(err)
	}
	z := e2ekit.StartAzureChild(t)
	org, key := createOrg(t, dir)
	const probe = 500 * time.Millisecond
	srvArgs := append([]string{"--probe-interval", probe.String()}, z.Args...)
	srv := startServer(t, dir, z.Env, srvArgs...)
	a := admin{srv.URL, key, t}

	cust, ob := z.Onboard(t, org, "org")
	ek := a.register(t, cust, ob.VaultURI, ob.KeyName)
	const n = 20
	type proj struct {
		id, apiKey string
		files      map[string]file
	}
	var projects []proj
	for i := range n {
		id := a.mustPost(t, "/v1/organization/projects", map[string]any{"name": fmt.Sprintf("p%02d", i)})["id"].(string)
		p := proj{id: id, apiKey: a.projectKey(t, id), files: map[string]file{}}
		f := randomFile(rng, fmt.Sprintf("f%02d.bin", i), 16<<10)
		p.files[upload(t, newClient(t, srv.URL, p.apiKey), f)] = f
		projects = append(projects, p)
	}
	// A few projects have several key versions.
	for _, p := range projects[:3] {
		tool(t, z.Env, append([]string{"project", "rotate-key", "--org", org, "--project", p.id, "--data-dir", dir}, z.Args...)...)
	}

	st := openStore(t, dir)
	// onOneKey checks that every version of each project is wrapped by the
	// key the project names, and returns how many are on the org's key.
	onOneKey := func() int {
		t.Helper()
		moved := 0
		for _, p := range projects {
			// One transaction: the move runs meanwhile, and a re-key
			// committing between two separate reads would look half-done.
			var pr store.Project
			var recs []store.ProjectKey
			if err := st.InTx(ctx, func(q store.Queries) error {
				var err error
				if pr, err = q.GetProject(ctx, org, p.id); err != nil {
					return err
				}
				recs, err = q.ListProjectKeys(ctx, org, p.id)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			for _, r := range recs {
				if r.ExternalKeyID != pr.ExternalKeyID {
					t.Fatalf("project %s on %q but version %d wrapped by %q", p.id, pr.ExternalKeyID, r.Version, r.ExternalKeyID)
				}
			}
			if pr.ExternalKeyID == ek {
				moved++
			} else if pr.ExternalKeyID != "" {
				t.Fatalf("project %s on %q", p.id, pr.ExternalKeyID)
			}
		}
		return moved
	}

	// Slow every Key Vault call so that the move lasts long enough to be
	// killed in; then kill the operator's command once midway.
	if _, err := z.Emu.InjectFault(azurecloud.Fault{Host: "vault", Latency: azurecloud.Duration(20 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	setKey := append([]string{"org", "set-key", "--org", org, "--external-key", ek, "--require", "--data-dir", dir}, z.Args...)
	p := start(t, z.Env, setKey...)
	if !waitFor(t, p, 60*time.Second, func() bool { m := onOneKey(); return m >= 3 && m < n-3 }) {
		t.Fatalf("the move did not get midway (%d of %d moved)\n%s", onOneKey(), n, p.Output())
	}
	jitter(rng, 30*time.Millisecond)
	p.Kill()
	mid := onOneKey()
	t.Logf("killed with %d of %d projects moved", mid, n)
	if mid == n {
		t.Fatal("the kill came too late to interrupt the move")
	}
	out, _ := tool(t, z.Env, setKey...)
	if got := e2ekit.JSONField(t, out, "projects_on_operator_key"); got != "0" {
		t.Fatalf("after resuming: %s", out)
	}
	if onOneKey() != n {
		t.Fatal("not every project is on the org's key")
	}
	z.Emu.ClearFaults()
	settings := a.get(t, "/v1/organization/settings")
	if settings["ekm_required"] != true || settings["default_external_key_id"] != ek {
		t.Fatalf("settings: %v", settings)
	}
	if m := settings["ekm_migration"].(map[string]any); m["status"] != "complete" {
		t.Fatalf("migration: %v", m)
	}
	for _, p := range projects {
		verifyFiles(t, newClient(t, srv.URL, p.apiKey), p.files)
	}

	// Revoke: remove ekm's role assignment on the key. Every project refuses
	// within the probe interval + 5 s.
	if err := cust.Unassign(ctx, ob.AssignmentID); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	refuses := func(p proj) bool {
		_, err := newClient(t, srv.URL, p.apiKey).DownloadFile(ctx, firstID(p.files), io.Discard)
		var ae *client.APIError
		return errors.As(err, &ae) && ae.Status == 403 && ae.Code == "customer_key_unavailable"
	}
	for _, p := range projects {
		for !refuses(p) {
			if time.Since(revoked) > probe+5*time.Second {
				_, err := newClient(t, srv.URL, p.apiKey).DownloadFile(ctx, firstID(p.files), io.Discard)
				ek, _ := st.GetExternalKey(ctx, org, ek)
				t.Fatalf("project %s still served %v after the revocation: %v; key %s %s\n%s", p.id, time.Since(revoked), err, ek.Status, ek.StatusCode, srv.Output())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	t.Logf("all %d projects refused %v after the revocation", n, time.Since(revoked).Round(time.Millisecond))

	// Restore: assign the role again; every file reads back identical.
	if _, err := cust.Assign(ctx, cust.KeyScope(ob.ResourceGroup, ob.Vault, ob.KeyName), ob.RoleDefinitionID, ob.ServicePrincipalID); err != nil {
		t.Fatal(err)
	}
	restored := time.Now()
	for _, p := range projects {
		for refuses(p) {
			if time.Since(restored) > probe+5*time.Second {
				t.Fatalf("project %s still refused %v after the restore", p.id, time.Since(restored))
			}
			time.Sleep(50 * time.Millisecond)
		}
		verifyFiles(t, newClient(t, srv.URL, p.apiKey), p.files)
	}
	evs, err := st.ListAudit(ctx, org, store.AuditFilter{Types: []string{"organization.updated"}, Limit: 10})
	if err != nil || len(evs) != 1 || evs[0].Actor != "operator" {
		t.Fatalf("organization.updated events: %+v %v", evs, err)
	}
}

func firstID(files map[string]file) string {
	for id := range files {
		return id
	}
	return ""
}
