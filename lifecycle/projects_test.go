package lifecycle_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/lifecycle"
	"github.com/ekm-dev/ekm/store"
)

// RotateOptions.MinInterval (the Admin API's bound, finding M4): a second
// rotation within the interval is refused from the stored created_at of the
// current version, before any KMS call and with nothing stored; the first
// rotation after creation and scheduled rotations are not held back.
func TestRotateMinInterval(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	pid, _ := e.Project(t, &e.ek)
	limited := lifecycle.RotateOptions{MinInterval: time.Minute}

	// Version 1 was made by the creation: the first rotation is allowed
	// at once.
	if v, err := e.Service.RotateProjectKey(ctx, "", e.Org, pid, limited); err != nil || v != 2 {
		t.Fatalf("first rotation = %d, %v", v, err)
	}
	created := e.Clock.Now()
	e.Clock.Advance(20 * time.Second)
	wraps, unwraps := e.Fake.Wraps.Load(), e.Fake.Unwraps.Load()
	events := len(e.Events(t, "project.key_rotated"))
	_, err := e.Service.RotateProjectKey(ctx, "", e.Org, pid, limited)
	var rl *lifecycle.RotationRateLimitedError
	if !errors.As(err, &rl) {
		t.Fatalf("second rotation within the interval: %v, want RotationRateLimitedError", err)
	}
	if rl.ProjectID != pid || rl.Version != 2 || !rl.CreatedAt.Equal(created) || rl.Interval != time.Minute || rl.RetryAfter != 40*time.Second {
		t.Fatalf("refusal %+v", rl)
	}
	if n := e.Fake.Wraps.Load() - wraps + e.Fake.Unwraps.Load() - unwraps; n != 0 {
		t.Fatalf("%d KMS calls for a refused rotation", n)
	}
	keys, _ := e.Store.ListProjectKeys(ctx, e.Org, pid)
	p, _ := e.Store.GetProject(ctx, e.Org, pid)
	if len(keys) != 2 || p.CurrentKeyVersion != 2 || len(e.Events(t, "project.key_rotated")) != events {
		t.Fatalf("refused rotation stored something: %d versions, current %d", len(keys), p.CurrentKeyVersion)
	}

	// The schedule (no MinInterval) is not held back.
	if v, err := e.Service.RotateProjectKey(ctx, "", e.Org, pid, lifecycle.RotateOptions{Scheduled: true, Expect: &p}); err != nil || v != 3 {
		t.Fatalf("scheduled rotation within the interval = %d, %v", v, err)
	}
	// …but it counts: the interval runs from version 3's creation.
	e.Clock.Advance(time.Minute - time.Second)
	if _, err := e.Service.RotateProjectKey(ctx, "", e.Org, pid, limited); !errors.As(err, &rl) || rl.Version != 3 || rl.RetryAfter != time.Second {
		t.Fatalf("rotation 59 s after version 3: %v", err)
	}
	e.Clock.Advance(time.Second)
	if v, err := e.Service.RotateProjectKey(ctx, "", e.Org, pid, limited); err != nil || v != 4 {
		t.Fatalf("rotation after the interval = %d, %v", v, err)
	}

	// A version stamped by a clock ahead of this one holds rotations back
	// for at most the interval.
	e.Clock.Advance(-time.Hour)
	if _, err := e.Service.RotateProjectKey(ctx, "", e.Org, pid, limited); !errors.As(err, &rl) || rl.RetryAfter != time.Minute {
		t.Fatalf("rotation behind the version's clock: %v", err)
	}
}

// Concurrent Admin API rotations of one project make one KMS wrap: the
// others are refused on this replica before any call (a concurrent
// update, or, once the first is stored, the interval).
func TestConcurrentRotationsMakeOneWrap(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	pid, _ := e.Project(t, &e.ek)
	limited := lifecycle.RotateOptions{MinInterval: time.Minute}
	wraps := e.Fake.Wraps.Load()
	const n = 32
	var wg sync.WaitGroup
	var ok atomic.Int32
	for range n {
		wg.Go(func() {
			_, err := e.Service.RotateProjectKey(ctx, "", e.Org, pid, limited)
			var rl *lifecycle.RotationRateLimitedError
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, store.ErrConflict), errors.As(err, &rl):
			default:
				t.Errorf("rotation: %v", err)
			}
		})
	}
	wg.Wait()
	if got := e.Fake.Wraps.Load() - wraps; ok.Load() != 1 || got != 1 {
		t.Fatalf("%d rotations stored, %d KMS wraps, want 1 and 1", ok.Load(), got)
	}
}
