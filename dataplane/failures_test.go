package dataplane_test

import (
	"context"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/ekm-dev/ekm/blob"
	"github.com/ekm-dev/ekm/dataplane"
	"github.com/ekm-dev/ekm/dataplane/dataplanetest"
	"github.com/ekm-dev/ekm/files"
	"github.com/ekm-dev/ekm/ids"
	"github.com/ekm-dev/ekm/store"
)

type (
	blobInfo = blob.Info
	depsT    = dataplane.Deps
)

var newRecorder = httptest.NewRecorder

// hookStore wraps a blob store: writers fail with ENOSPC after failAfter
// bytes (if > 0), and the hooks fire on the first write and on abort.
type hookStore struct {
	blob.Store
	failAfter    int64
	firstWrite   chan struct{}
	aborted      chan struct{}
	onceW, onceA sync.Once
}

func newHookStore(inner blob.Store, failAfter int64) *hookStore {
	return &hookStore{Store: inner, failAfter: failAfter, firstWrite: make(chan struct{}), aborted: make(chan struct{})}
}

func (h *hookStore) Create(ctx context.Context, key string) (blob.Writer, error) {
	w, err := h.Store.Create(ctx, key)
	if err != nil {
		return nil, err
	}
	return &hookWriter{Writer: w, h: h}, nil
}

type hookWriter struct {
	blob.Writer
	h *hookStore
	n int64
}

func (w *hookWriter) Write(p []byte) (int, error) {
	w.h.onceW.Do(func() { close(w.h.firstWrite) })
	if w.h.failAfter > 0 && w.n+int64(len(p)) > w.h.failAfter {
		return 0, &os.PathError{Op: "write", Path: "blob", Err: syscall.ENOSPC}
	}
	w.n += int64(len(p))
	return w.Writer.Write(p)
}

func (w *hookWriter) Abort() error {
	err := w.Writer.Abort()
	w.h.onceA.Do(func() { close(w.h.aborted) })
	return err
}

func TestDiskFullDuringUpload(t *testing.T) {
	var hs *hookStore
	env := dataplanetest.New(t, dataplanetest.Options{Blobs: func(d *blob.Dir) blob.Store {
		hs = newHookStore(d, 200<<10)
		return hs
	}})
	p := env.NewProject(t, "", false)
	_, err := sdkNew(env, p.APIKey, context.Background(), openai.FileNewParams{
		File: openai.File(&countingReader{size: 1 << 20}, "big.bin", "application/octet-stream"), Purpose: openai.FilePurposeBatch,
	})
	apiErr(t, err, 507, "insufficient_storage")
	<-hs.aborted
	assertClean(t, env, p)
}

func TestClientDisconnectMidUpload(t *testing.T) {
	var hs *hookStore
	env := dataplanetest.New(t, dataplanetest.Options{Blobs: func(d *blob.Dir) blob.Store {
		hs = newHookStore(d, 0)
		return hs
	}})
	p := env.NewProject(t, "", false)
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", env.URL+"/v1/files", pr)
	req.Header.Set("Authorization", "Bearer "+p.APIKey)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	done := make(chan error, 1)
	go func() {
		res, err := http.DefaultClient.Do(req)
		if err == nil {
			res.Body.Close()
			err = errors.New("request completed: " + res.Status)
		}
		done <- err
	}()
	mw.WriteField("purpose", "batch")
	w, _ := mw.CreateFormFile("file", "partial.bin")
	w.Write(make([]byte, 300<<10)) // a few segments, so encryption has written
	<-hs.firstWrite
	cancel() // the client goes away mid-body
	pw.CloseWithError(context.Canceled)
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("client: %v", err)
	}
	<-hs.aborted
	assertClean(t, env, p)
}

// failingFiles fails CreateFile, to check that the committed blob is removed.
type failingFiles struct{ store.Store }

var errInjected = errors.New("injected database failure")

func (failingFiles) CreateFile(context.Context, store.File) error { return errInjected }

func TestRecordFailureRemovesBlob(t *testing.T) {
	env := dataplanetest.New(t, dataplanetest.Options{Deps: func(d *dataplane.Deps) { d.Store = failingFiles{d.Store} }})
	p := env.NewProject(t, "", false)
	_, err := sdkNew(env, p.APIKey, context.Background(), openai.FileNewParams{
		File: openai.File(&countingReader{size: 1000}, "x.bin", "application/octet-stream"), Purpose: openai.FilePurposeBatch,
	})
	apiErr(t, err, 500, "internal_error")
	assertClean(t, env, p)
}

func TestSweep(t *testing.T) {
	env := dataplanetest.New(t, dataplanetest.Options{})
	p := env.NewProject(t, "", false)
	ctx := context.Background()
	kept := upload(t, sdk(env, p.APIKey), "kept.txt", []byte("kept"), openai.FilePurposeBatch)
	put := func(key string) {
		w, err := env.Dir.Create(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte("orphan"))
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * time.Hour)
	objects := filepath.Join(env.DataDir, "blobs", "objects")
	orphan := files.BlobKey(p.OrgID, p.ID, ids.New("file-"))
	young := files.BlobKey(p.OrgID, p.ID, ids.New("file-"))
	put(orphan)
	put(young)
	os.Chtimes(filepath.Join(objects, filepath.FromSlash(orphan)), old, old)
	os.Chtimes(filepath.Join(objects, p.OrgID, p.ID, kept.ID), old, old)
	stale, _ := env.Dir.Create(ctx, "whatever")
	_ = stale
	tmps, _ := os.ReadDir(env.Dir.TempDir())
	for _, e := range tmps {
		os.Chtimes(filepath.Join(env.Dir.TempDir(), e.Name()), old, old)
	}

	res, err := files.Sweep(ctx, env.Store, env.Dir, time.Now().Add(-time.Hour))
	if err != nil || res.OrphanBlobs != 1 || res.StaleTemps != 1 {
		t.Fatalf("sweep: %+v %v", res, err)
	}
	if _, _, err := env.Dir.Open(ctx, orphan); !errors.Is(err, blob.ErrNotFound) {
		t.Fatal("orphan kept")
	}
	for _, k := range []string{young, p.OrgID + "/" + p.ID + "/" + kept.ID} {
		if _, _, err := env.Dir.Open(ctx, k); err != nil {
			t.Fatalf("%s removed: %v", k, err)
		}
	}
}
