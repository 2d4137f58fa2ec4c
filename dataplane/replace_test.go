package dataplane_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/ekm-dev/ekm/blob"
	"github.com/ekm-dev/ekm/dataplane/dataplanetest"
	"github.com/ekm-dev/ekm/files"
	"github.com/ekm-dev/ekm/store"
)

func rewrite(t *testing.T, env *dataplanetest.Env, f store.File) string {
	t.Helper()
	ctx := context.Background()
	rc, _, err := env.Dir.Open(ctx, f.BlobKey)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	nk := files.RewriteBlobKey(&f, f.KeyVersion)
	w, err := env.Dir.Create(ctx, nk)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(w, rc); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	old := f.BlobKey
	f.BlobKey = nk
	if err := env.Store.ReplaceFileContent(ctx, f, old); err != nil {
		t.Fatal(err)
	}
	return nk
}

func TestSweepRewrittenContent(t *testing.T) {
	env := dataplanetest.New(t, dataplanetest.Options{})
	p := env.NewProject(t, "", false)
	ctx := context.Background()
	c := sdk(env, p.APIKey)
	data := content("rewritten", 3000)
	up := upload(t, c, "a.txt", data, openai.FilePurposeBatch)
	f, err := env.Store.GetFile(ctx, p.OrgID, p.ID, up.ID)
	if err != nil {
		t.Fatal(err)
	}
	nk := rewrite(t, env, f) // the old blob stays behind, as after a crash
	old := time.Now().Add(-2 * time.Hour)
	objects := filepath.Join(env.DataDir, "blobs", "objects")
	for _, k := range []string{f.BlobKey, nk} {
		if err := os.Chtimes(filepath.Join(objects, filepath.FromSlash(k)), old, old); err != nil {
			t.Fatal(err)
		}
	}
	res, err := files.Sweep(ctx, env.Store, env.Dir, time.Now().Add(-time.Hour))
	if err != nil || res.OrphanBlobs != 1 {
		t.Fatalf("sweep: %+v %v", res, err)
	}
	if _, _, err := env.Dir.Open(ctx, f.BlobKey); !errors.Is(err, blob.ErrNotFound) {
		t.Fatal("replaced blob kept")
	}
	if got := download(t, c, up.ID); !bytes.Equal(got, data) {
		t.Fatal("content lost by sweep")
	}
}

// replacingStore replaces a file's content (and deletes the old blob) just
// before the data plane opens it: the race of a download with re-encryption.
type replacingStore struct {
	blob.Store
	once   sync.Once
	before func(key string)
}

func (s *replacingStore) Open(ctx context.Context, key string) (io.ReadCloser, int64, error) {
	s.once.Do(func() { s.before(key) })
	return s.Store.Open(ctx, key)
}

func TestDownloadFollowsReplacedContent(t *testing.T) {
	var rs *replacingStore
	env := dataplanetest.New(t, dataplanetest.Options{Blobs: func(d *blob.Dir) blob.Store {
		rs = &replacingStore{Store: d}
		return rs
	}})
	p := env.NewProject(t, "", false)
	ctx := context.Background()
	c := sdk(env, p.APIKey)
	data := content("raced", 5000)
	up := upload(t, c, "a.txt", data, openai.FilePurposeBatch)
	rs.before = func(key string) {
		f, err := env.Store.GetFile(ctx, p.OrgID, p.ID, up.ID)
		if err != nil || f.BlobKey != key {
			t.Errorf("opened %q, record %q (%v)", key, f.BlobKey, err)
			return
		}
		rewrite(t, env, f)
		if err := env.Dir.Delete(ctx, key); err != nil {
			t.Error(err)
		}
	}
	if got := download(t, c, up.ID); !bytes.Equal(got, data) {
		t.Fatal("download across a content replacement")
	}
}
