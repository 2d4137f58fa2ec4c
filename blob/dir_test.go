package blob_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/blob"
)

func newDir(t *testing.T) (*blob.Dir, string) {
	t.Helper()
	root := t.TempDir()
	d, err := blob.NewDir(root)
	if err != nil {
		t.Fatal(err)
	}
	return d, root
}

func tempCount(t *testing.T, d *blob.Dir) int {
	t.Helper()
	es, err := os.ReadDir(d.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

func keys(t *testing.T, d *blob.Dir) []string {
	t.Helper()
	var out []string
	if err := d.List(context.Background(), func(i blob.Info) error { out = append(out, i.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

func TestCommitOpenDelete(t *testing.T) {
	ctx := context.Background()
	d, _ := newDir(t)
	w, err := d.Create(ctx, "org-1/proj_2/file-3")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	// Not visible before Commit.
	if _, _, err := d.Open(ctx, "org-1/proj_2/file-3"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("open before commit: %v", err)
	}
	if got := keys(t, d); len(got) != 0 {
		t.Fatalf("listed before commit: %v", got)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := w.Abort(); err != nil { // no-op after Commit
		t.Fatal(err)
	}
	if n := tempCount(t, d); n != 0 {
		t.Fatalf("%d temporaries after commit", n)
	}
	rc, size, err := d.Open(ctx, "org-1/proj_2/file-3")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "hello" || size != 5 {
		t.Fatalf("got %q size %d", b, size)
	}
	if got := keys(t, d); !slices.Equal(got, []string{"org-1/proj_2/file-3"}) {
		t.Fatalf("list: %v", got)
	}
	if err := d.Delete(ctx, "org-1/proj_2/file-3"); err != nil {
		t.Fatal(err)
	}
	if err := d.Delete(ctx, "org-1/proj_2/file-3"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

func TestAbortRemovesTemp(t *testing.T) {
	ctx := context.Background()
	d, _ := newDir(t)
	w, err := d.Create(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("partial"))
	if n := tempCount(t, d); n != 1 {
		t.Fatalf("%d temporaries while writing", n)
	}
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil { // no-op after Abort
		t.Fatal(err)
	}
	if n := tempCount(t, d); n != 0 {
		t.Fatalf("%d temporaries after abort", n)
	}
	if _, _, err := d.Open(ctx, "k"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("aborted object visible: %v", err)
	}
}

func TestCommitRefusesOverwrite(t *testing.T) {
	ctx := context.Background()
	d, _ := newDir(t)
	for i, want := range []error{nil, blob.ErrExists} {
		w, err := d.Create(ctx, "dup")
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte{byte(i)})
		if err := w.Commit(); !errors.Is(err, want) {
			t.Fatalf("commit %d: %v, want %v", i, err, want)
		}
	}
	if n := tempCount(t, d); n != 0 {
		t.Fatalf("%d temporaries left after failed commit", n)
	}
	rc, _, _ := d.Open(ctx, "dup")
	b, _ := io.ReadAll(rc)
	rc.Close()
	if len(b) != 1 || b[0] != 0 {
		t.Fatalf("original overwritten: %v", b)
	}
}

func TestInvalidKeys(t *testing.T) {
	ctx := context.Background()
	d, root := newDir(t)
	bad := []string{"", "..", "../x", "a/../b", "/abs", "a//b", "a/", "a\\b", "a.b", ".", "a b", "é", string(make([]byte, 600))}
	for _, k := range bad {
		if blob.ValidKey(k) {
			t.Errorf("ValidKey(%q) = true", k)
		}
		if _, err := d.Create(ctx, k); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Create(%q): %v", k, err)
		}
		if _, _, err := d.Open(ctx, k); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Open(%q): %v", k, err)
		}
		if err := d.Delete(ctx, k); !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("Delete(%q): %v", k, err)
		}
	}
	// Nothing escaped the root.
	if _, err := os.Stat(filepath.Join(filepath.Dir(root), "x")); err == nil {
		t.Fatal("file written outside root")
	}
	for _, k := range []string{"a", "A-b_c/0", "org-1/proj_1/file-1"} {
		if !blob.ValidKey(k) {
			t.Errorf("ValidKey(%q) = false", k)
		}
	}
}

func TestRemoveStaleTemps(t *testing.T) {
	ctx := context.Background()
	d, _ := newDir(t)
	stale, _ := d.Create(ctx, "a")
	fresh, _ := d.Create(ctx, "b")
	defer fresh.Abort()
	es, _ := os.ReadDir(d.TempDir())
	old := time.Now().Add(-2 * time.Hour)
	// Age one temporary: find it by writing a marker.
	stale.Write([]byte("x"))
	for _, e := range es {
		fi, _ := e.Info()
		if fi.Size() == 1 {
			os.Chtimes(filepath.Join(d.TempDir(), e.Name()), old, old)
		}
	}
	// A file that is not one of the store's temporaries, however old, stays.
	foreign := filepath.Join(d.TempDir(), "not-ours.bin")
	if err := os.WriteFile(foreign, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(foreign, old, old)
	n, err := d.RemoveStaleTemps(ctx, time.Now().Add(-time.Hour), nil)
	if err != nil || n != 1 {
		t.Fatalf("removed %d, %v; want 1", n, err)
	}
	if _, err := os.Stat(foreign); err != nil {
		t.Fatalf("a file not named upload-* was swept: %v", err)
	}
	os.Remove(foreign)
	if c := tempCount(t, d); c != 1 {
		t.Fatalf("%d temporaries left, want the fresh one", c)
	}
}
