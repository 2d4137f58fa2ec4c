package crash

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/e2e/e2ekit"
)

// TestReencryptKilled kills `ekm reencrypt` repeatedly while `ekm serve`
// runs and the Files API is used, then lets it finish: every file reads back
// byte-identical under the new key version, none is lost, and after the
// sweep no blob is left that no record points to.
func TestReencryptKilled(t *testing.T) {
	t.Parallel()
	rng := newRand(t)
	ctx := context.Background()
	dir := t.TempDir()
	env := e2ekit.ChildEnv()
	org, key := createOrg(t, dir)
	srv := startServer(t, dir, env)
	a := admin{srv.URL, key, t}
	ek := a.mustPost(t, "/v1/organization/external_keys", map[string]any{"type": "local", "name": "crash"})["id"].(string)
	proj := a.mustPost(t, "/v1/organization/projects", map[string]any{"name": "crash", "external_key_id": ek})["id"].(string)
	c := newClient(t, srv.URL, a.projectKey(t, proj))

	files := map[string]file{}
	for i := range 60 {
		// Up to 100 KiB: one or two 64 KiB envelope segments.
		f := randomFile(rng, fmt.Sprintf("doc-%02d.bin", i), 100<<10)
		files[upload(t, c, f)] = f
	}
	out, _ := tool(t, env, "project", "rotate-key", "--org", org, "--project", proj, "--data-dir", dir)
	if v := e2ekit.JSONField(t, out, "version"); v != "2" {
		t.Fatalf("rotate-key printed %s", out)
	}

	st := openStore(t, dir)
	version := 2
	below := func() int {
		n, err := st.CountFilesBelowKeyVersion(ctx, org, proj, version)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	args := []string{"reencrypt", "--org", org, "--project", proj, "--data-dir", dir}
	kills := 0
	for i := range 10 {
		// Between runs the Files API changes the project: a file deleted
		// (maybe one the last run was working on) and one uploaded.
		ids := make([]string, 0, len(files))
		for id := range files {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		victim := ids[rng.IntN(len(ids))]
		if err := c.DeleteFile(ctx, victim); err != nil {
			t.Fatal(err)
		}
		delete(files, victim)
		f := randomFile(rng, fmt.Sprintf("new-%d.bin", i), 100<<10)
		files[upload(t, c, f)] = f

		before := below()
		if version == 2 && (i == 5 || before < 10) {
			// Rotate again mid-job: every file is behind once more, and the
			// job continues to version 3 (plenty of work for more kills).
			tool(t, env, "project", "rotate-key", "--org", org, "--project", proj, "--data-dir", dir)
			version = 3
			before = below()
		}
		if before < 6 {
			break // leave work for the final, uninterrupted run
		}
		// Kill after 0–3 more files are done (0: during start-up or the
		// first file), then a random moment later (a file takes about a
		// millisecond) so the kill lands in any step of the next file:
		// decrypt/encrypt, blob commit, record swap, old blob delete.
		n := rng.IntN(4)
		p := start(t, env, args...)
		waitFor(t, p, 30*time.Second, func() bool { return below() <= before-n })
		jitter(rng, 2*time.Millisecond)
		if p.Exited() {
			t.Logf("reencrypt finished before kill %d (%v)", i, p.Err())
			break
		}
		p.Kill()
		kills++
		t.Logf("kill %d after ≥%d files: %d → %d files below v%d", i, n, before, below(), version)
	}
	if kills < 5 || below() == 0 {
		t.Fatalf("%d kills, %d files left: the schedule did not interrupt the job enough", kills, below())
	}

	stdout, stderr := tool(t, env, args...)
	if version != 3 {
		t.Fatal("the job never got to the second rotation")
	}
	if e2ekit.JSONField(t, stdout, "version") != "3" || e2ekit.JSONField(t, stdout, "failed") != "[]" {
		t.Fatalf("final run: %s", stdout)
	}
	if !strings.Contains(stderr, "100%") || !strings.Contains(stderr, "done in") {
		t.Fatalf("final run progress:\n%s", stderr)
	}
	if n := below(); n != 0 {
		t.Fatalf("%d files still below v3", n)
	}
	verifyFiles(t, c, files)

	srv.Kill() // the server crashes too; the sweep runs with nothing in flight
	res := sweepAndCheckBlobs(t, st, dir, org, proj)
	t.Logf("%d kills; sweep removed %d orphan blobs and %d temporaries", kills, res.OrphanBlobs, res.StaleTemps)
}
