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
package rotation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/ekm-dev/ekm/ids"
	"github.com/ekm-dev/ekm/keyring"
	"github.com/ekm-dev/ekm/store"
)

// Config configures a Rotator.
type Config struct {
	Store   store.Store
	Keyring *keyring.Keyring
	// Period is the age at which a project's current key version is
	// rotated. Required (> 0).
	Period time.Duration
	// Interval between rounds (default Period/10, at least 1s and at most
	// 10m), jittered by ±10% so replicas spread out.
	Interval time.Duration
	// MaxPerRound bounds rotations attempted per round (default 20).
	MaxPerRound int
	Now         func() time.Time
	Logger      *slog.Logger
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
// MaxPerRound of them. It walks every org's projects a page at a time.
func (r *Rotator) Round(ctx context.Context) (RoundResult, error) {
	var res RoundResult
	budget := r.cfg.MaxPerRound
	for orgAfter := ""; ; {
		orgs, err := r.cfg.Store.ListOrgs(ctx, store.Page{After: orgAfter, Limit: 100})
		if err != nil {
			return res, fmt.Errorf("listing orgs: %w", err)
		}
		for _, o := range orgs {
			for projAfter := ""; ; {
				ps, err := r.cfg.Store.ListProjects(ctx, o.ID, false, store.Page{After: projAfter, Limit: 100})
				if err != nil {
					return res, fmt.Errorf("listing projects of %s: %w", o.ID, err)
				}
				for _, listed := range ps {
					if err := r.consider(ctx, listed, &budget, &res); err != nil {
						return res, err
					}
				}
				if len(ps) < 100 {
					break
				}
				projAfter = ps[len(ps)-1].ID
			}
		}
		if len(orgs) < 100 {
			return res, nil
		}
		orgAfter = orgs[len(orgs)-1].ID
	}
}

// consider rotates one listed project if it is due and the budget allows.
func (r *Rotator) consider(ctx context.Context, listed store.Project, budget *int, res *RoundResult) error {
	p, due, err := r.due(ctx, listed.OrgID, listed.ID)
	if err != nil || !due {
		return err
	}
	if *budget == 0 {
		res.Deferred++
		return nil
	}
	*budget--
	var ek *store.ExternalKey
	if p.ExternalKeyID != "" {
		k, err := r.cfg.Store.GetExternalKey(ctx, p.OrgID, p.ExternalKeyID)
		if err != nil {
			return fmt.Errorf("reading external key of %s: %w", p.ID, err)
		}
		ek = &k
	}
	switch v, err := r.rotate(ctx, p, ek); {
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

// due reports whether a project's current key version has reached Period.
func (r *Rotator) due(ctx context.Context, orgID, projectID string) (store.Project, bool, error) {
	p, err := r.cfg.Store.GetProject(ctx, orgID, projectID)
	if errors.Is(err, store.ErrNotFound) {
		return p, false, nil
	}
	if err != nil {
		return p, false, fmt.Errorf("reading project %s: %w", projectID, err)
	}
	if p.ArchivedAt != nil {
		return p, false, nil
	}
	k, err := r.cfg.Store.GetProjectKey(ctx, orgID, projectID, p.CurrentKeyVersion)
	if err != nil {
		return p, false, fmt.Errorf("reading key of project %s: %w", projectID, err)
	}
	return p, r.cfg.Now().Sub(k.CreatedAt) >= r.cfg.Period, nil
}

// rotate adds version p.CurrentKeyVersion+1 wrapped by ek, only if the
// project is still on the version and key found due (compare-and-set).
func (r *Rotator) rotate(ctx context.Context, p store.Project, ek *store.ExternalKey) (int, error) {
	want := ""
	if ek != nil {
		want = ek.ID
	}
	if p.ExternalKeyID != want {
		return 0, store.ErrConflict // re-keyed since listed
	}
	next := p.CurrentKeyVersion + 1
	rec, pk, err := r.cfg.Keyring.NewVersion(ctx, p.OrgID, p.ID, next, ek)
	if err != nil {
		return 0, err
	}
	defer pk.Zero()
	data, _ := json.Marshal(map[string]any{"project_id": p.ID, "version": next, "scheduled": true})
	err = r.cfg.Store.InTx(ctx, func(q store.Queries) error {
		cur, err := q.GetProject(ctx, p.OrgID, p.ID)
		if err != nil {
			return err
		}
		if cur.CurrentKeyVersion != p.CurrentKeyVersion || cur.ExternalKeyID != p.ExternalKeyID || cur.ArchivedAt != nil {
			return fmt.Errorf("project %s changed since found due: %w", p.ID, store.ErrConflict)
		}
		if err := q.PutProjectKey(ctx, rec); err != nil {
			return err
		}
		cur.CurrentKeyVersion = next
		if err := q.UpdateProject(ctx, cur); err != nil {
			return err
		}
		return q.AppendAudit(ctx, store.AuditEvent{ID: ids.New("audit_log-"), OrgID: p.OrgID, Type: "project.key_rotated",
			EffectiveAt: r.cfg.Now(), ProjectID: p.ID, Data: data})
	})
	if err != nil {
		return 0, err
	}
	r.cfg.Keyring.Prime(p.OrgID, p.ID, next, rec.ExternalKeyID, pk)
	return next, nil
}
