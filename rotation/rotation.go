// Package rotation rotates project keys on a schedule: a project whose
// current key version is older than the period gets a new version (wrapped
// by its current external key), which new data is written under from then
// on. Old versions stay for reads until `ekm reencrypt` moves the data.
//
// Every replica may run a Rotator. A rotation is a compare-and-set on the
// version that was found due, so two replicas that find the same project
// due rotate it once: the loser sees store.ErrConflict and moves on.
// Rotations per round are bounded, so a backlog (rotation just enabled on
// an old installation) reaches the customers' KMSs spread out over rounds.
// Each rotation is lifecycle.Service.RotateProjectKey.
package rotation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/ekm-dev/ekm/lifecycle"
	"github.com/ekm-dev/ekm/store"
)

// Config configures a Rotator.
type Config struct {
	Store   store.Store
	Service *lifecycle.Service
	// Period is the age at which a project's current key version is
	// rotated. Required (> 0).
	Period time.Duration
	// Interval between rounds (default Period/10, at least 1s and at most
	// 10m), jittered by ±10% so replicas spread out.
	Interval time.Duration
	// MaxPerRound bounds rotations attempted per round (default 20).
	MaxPerRound int
	// PageSize is how many due projects one store query reads (default 100).
	PageSize int
	Now      func() time.Time
	Logger   *slog.Logger
}

// Rotator runs scheduled rotations.
type Rotator struct{ cfg Config }

// New returns a Rotator.
func New(cfg Config) (*Rotator, error) {
	if cfg.Period <= 0 {
		return nil, errors.New("rotation: period must be positive")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = min(max(cfg.Period/10, time.Second), 10*time.Minute)
	}
	if cfg.MaxPerRound <= 0 {
		cfg.MaxPerRound = 20
	}
	if cfg.PageSize <= 0 {
		cfg.PageSize = 100
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Rotator{cfg: cfg}, nil
}

// Run does a round now and then every Interval until ctx is done.
func (r *Rotator) Run(ctx context.Context) {
	for {
		res, err := r.Round(ctx)
		if err != nil && ctx.Err() == nil {
			r.cfg.Logger.Warn("project key rotation: round failed", "err", err)
		} else if res.Rotated > 0 || res.Failed > 0 {
			r.cfg.Logger.Info("project key rotation", "rotated", res.Rotated, "conflicts", res.Conflicts, "failed", res.Failed, "deferred", res.Deferred)
		}
		t := time.NewTimer(time.Duration(float64(r.cfg.Interval) * (0.9 + 0.2*rand.Float64())))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// RoundResult counts what a round did.
type RoundResult struct {
	Rotated   int // projects this round rotated
	Conflicts int // due projects someone else changed first (another replica)
	Failed    int // rotations that failed (key unavailable, KMS error); retried next round
	Deferred  int // due projects left for later rounds by MaxPerRound
}

// Round rotates the active projects (on customer keys or the operator's
// default key) whose current key version is at least Period old, up to
// MaxPerRound of them. Due projects are selected by the store, a page at a
// time across every org.
func (r *Rotator) Round(ctx context.Context) (RoundResult, error) {
	var res RoundResult
	budget := r.cfg.MaxPerRound
	cutoff := r.cfg.Now().Add(-r.cfg.Period)
	for after := ""; ; {
		due, err := r.cfg.Store.ProjectsDueForRotation(ctx, cutoff, after, r.cfg.PageSize)
		if err != nil {
			return res, fmt.Errorf("listing projects due for rotation: %w", err)
		}
		for _, p := range due {
			if budget == 0 {
				res.Deferred++
				continue
			}
			budget--
			if err := r.rotate(ctx, p, &res); err != nil {
				return res, err
			}
		}
		if len(due) < r.cfg.PageSize {
			return res, nil
		}
		after = due[len(due)-1].ID
	}
}

// rotate adds the next key version of a due project, only if it is still on
// the version and key found due (compare-and-set).
func (r *Rotator) rotate(ctx context.Context, p store.Project, res *RoundResult) error {
	v, err := r.cfg.Service.RotateProjectKey(ctx, "", p.OrgID, p.ID, lifecycle.RotateOptions{Scheduled: true, Expect: &p})
	switch {
	case err == nil:
		res.Rotated++
		r.cfg.Logger.Info("project key rotated", "org_id", p.OrgID, "project_id", p.ID, "version", v)
	case errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound):
		res.Conflicts++
	case ctx.Err() != nil:
		return ctx.Err()
	default:
		res.Failed++
		r.cfg.Logger.Warn("project key rotation failed; will retry", "org_id", p.OrgID, "project_id", p.ID, "err", err)
	}
	return nil
}
