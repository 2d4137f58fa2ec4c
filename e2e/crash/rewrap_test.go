package crash

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/e2e/e2ekit"
	"github.com/ekm-dev/ekm/emulator/azurecloud"
)

// TestRewrapKilled: the customer rotates its KEK; the server's probe
// rewraps every project key version under the new KEK version in the
// background (one compare-and-set transaction per version). The server is
// killed repeatedly in the middle of that; after restarts the rewrap
// finishes and all data still decrypts.
func TestRewrapKilled(t *testing.T) {
	t.Parallel()
	rng := newRand(t)
	ctx := context.Background()
	dir := t.TempDir()
	z := e2ekit.StartAzureChild(t)
	org, key := createOrg(t, dir)
	srvArgs := append([]string{"--probe-interval", "50ms"}, z.Args...)
	srv := startServer(t, dir, z.Env, srvArgs...)
	a := admin{srv.URL, key, t}
	cust, ob := z.Onboard(t, org, "kek")
	ek := a.register(t, cust, ob.VaultURI, ob.KeyName)

	// 20 projects × 2 key versions, one file under each version.
	const projects, versions = 20, 2
	type project struct {
		id, apiKey string
		files      map[string]file
	}
	ps := make([]project, projects)
	for i := range ps {
		id := a.mustPost(t, "/v1/organization/projects", map[string]any{"name": fmt.Sprintf("p%d", i), "external_key_id": ek})["id"].(string)
		ps[i] = project{id: id, apiKey: a.projectKey(t, id), files: map[string]file{}}
	}
	upAll := func(url, tag string) {
		for i := range ps {
			f := randomFile(rng, fmt.Sprintf("%s-%d.bin", tag, i), 20<<10)
			ps[i].files[upload(t, newClient(t, url, ps[i].apiKey), f)] = f
		}
	}
	upAll(srv.URL, "v1")
	var wg sync.WaitGroup
	for i := range ps {
		wg.Go(func() {
			tool(t, z.Env, append([]string{"project", "rotate-key", "--org", org, "--project", ps[i].id, "--data-dir", dir}, z.Args...)...)
		})
	}
	wg.Wait()
	upAll(srv.URL, "v2")

	st := openStore(t, dir)
	counts := func() map[string]int {
		m, err := st.CountProjectKeysByKEKVersion(ctx, org, ek)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	before := counts()
	if len(before) != 1 {
		t.Fatalf("before the KEK rotation: %v", before)
	}
	var oldKEK string
	for v, n := range before {
		if n != projects*versions {
			t.Fatalf("%d project key versions, want %d", n, projects*versions)
		}
		oldKEK = v
	}
	srv.Kill()

	// The customer rotates its key; Key Vault calls are slowed so that the
	// background rewrap of 40 versions takes long enough to be killed in.
	latest, err := cust.RotateKey(ctx, ob.VaultURI, ob.KeyName)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := z.Emu.InjectFault(azurecloud.Fault{Host: "vault", Latency: azurecloud.Duration(4 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	onOld := func() int { return projects*versions - counts()[latest] }
	kills := 0
	for i := range 8 {
		if i == 4 {
			// The customer rotates again mid-rewrap: every version is
			// behind once more, some by one KEK version, some by two.
			if latest, err = cust.RotateKey(ctx, ob.VaultURI, ob.KeyName); err != nil {
				t.Fatal(err)
			}
		}
		left := onOld()
		if left < 6 {
			break
		}
		// Kill once 1–5 more versions are rewrapped, a random moment after.
		n := 1 + rng.IntN(5)
		srv = startServer(t, dir, z.Env, srvArgs...)
		waitFor(t, srv, 30*time.Second, func() bool { return onOld() <= left-n })
		jitter(rng, 8*time.Millisecond)
		srv.Kill()
		kills++
		t.Logf("kill %d after ≥%d rewraps: %d → %d versions behind the current KEK version", i, n, left, onOld())
	}
	if kills < 5 {
		t.Fatalf("only %d kills landed mid-rewrap", kills)
	}

	srv = startServer(t, dir, z.Env, srvArgs...)
	waitFor(t, srv, 60*time.Second, func() bool { return onOld() == 0 })
	after := counts()
	newKEK := latest
	if len(after) != 1 || after[newKEK] != projects*versions {
		t.Fatalf("after the rewrap: %v, want all %d on %s", after, projects*versions, newKEK)
	}
	// The Admin API reports the same: every version on the new KEK version.
	a.url = srv.URL
	obj := a.get(t, "/v1/organization/external_keys/"+ek)
	kv, _ := obj["kek_versions"].(map[string]any)
	if len(kv) != 1 || kv[newKEK] != float64(projects*versions) {
		t.Fatalf("kek_versions %v, want {%s: %d}", obj["kek_versions"], newKEK, projects*versions)
	}
	// And every file decrypts, through keys now unwrapped by the new KEK.
	for _, p := range ps {
		verifyFiles(t, newClient(t, srv.URL, p.apiKey), p.files)
	}
	t.Logf("%d kills; KEK version %s → %s for %d project key versions", kills, oldKEK, newKEK, projects*versions)
}
