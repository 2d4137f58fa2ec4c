package files

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ekm-dev/ekm/blob"
	"github.com/ekm-dev/ekm/store"
)

// SweepResult counts what Sweep removed.
type SweepResult struct {
	OrphanBlobs int // committed blobs no file record points to
	StaleTemps  int // temporaries of uploads that never finished
}

// SweepMargin is what the sweep's grace adds to the longest write
// (DefaultMaxWrite): the clocks of ekm's replicas and of the blob store
// may disagree, and the record of a write that made its deadline may take
// a while to commit (Store.Commit bounds that by recordSlack).
const SweepMargin = time.Hour

// SweepGrace is how old a blob without a record must be before Sweep may
// remove it: Sweep(ctx, st, blobs, now.Add(-SweepGrace)).
//
// Why it is safe: every write through Store.Create has a deadline
// DefaultMaxWrite after it started, past which its record is never
// written (Store.Commit, Store.Replace refuse and remove the blob), and a
// blob is dated no earlier than its write started — at its commit on the
// local directory, Azure and GCS, at the start of its multipart upload on
// S3 (which is why the grace cannot be a fixed hour: an S3 upload over
// 5 GiB, or one whose restamp has not happened yet, is dated by its
// start however long it took). So a blob older than SweepGrace without a
// record belongs to a write that ended, one way or the other, at least
// SweepMargin ago, and will never get one.
const SweepGrace = DefaultMaxWrite + SweepMargin

// Sweep removes what interrupted uploads, deletes and re-encryptions leave
// behind: blobs no file record points to (no record, or a record whose
// BlobKey is another blob: re-encrypted content replaced it) and stale
// temporaries, both only if older than cutoff, and only under keys ekm
// makes (ParseBlobKey): anything else in the bucket is not ours to judge
// and is never deleted. Uploads and re-encryptions commit the blob before
// the record, so a young blob without a record may be a write in flight:
// pass now.Add(-SweepGrace) (tests of writers that use a shorter
// Store.MaxWrite may pass now minus that plus SweepMargin). Run it at
// startup.
//
// Sweep deletes nothing, and returns an error wrapping ErrNotOurStore,
// unless the blob store's deployment marker names the database's
// deployment (store.Queries.DeploymentID, blob.Store.Deployment): a
// deployment that lost the race to claim the store, or whose marker was
// replaced by another's, must never judge that deployment's blobs by its
// own records. A database that never claimed a store (only tools and tests
// that assemble the parts themselves: app.Open always claims) sweeps only
// a store without a marker.
func Sweep(ctx context.Context, st store.Store, blobs blob.Store, cutoff time.Time) (SweepResult, error) {
	var res SweepResult
	if err := checkDeployment(ctx, st, blobs); err != nil {
		return res, err
	}
	var orphans []string
	err := blobs.List(ctx, func(i blob.Info) error {
		if !i.ModTime.Before(cutoff) {
			return nil
		}
		orphan, err := isOrphan(ctx, st, i.Key)
		if orphan {
			orphans = append(orphans, i.Key)
		}
		return err
	})
	if err != nil {
		return res, fmt.Errorf("sweep: listing blobs: %w", err)
	}
	for _, k := range orphans {
		// Re-check: a record may have been created since (only possible for
		// a blob younger than cutoff, but deleting content is irreversible).
		if orphan, err := isOrphan(ctx, st, k); err != nil || !orphan {
			continue
		}
		if err := blobs.Delete(ctx, k); err != nil && !errors.Is(err, blob.ErrNotFound) {
			return res, fmt.Errorf("sweep: deleting orphan blob: %w", err)
		}
		res.OrphanBlobs++
	}
	if ts, ok := blobs.(blob.TempSweeper); ok {
		n, err := ts.RemoveStaleTemps(ctx, cutoff, IsBlobKey)
		res.StaleTemps = n
		if err != nil {
			return res, fmt.Errorf("sweep: %w", err)
		}
	}
	return res, nil
}

// ErrNotOurStore: the blob store's deployment marker does not name the
// database's deployment, so Sweep deleted nothing.
var ErrNotOurStore = errors.New("sweep: the blob store is not this deployment's")

// checkDeployment: the marker names the database's deployment (or neither
// has one).
func checkDeployment(ctx context.Context, st store.Store, blobs blob.Store) error {
	ours, err := st.DeploymentID(ctx)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("sweep: reading the deployment id: %w", err)
	}
	marked, err := blobs.Deployment(ctx)
	if err != nil && !errors.Is(err, blob.ErrNotFound) {
		return fmt.Errorf("%w: reading its deployment marker: %w", ErrNotOurStore, err)
	}
	if ours == marked {
		return nil
	}
	switch {
	case marked == "":
		return fmt.Errorf("%w: it has no deployment marker %s (this database is deployment %s; a server claims it again before its next sweep)", ErrNotOurStore, blob.MarkerName, ours)
	case ours == "":
		return fmt.Errorf("%w: its marker %s names deployment %s, this database has no deployment id", ErrNotOurStore, blob.MarkerName, marked)
	}
	return fmt.Errorf("%w: its marker %s names deployment %s, this database is deployment %s", ErrNotOurStore, blob.MarkerName, marked, ours)
}

// isOrphan reports whether no file record points at the content blob key.
// Keys that are not content blob keys are never orphans: not ours to judge.
func isOrphan(ctx context.Context, st store.Store, key string) (bool, error) {
	org, proj, id, ok := ParseBlobKey(key)
	if !ok {
		return false, nil
	}
	f, err := st.GetFile(ctx, org, proj, id)
	if errors.Is(err, store.ErrNotFound) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return f.BlobKey != key, nil
}
