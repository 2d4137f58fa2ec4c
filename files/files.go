// Package files says what a stored file is and keeps its two halves
// consistent: a record in the store (metadata, the name only as
// ciphertext) and a content blob of envelope ciphertext in the blob store.
//
// The rules, for every blob backend:
//   - blob keys reveal nothing but ids: <org>/<project>/<file id>, and a
//     fresh <…>_k<version>-<random> for every rewrite (BlobKey,
//     RewriteBlobKey); content is never rewritten in place;
//   - content and name are sealed with contexts bound to the org, project,
//     file and key version (ContentContext, NameContext);
//   - commit order: the blob is durable before its record exists (Commit),
//     a replacement swaps the record by compare-and-set on the old blob key
//     and only then deletes the old blob (Replace), a delete removes the
//     record before the blob (Delete); so a crash at any point leaves a
//     record with complete content or an orphan blob, which Sweep removes;
//   - every write has a deadline (Store.MaxWrite, DefaultMaxWrite) past
//     which its record is never written, so Sweep's grace (SweepGrace)
//     can tell an orphan from a write in flight on every backend, however
//     large or slow the write.
//
// The Files API (package dataplane) and re-encryption (package reencrypt)
// both store files through this package.
package files

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/ekm-dev/ekm/blob"
	"github.com/ekm-dev/ekm/envelope"
	"github.com/ekm-dev/ekm/store"
)

// Caller contexts of a file's two ciphertexts (docs/DATA.md).
const (
	callerContent  = "file-content"
	callerFilename = "file-name"
)

// ContentContext is the envelope context of f's content.
func ContentContext(f *store.File) envelope.Context {
	return envelope.Context{OrgID: f.OrgID, ProjectID: f.ProjectID, ObjectID: f.ID, KeyVersion: uint32(f.KeyVersion), Caller: []byte(callerContent)}
}

// NameContext is the envelope context of f's name ciphertext.
func NameContext(f *store.File) envelope.Context {
	return envelope.Context{OrgID: f.OrgID, ProjectID: f.ProjectID, ObjectID: f.ID, KeyVersion: uint32(f.KeyVersion), Caller: []byte(callerFilename)}
}

// DefaultMaxWrite is the longest one write of a file's content may take,
// from Store.Create to its record (an upload: the whole request body; a
// re-encryption: one file's copy): at 512 MiB, the default largest file,
// 25 KB/s. A write that outlasts it fails with ErrWriteTooLong and leaves
// nothing. Sweep's grace (SweepGrace) is derived from it: raising it
// means waiting longer for orphans to go, never losing a file.
const DefaultMaxWrite = 6 * time.Hour

// recordSlack bounds the record write of a write that made its deadline;
// it must stay well inside SweepMargin.
const recordSlack = 10 * time.Minute

// ErrWriteTooLong: a write outlasted its deadline (Store.MaxWrite); its
// blob was abandoned or removed and no record was written.
var ErrWriteTooLong = errors.New("files: the write outlasted the longest a write may take")

// Store keeps file records and their content blobs consistent.
type Store struct {
	Records store.Store
	Blobs   blob.Store
	Logger  *slog.Logger
	// MaxWrite bounds each write (default DefaultMaxWrite). Only tests
	// shorten it: Sweep's grace must exceed every writer's MaxWrite by
	// SweepMargin, and the servers' sweep uses SweepGrace.
	MaxWrite time.Duration
}

func (s *Store) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// Create starts the content blob of a new file, or of new content of one
// (a re-encryption), at f.BlobKey (set from the file's ids if empty). The
// write has MaxWrite from now: its context ends then (abandoning the
// upload), and Commit or Replace refuse it after that.
func (s *Store) Create(ctx context.Context, f *store.File) (blob.Writer, error) {
	if f.BlobKey == "" {
		f.BlobKey = BlobKey(f.OrgID, f.ProjectID, f.ID)
	}
	maxWrite := s.MaxWrite
	if maxWrite <= 0 {
		maxWrite = DefaultMaxWrite
	}
	deadline := time.Now().Add(maxWrite)
	wctx, cancel := context.WithDeadline(ctx, deadline)
	bw, err := s.Blobs.Create(wctx, f.BlobKey)
	if err != nil {
		cancel()
		return nil, err
	}
	return &writer{w: bw, deadline: deadline, cancel: cancel}, nil
}

// writer is a blob.Writer with the deadline of its write.
type writer struct {
	w        blob.Writer
	deadline time.Time
	cancel   context.CancelFunc

	mu        sync.Mutex
	done      bool
	committed bool
}

func (w *writer) late() bool { return !time.Now().Before(w.deadline) }

func (w *writer) Write(p []byte) (int, error) {
	if w.late() {
		return 0, ErrWriteTooLong
	}
	n, err := w.w.Write(p)
	if err != nil && w.late() {
		// The deadline ended the upload: that is the cause, not the store.
		err = fmt.Errorf("%w (%v)", ErrWriteTooLong, err)
	}
	return n, err
}

// Commit commits the blob if the deadline has not passed.
func (w *writer) Commit() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return nil
	}
	w.done = true
	defer w.cancel()
	if w.late() {
		_ = w.w.Abort()
		return ErrWriteTooLong
	}
	if err := w.w.Commit(); err != nil {
		if w.late() {
			return fmt.Errorf("%w (%v)", ErrWriteTooLong, err)
		}
		return err
	}
	w.committed = true
	return nil
}

func (w *writer) Abort() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return nil
	}
	w.done = true
	defer w.cancel()
	return w.w.Abort()
}

// own returns bw as the writer Create made, or an error (aborting bw).
func own(bw blob.Writer) (*writer, error) {
	w, ok := bw.(*writer)
	if !ok {
		_ = bw.Abort()
		return nil, errors.New("files: the writer was not made by Store.Create")
	}
	return w, nil
}

// recordContext is the context of the record write that follows w's
// blob: not cancellable by the caller (a cancellation racing the commit
// must not leave us unsure whether the record changed), bounded by the
// write's deadline plus recordSlack (Sweep's grace relies on it).
func recordContext(ctx context.Context, w *writer) (context.Context, context.CancelFunc) {
	return context.WithDeadline(context.WithoutCancel(ctx), w.deadline.Add(recordSlack))
}

// Commit makes a new file visible: its blob durable first, then its record.
// The record is written whatever the caller's context does now (a
// cancellation racing the commit must not leave us unsure whether the
// record exists), but only if the write's deadline has not passed
// (ErrWriteTooLong; see SweepGrace); if it cannot be written, the blob is
// removed when the record certainly does not exist. bw must be the writer
// Create returned.
func (s *Store) Commit(ctx context.Context, f store.File, bw blob.Writer) error {
	w, err := own(bw)
	if err != nil {
		return err
	}
	if err := w.Commit(); err != nil {
		return err
	}
	bg := context.WithoutCancel(ctx)
	if w.late() {
		if derr := s.Blobs.Delete(bg, f.BlobKey); derr != nil && !errors.Is(derr, blob.ErrNotFound) {
			s.log().Error("removing content of a write past its deadline; Sweep will", "file_id", f.ID, "err", derr)
		}
		return ErrWriteTooLong
	}
	rctx, cancel := recordContext(ctx, w)
	defer cancel()
	if err := s.Records.CreateFile(rctx, f); err != nil {
		if _, gerr := s.Records.GetFile(bg, f.OrgID, f.ProjectID, f.ID); errors.Is(gerr, store.ErrNotFound) {
			if derr := s.Blobs.Delete(bg, f.BlobKey); derr != nil {
				s.log().Error("removing content of unrecorded file", "file_id", f.ID, "err", derr)
			}
		}
		return err
	}
	return nil
}

// Replace commits new content of a file, written through bw (from Create
// with nf, nf.BlobKey from RewriteBlobKey), and points the file's record
// at it if the record still points at old.BlobKey (compare-and-set;
// store.ErrConflict if not, store.ErrNotFound if the file is gone) and
// the write's deadline has not passed (ErrWriteTooLong). Then it deletes
// the blob that lost: the old one on success, the new one otherwise. The
// swap is not cancellable: a cancellation racing it must not leave us
// unsure which blob the record points at, so an ambiguous failure is
// resolved by reading the record back.
func (s *Store) Replace(ctx context.Context, nf store.File, old store.File, bw blob.Writer) error {
	w, err := own(bw)
	if err != nil {
		return err
	}
	if err := w.Commit(); err != nil {
		return err
	}
	bg := context.WithoutCancel(ctx)
	if w.late() {
		err = ErrWriteTooLong
	} else {
		rctx, cancel := recordContext(ctx, w)
		err = s.Records.ReplaceFileContent(rctx, nf, old.BlobKey)
		cancel()
	}
	if err != nil && !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, ErrWriteTooLong) {
		if cur, gerr := s.Records.GetFile(bg, nf.OrgID, nf.ProjectID, nf.ID); gerr == nil && cur.BlobKey == nf.BlobKey {
			err = nil
		}
	}
	if err != nil {
		// The record did not take the new blob: it is ours alone to remove.
		if derr := s.Blobs.Delete(bg, nf.BlobKey); derr != nil {
			s.log().Warn("removing unused blob failed; Sweep will", "file_id", nf.ID, "err", derr)
		}
		return err
	}
	if err := s.Blobs.Delete(bg, old.BlobKey); err != nil && !errors.Is(err, blob.ErrNotFound) {
		s.log().Warn("removing replaced blob failed; Sweep will", "file_id", nf.ID, "err", err)
	}
	return nil
}

// Delete removes a file: record first, then content, so a failure in
// between leaves an orphan blob for Sweep, never a listed file without
// content. store.ErrNotFound if a concurrent delete won.
func (s *Store) Delete(ctx context.Context, f store.File) error {
	if err := s.Records.DeleteFile(ctx, f.OrgID, f.ProjectID, f.ID); err != nil {
		return err
	}
	if err := s.Blobs.Delete(context.WithoutCancel(ctx), f.BlobKey); err != nil && !errors.Is(err, blob.ErrNotFound) {
		s.log().Error("removing content of deleted file; Sweep will retry", "file_id", f.ID, "err", err)
	}
	return nil
}

// Open opens f's content. If a replacement moved the content (and removed
// the old blob) since f was read, it reads the record again and opens the
// new content; it returns the record the content belongs to.
// store.ErrNotFound: the file was deleted meanwhile; blob.ErrNotFound: the
// record's content is missing.
func (s *Store) Open(ctx context.Context, f store.File) (io.ReadCloser, store.File, error) {
	rc, _, err := s.Blobs.Open(ctx, f.BlobKey)
	if errors.Is(err, blob.ErrNotFound) {
		nf, gerr := s.Records.GetFile(ctx, f.OrgID, f.ProjectID, f.ID)
		switch {
		case errors.Is(gerr, store.ErrNotFound):
			return nil, f, gerr
		case gerr == nil && nf.BlobKey != f.BlobKey:
			f = nf
			rc, _, err = s.Blobs.Open(ctx, f.BlobKey)
		}
	}
	return rc, f, err
}
