package crash

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/e2e/e2ekit"
	"github.com/ekm-dev/ekm/emulator/azurecloud"
	"github.com/ekm-dev/ekm/store"
)

// TestRekeyKilled kills `ekm serve` at random moments during and after a
// re-key request (Admin API, external_key_id) of a project with several key
// versions: after restart every version is wrapped by the key the project
// names — all the old key or all the new one — and all data decrypts.
func TestRekeyKilled(t *testing.T) {
	t.Parallel()
	rng := newRand(t)
	ctx := context.Background()
	dir := t.TempDir()
	z := e2ekit.StartAzureChild(t)
	org, key := createOrg(t, dir)
	srvArgs := append([]string{"--probe-interval", "1h"}, z.Args...)
	srv := startServer(t, dir, z.Env, srvArgs...)
	a := admin{srv.URL, key, t}

	cust, ob := z.Onboard(t, org, "a")
	keyB := org + "--b"
	if _, err := cust.CreateKey(ctx, ob.VaultURI, keyB, "RSA", 2048); err != nil {
		t.Fatal(err)
	}
	if _, err := cust.Assign(ctx, cust.KeyScope(ob.ResourceGroup, ob.Vault, keyB), ob.RoleDefinitionID, ob.ServicePrincipalID); err != nil {
		t.Fatal(err)
	}
	ekA, ekB := a.register(t, cust, ob.VaultURI, ob.KeyName), a.register(t, cust, ob.VaultURI, keyB)
	proj := a.mustPost(t, "/v1/organization/projects", map[string]any{"name": "rekey", "external_key_id": ekA})["id"].(string)
	apiKey := a.projectKey(t, proj)
	c := newClient(t, srv.URL, apiKey)
	const versions = 4
	files := map[string]file{}
	for v := 1; v <= versions; v++ {
		for i := range 2 {
			f := randomFile(rng, fmt.Sprintf("v%d-%d.bin", v, i), 80<<10)
			files[upload(t, c, f)] = f
		}
		if v < versions {
			tool(t, z.Env, append([]string{"project", "rotate-key", "--org", org, "--project", proj, "--data-dir", dir}, z.Args...)...)
		}
	}

	st := openStore(t, dir)
	// onOneKey checks the invariant and returns the key the project is on.
	onOneKey := func() string {
		t.Helper()
		// One transaction, so a re-key committing meanwhile cannot fall
		// between the two reads.
		var p store.Project
		var recs []store.ProjectKey
		if err := st.InTx(ctx, func(q store.Queries) error {
			var err error
			if p, err = q.GetProject(ctx, org, proj); err != nil {
				return err
			}
			recs, err = q.ListProjectKeys(ctx, org, proj)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if len(recs) != versions || p.CurrentKeyVersion != versions {
			t.Fatalf("%d key versions, current %d; want %d", len(recs), p.CurrentKeyVersion, versions)
		}
		for _, r := range recs {
			if r.ExternalKeyID != p.ExternalKeyID {
				t.Fatalf("project on %s but version %d wrapped by %s", p.ExternalKeyID, r.Version, r.ExternalKeyID)
			}
		}
		return p.ExternalKeyID
	}
	rekey := func(url, to string) (int, error) {
		status, _, err := admin{url, key, t}.post(ctx, "/v1/organization/projects/"+proj, map[string]any{"external_key_id": to})
		return status, err
	}

	// Slow every Key Vault call, so that a re-key (validate the new key,
	// then unwrap and wrap each version) lasts long enough to be killed in.
	if _, err := z.Emu.InjectFault(azurecloud.Fault{Host: "vault", Latency: azurecloud.Duration(8 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	// One re-key without a kill measures how long a re-key takes here.
	t0 := time.Now()
	if status, err := rekey(srv.URL, ekB); err != nil || status != http.StatusOK {
		t.Fatalf("re-key: %d %v", status, err)
	}
	took := time.Since(t0)
	if onOneKey() != ekB {
		t.Fatal("re-key answered 200 but the project is not on the new key")
	}
	t.Logf("a re-key takes %v; kills land in [0, %v)", took, took*3/2)

	cur, switched, kept := ekB, 0, 0
	for i := range 7 {
		to := map[string]string{ekA: ekB, ekB: ekA}[cur]
		delay := time.Duration(rng.Int64N(int64(took * 3 / 2)))
		type answer struct {
			status int
			err    error
		}
		ans := make(chan answer, 1)
		go func(url string) {
			s, err := rekey(url, to)
			ans <- answer{s, err}
		}(srv.URL)
		time.Sleep(delay)
		srv.Kill()
		got := <-ans
		srv = startServer(t, dir, z.Env, srvArgs...)
		now := onOneKey()
		if got.err == nil && got.status == http.StatusOK && now != to {
			t.Fatalf("kill %d: re-key answered 200, but after restart the project is on %s", i, now)
		}
		if now == to {
			switched++
		} else {
			kept++
		}
		t.Logf("kill %d after %v: answer %d %v; project on the %s key", i, delay, got.status, got.err,
			map[bool]string{true: "new", false: "old"}[now == to])
		cur = now
		verifyFiles(t, newClient(t, srv.URL, apiKey), files)
	}
	t.Logf("%d kills left the project on the new key, %d on the old one", switched, kept)

	// After all that, a re-key still works.
	to := map[string]string{ekA: ekB, ekB: ekA}[cur]
	if status, err := rekey(srv.URL, to); err != nil || status != http.StatusOK || onOneKey() != to {
		t.Fatalf("final re-key: %d %v", status, err)
	}
	verifyFiles(t, newClient(t, srv.URL, apiKey), files)
}
