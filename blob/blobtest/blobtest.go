// Package blobtest is the conformance suite of blob.Store: every backend
// (blob.Dir, and each cloudblob bucket against its real server) passes
// Run. It checks what the rest of ekm relies on: nothing is visible before
// Commit, an aborted, cancelled or failed upload leaves nothing visible
// under its key, Commit never overwrites, uploads of many parts round-trip,
// List sees committed objects with their size and a date no earlier than
// their commit, keys are checked, the deployment marker is created only if
// absent and is out of reach of every other method (so of the sweep). With Suite.Faults, it also runs the
// fault cases through a fault-injecting proxy in front of the store's
// server: the store going away mid-upload, a 503 on commit, a stalled
// store. Each must end in an error wrapping blob.ErrUnavailable within a
// bounded time and nothing half-visible.
package blobtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/blob"
)

// Suite describes a backend under test.
type Suite struct {
	// New returns an empty store for one test.
	New func(t *testing.T) blob.Store
	// PartSize is the backend's upload part size (0: not multipart);
	// uploads of several parts are tested around it.
	PartSize int
	// Faults, if set, returns an empty store whose traffic goes through a
	// fault proxy, and the proxy.
	Faults func(t *testing.T) (blob.Store, *Proxy)
	// Stalled is Faults for the stalled-store case: a store whose idle
	// timeout is short, so that the case ends quickly (default Faults).
	Stalled func(t *testing.T) (blob.Store, *Proxy)
	// FaultBound bounds how long an operation may take to fail while the
	// store is down or stalled (default 30s).
	FaultBound time.Duration
}

// Run runs the conformance suite.
func Run(t *testing.T, s Suite) {
	if s.FaultBound == 0 {
		s.FaultBound = 30 * time.Second
	}
	t.Run("RoundTrip", func(t *testing.T) { testRoundTrip(t, s) })
	t.Run("Empty", func(t *testing.T) { testEmpty(t, s) })
	t.Run("ManyParts", func(t *testing.T) { testManyParts(t, s) })
	t.Run("Abort", func(t *testing.T) { testAbort(t, s) })
	t.Run("CancelledContext", func(t *testing.T) { testCancelled(t, s) })
	t.Run("NoOverwrite", func(t *testing.T) { testNoOverwrite(t, s) })
	t.Run("InvalidKeys", func(t *testing.T) { testInvalidKeys(t, s) })
	t.Run("ListAndDelete", func(t *testing.T) { testList(t, s) })
	t.Run("DatedAtCommit", func(t *testing.T) { testDatedAtCommit(t, s) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, s) })
	t.Run("CrashedUploadSwept", func(t *testing.T) { testCrashed(t, s) })
	t.Run("DeploymentMarker", func(t *testing.T) { testDeploymentMarker(t, s) })
	t.Run("DeploymentMarkerRace", func(t *testing.T) { testDeploymentRace(t, s) })
	if s.Faults == nil {
		return
	}
	t.Run("Fault/DownMidUpload", func(t *testing.T) { testDownMidUpload(t, s) })
	t.Run("Fault/DownBetweenRequests", func(t *testing.T) { testDown(t, s) })
	t.Run("Fault/503OnCommit", func(t *testing.T) { test503OnCommit(t, s) })
	t.Run("Fault/SlowStore", func(t *testing.T) { testSlow(t, s) })
}

// Key returns a fresh key of the shape files.BlobKey makes.
func Key() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return fmt.Sprintf("org-t/proj_t/file-%x", b)
}

// Data returns n reproducible pseudo-random bytes.
func Data(seed uint64, n int) []byte {
	r := mrand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16)})
	b := make([]byte, n)
	_, _ = r.Read(b)
	return b
}

// writeChunks writes b in irregular chunks, as the envelope writer does.
func writeChunks(w io.Writer, b []byte) error {
	sizes := []int{1, 7, 65536 + 28, 4096, 300000}
	for i := 0; len(b) > 0; i++ {
		n := min(sizes[i%len(sizes)], len(b))
		if _, err := w.Write(b[:n]); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// Put commits b under key.
func Put(t testing.TB, st blob.Store, key string, b []byte) {
	t.Helper()
	w, err := st.Create(context.Background(), key)
	if err != nil {
		t.Fatalf("create %s: %v", key, err)
	}
	if err := writeChunks(w, b); err != nil {
		w.Abort()
		t.Fatalf("write %s: %v", key, err)
	}
	if err := w.Commit(); err != nil {
		t.Fatalf("commit %s: %v", key, err)
	}
}

// Get reads key back; its error is Open's.
func Get(t testing.TB, st blob.Store, key string) ([]byte, error) {
	t.Helper()
	rc, size, err := st.Open(context.Background(), key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	if int64(len(b)) != size {
		t.Fatalf("%s: Open said %d bytes, read %d", key, size, len(b))
	}
	return b, nil
}

// Keys lists the store.
func Keys(t testing.TB, st blob.Store) []string {
	t.Helper()
	var out []string
	if err := st.List(context.Background(), func(i blob.Info) error { out = append(out, i.Key); return nil }); err != nil {
		t.Fatalf("list: %v", err)
	}
	slices.Sort(out)
	return out
}

// AssertAbsent fails unless key can be neither opened nor listed.
func AssertAbsent(t testing.TB, st blob.Store, key string) {
	t.Helper()
	if _, err := Get(t, st, key); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("%s: open = %v, want ErrNotFound", key, err)
	}
	if slices.Contains(Keys(t, st), key) {
		t.Fatalf("%s is listed", key)
	}
}

// assertWholeOrAbsent fails if key holds anything but want: after a failed
// commit, the object may exist only complete (then it is an orphan the
// sweep removes), never partial.
func assertWholeOrAbsent(t testing.TB, st blob.Store, key string, want []byte) {
	t.Helper()
	got, err := Get(t, st, key)
	if errors.Is(err, blob.ErrNotFound) {
		if slices.Contains(Keys(t, st), key) {
			t.Fatalf("%s listed but cannot be opened", key)
		}
		return
	}
	if err != nil {
		t.Fatalf("open %s: %v", key, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s holds %d bytes, not the %d written: half-visible", key, len(got), len(want))
	}
	t.Logf("%s: the failed commit completed on the store (a whole orphan for the sweep)", key)
}

func multipartSize(s Suite) int {
	if s.PartSize == 0 {
		return 3<<20 + 12345
	}
	return 2*s.PartSize + 12345
}

func testRoundTrip(t *testing.T, s Suite) {
	ctx := context.Background()
	st := s.New(t)
	key := Key()
	data := Data(1, 200<<10)
	w, err := st.Create(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeChunks(w, data); err != nil {
		t.Fatal(err)
	}
	// Nothing is visible before Commit.
	AssertAbsent(t, st, key)
	before := time.Now()
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatalf("second Commit: %v", err)
	}
	if err := w.Abort(); err != nil {
		t.Fatalf("Abort after Commit: %v", err)
	}
	got, err := Get(t, st, key)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %d bytes, %v", len(got), err)
	}
	var infos []blob.Info
	st.List(ctx, func(i blob.Info) error { infos = append(infos, i); return nil })
	if len(infos) != 1 || infos[0].Key != key || infos[0].Size != int64(len(data)) {
		t.Fatalf("list: %+v", infos)
	}
	if mt := infos[0].ModTime; mt.Before(before.Add(-2*time.Second)) || mt.After(time.Now().Add(2*time.Second)) {
		t.Fatalf("ModTime %v, committed at %v", mt, before)
	}
}

func testEmpty(t *testing.T, s Suite) {
	st := s.New(t)
	key := Key()
	Put(t, st, key, nil)
	got, err := Get(t, st, key)
	if err != nil || len(got) != 0 {
		t.Fatalf("empty object: %d bytes, %v", len(got), err)
	}
}

func testManyParts(t *testing.T, s Suite) {
	st := s.New(t)
	key := Key()
	data := Data(2, multipartSize(s)+s.PartSize)
	Put(t, st, key, data)
	got, err := Get(t, st, key)
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatalf("read back %d bytes that differ from the %d written", len(got), len(data))
	}
	// Reading a prefix and closing early is fine.
	rc, _, err := st.Open(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1000)
	if _, err := io.ReadFull(rc, buf); err != nil || !bytes.Equal(buf, data[:1000]) {
		t.Fatalf("prefix: %v", err)
	}
	if err := rc.Close(); err != nil {
		t.Fatal(err)
	}
}

func testAbort(t *testing.T, s Suite) {
	ctx := context.Background()
	st := s.New(t)
	for _, n := range []int{10, multipartSize(s)} {
		key := Key()
		w, err := st.Create(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if err := writeChunks(w, Data(3, n)); err != nil {
			t.Fatal(err)
		}
		if err := w.Abort(); err != nil {
			t.Fatalf("abort: %v", err)
		}
		if err := w.Commit(); err != nil {
			t.Fatalf("Commit after Abort: %v", err)
		}
		AssertAbsent(t, st, key)
	}
	if ks := Keys(t, st); len(ks) != 0 {
		t.Fatalf("aborted uploads listed: %v", ks)
	}
}

func testCancelled(t *testing.T, s Suite) {
	st := s.New(t)
	for _, n := range []int{10, multipartSize(s)} {
		ctx, cancel := context.WithCancel(context.Background())
		key := Key()
		w, err := st.Create(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		data := Data(4, n)
		werr := writeChunks(w, data[:n/2])
		cancel() // e.g. the client went away mid-upload
		if werr == nil {
			werr = writeChunks(w, data[n/2:])
		}
		cerr := w.Commit()
		if werr == nil && cerr == nil {
			// A backend that ignores the context once writing started (the
			// local directory) may commit; the object is then whole.
			assertWholeOrAbsent(t, st, key, data)
			continue
		}
		w.Abort()
		AssertAbsent(t, st, key)
	}
}

func testNoOverwrite(t *testing.T, s Suite) {
	st := s.New(t)
	key := Key()
	Put(t, st, key, []byte("first"))
	for _, n := range []int{6, multipartSize(s)} {
		w, err := st.Create(context.Background(), key)
		if err != nil {
			if errors.Is(err, blob.ErrExists) {
				continue
			}
			t.Fatal(err)
		}
		werr := writeChunks(w, Data(5, n))
		if err := w.Commit(); !errors.Is(err, blob.ErrExists) {
			t.Fatalf("second commit of %d bytes: %v (write: %v), want ErrExists", n, err, werr)
		}
	}
	got, err := Get(t, st, key)
	if err != nil || string(got) != "first" {
		t.Fatalf("original overwritten: %q %v", got, err)
	}
}

func testInvalidKeys(t *testing.T, s Suite) {
	ctx := context.Background()
	st := s.New(t)
	for _, k := range []string{"", "..", "../x", "a/../b", "/abs", "a//b", "a/", "a\\b", "a.b", "a b", "é", string(make([]byte, 600))} {
		if _, err := st.Create(ctx, k); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Create(%q): %v", k, err)
		}
		if _, _, err := st.Open(ctx, k); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Open(%q): %v", k, err)
		}
		if err := st.Delete(ctx, k); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Delete(%q): %v", k, err)
		}
	}
}

func testList(t *testing.T, s Suite) {
	ctx := context.Background()
	st := s.New(t)
	want := []string{"org-a/proj_1/file-1", "org-a/proj_1/file-1_k2-abc", "org-a/proj_2/file-2", "org-b/proj_3/file-3", "x"}
	for i, k := range want {
		Put(t, st, k, Data(uint64(i), i+1))
	}
	if got := Keys(t, st); !slices.Equal(got, want) {
		t.Fatalf("list: %v, want %v", got, want)
	}
	// fn's error stops List and is returned.
	stop := errors.New("stop")
	n := 0
	if err := st.List(ctx, func(blob.Info) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Fatalf("List with a failing fn: %v after %d calls", err, n)
	}
	for _, k := range want[:2] {
		if err := st.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
		if err := st.Delete(ctx, k); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("second delete: %v", err)
		}
		AssertAbsent(t, st, k)
	}
	if _, _, err := st.Open(ctx, "org-a/proj_1/file-none"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("open missing: %v", err)
	}
	if got := Keys(t, st); !slices.Equal(got, want[2:]) {
		t.Fatalf("list after delete: %v", got)
	}
}

// testDatedAtCommit: the sweep judges a blob without a record by its date,
// so an upload that took long must not look old the moment it commits.
func testDatedAtCommit(t *testing.T, s Suite) {
	st := s.New(t)
	key := Key()
	w, err := st.Create(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeChunks(w, Data(6, multipartSize(s))); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2100 * time.Millisecond) // dates have 1 s resolution
	committing := time.Now()
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	var mt time.Time
	st.List(context.Background(), func(i blob.Info) error { mt = i.ModTime; return nil })
	if mt.Before(committing.Add(-time.Second)) {
		t.Fatalf("dated %v, committed at %v: a slow upload looks old at commit, and the sweep could take it for an orphan", mt, committing)
	}
}

func testConcurrent(t *testing.T, s Suite) {
	st := s.New(t)
	var wg sync.WaitGroup
	keys := make([]string, 6)
	for i := range keys {
		keys[i] = Key()
		wg.Go(func() {
			w, err := st.Create(context.Background(), keys[i])
			if err != nil {
				t.Error(err)
				return
			}
			if err := writeChunks(w, Data(uint64(i), 100<<10+i)); err != nil {
				t.Error(err)
			}
			if i%3 == 0 {
				w.Abort()
				return
			}
			if err := w.Commit(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	var want []string
	for i, k := range keys {
		if i%3 != 0 {
			want = append(want, k)
		}
	}
	slices.Sort(want)
	if got := Keys(t, st); !slices.Equal(got, want) {
		t.Fatalf("list: %v, want %v", got, want)
	}
}

// testCrashed: an upload neither committed nor aborted (the process died)
// is invisible, and a store that keeps temporaries removes them once they
// are older than the sweep's cutoff.
func testCrashed(t *testing.T, s Suite) {
	st := s.New(t)
	key := Key()
	w, err := st.Create(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort() // only to end the test's goroutines
	if err := writeChunks(w, Data(7, multipartSize(s))); err != nil {
		t.Fatal(err)
	}
	AssertAbsent(t, st, key)
	ts, ok := st.(blob.TempSweeper)
	if !ok {
		return
	}
	ours := func(k string) bool { return k == key }
	if n, err := ts.RemoveStaleTemps(context.Background(), time.Now().Add(-time.Hour), ours); err != nil || n != 0 {
		t.Fatalf("a fresh upload was swept: %d, %v", n, err)
	}
	n, err := ts.RemoveStaleTemps(context.Background(), time.Now().Add(time.Hour), ours)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("swept %d temporaries of the crashed upload", n)
	if err := w.Commit(); err == nil {
		// The upload's temporary is gone: committing it must fail or
		// leave the complete object (the local directory's temp file may
		// be unlinked under an open descriptor and still renamed).
		t.Logf("commit after the sweep succeeded")
	}
	AssertAbsentOrAny(t, st, key)
}

// AssertAbsentOrAny only checks that reading key works or says not found.
func AssertAbsentOrAny(t testing.TB, st blob.Store, key string) {
	t.Helper()
	if _, err := Get(t, st, key); err != nil && !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("open %s: %v", key, err)
	}
}

// within fails t if f takes longer than d.
func within(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	start := time.Now()
	f()
	if el := time.Since(start); el > d {
		t.Fatalf("%s took %v (bound %v): a failing store must fail fast", what, el, d)
	}
}

func wantUnavailable(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, blob.ErrUnavailable) {
		t.Fatalf("%s: %v, want an error wrapping blob.ErrUnavailable", what, err)
	}
}

func testDownMidUpload(t *testing.T, s Suite) {
	st, p := s.Faults(t)
	key := Key()
	data := Data(8, 4*max(s.PartSize, 1<<20)+999)
	w, err := st.Create(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	half := len(data) / 2
	if err := writeChunks(w, data[:half]); err != nil {
		t.Fatal(err)
	}
	p.Set(Down)
	within(t, s.FaultBound, "upload to a store that went down", func() {
		err = writeChunks(w, data[half:])
		if err == nil {
			err = w.Commit()
		} else {
			w.Abort()
		}
	})
	wantUnavailable(t, "upload while the store is down", err)
	p.Set(Up)
	AssertAbsent(t, st, key)
}

func testDown(t *testing.T, s Suite) {
	st, p := s.Faults(t)
	present := Key()
	Put(t, st, present, []byte("x"))
	p.Set(Down)
	within(t, s.FaultBound, "operations on a store that is down", func() {
		_, _, err := st.Open(context.Background(), present)
		wantUnavailable(t, "open", err)
		wantUnavailable(t, "delete", st.Delete(context.Background(), present))
		wantUnavailable(t, "list", st.List(context.Background(), func(blob.Info) error { return nil }))
		key := Key()
		w, err := st.Create(context.Background(), key)
		if err == nil {
			if err = writeChunks(w, []byte("small")); err == nil {
				err = w.Commit()
			} else {
				w.Abort()
			}
		}
		wantUnavailable(t, "small upload", err)
	})
	p.Set(Up)
	if got, err := Get(t, st, present); err != nil || string(got) != "x" {
		t.Fatalf("after the outage: %q %v", got, err)
	}
}

func test503OnCommit(t *testing.T, s Suite) {
	st, p := s.Faults(t)
	for _, n := range []int{100, multipartSize(s)} {
		key := Key()
		data := Data(9, n)
		w, err := st.Create(context.Background(), key)
		if err != nil {
			t.Fatal(err)
		}
		if err := writeChunks(w, data); err != nil {
			t.Fatal(err)
		}
		p.Set(Fail503OnCommit)
		within(t, s.FaultBound, "a commit answered 503", func() { err = w.Commit() })
		wantUnavailable(t, fmt.Sprintf("commit of %d bytes answered 503", n), err)
		if p.Hits() == 0 {
			t.Fatalf("the proxy saw no commit request")
		}
		p.Set(Up)
		AssertAbsent(t, st, key)
	}
}

func testSlow(t *testing.T, s Suite) {
	stalled := s.Stalled
	if stalled == nil {
		stalled = s.Faults
	}
	st, p := stalled(t)
	present := Key()
	Put(t, st, present, []byte("present"))
	key := Key()
	data := Data(10, 100<<10)
	w, err := st.Create(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeChunks(w, data); err != nil {
		t.Fatal(err)
	}
	p.Set(Stall)
	within(t, s.FaultBound, "operations on a stalled store", func() {
		wantUnavailable(t, "commit to a stalled store", w.Commit())
		_, _, err := st.Open(context.Background(), present)
		wantUnavailable(t, "open on a stalled store", err)
	})
	p.Set(Up)
	assertWholeOrAbsent(t, st, key, data)
}

// testDeploymentMarker: the first claim writes the marker, a claim with the
// same id is accepted, one with another id is refused naming both; the
// marker is never listed, never reachable by Create, Open or Delete, and
// survives a sweep of temporaries that would accept any key.
func testDeploymentMarker(t *testing.T, s Suite) {
	ctx := context.Background()
	st := s.New(t)
	if _, err := st.Deployment(ctx); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("deployment of an unclaimed store: %v, want ErrNotFound", err)
	}
	ours, theirs := blob.NewDeploymentID(), blob.NewDeploymentID()
	if err := st.ClaimDeployment(ctx, ours); err != nil {
		t.Fatalf("first claim: %v", err)
	}
	if got, err := st.Deployment(ctx); err != nil || got != ours {
		t.Fatalf("deployment = %q, %v; want %q", got, err, ours)
	}
	if err := st.ClaimDeployment(ctx, ours); err != nil {
		t.Fatalf("claim again with the same id: %v", err)
	}
	err := st.ClaimDeployment(ctx, theirs)
	var ce *blob.ClaimError
	if !errors.Is(err, blob.ErrOtherDeployment) || !errors.As(err, &ce) || ce.Ours != theirs || ce.Theirs != ours {
		t.Fatalf("claim with another id: %v, want a ClaimError naming %s (ours) and %s (theirs)", err, theirs, ours)
	}
	if got, err := st.Deployment(ctx); err != nil || got != ours {
		t.Fatalf("after a refused claim: deployment = %q, %v; want %q", got, err, ours)
	}
	if err := st.ClaimDeployment(ctx, "bad/id"); err == nil {
		t.Fatal("claim with an invalid id accepted")
	}

	// Out of reach of everything else.
	key := Key()
	Put(t, st, key, Data(7, 10))
	if got := Keys(t, st); !slices.Equal(got, []string{key}) {
		t.Fatalf("list with a marker: %v, want only %s", got, key)
	}
	if _, err := st.Create(ctx, blob.MarkerName); !errors.Is(err, blob.ErrInvalidKey) {
		t.Fatalf("create the marker's name: %v, want ErrInvalidKey", err)
	}
	if _, _, err := st.Open(ctx, blob.MarkerName); !errors.Is(err, blob.ErrInvalidKey) {
		t.Fatalf("open the marker's name: %v, want ErrInvalidKey", err)
	}
	if err := st.Delete(ctx, blob.MarkerName); !errors.Is(err, blob.ErrInvalidKey) {
		t.Fatalf("delete the marker's name: %v, want ErrInvalidKey", err)
	}
	if ts, ok := st.(blob.TempSweeper); ok {
		if _, err := ts.RemoveStaleTemps(ctx, time.Now().Add(time.Hour), func(string) bool { return true }); err != nil {
			t.Fatalf("remove stale temporaries: %v", err)
		}
	}
	if got, err := st.Deployment(ctx); err != nil || got != ours {
		t.Fatalf("after a sweep of temporaries: deployment = %q, %v; want %q", got, err, ours)
	}
}

// testDeploymentRace: deployments claiming an empty store at once — exactly
// one wins, every other is refused naming the winner.
func testDeploymentRace(t *testing.T, s Suite) {
	ctx := context.Background()
	st := s.New(t)
	const n = 6
	ids := make([]string, n)
	errs := make([]error, n)
	for i := range ids {
		ids[i] = blob.NewDeploymentID()
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = st.ClaimDeployment(ctx, ids[i]) })
	}
	wg.Wait()
	winner, err := st.Deployment(ctx)
	if err != nil {
		t.Fatalf("deployment after the race: %v", err)
	}
	won := 0
	for i, err := range errs {
		var ce *blob.ClaimError
		switch {
		case err == nil:
			won++
			if ids[i] != winner {
				t.Errorf("claim %d (%s) succeeded but the marker names %s", i, ids[i], winner)
			}
		case errors.As(err, &ce):
			if ce.Theirs != winner || ce.Ours != ids[i] {
				t.Errorf("claim %d: %v, want it to name %s", i, err, winner)
			}
		default:
			t.Errorf("claim %d: %v", i, err)
		}
	}
	if won != 1 {
		t.Fatalf("%d claims succeeded, want exactly 1: %v", won, errs)
	}
}
