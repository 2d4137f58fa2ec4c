package dataplane

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ekm-dev/ekm/blob"
	"github.com/ekm-dev/ekm/store"
)

// SweepResult counts what Sweep removed.
type SweepResult struct {
	OrphanBlobs int // committed blobs without a file record
	StaleTemps  int // temporaries of uploads that never finished
}

// Sweep removes what interrupted uploads and deletes leave behind: blobs
// without a file record and stale temporaries, both only if older than
// cutoff. Uploads commit the blob before the record, so a young blob
// without a record may be an upload in flight: pick a cutoff far beyond
// any upload's commit time (an hour is plenty). Run it at startup.
func Sweep(ctx context.Context, st store.Store, blobs blob.Store, cutoff time.Time) (SweepResult, error) {
	var res SweepResult
	var orphans []string
	err := blobs.List(ctx, func(i blob.Info) error {
		if !i.ModTime.Before(cutoff) {
			return nil
		}
		parts := strings.Split(i.Key, "/")
		if len(parts) != 3 {
			return nil // not a file blob; not ours to judge
		}
		_, err := st.GetFile(ctx, parts[0], parts[1], parts[2])
		if errors.Is(err, store.ErrNotFound) {
			orphans = append(orphans, i.Key)
			return nil
		}
		return err
	})
	if err != nil {
		return res, fmt.Errorf("sweep: listing blobs: %w", err)
	}
	for _, k := range orphans {
		// Re-check: a record may have been created since (only possible for
		// a blob younger than cutoff, but deleting content is irreversible).
		parts := strings.Split(k, "/")
		if _, err := st.GetFile(ctx, parts[0], parts[1], parts[2]); !errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err := blobs.Delete(ctx, k); err != nil && !errors.Is(err, blob.ErrNotFound) {
			return res, fmt.Errorf("sweep: deleting orphan blob: %w", err)
		}
		res.OrphanBlobs++
	}
	if ts, ok := blobs.(blob.TempSweeper); ok {
		n, err := ts.RemoveStaleTemps(ctx, cutoff)
		res.StaleTemps = n
		if err != nil {
			return res, fmt.Errorf("sweep: %w", err)
		}
	}
	return res, nil
}
