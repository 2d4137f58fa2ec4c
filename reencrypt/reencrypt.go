// Package reencrypt moves a project's stored files onto the current version
// of its project key, after a rotation, so that old versions stop protecting
// any data.
//
// Per file it streams the old content through decryption with the old key
// version and encryption with the current one into a fresh blob key (the
// old blob is never overwritten), seals the file name again, commits the
// blob (fsync), swaps the record with a compare-and-set on the old blob key,
// and only then deletes the old blob. A crash at any point leaves the old or
// the new record, each with complete content; the blob left behind is an
// orphan that files.Sweep removes. Progress is derived from the store
// (files below the current version), so a run resumes where the last one
// stopped, and runs are safe next to serving replicas and each other.
package reencrypt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/ekm-dev/ekm/audit"
	"github.com/ekm-dev/ekm/blob"
	"github.com/ekm-dev/ekm/envelope"
	"github.com/ekm-dev/ekm/files"
	"github.com/ekm-dev/ekm/keyring"
	"github.com/ekm-dev/ekm/secret"
	"github.com/ekm-dev/ekm/store"
)

// Deps are what a run works on.
type Deps struct {
	Store   store.Store
	Keyring *keyring.Keyring
	Blobs   blob.Store
	Logger  *slog.Logger
	Now     func() time.Time
	// Rate bounds files re-encrypted per second (0 = as fast as possible).
	Rate float64
	// BatchSize is how many file records are read at a time (default 100).
	BatchSize int
}

// Result sums up a run.
type Result struct {
	// Version is the project key version every file is under at the end.
	Version int
	// Reencrypted files were moved to Version by this run.
	Reencrypted int
	// Skipped files were deleted, or moved by someone else, meanwhile.
	Skipped int
	// Failed lists files whose stored content or name failed authentication
	// (or is missing): they stay on their old version; see the server log.
	Failed []string
}

// ErrFailedFiles: the run finished, but some files could not be read and
// stay under their old key version (Result.Failed).
var ErrFailedFiles = errors.New("reencrypt: some files could not be re-encrypted")

// maxRetries bounds how often one file is retried after losing a
// compare-and-set (someone else changed it between read and swap).
const maxRetries = 3

// Run re-encrypts every file of the project stored under a key version
// below the current one. progress, if not nil, is called with files done
// and the total to do, first with done = 0, and after every file. If the
// project's key is rotated again during the run, the run continues to the
// new version.
func Run(ctx context.Context, d Deps, orgID, projectID string, progress func(done, total int)) (Result, error) {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.BatchSize <= 0 {
		d.BatchSize = 100
	}
	if progress == nil {
		progress = func(int, int) {}
	}
	r := &run{Deps: d, org: orgID, proj: projectID, keys: map[int]secret.Key{}, progress: progress}
	defer r.zero()
	if d.Rate > 0 {
		r.tick = time.NewTicker(time.Duration(float64(time.Second) / d.Rate))
		defer r.tick.Stop()
	}
	err := r.all(ctx)
	if err == nil && len(r.res.Failed) > 0 {
		err = fmt.Errorf("%w: %d files (first: %s)", ErrFailedFiles, len(r.res.Failed), r.res.Failed[0])
	}
	r.audit(ctx)
	return r.res, err
}

type run struct {
	Deps
	org, proj   string
	keys        map[int]secret.Key
	res         Result
	done, total int
	progress    func(done, total int)
	tick        *time.Ticker
	buf         []byte
}

func (r *run) zero() {
	for _, k := range r.keys {
		k.Zero()
	}
}

// key returns a project key version, fetched once per run.
func (r *run) key(ctx context.Context, v int) (secret.Key, error) {
	if k, ok := r.keys[v]; ok {
		return k, nil
	}
	k, err := r.Keyring.Key(ctx, r.org, r.proj, v)
	if err != nil {
		return secret.Key{}, err
	}
	r.keys[v] = k
	return k, nil
}

// all makes passes until no file is below the project's current version.
func (r *run) all(ctx context.Context) error {
	for {
		p, err := r.Store.GetProject(ctx, r.org, r.proj)
		if err != nil {
			return fmt.Errorf("reencrypt: project %s: %w", r.proj, err)
		}
		if p.CurrentKeyVersion == r.res.Version {
			return nil // a whole pass at this version is done
		}
		r.res.Version = p.CurrentKeyVersion
		n, err := r.Store.CountFilesBelowKeyVersion(ctx, r.org, r.proj, p.CurrentKeyVersion)
		if err != nil {
			return fmt.Errorf("reencrypt: counting files: %w", err)
		}
		r.total = r.done + n
		r.progress(r.done, r.total)
		if err := r.pass(ctx, p.CurrentKeyVersion); err != nil {
			return err
		}
	}
}

// pass re-encrypts, in id order, the files below version.
func (r *run) pass(ctx context.Context, version int) error {
	after := ""
	for {
		files, err := r.Store.FilesBelowKeyVersion(ctx, r.org, r.proj, version, after, r.BatchSize)
		if err != nil {
			return fmt.Errorf("reencrypt: listing files: %w", err)
		}
		if len(files) == 0 {
			return nil
		}
		for _, f := range files {
			if err := r.wait(ctx); err != nil {
				return err
			}
			if err := r.file(ctx, f, version); err != nil {
				return err
			}
			r.done++
			r.total = max(r.total, r.done)
			r.progress(r.done, r.total)
		}
		after = files[len(files)-1].ID
	}
}

func (r *run) wait(ctx context.Context) error {
	if r.tick == nil {
		return ctx.Err()
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-r.tick.C:
		return nil
	}
}

// errBadFile marks a file whose stored data cannot be read: it is reported
// and skipped, and the run goes on.
type errBadFile struct{ err error }

func (e errBadFile) Error() string { return e.err.Error() }
func (e errBadFile) Unwrap() error { return e.err }

// file re-encrypts one file, retrying if it changed under us.
func (r *run) file(ctx context.Context, f store.File, version int) error {
	for attempt := 0; ; attempt++ {
		moved, err := r.once(ctx, f, version)
		var bad errBadFile
		switch {
		case err == nil && moved:
			r.res.Reencrypted++
			return nil
		case err == nil:
			r.res.Skipped++
			return nil
		case errors.As(err, &bad):
			r.Logger.Error("reencrypt: file content or name failed its integrity check; left on its key version",
				"org_id", r.org, "project_id", r.proj, "file_id", f.ID, "key_version", f.KeyVersion, "err", bad.err)
			r.res.Failed = append(r.res.Failed, f.ID)
			return nil
		case !errors.Is(err, store.ErrConflict) || attempt >= maxRetries:
			return fmt.Errorf("reencrypt: file %s: %w", f.ID, err)
		}
		// Lost the compare-and-set: read the record again and decide anew.
		nf, err := r.Store.GetFile(ctx, r.org, r.proj, f.ID)
		if errors.Is(err, store.ErrNotFound) {
			r.res.Skipped++
			return nil
		}
		if err != nil {
			return fmt.Errorf("reencrypt: file %s: %w", f.ID, err)
		}
		if nf.KeyVersion >= version {
			r.res.Skipped++
			return nil
		}
		f = nf
	}
}

// once is one attempt at one file. It reports whether this attempt moved
// the file to version (false: the file is gone or was moved by another).
func (r *run) once(ctx context.Context, f store.File, version int) (moved bool, err error) {
	keys := func(v uint32) (secret.Key, error) { return r.key(ctx, int(v)) }
	newKey, err := r.key(ctx, version)
	if err != nil {
		return false, err
	}
	nf := f
	nf.KeyVersion = version
	name, err := envelope.Open(keys, files.NameContext(&f), f.NameCiphertext)
	if err != nil {
		return false, classify(err)
	}
	nf.NameCiphertext, err = envelope.Seal(newKey, files.NameContext(&nf), name)
	secret.Wipe(name)
	if err != nil {
		return false, fmt.Errorf("sealing name: %w", err)
	}

	rc, _, err := r.Blobs.Open(ctx, f.BlobKey)
	if errors.Is(err, blob.ErrNotFound) {
		// Deleted, or re-encrypted by another run, since we listed it: the
		// caller re-reads the record. If it is unchanged, its content is
		// really missing.
		cur, gerr := r.Store.GetFile(ctx, r.org, r.proj, f.ID)
		if errors.Is(gerr, store.ErrNotFound) || gerr == nil && cur.BlobKey != f.BlobKey {
			return false, store.ErrConflict
		}
		return false, errBadFile{fmt.Errorf("content blob missing: %w", err)}
	}
	if err != nil {
		return false, fmt.Errorf("opening content: %w", err)
	}
	defer rc.Close()
	nf.BlobKey = files.RewriteBlobKey(&f, version)
	bw, err := r.copy(ctx, rc, keys, &f, &nf, newKey)
	if err != nil {
		return false, err
	}

	// The blob is committed, then the swap is a compare-and-set on the old
	// blob key; the blob that lost is removed (files.Store.Replace).
	err = r.fileStore().Replace(ctx, nf, f, bw)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil // deleted meanwhile
	}
	if err != nil {
		return false, err
	}
	return true, nil
}

func (r *run) fileStore() *files.Store {
	return &files.Store{Records: r.Store, Blobs: r.Blobs, Logger: r.Logger}
}

// copy streams f's plaintext from rc, re-encrypted for nf, into nf's blob,
// and returns the blob's writer to commit (files.Store.Replace); on error
// the write is abandoned. Memory use is two segment buffers whatever the
// size.
func (r *run) copy(ctx context.Context, rc io.Reader, keys envelope.KeyFunc, f, nf *store.File, newKey secret.Key) (_ blob.Writer, err error) {
	pr, err := envelope.NewReader(rc, keys, files.ContentContext(f))
	if err != nil {
		return nil, classify(err)
	}
	bw, err := r.fileStore().Create(ctx, nf)
	if err != nil {
		return nil, fmt.Errorf("creating blob: %w", err)
	}
	defer func() {
		if err != nil {
			_ = bw.Abort()
		}
	}()
	ew, err := envelope.NewWriter(bw, newKey, files.ContentContext(nf))
	if err != nil {
		return nil, fmt.Errorf("starting encryption: %w", err)
	}
	if r.buf == nil {
		r.buf = make([]byte, envelope.SegmentSize)
	}
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		k, rerr := pr.Read(r.buf)
		if k > 0 {
			n += int64(k)
			if n > f.Bytes {
				return nil, errBadFile{errors.New("content longer than its record")}
			}
			if _, err := ew.Write(r.buf[:k]); err != nil {
				return nil, fmt.Errorf("writing content: %w", err)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return nil, classify(rerr)
		}
	}
	if n != f.Bytes {
		return nil, errBadFile{errors.New("content shorter than its record")}
	}
	if err := ew.Close(); err != nil {
		return nil, fmt.Errorf("writing content: %w", err)
	}
	return bw, nil
}

// classify marks authentication and format failures of stored data as a
// bad file; anything else (key unavailable, I/O) stops the run.
func classify(err error) error {
	if errors.Is(err, envelope.ErrAuth) || errors.Is(err, envelope.ErrFormat) || errors.Is(err, store.ErrNotFound) {
		return errBadFile{err}
	}
	return err
}

// audit records one summary event for the run, if it changed anything.
func (r *run) audit(ctx context.Context) {
	if r.res.Reencrypted == 0 && len(r.res.Failed) == 0 {
		return
	}
	ev := audit.ProjectReencrypted{ProjectID: r.proj, Version: r.res.Version,
		Reencrypted: r.res.Reencrypted, Skipped: r.res.Skipped, Failed: len(r.res.Failed)}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := r.Store.AppendAudit(ctx, audit.Record(audit.Entry{OrgID: r.org, ProjectID: r.proj, At: r.Now()}, ev))
	if err != nil {
		r.Logger.Warn("reencrypt: recording audit event failed", "project_id", r.proj, "err", err)
	}
}
