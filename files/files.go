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
//     record with complete content or an orphan blob, which Sweep removes.
//
// The Files API (package dataplane) and re-encryption (package reencrypt)
// both store files through this package.
package files

import (
	"context"
	"errors"
	"io"
	"log/slog"

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

// Store keeps file records and their content blobs consistent.
type Store struct {
	Records store.Store
	Blobs   blob.Store
	Logger  *slog.Logger
}

func (s *Store) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// Create starts the content blob of a new file at f.BlobKey (set from the
// file's ids if empty).
func (s *Store) Create(ctx context.Context, f *store.File) (blob.Writer, error) {
	if f.BlobKey == "" {
		f.BlobKey = BlobKey(f.OrgID, f.ProjectID, f.ID)
	}
	return s.Blobs.Create(ctx, f.BlobKey)
}

// Commit makes a new file visible: its blob durable first, then its record.
// The record is written whatever the caller's context does now (a
// cancellation racing the commit must not leave us unsure whether the
// record exists); if it cannot be written, the blob is removed when the
// record certainly does not exist. bw must be the writer Create returned.
func (s *Store) Commit(ctx context.Context, f store.File, bw blob.Writer) error {
	if err := bw.Commit(); err != nil {
		return err
	}
	bg := context.WithoutCancel(ctx)
	if err := s.Records.CreateFile(bg, f); err != nil {
		if _, gerr := s.Records.GetFile(bg, f.OrgID, f.ProjectID, f.ID); errors.Is(gerr, store.ErrNotFound) {
			if derr := s.Blobs.Delete(bg, f.BlobKey); derr != nil {
				s.log().Error("removing content of unrecorded file", "file_id", f.ID, "err", derr)
			}
		}
		return err
	}
	return nil
}

// Replace points the record of a file at new content whose blob (nf.BlobKey,
// from RewriteBlobKey) is already committed, if the record still points at
// old.BlobKey (compare-and-set; store.ErrConflict if not, store.ErrNotFound
// if the file is gone). Then it deletes the blob that lost: the old one on
// success, the new one otherwise. Not cancellable: a cancellation racing the
// swap must not leave us unsure which blob the record points at, so an
// ambiguous failure is resolved by reading the record back.
func (s *Store) Replace(ctx context.Context, nf store.File, old store.File) error {
	bg := context.WithoutCancel(ctx)
	err := s.Records.ReplaceFileContent(bg, nf, old.BlobKey)
	if err != nil && !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrNotFound) {
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
