package app_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/app"
	"github.com/ekm-dev/ekm/blob"
	"github.com/ekm-dev/ekm/blob/blobtest"
	"github.com/ekm-dev/ekm/files"
	"github.com/ekm-dev/ekm/ids"
	"github.com/ekm-dev/ekm/store/sqlstore/pgtest"
)

func quiet(c app.Config) app.Config {
	c.Logger = slog.New(slog.DiscardHandler)
	return c
}

// Two deployments (each its own database) on one blob store: the first
// claims it, the second refuses to start, naming both deployments, the
// store and what to do, and leaves the marker alone. With a store of its
// own it starts, as the deployment the refusal named.
func TestSecondDeploymentOnOneBlobStoreRefused(t *testing.T) {
	ctx := context.Background()
	shared := t.TempDir()
	url := "file://" + filepath.ToSlash(shared)
	first := start(t, app.Config{DataDir: t.TempDir(), BlobURL: url})
	if !strings.HasPrefix(first.a.Deployment, "dep-") {
		t.Fatalf("deployment id %q", first.a.Deployment)
	}
	dirB := t.TempDir()
	_, err := app.Open(ctx, quiet(app.Config{DataDir: dirB, BlobURL: url}))
	if err == nil {
		t.Fatal("a second deployment started on the first one's blob store")
	}
	msg := err.Error()
	for _, want := range []string{"belongs to another ekm deployment", first.a.Deployment, "this database is deployment dep-", url, "prefix=", app.OneDeploymentPerStore} {
		if !strings.Contains(msg, want) {
			t.Errorf("refusal %q does not say %q", msg, want)
		}
	}
	d, err := blob.NewDir(shared)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := d.Deployment(ctx); err != nil || got != first.a.Deployment {
		t.Fatalf("the refused deployment changed the marker: %q, %v", got, err)
	}
	// Its own store: it starts, with the id its database got at the
	// refused start.
	b, err := app.Open(ctx, quiet(app.Config{DataDir: dirB}))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Deployment == first.a.Deployment || !strings.Contains(msg, "this database is deployment "+b.Deployment) {
		t.Fatalf("deployment %s, refused as %q", b.Deployment, msg)
	}
	// The first deployment restarts on its store as before.
	first.stop()
	again := start(t, app.Config{DataDir: first.a.Config.DataDir, BlobURL: url})
	if again.a.Deployment != first.a.Deployment {
		t.Fatalf("restart: deployment %s, was %s", again.a.Deployment, first.a.Deployment)
	}
}

// Deployments starting at once on one empty blob store: exactly one
// claims it.
func TestDeploymentsRacingForOneBlobStore(t *testing.T) {
	url := "file://" + filepath.ToSlash(t.TempDir())
	const n = 3
	apps := make([]*app.App, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		dir := t.TempDir()
		wg.Go(func() {
			apps[i], errs[i] = app.Open(context.Background(), quiet(app.Config{DataDir: dir, BlobURL: url}))
		})
	}
	wg.Wait()
	ok := 0
	for i, err := range errs {
		if err == nil {
			ok++
			apps[i].Close()
		} else if !strings.Contains(err.Error(), "belongs to another ekm deployment") {
			t.Errorf("deployment %d: %v", i, err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d deployments started on one blob store: %v", ok, errs)
	}
}

// Replicas of one deployment (one database) starting at once agree on one
// deployment id and all start on the store it claims.
func TestReplicasShareOneDeployment(t *testing.T) {
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			dir := t.TempDir()
			cfg := app.Config{DataDir: dir}
			if db == "postgres" {
				cfg.Database = pgtest.DSN(t)
			}
			const n = 3
			apps := make([]*app.App, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() { apps[i], errs[i] = app.Open(context.Background(), quiet(cfg)) })
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("replica %d: %v", i, err)
				}
				defer apps[i].Close()
			}
			for _, a := range apps[1:] {
				if a.Deployment != apps[0].Deployment {
					t.Fatalf("replicas disagree on the deployment: %s, %s", a.Deployment, apps[0].Deployment)
				}
			}
			if got, err := apps[0].Blobs.Deployment(context.Background()); err != nil || got != apps[0].Deployment {
				t.Fatalf("marker %q, %v; want %s", got, err, apps[0].Deployment)
			}
		})
	}
}

// The sweep of a running server whose marker was replaced by another
// deployment's deletes nothing and logs why; with its own marker back, it
// sweeps the same orphan.
func TestSweepSkipsAnotherDeploymentsStore(t *testing.T) {
	ctx := context.Background()
	dir, shared := t.TempDir(), t.TempDir()
	url := "file://" + filepath.ToSlash(shared)
	a, err := app.Open(ctx, quiet(app.Config{DataDir: dir, BlobURL: url}))
	if err != nil {
		t.Fatal(err)
	}
	ours := a.Deployment
	a.Close()
	d, err := blob.NewDir(shared)
	if err != nil {
		t.Fatal(err)
	}
	orphan := files.BlobKey(ids.New("org-"), ids.New("proj_"), ids.New("file-"))
	blobtest.Put(t, d, orphan, []byte("another deployment's file"))
	old := time.Now().Add(-2 * files.SweepGrace)
	if err := os.Chtimes(filepath.Join(shared, "objects", filepath.FromSlash(orphan)), old, old); err != nil {
		t.Fatal(err)
	}
	// The marker is replaced while the server runs (it claimed the store
	// at its start): another deployment now owns the store.
	replace := func(id string) {
		t.Helper()
		if err := os.Remove(filepath.Join(shared, blob.MarkerName)); err != nil {
			t.Fatal(err)
		}
		if err := d.ClaimDeployment(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	r := startAfter(t, app.Config{DataDir: dir, BlobURL: url}, func() { replace(blob.NewDeploymentID()) })
	waitLogged(t, r, "blob sweep skipped")
	if r.logged(`blob sweep","orphan_blobs`) {
		t.Fatal("the sweep ran on another deployment's store")
	}
	if _, err := blobtest.Get(t, d, orphan); err != nil {
		t.Fatalf("the sweep deleted from another deployment's store: %v", err)
	}
	r.stop()

	replace(ours)
	again := start(t, app.Config{DataDir: dir, BlobURL: url})
	waitLogged(t, again, `blob sweep","orphan_blobs":1`)
	if _, err := blobtest.Get(t, d, orphan); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("the orphan survived the sweep of its own deployment: %v", err)
	}
}

func waitLogged(t *testing.T, r *running, msg string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !r.logged(msg) {
		if time.Now().After(deadline) {
			r.log.mu.Lock()
			defer r.log.mu.Unlock()
			t.Fatalf("not logged: %s\n%s", msg, r.buf.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startAfter is start, calling between Open and Run before.
func startAfter(t *testing.T, cfg app.Config, before func()) *running {
	t.Helper()
	buf := &bytes.Buffer{}
	w := &syncWriter{w: buf}
	cfg.Addr = "127.0.0.1:0"
	cfg.Logger = slog.New(slog.NewJSONHandler(w, nil))
	a, err := app.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	before()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{a: a, log: w, buf: buf, cancel: cancel, done: make(chan error, 1)}
	ready := make(chan struct{})
	go func() { r.done <- a.Run(ctx, func(string) { close(ready) }) }()
	t.Cleanup(func() { r.stop() })
	select {
	case <-ready:
	case err := <-r.done:
		r.done <- err
	}
	return r
}

// A blob store that cannot be reached at start (a bucket outage) does not
// stop the server: it starts with a warning, and the claim waits for the
// sweep (which deletes nothing until then).
func TestUnreachableBlobStoreAtStart(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test")
	var buf bytes.Buffer
	logs := &syncWriter{w: &buf}
	c := app.Config{DataDir: t.TempDir(),
		BlobURL: "s3://ekm?region=us-east-1&endpoint=http://127.0.0.1:1&use_path_style=true&disable_https=true",
		Logger:  slog.New(slog.NewTextHandler(logs, nil))}
	a, err := app.Open(context.Background(), c)
	if err != nil {
		t.Fatalf("an unreachable blob store stopped the start: %v", err)
	}
	defer a.Close()
	if !strings.HasPrefix(a.Deployment, "dep-") {
		t.Fatalf("deployment id %q", a.Deployment)
	}
	logs.mu.Lock()
	defer logs.mu.Unlock()
	if !strings.Contains(buf.String(), "blob store unreachable at start") {
		t.Fatalf("no warning logged: %s", buf.String())
	}
}
