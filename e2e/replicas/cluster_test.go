package replicas_test

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/blob"
	"github.com/ekm-dev/ekm/blob/cloudblob"
	"github.com/ekm-dev/ekm/blob/cloudblob/cloudblobtest"
	"github.com/ekm-dev/ekm/client"
	"github.com/ekm-dev/ekm/e2e/e2ekit"
	"github.com/ekm-dev/ekm/files"
	"github.com/ekm-dev/ekm/store"
	"github.com/ekm-dev/ekm/store/sqlstore"
	"github.com/ekm-dev/ekm/store/sqlstore/pgtest"
)

// cluster is three `ekm serve` processes on one PostgreSQL database, and
// the clients that spread requests across them.
type cluster struct {
	t    *testing.T
	env  []string
	args []string
	key  string // the project API key

	mu    sync.Mutex
	procs []*e2ekit.Proc
	gen   []int // bumped when a replica is killed
	down  []bool
}

func (c *cluster) client(i int) (*client.Client, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl, err := client.New(c.procs[i].URL, c.key, client.WithHTTPClient(&http.Client{Timeout: 30 * time.Second}))
	if err != nil {
		c.t.Fatal(err)
	}
	return cl, c.gen[i]
}

// excused reports whether a failure of a call to replica i that started at
// generation gen is explained by the replica being killed.
func (c *cluster) excused(i, gen int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.down[i] || c.gen[i] != gen
}

func (c *cluster) kill(i int) {
	c.mu.Lock()
	c.down[i] = true
	c.gen[i]++
	p := c.procs[i]
	c.mu.Unlock()
	p.Kill()
}

// serverArgs are a replica's flags: the shared ones and a data directory
// of its own.
func (c *cluster) serverArgs() []string {
	dir := c.t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		c.t.Fatal(err)
	}
	return append([]string{"--data-dir", dir}, c.args...)
}

func (c *cluster) restart(i int) {
	p := startServer(c.t, c.env, c.serverArgs()...)
	c.mu.Lock()
	// A call that took the dead replica's address while it was down fails
	// after the restart too: a new generation excuses it.
	c.procs[i], c.down[i] = p, false
	c.gen[i]++
	c.mu.Unlock()
}

func (c *cluster) proc(i int) *e2ekit.Proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.procs[i]
}

// attempt is a file a client tried to upload.
type attempt struct {
	name string
	data []byte
}

// TestThreeReplicas is the scale-out proof (issue 12): three replicas on
// one PostgreSQL database and one S3 bucket (the Versity S3 Gateway), each
// with its own data directory and the same root secrets, a client
// spreading uploads, downloads and crypto calls across them, one replica
// killed with SIGKILL mid-upload and restarted; then the Key Vault calls of
// all three over a window, against one replica's probe budget; then a
// revocation in the Azure emulator refused by all three within the probe
// interval + 5 s, and restored on all three. Run with -v for the figures.
func TestThreeReplicas(t *testing.T) {
	const probe = 500 * time.Millisecond
	window := time.Minute
	if s := os.Getenv("EKM_REPLICAS_WINDOW"); s != "" { // shorter runs while developing
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatal(err)
		}
		window = d
	}
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	s3 := servers.Require(t, cloudblobtest.S3)
	bucket := s3.NewBucket(t)
	blobURL, _ := s3.URL(bucket, s3.Addr)
	// The root secrets every replica shares: the local root key (and, in
	// the Azure flags, ekm's Entra app). Nothing else is shared but the
	// database and the bucket: each replica has a data directory of its own.
	rootKey := filepath.Join(t.TempDir(), "local-root.key")
	if err := os.WriteFile(rootKey, randomBytes(32), 0o600); err != nil {
		t.Fatal(err)
	}
	z := e2ekit.StartAzureChild(t, "EKM_DATABASE="+dsn, "EKM_BLOB_URL="+blobURL) // the URLs stay out of argv
	out := tool(t, z.Env, "org", "create", "--name", "Replicas Co", "--data-dir", t.TempDir())
	org, adminKey := e2ekit.JSONField(t, out, "org_id"), e2ekit.JSONField(t, out, "admin_key")
	c := &cluster{t: t, env: z.Env, args: append([]string{"--local-root-key-file", rootKey, "--probe-interval", probe.String()}, z.Args...),
		gen: make([]int, 3), down: make([]bool, 3)}
	for range 3 {
		c.procs = append(c.procs, startServer(t, c.env, c.serverArgs()...))
	}

	// Set up through different replicas: each sees what the others wrote.
	cust, ob := z.Onboard(t, org, "rep")
	ek := admin{c.procs[0].URL, adminKey}.post(t, "/v1/organization/external_keys", map[string]any{"type": "azure", "name": "k",
		"tenant_id": cust.TenantID, "vault_uri": ob.VaultURI, "key_name": ob.KeyName})["id"].(string)
	proj := admin{c.procs[1].URL, adminKey}.post(t, "/v1/organization/projects", map[string]any{"name": "p", "external_key_id": ek})["id"].(string)
	sa := admin{c.procs[2].URL, adminKey}.post(t, "/v1/organization/projects/"+proj+"/service_accounts", map[string]any{"name": "svc"})
	c.key = sa["api_key"].(map[string]any)["value"].(string)
	st, err := sqlstore.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	// --- 1. Load across the replicas; replica 1 killed mid-upload. ---
	var (
		amu      sync.Mutex
		attempts = map[string]attempt{} // by name
		acked    = map[string]attempt{} // by file id: acknowledged uploads
		ackedIDs []string
		calls    atomic.Int64
	)
	randomData := func(rng *rand.Rand, n int) []byte { // cheap, for bulk
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	check := func(ctx context.Context, i, gen int, what string, err error) {
		t.Helper()
		if err != nil && ctx.Err() == nil && !c.excused(i, gen) {
			t.Errorf("%s on replica %d: %v", what, i, err)
		}
	}
	// Workers finish the call they are in when stopped: no call is
	// abandoned half-way, so when load's stop returns no request is in
	// flight on any replica.
	work := func(stopping *atomic.Bool, w int, uploads bool) {
		rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
		for n := 0; !stopping.Load(); n++ {
			i := int(calls.Add(1) % 3)
			cl, gen := c.client(i)
			switch {
			case uploads && n%3 == 0:
				a := attempt{name: fmt.Sprintf("w%d-%d.bin", w, n), data: randomData(rng, 1+rng.IntN(64<<10))}
				amu.Lock()
				attempts[a.name] = a
				amu.Unlock()
				f, err := cl.UploadFile(ctx, a.name, bytes.NewReader(a.data), "user_data")
				if err == nil {
					amu.Lock()
					acked[f.ID] = a
					ackedIDs = append(ackedIDs, f.ID)
					amu.Unlock()
				}
				check(ctx, i, gen, "upload", err)
			case n%3 == 1:
				amu.Lock()
				var id string
				var a attempt
				if len(ackedIDs) > 0 {
					id = ackedIDs[rng.IntN(len(ackedIDs))]
					a = acked[id]
				}
				amu.Unlock()
				if id == "" {
					continue
				}
				var buf bytes.Buffer
				_, err := cl.DownloadFile(ctx, id, &buf)
				if err == nil && !bytes.Equal(buf.Bytes(), a.data) {
					t.Errorf("replica %d served file %s with other content", i, id)
				}
				check(ctx, i, gen, "download", err)
			default:
				pt := randomData(rng, 1+rng.IntN(1024))
				ct, err := cl.Encrypt(ctx, pt, []byte("aad"))
				check(ctx, i, gen, "encrypt", err)
				if err != nil {
					continue
				}
				j := (i + 1) % 3
				cl2, gen2 := c.client(j)
				back, err := cl2.Decrypt(ctx, ct.Ciphertext, []byte("aad"))
				if err == nil && !bytes.Equal(back, pt) {
					t.Errorf("replica %d decrypted replica %d's ciphertext wrongly", j, i)
				}
				check(ctx, j, gen2, "decrypt", err)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	load := func(workers int, uploads bool) (stop func()) {
		var stopping atomic.Bool
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() { work(&stopping, w, uploads) })
		}
		return func() { stopping.Store(true); wg.Wait() }
	}
	if n := leaders(c); n != 1 {
		t.Errorf("%d replicas run the background jobs, want 1", n)
	}
	stop := load(4, true)
	time.Sleep(2 * time.Second) // the load runs; this is its duration, not a wait for a state

	// A large upload to replica 1, killed once 16 MiB of it have been sent
	// (the bucket has parts of it by then: S3 multipart, 5 MiB parts).
	big := attempt{name: "big.bin", data: randomData(rand.New(rand.NewPCG(1, 2)), 32<<20)}
	amu.Lock()
	attempts[big.name] = big
	amu.Unlock()
	sent := make(chan struct{})
	upErr := make(chan error, 1)
	cl1, _ := c.client(1)
	go func() {
		_, err := cl1.UploadFile(ctx, big.name, &slowReader{r: bytes.NewReader(big.data), signalAt: 16 << 20, signal: sent}, "user_data")
		upErr <- err
	}()
	select {
	case <-sent:
	case err := <-upErr:
		t.Fatalf("the large upload ended before it could be interrupted: %v", err)
	}
	c.kill(1)
	if err := <-upErr; err == nil {
		t.Fatal("the upload to the killed replica was acknowledged")
	}
	t.Log("replica 1 killed with SIGKILL mid-upload (16 MiB of 32 MiB sent)")
	c.restart(1)
	time.Sleep(2 * time.Second)
	stop()
	if t.Failed() {
		t.FailNow()
	}

	// Every acknowledged file reads back identical through every replica;
	// every listed file is whole (nothing half-visible): a file whose upload
	// was cut off is either absent, or was committed before its answer was
	// lost and reads back whole; the interrupted large upload is absent.
	amu.Lock()
	t.Logf("%d uploads acknowledged, %d attempted, %d calls in all", len(acked), len(attempts), calls.Load())
	var listed []string
	for i := range 3 {
		cl, _ := c.client(i)
		l, err := cl.ListFiles(ctx, client.ListOptions{Limit: 10000})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, f := range l.Files {
			ids = append(ids, f.ID)
			a, ok := attempts[f.Filename]
			if !ok || f.Filename == big.name {
				t.Fatalf("replica %d lists %s (%q), which no acknowledged or cut-off upload wrote", i, f.ID, f.Filename)
			}
			if i == 0 {
				var buf bytes.Buffer
				if _, err := cl.DownloadFile(ctx, f.ID, &buf); err != nil || !bytes.Equal(buf.Bytes(), a.data) {
					t.Fatalf("file %s (%q) does not read back whole: %v", f.ID, f.Filename, err)
				}
			}
		}
		slices.Sort(ids)
		if i == 0 {
			listed = ids
		} else if !slices.Equal(ids, listed) {
			t.Fatalf("replica %d lists other files than replica 0: %d vs %d (has_more %v)", i, len(ids), len(listed), l.HasMore)
		}
		for id, a := range acked {
			if !slices.Contains(ids, id) {
				t.Fatalf("acknowledged file %s (%q) missing on replica %d", id, a.name, i)
			}
			var buf bytes.Buffer
			if _, err := cl.DownloadFile(ctx, id, &buf); err != nil || !bytes.Equal(buf.Bytes(), a.data) {
				t.Fatalf("acknowledged file %s differs on replica %d: %v", id, i, err)
			}
		}
	}
	amu.Unlock()
	t.Logf("%d files listed (%d acknowledged), each read back identical through every replica", len(listed), len(acked))
	// Orphans: what the killed replica left (the multipart upload of the
	// cut-off file, and any object whose record never committed) is swept;
	// then the bucket holds exactly the objects the records point to. The
	// servers' own sweep spares the last hour; with no upload in flight
	// the test sweeps everything older than now.
	blobs := s3.Open(t, bucket, "", cloudblob.Options{})
	res, err := files.Sweep(ctx, st, blobs, time.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("sweep after the kill: %+v", res)
	if res.StaleTemps+res.OrphanBlobs == 0 {
		t.Error("the killed upload left nothing to sweep")
	}
	recs, err := st.ListFiles(ctx, org, proj, "", store.Page{Limit: 100000})
	if err != nil {
		t.Fatal(err)
	}
	var want, got []string
	for _, f := range recs {
		want = append(want, f.BlobKey)
	}
	if err := blobs.List(ctx, func(i blob.Info) error { got = append(got, i.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(want, got) {
		t.Fatalf("after the sweep the blob store holds %d blobs, the records point to %d", len(got), len(want))
	}
	if again, err := files.Sweep(ctx, st, blobs, time.Now().Add(time.Minute)); err != nil || again != (files.SweepResult{}) {
		t.Fatalf("a second sweep still found %+v (%v)", again, err)
	}

	// --- 2. Key Vault calls over the window, all three replicas busy. ---
	z.Emu.ResetCounters()
	stop = load(3, false)
	before := calls.Load()
	timer := time.NewTimer(window) // the window is the measurement itself
	<-timer.C
	counters := z.Emu.Counters()
	stop()
	kv := counters["kv.decrypt"] + counters["kv.encrypt"] + counters["kv.get"]
	// One replica alone probes each key every interval ±10 %: at most
	// window/(0.9 × interval) rounds, each one decrypt, and a describe and
	// an encrypt every 10th round. Probe leases last 0.9 × interval, so
	// three replicas together cannot probe a key more often than that.
	rounds := int(window/(probe*9/10)) + 1
	budget := rounds + 2*(rounds/10+1)
	nominal := int(window/probe) * 12 / 10
	unwraps := 3 // one project, three replicas: at most one unwrap each per cache TTL (1 h)
	t.Logf("Key Vault calls in %v with 3 replicas (probe interval %v, 1 key, %d requests): %d (decrypt %d, encrypt %d, get %d)",
		window, probe, calls.Load()-before, kv, counters["kv.decrypt"], counters["kv.encrypt"], counters["kv.get"])
	t.Logf("one replica's probe budget: nominal %d (%v/%v rounds x 1.2 calls), at most %d (+1 round: %d), + %d unwraps; 3 replicas each probing would make about %d",
		nominal, window, probe, budget, budget+3, unwraps, 3*nominal)
	if kv > budget+3+unwraps {
		t.Errorf("%d Key Vault calls in %v: more than one replica's probe budget %d + 1 round + %d unwraps", kv, window, budget, unwraps)
	}

	// --- 3. Revocation in Azure: refused by all three, then restored. ---
	var fileID string
	var content []byte
	for id, a := range acked {
		fileID, content = id, a.data
		break
	}
	download := func(i int) error {
		cl, _ := c.client(i)
		var buf bytes.Buffer
		_, err := cl.DownloadFile(ctx, fileID, &buf)
		if err == nil && !bytes.Equal(buf.Bytes(), content) {
			t.Fatalf("replica %d served other content", i)
		}
		return err
	}
	refused := func(err error) bool {
		var ae *client.APIError
		return errors.As(err, &ae) && ae.Status == 403 && ae.Code == "customer_key_unavailable"
	}
	for i := range 3 { // each replica has the project key cached
		if err := download(i); err != nil {
			t.Fatal(err)
		}
	}
	bound := probe + 5*time.Second
	measure := func(what string, done func(error) bool) {
		t.Helper()
		start := time.Now()
		took := make([]time.Duration, 3)
		var wg sync.WaitGroup
		for i := range 3 {
			wg.Go(func() {
				for {
					err := download(i)
					if done(err) {
						took[i] = time.Since(start)
						return
					}
					if time.Since(start) > bound {
						t.Errorf("replica %d: not %s %v after the change: %v", i, what, bound, err)
						return
					}
					time.Sleep(10 * time.Millisecond)
				}
			})
		}
		wg.Wait()
		t.Logf("%s after: replica 0 %v, replica 1 %v, replica 2 %v (bound: probe interval %v + 5 s)", what,
			took[0].Round(time.Millisecond), took[1].Round(time.Millisecond), took[2].Round(time.Millisecond), probe)
	}
	if err := cust.Unassign(ctx, ob.AssignmentID); err != nil {
		t.Fatal(err)
	}
	measure("refused (403 customer_key_unavailable)", refused)
	if _, err := cust.Assign(ctx, cust.KeyScope(ob.ResourceGroup, ob.Vault, ob.KeyName), ob.RoleDefinitionID, ob.ServicePrincipalID); err != nil {
		t.Fatal(err)
	}
	measure("served again", func(err error) bool { return err == nil })
	// Each transition is recorded once across replicas: one revocation; and
	// no two events of one kind in a row (a second replica recording the
	// same transition). A degraded check on the loaded machine (a probe cut
	// short) between restorations is a transition of its own.
	evs, err := st.ListAudit(ctx, org, store.AuditFilter{Types: []string{"external_key.unavailable", "external_key.degraded", "external_key.restored"}})
	if err != nil {
		t.Fatal(err)
	}
	slices.SortStableFunc(evs, func(a, b store.AuditEvent) int { return a.EffectiveAt.Compare(b.EffectiveAt) })
	var kinds []string
	unavailable := 0
	for i, e := range evs {
		kinds = append(kinds, e.Type)
		if e.Type == "external_key.unavailable" {
			unavailable++
		}
		if i > 0 && e.Type == evs[i-1].Type {
			t.Errorf("%s recorded twice in a row (once per replica?): %v", e.Type, kinds)
		}
	}
	if unavailable != 1 || len(kinds) == 0 || kinds[len(kinds)-1] != "external_key.restored" {
		t.Errorf("key health events %v, want one unavailable and a restoration last", kinds)
	}
	t.Logf("key health events: %v", kinds)
}

// leaders counts the replicas that took the leader lease (their log says
// so).
func leaders(c *cluster) int {
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := 0
		for i := range 3 {
			if c.proc(i).Logged("leader: this replica runs the background jobs") > 0 {
				n++
			}
		}
		if n > 0 || time.Now().After(deadline) {
			return n
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// slowReader hands out r in 64 KiB pieces, a little slowly, and closes
// signal once signalAt bytes were read.
type slowReader struct {
	r        io.Reader
	n        int
	signalAt int
	signal   chan struct{}
}

func (s *slowReader) Read(p []byte) (int, error) {
	if len(p) > 64<<10 {
		p = p[:64<<10]
	}
	time.Sleep(2 * time.Millisecond)
	n, err := s.r.Read(p)
	before := s.n
	s.n += n
	if before < s.signalAt && s.n >= s.signalAt {
		close(s.signal)
	}
	return n, err
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := crand.Read(b); err != nil {
		panic(err)
	}
	return b
}
