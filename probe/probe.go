// Package probe watches the health of every external key that protects
// data, and turns what it sees into ekm's revocation and rotation behaviour:
//
//   - revocation-class failure (access withdrawn, key disabled/deleted): the
//     key is marked unavailable, every cached project key it wraps is evicted
//     at once, and every read and write of its projects fails fast;
//   - outage-class failure (timeouts, 5xx, 429): the key is marked degraded,
//     cached project keys keep serving until their hard TTL;
//   - success after either: the key is valid again and nothing was lost;
//   - a new current KEK version (the customer rotated): recorded, and project
//     keys still wrapped by older versions are rewrapped in the background,
//     idempotently and at a bounded rate.
//
// Each replica runs its own probe, so each replica's view is at most one
// interval old. The KMS load is one decrypt per key per interval (plus a
// describe+encrypt every EncryptEvery rounds), independent of request rate.
package probe

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/ekm-dev/ekm/ids"
	"github.com/ekm-dev/ekm/keyring"
	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/metrics"
	"github.com/ekm-dev/ekm/secret"
	"github.com/ekm-dev/ekm/store"
)

// Config configures a Prober.
type Config struct {
	Store   store.Store
	Keyring *keyring.Keyring
	// Interval between probes of one key (default 30s). Each round is
	// jittered by ±10% so replicas and keys spread out.
	Interval time.Duration
	// EncryptEvery: every Nth round also describes the key (rotation
	// detection) and does an encrypt (default 10; 1 = every round).
	EncryptEvery int
	// RewrapPerRound bounds background rewraps per key per round after a
	// KEK rotation (default 50), keeping well below Key Vault's limits.
	RewrapPerRound int
	Now            func() time.Time
	Logger         *slog.Logger
	Metrics        *metrics.Metrics
}

// Prober runs health probes.
type Prober struct {
	cfg   Config
	mu    sync.Mutex
	round map[string]int // per external key: rounds done
}

// New returns a prober.
func New(cfg Config) *Prober {
	if cfg.Interval <= 0 {
		cfg.Interval = 30 * time.Second
	}
	if cfg.EncryptEvery <= 0 {
		cfg.EncryptEvery = 10
	}
	if cfg.RewrapPerRound <= 0 {
		cfg.RewrapPerRound = 50
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Prober{cfg: cfg, round: map[string]int{}}
}

// Run probes immediately, then every Interval (jittered) until ctx is done.
func (p *Prober) Run(ctx context.Context) {
	for {
		p.Round(ctx)
		j := 0.9 + 0.2*rand.Float64()
		t := time.NewTimer(time.Duration(float64(p.cfg.Interval) * j))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// Round probes every external key in use once, concurrently.
func (p *Prober) Round(ctx context.Context) {
	keys, err := p.cfg.Store.ExternalKeysInUse(ctx)
	if err != nil {
		if ctx.Err() == nil {
			p.cfg.Logger.Warn("probe: listing external keys failed", "err", err)
		}
		return
	}
	var wg sync.WaitGroup
	counts := map[string]float64{store.StatusValid: 0, store.StatusDegraded: 0, store.StatusUnavailable: 0}
	var cmu sync.Mutex
	for _, ek := range keys {
		wg.Go(func() {
			st := p.Probe(ctx, ek)
			cmu.Lock()
			counts[st]++
			cmu.Unlock()
		})
	}
	wg.Wait()
	if p.cfg.Metrics != nil {
		for s, n := range counts {
			p.cfg.Metrics.KeyStatus.WithLabelValues(s).Set(n)
		}
	}
}

// Probe checks one external key and applies the result. It returns the
// status it concluded.
func (p *Prober) Probe(ctx context.Context, ek store.ExternalKey) string {
	p.mu.Lock()
	n := p.round[ek.ID]
	p.round[ek.ID] = n + 1
	p.mu.Unlock()

	epoch := p.cfg.Keyring.GateEpoch(ek.ID)
	err := p.decryptOne(ctx, ek)
	var info kms.KeyInfo
	if err == nil && n%p.cfg.EncryptEvery == 0 {
		info, err = p.describeAndEncrypt(ctx, ek)
	}
	if ctx.Err() != nil {
		return ek.Status
	}
	switch kms.ClassOf(err) {
	case "":
		p.healthy(ctx, ek, info, epoch)
		return store.StatusValid
	case kms.Revoked:
		p.revoked(ctx, ek, err)
		return store.StatusUnavailable
	default: // Outage, Operator, Invalid: not the customer withdrawing access
		p.degraded(ctx, ek, err)
		return store.StatusDegraded
	}
}

// decryptOne unwraps one stored project key of ek: a real decrypt with the
// exact KEK version data depends on. The plaintext is discarded.
func (p *Prober) decryptOne(ctx context.Context, ek store.ExternalKey) error {
	rec, err := p.sampleKey(ctx, ek)
	if err != nil {
		return err
	}
	return p.cfg.Keyring.Call(ctx, &ek, "probe_decrypt", func(ctx context.Context, prov kms.Provider) error {
		pt, err := prov.Unwrap(ctx, kms.Wrapped{KeyVersion: rec.KEKVersion, Algorithm: rec.Algorithm, Ciphertext: rec.Wrapped})
		secret.Wipe(pt)
		return err
	})
}

func (p *Prober) sampleKey(ctx context.Context, ek store.ExternalKey) (store.ProjectKey, error) {
	projects, err := p.cfg.Store.ProjectIDsByExternalKey(ctx, ek.OrgID, ek.ID, false)
	if err != nil {
		return store.ProjectKey{}, err
	}
	for _, pid := range projects {
		recs, err := p.cfg.Store.ListProjectKeys(ctx, ek.OrgID, pid)
		if err != nil {
			return store.ProjectKey{}, err
		}
		for i := len(recs) - 1; i >= 0; i-- {
			if recs[i].ExternalKeyID == ek.ID {
				return recs[i], nil
			}
		}
	}
	return store.ProjectKey{}, errors.New("probe: no project key wrapped by this external key")
}

func (p *Prober) describeAndEncrypt(ctx context.Context, ek store.ExternalKey) (kms.KeyInfo, error) {
	var info kms.KeyInfo
	err := p.cfg.Keyring.Call(ctx, &ek, "probe_describe", func(ctx context.Context, prov kms.Provider) error {
		var err error
		info, err = prov.Describe(ctx)
		return err
	})
	if err != nil {
		return info, err
	}
	err = p.cfg.Keyring.Call(ctx, &ek, "probe_encrypt", func(ctx context.Context, prov kms.Provider) error {
		k := secret.New()
		defer k.Zero()
		_, err := prov.Wrap(ctx, k.Bytes())
		return err
	})
	return info, err
}

func (p *Prober) healthy(ctx context.Context, ek store.ExternalKey, info kms.KeyInfo, epoch uint64) {
	if p.cfg.Keyring.GateEpoch(ek.ID) != epoch && p.cfg.Keyring.Unavailable(ek.ID) != nil {
		return // a request saw a revocation while we probed: trust the newer news
	}
	if p.cfg.Keyring.MarkAvailableSince(ek.ID, epoch) || ek.Status != store.StatusValid {
		p.transition(ctx, ek, store.KeyHealth{Status: store.StatusValid, CurrentKEKVersion: info.CurrentVersion}, "external_key.restored", nil)
		p.cfg.Metrics.KeyEvent("restored")
	}
	if info.CurrentVersion != "" && info.CurrentVersion != ek.CurrentKEKVersion {
		p.rotated(ctx, ek, info.CurrentVersion)
	}
	if info.CurrentVersion != "" || ek.CurrentKEKVersion != "" {
		cur := info.CurrentVersion
		if cur == "" {
			cur = ek.CurrentKEKVersion
		}
		p.rewrapOld(ctx, ek, cur)
	}
}

func (p *Prober) revoked(ctx context.Context, ek store.ExternalKey, err error) {
	u := &keyring.UnavailableError{ExternalKeyID: ek.ID, Class: kms.Revoked, Code: "kms_error", Message: "access to the customer key was withdrawn", Err: err}
	var ke *kms.Error
	if errors.As(err, &ke) {
		u.Code, u.Message = ke.Code, ke.Message
	}
	first := p.cfg.Keyring.MarkUnavailable(ek.ID, u)
	if first || ek.Status != store.StatusUnavailable {
		p.cfg.Logger.Warn("external key unavailable: customer withdrew access", "org_id", ek.OrgID, "external_key_id", ek.ID, "code", u.Code)
		p.transition(ctx, ek, store.KeyHealth{Status: store.StatusUnavailable, Code: u.Code, Message: u.Message}, "external_key.unavailable", u)
		p.cfg.Metrics.KeyEvent("unavailable")
	}
}

func (p *Prober) degraded(ctx context.Context, ek store.ExternalKey, err error) {
	// An outage never evicts and never closes the gate; but if this replica
	// had the key marked revoked, it stays so until a success proves access.
	if ek.Status == store.StatusDegraded {
		return
	}
	code, msg := "kms_unreachable", "the customer's key management service could not be reached"
	var ke *kms.Error
	if errors.As(err, &ke) {
		code, msg = ke.Code, ke.Message
	}
	if p.cfg.Keyring.Unavailable(ek.ID) != nil {
		return
	}
	p.cfg.Logger.Warn("external key degraded", "org_id", ek.OrgID, "external_key_id", ek.ID, "code", code, "class", kms.ClassOf(err))
	p.transition(ctx, ek, store.KeyHealth{Status: store.StatusDegraded, Code: code, Message: msg}, "external_key.degraded", nil)
	p.cfg.Metrics.KeyEvent("degraded")
}

// transition stores the new health and its audit event (once across
// replicas; see Keyring.SetHealth).
func (p *Prober) transition(ctx context.Context, ek store.ExternalKey, h store.KeyHealth, event string, _ *keyring.UnavailableError) {
	p.cfg.Keyring.SetHealth(ctx, ek, h, event)
}

func (p *Prober) rotated(ctx context.Context, ek store.ExternalKey, current string) {
	data, _ := json.Marshal(map[string]string{"external_key_id": ek.ID, "previous_version": ek.CurrentKEKVersion, "current_version": current})
	err := p.cfg.Store.InTx(ctx, func(q store.Queries) error {
		cur, err := q.GetExternalKey(ctx, ek.OrgID, ek.ID)
		if err != nil {
			return err
		}
		if cur.CurrentKEKVersion == current {
			return nil
		}
		if err := q.SetExternalKeyHealth(ctx, ek.OrgID, ek.ID, store.KeyHealth{Status: store.StatusValid, At: p.cfg.Now(), CurrentKEKVersion: current}); err != nil {
			return err
		}
		if cur.CurrentKEKVersion == "" {
			return nil // first observation, not a rotation
		}
		return q.AppendAudit(ctx, store.AuditEvent{ID: ids.New("audit_log-"), OrgID: ek.OrgID, Type: "external_key.rotated", EffectiveAt: p.cfg.Now(), Data: data})
	})
	if err != nil && ctx.Err() == nil {
		p.cfg.Logger.Warn("probe: recording rotation failed", "external_key_id", ek.ID, "err", err)
		return
	}
	p.cfg.Metrics.KeyEvent("rotated")
}

// rewrapOld rewraps up to RewrapPerRound project key versions of ek that are
// still wrapped by a KEK version other than current. Each rewrap is its own
// compare-and-set transaction, so a crash at any point leaves every record
// wrapped by some valid version, and the next round resumes.
func (p *Prober) rewrapOld(ctx context.Context, ek store.ExternalKey, current string) {
	projects, err := p.cfg.Store.ProjectIDsByExternalKey(ctx, ek.OrgID, ek.ID, true)
	if err != nil {
		return
	}
	budget := p.cfg.RewrapPerRound
	for _, pid := range projects {
		recs, err := p.cfg.Store.ListProjectKeys(ctx, ek.OrgID, pid)
		if err != nil {
			return
		}
		for _, rec := range recs {
			if rec.ExternalKeyID != ek.ID || rec.KEKVersion == current {
				continue
			}
			if budget == 0 {
				return
			}
			budget--
			nr, err := p.cfg.Keyring.RewrapVersion(ctx, rec, &ek)
			if err != nil {
				p.cfg.Logger.Warn("probe: rewrap failed; will retry next round", "external_key_id", ek.ID, "project_id", pid, "version", rec.Version, "err", err)
				return
			}
			if nr.KEKVersion != current {
				return // the KMS moved on again; next round catches up
			}
			data, _ := json.Marshal(map[string]any{"external_key_id": ek.ID, "project_id": pid, "version": rec.Version, "from": rec.KEKVersion, "to": nr.KEKVersion})
			err = p.cfg.Store.InTx(ctx, func(q store.Queries) error {
				cur, err := q.GetProjectKey(ctx, ek.OrgID, pid, rec.Version)
				if err != nil {
					return err
				}
				if cur.ExternalKeyID != ek.ID || cur.KEKVersion != rec.KEKVersion {
					return nil // someone else rewrapped or re-keyed meanwhile
				}
				if err := q.PutProjectKey(ctx, nr); err != nil {
					return err
				}
				return q.AppendAudit(ctx, store.AuditEvent{ID: ids.New("audit_log-"), OrgID: ek.OrgID, Type: "external_key.rewrapped", EffectiveAt: p.cfg.Now(), ProjectID: pid, Data: data})
			})
			if err != nil {
				return
			}
		}
	}
}
