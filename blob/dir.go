package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Dir is a Store on a local file system:
//
//	<root>/objects/<key>   committed objects (a key's "/" are directories)
//	<root>/tmp/upload-*    objects being written
//	<root>/.ekm-deployment the deployment marker (MarkerName)
//
// Commit fsyncs the temporary file, renames it to its final name (atomic on
// POSIX file systems) and fsyncs the directories it touched, so a committed
// object survives a crash and a crashed write never appears under its key.
// Temporaries and objects are readable by the owner only.
type Dir struct {
	root, objects, tmp string
}

var _ Store = (*Dir)(nil)

// NewDir returns a Dir rooted at path, creating it if needed.
func NewDir(path string) (*Dir, error) {
	if path == "" {
		return nil, errors.New("blob: empty directory path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("blob: %w", err)
	}
	d := &Dir{root: abs, objects: filepath.Join(abs, "objects"), tmp: filepath.Join(abs, "tmp")}
	for _, p := range []string{d.objects, d.tmp} {
		if err := os.MkdirAll(p, 0o700); err != nil {
			return nil, fmt.Errorf("blob: %w", err)
		}
	}
	return d, nil
}

// TempDir is where uncommitted objects live (exposed for operators and tests
// that check nothing is left behind).
func (d *Dir) TempDir() string { return d.tmp }

func (d *Dir) path(key string) (string, error) {
	if !ValidKey(key) {
		return "", ErrInvalidKey
	}
	return filepath.Join(d.objects, filepath.FromSlash(key)), nil
}

// Create starts a write to a temporary file.
func (d *Dir) Create(ctx context.Context, key string) (Writer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	final, err := d.path(key)
	if err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(d.tmp, "upload-*")
	if err != nil {
		return nil, fmt.Errorf("blob: create temporary object: %w", err)
	}
	return &dirWriter{d: d, f: f, final: final}, nil
}

type dirWriter struct {
	d     *Dir
	f     *os.File
	final string

	mu   sync.Mutex
	done bool
}

func (w *dirWriter) Write(p []byte) (int, error) {
	return w.f.Write(p)
}

func (w *dirWriter) Commit() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return nil
	}
	w.done = true
	err := w.commit()
	if err != nil {
		_ = w.f.Close()
		_ = os.Remove(w.f.Name())
	}
	return err
}

func (w *dirWriter) commit() error {
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("blob: sync: %w", err)
	}
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("blob: close: %w", err)
	}
	parent := filepath.Dir(w.final)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return fmt.Errorf("blob: %w", err)
	}
	// Keys are unique server-generated ids; this check turns a violation of
	// that invariant into an error instead of a silent overwrite.
	if _, err := os.Lstat(w.final); err == nil {
		return ErrExists
	}
	// The sweep judges a blob without a record by its age; stamp the commit
	// time so a slow writer's blob never looks old at the moment it commits.
	now := time.Now()
	if err := os.Chtimes(w.f.Name(), now, now); err != nil {
		return fmt.Errorf("blob: %w", err)
	}
	if err := os.Rename(w.f.Name(), w.final); err != nil {
		return fmt.Errorf("blob: rename: %w", err)
	}
	// Make the rename (and any directories MkdirAll created) durable.
	for dir := parent; ; dir = filepath.Dir(dir) {
		if err := syncDir(dir); err != nil {
			return err
		}
		if dir == w.d.objects || len(dir) <= len(w.d.objects) {
			break
		}
	}
	return nil
}

func (w *dirWriter) Abort() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return nil
	}
	w.done = true
	_ = w.f.Close()
	if err := os.Remove(w.f.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blob: remove temporary object: %w", err)
	}
	return nil
}

func syncDir(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("blob: sync directory: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("blob: sync directory: %w", err)
	}
	return nil
}

// Open opens a committed object.
func (d *Dir) Open(ctx context.Context, key string) (io.ReadCloser, int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	p, err := d.path(key)
	if err != nil {
		return nil, 0, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("blob: open: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("blob: stat: %w", err)
	}
	return f, st.Size(), nil
}

// Delete removes a committed object.
func (d *Dir) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := d.path(key)
	if err != nil {
		return err
	}
	err = os.Remove(p)
	if errors.Is(err, fs.ErrNotExist) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("blob: delete: %w", err)
	}
	return nil
}

// List walks the committed objects. Files whose names are not valid keys
// (nothing this package writes) are skipped.
func (d *Dir) List(ctx context.Context, fn func(Info) error) error {
	return filepath.WalkDir(d.objects, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("blob: list: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if !e.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(d.objects, p)
		if err != nil {
			return nil
		}
		key := filepath.ToSlash(rel)
		if !ValidKey(key) {
			return nil
		}
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil // deleted while we walked
		}
		if err != nil {
			return fmt.Errorf("blob: list: %w", err)
		}
		return fn(Info{Key: key, Size: fi.Size(), ModTime: fi.ModTime()})
	})
}

// RemoveStaleTemps deletes temporary objects last modified before cutoff:
// leftovers of writes that crashed before Commit or Abort. Writes in progress
// keep their temporary file's modification time fresh, so a cutoff well in
// the past (e.g. an hour) never removes one. ours is not consulted: a
// temporary has no key yet, and the directory <root>/tmp and the names
// upload-* in it are this store's own, so nothing else is ever removed.
func (d *Dir) RemoveStaleTemps(ctx context.Context, cutoff time.Time, ours func(key string) bool) (int, error) {
	entries, err := os.ReadDir(d.tmp)
	if err != nil {
		return 0, fmt.Errorf("blob: list temporaries: %w", err)
	}
	n := 0
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		if !strings.HasPrefix(e.Name(), "upload-") {
			continue
		}
		fi, err := e.Info()
		if err != nil || !fi.ModTime().Before(cutoff) {
			continue
		}
		if err := os.Remove(filepath.Join(d.tmp, e.Name())); err == nil {
			n++
		}
	}
	return n, nil
}

// TempSweeper is implemented by stores that keep temporaries needing an
// explicit sweep (Dir does, and S3 buckets: their multipart uploads).
type TempSweeper interface {
	// RemoveStaleTemps removes temporaries older than cutoff, and, where a
	// temporary is named by the key it is for (an S3 multipart upload),
	// only those whose key ours accepts (files.IsBlobKey: a bucket may
	// hold other uploads than ekm's). A nil ours accepts no key.
	RemoveStaleTemps(ctx context.Context, cutoff time.Time, ours func(key string) bool) (int, error)
}

var _ TempSweeper = (*Dir)(nil)

// ClaimDeployment writes <root>/.ekm-deployment if it is absent: the
// content goes to a temporary file first, which is then hard-linked under
// the marker's name (link, like O_EXCL, fails if the name exists, and the
// marker appears complete or not at all).
func (d *Dir) ClaimDeployment(ctx context.Context, id string) error {
	return Claim(ctx, id, d.createMarker, d.readMarker)
}

// Deployment reads <root>/.ekm-deployment.
func (d *Dir) Deployment(ctx context.Context) (string, error) {
	return ReadDeployment(ctx, d.readMarker)
}

func (d *Dir) createMarker(ctx context.Context, content []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f, err := os.CreateTemp(d.tmp, "marker-*")
	if err != nil {
		return fmt.Errorf("blob: %w", err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(content); err != nil {
		f.Close()
		return fmt.Errorf("blob: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("blob: sync: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("blob: %w", err)
	}
	if err := os.Link(f.Name(), filepath.Join(d.root, MarkerName)); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return ErrExists
		}
		return fmt.Errorf("blob: %w", err)
	}
	return syncDir(d.root)
}

func (d *Dir) readMarker(ctx context.Context) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(d.root, MarkerName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("blob: %w", err)
	}
	return b, nil
}
