// Package crash proves ekm's crash safety the hard way: it builds the ekm
// binary, runs it as a child process, kills it with SIGKILL at random points
// of re-encryption, re-keying and background rewrapping, restarts it, and
// checks that nothing was lost or left half done.
//
// The kill schedule comes from a seed that every test logs; set
// EKM_CRASH_SEED to replay one.
package crash

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/app"
	"github.com/ekm-dev/ekm/blob"
	"github.com/ekm-dev/ekm/client"
	"github.com/ekm-dev/ekm/e2e/e2ekit"
	"github.com/ekm-dev/ekm/files"
	"github.com/ekm-dev/ekm/internal/apispec"
	"github.com/ekm-dev/ekm/store"
)

var ekmBin string

func TestMain(m *testing.M) {
	bin, dir, err := e2ekit.BuildEKM("ekm-crash-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ekmBin = bin
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// newRand returns the test's random source and logs its seed.
func newRand(t *testing.T) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("EKM_CRASH_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("EKM_CRASH_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("kill schedule seed %d (EKM_CRASH_SEED=%d replays it)", seed, seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// start runs ekm with args. The child is killed at test cleanup if still
// running.
func start(t *testing.T, env []string, args ...string) *e2ekit.Proc {
	t.Helper()
	return e2ekit.Start(t, ekmBin, env, args...)
}

// startServer runs `ekm serve` on dataDir and waits until it listens.
func startServer(t *testing.T, dataDir string, env []string, args ...string) *e2ekit.Proc {
	t.Helper()
	return e2ekit.StartServer(t, ekmBin, env, 30*time.Second, append([]string{"--data-dir", dataDir}, args...)...)
}

// tool runs an ekm operator command to completion and returns its stdout
// and stderr.
func tool(t *testing.T, env []string, args ...string) (string, string) {
	t.Helper()
	return e2ekit.Tool(t, ekmBin, env, args...)
}

// createOrg runs `ekm org create` on dataDir.
func createOrg(t *testing.T, dataDir string) (orgID, adminKey string) {
	t.Helper()
	out, _ := tool(t, e2ekit.ChildEnv(), "org", "create", "--name", "Crash Co", "--data-dir", dataDir)
	return e2ekit.JSONField(t, out, "org_id"), e2ekit.JSONField(t, out, "admin_key")
}

// admin calls the Admin API; every exchange is checked against
// docs/openapi.yaml (internal/apispec).
type admin struct {
	url, key string
	t        testing.TB
}

func (a admin) client() *http.Client { return apispec.Client(a.t, nil) }

// post sends a JSON body and returns the status and decoded answer.
func (a admin) post(ctx context.Context, path string, body any) (int, map[string]any, error) {
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.url+path, bytes.NewReader(b))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+a.key)
	req.Header.Set("Content-Type", "application/json")
	res, err := a.client().Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		return res.StatusCode, nil, err
	}
	return res.StatusCode, out, nil
}

func (a admin) mustPost(t *testing.T, path string, body any) map[string]any {
	t.Helper()
	status, out, err := a.post(context.Background(), path, body)
	if err != nil || status != http.StatusOK {
		t.Fatalf("POST %s: %d %v %v", path, status, out, err)
	}
	return out
}

func (a admin) get(t *testing.T, path string) map[string]any {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, a.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+a.key)
	res, err := a.client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", path, res.StatusCode, err)
	}
	return out
}

// projectKey creates a service account in project and returns its key.
func (a admin) projectKey(t *testing.T, project string) string {
	t.Helper()
	out := a.mustPost(t, "/v1/organization/projects/"+project+"/service_accounts", map[string]any{"name": "svc"})
	k, _ := out["api_key"].(map[string]any)
	v, _ := k["value"].(string)
	if v == "" {
		t.Fatalf("service account: %v", out)
	}
	return v
}

// file is what a test stored and expects back.
type file struct {
	name string
	data []byte
}

func randomFile(rng *rand.Rand, name string, maxSize int) file {
	b := make([]byte, 1+rng.IntN(maxSize))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return file{name: name, data: b}
}

func newClient(t *testing.T, url, key string) *client.Client {
	t.Helper()
	c, err := client.New(url, key, client.WithHTTPClient(apispec.Client(t, &http.Client{Timeout: 30 * time.Second})))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func upload(t *testing.T, c *client.Client, f file) string {
	t.Helper()
	up, err := c.UploadFile(context.Background(), f.name, bytes.NewReader(f.data), "user_data")
	if err != nil {
		t.Fatalf("upload %s: %v", f.name, err)
	}
	return up.ID
}

// verifyFiles checks through the Files API that the project holds exactly
// files, each with its name and byte-identical content.
func verifyFiles(t *testing.T, c *client.Client, files map[string]file) {
	t.Helper()
	ctx := context.Background()
	l, err := c.ListFiles(ctx, client.ListOptions{Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	var listed, want []string
	for _, f := range l.Files {
		listed = append(listed, f.ID)
		if f.Filename != files[f.ID].name {
			t.Fatalf("file %s is named %q, want %q", f.ID, f.Filename, files[f.ID].name)
		}
	}
	for id := range files {
		want = append(want, id)
	}
	slices.Sort(listed)
	slices.Sort(want)
	if !slices.Equal(listed, want) {
		t.Fatalf("listed %d files %v, want %d %v", len(listed), listed, len(want), want)
	}
	for id, f := range files {
		var buf bytes.Buffer
		if _, err := c.DownloadFile(ctx, id, &buf); err != nil {
			t.Fatalf("download %s: %v", id, err)
		}
		if !bytes.Equal(buf.Bytes(), f.data) {
			t.Fatalf("file %s: content differs (%d bytes, want %d)", id, buf.Len(), len(f.data))
		}
	}
}

// openStore opens the data dir's database in the test process, next to the
// child's (SQLite in WAL mode allows both).
func openStore(t *testing.T, dataDir string) store.Store {
	t.Helper()
	st, err := app.OpenStore(context.Background(), app.Config{DataDir: dataDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// sweepAndCheckBlobs runs the startup sweep with every blob old enough to
// judge (no ekm process may run), then checks that the blob store holds
// exactly the blobs the project's records point to, and no temporaries.
func sweepAndCheckBlobs(t *testing.T, st store.Store, dataDir, orgID, projectID string) files.SweepResult {
	t.Helper()
	ctx := context.Background()
	dir, err := blob.NewDir(filepath.Join(dataDir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := files.Sweep(ctx, st, dir, time.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	files, err := st.ListFiles(ctx, orgID, projectID, "", store.Page{Limit: 100000})
	if err != nil {
		t.Fatal(err)
	}
	var want, got []string
	for _, f := range files {
		want = append(want, f.BlobKey)
	}
	if err := dir.List(ctx, func(i blob.Info) error { got = append(got, i.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(want, got) {
		t.Fatalf("after sweep the blob store holds %d blobs, the records point to %d:\n%v\n%v", len(got), len(want), got, want)
	}
	if tmps, _ := os.ReadDir(dir.TempDir()); len(tmps) != 0 {
		t.Fatalf("%d temporaries left after sweep", len(tmps))
	}
	return res
}

// waitFor polls cond until it holds, the process p exits, or the deadline.
func waitFor(t *testing.T, p *e2ekit.Proc, d time.Duration, cond func() bool) bool {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if p != nil && p.Exited() {
			return cond()
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not reached in %v", d)
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// jitter is a random delay in [0, max) so a kill lands in any phase of the
// step after the one just observed.
func jitter(rng *rand.Rand, max time.Duration) {
	if max > 0 {
		time.Sleep(time.Duration(rng.Int64N(int64(max))))
	}
}
