package blob_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/blob"
)

func TestCommitStampsModTime(t *testing.T) {
	dir := t.TempDir()
	d, err := blob.NewDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	w, err := d.Create(context.Background(), "o/p/f1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	// A writer that stalled for hours: its temp file looks old.
	old := time.Now().Add(-3 * time.Hour)
	tmps, _ := filepath.Glob(filepath.Join(dir, "tmp", "*"))
	if len(tmps) != 1 {
		t.Fatalf("temp files: %v", tmps)
	}
	if err := os.Chtimes(tmps[0], old, old); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	var mt time.Time
	_ = d.List(context.Background(), func(i blob.Info) error { mt = i.ModTime; return nil })
	if time.Since(mt) > time.Minute {
		t.Fatalf("committed blob carries its temp file's age (%v): the sweep could take it for an orphan", mt)
	}
}
