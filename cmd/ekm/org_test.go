package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ekm-dev/ekm/app"
	"github.com/ekm-dev/ekm/auth"
	"github.com/ekm-dev/ekm/store"
)

// ekmRun runs the CLI with args and returns stdout and stderr.
func ekmRun(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	root := rootCmd()
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), errb.String(), err
}

// TestOrgCreateSaysWhichStore: run from the wrong directory, org create
// used to create a fresh ./ekm-data silently; it now names the store on
// stderr and warns when it has just created it.
func TestOrgCreateSaysWhichStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	_, stderr, err := ekmRun(t, "org", "create", "--name", "Acme", "--data-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr, filepath.Join(dir, "ekm.db")) || !strings.Contains(stderr, "created empty") {
		t.Fatalf("first org create: stderr %q lacks the database path or the new-store warning", stderr)
	}
	_, stderr, err = ekmRun(t, "org", "create", "--name", "Beta", "--data-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr, filepath.Join(dir, "ekm.db")) || strings.Contains(stderr, "warning") {
		t.Fatalf("second org create: stderr %q: want the path and no warning", stderr)
	}
}

// TestOrgAdminKeyRecovery: an org that lost every admin key gets a new one
// from the operator, with an audit event; org list shows the count.
func TestOrgAdminKeyRecovery(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	out, _, err := ekmRun(t, "org", "create", "--name", "Acme", "--data-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	var created struct {
		OrgID    string `json:"org_id"`
		AdminKey string `json:"admin_key"`
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// Lock the org out, as two keys deleting each other used to.
	st, err := app.OpenStore(ctx, app.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	k, err := st.APIKeyByHash(ctx, auth.Hash(created.AdminKey))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteAPIKey(ctx, created.OrgID, k.ID); err != nil {
		t.Fatal(err)
	}
	st.Close()

	out, _, err = ekmRun(t, "org", "list", "--data-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, `"org_id":"`+created.OrgID+`"`) || !strings.Contains(out, `"admin_keys":0`) {
		t.Fatalf("org list: %s", out)
	}
	if _, _, err := ekmRun(t, "org", "admin-key", "create", "--org", "org-nope", "--data-dir", dir); err == nil || !strings.Contains(err.Error(), "org list") {
		t.Fatalf("unknown org: %v", err)
	}
	out, _, err = ekmRun(t, "org", "admin-key", "create", "--org", created.OrgID, "--data-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	var rec struct {
		OrgID    string `json:"org_id"`
		ID       string `json:"id"`
		AdminKey string `json:"admin_key"`
	}
	if err := json.Unmarshal([]byte(out), &rec); err != nil || rec.OrgID != created.OrgID || !strings.HasPrefix(rec.AdminKey, auth.AdminPrefix) {
		t.Fatalf("admin-key create printed %q (%v)", out, err)
	}
	st, err = app.OpenStore(ctx, app.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	nk, err := st.APIKeyByHash(ctx, auth.Hash(rec.AdminKey))
	if err != nil || nk.OrgID != created.OrgID || nk.Kind != store.KindAdmin || nk.ID != rec.ID {
		t.Fatalf("new key: %+v %v", nk, err)
	}
	evs, err := st.ListAudit(ctx, created.OrgID, store.AuditFilter{Types: []string{"api_key.created"}})
	if err != nil || len(evs) != 2 || !strings.Contains(string(evs[0].Data), rec.ID) || evs[0].Actor != "" {
		t.Fatalf("audit: %+v %v; want the recovery key's api_key.created, actor the system", evs, err)
	}
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		out, _, err := ekmRun(t, args...)
		if err != nil || !strings.HasPrefix(out, "ekm ") || !strings.Contains(out, app.Version()) || !strings.Contains(out, "go1.") {
			t.Errorf("ekm %v: %q %v", args, out, err)
		}
	}
}
