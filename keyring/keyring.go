// Package keyring manages the middle of ekm's key hierarchy: project keys.
//
//	customer KEK (in the customer's KMS) → project key (stored wrapped) → data
//
// It creates project key versions wrapped by an external key, unwraps them
// on demand through the KMS provider, keeps the plaintext in a bounded cache
// with a hard TTL, coalesces concurrent misses into one KMS call, and refuses
// fast when an external key is unavailable (revoked). Plaintext keys handed
// out are copies: callers must Zero them when done.
package keyring

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/ekm-dev/ekm/ids"
	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/metrics"
	"github.com/ekm-dev/ekm/secret"
	"github.com/ekm-dev/ekm/store"
)

// DefaultKey is the operator's key for projects created without an external
// key (a local key by default).
type DefaultKey struct {
	Type   string
	Params kms.Params
}

// Config configures a Keyring. Zero durations take the defaults noted.
type Config struct {
	Store    store.Store
	Registry *kms.Registry
	Default  DefaultKey
	// CacheTTL is the hard TTL of an unwrapped project key (default 1h). It is
	// also how long cached keys keep serving through a KMS outage.
	CacheTTL time.Duration
	// CacheSize bounds the number of cached project key versions (default 10000).
	CacheSize int
	// KMSTimeout bounds one KMS call (default 30s).
	KMSTimeout time.Duration
	Now        func() time.Time
	Metrics    *metrics.Metrics
	Logger     *slog.Logger
}

// Keyring is safe for concurrent use.
type Keyring struct {
	cfg   Config
	cache *cache

	mu        sync.Mutex
	providers map[string]openProvider // by external key id ("" = default)
	gates     map[string]*gate        // by external key id
	inflight  map[cacheKey]*flight    // coalesced unwraps
}

type openProvider struct {
	fingerprint string
	p           kms.Provider
}

// gate is this replica's view of an external key's health.
type gate struct {
	unavailable *UnavailableError // non-nil: refuse every use
	epoch       uint64            // bumped on every eviction, so a fill that raced an eviction is not cached
}

// New returns a keyring.
func New(cfg Config) *Keyring {
	if cfg.CacheTTL == 0 {
		cfg.CacheTTL = time.Hour
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = 10000
	}
	if cfg.KMSTimeout == 0 {
		cfg.KMSTimeout = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Keyring{cfg: cfg, cache: newCache(cfg.CacheTTL, cfg.CacheSize, cfg.Now), providers: map[string]openProvider{}, gates: map[string]*gate{}, inflight: map[cacheKey]*flight{}}
}

// UnavailableError means a project's key cannot be used now. Message is safe
// to show to the customer.
type UnavailableError struct {
	ExternalKeyID string
	// Class is kms.Revoked (customer withdrew access: do not retry until it
	// is restored), kms.Outage (retry later) or kms.Operator.
	Class   kms.Class
	Code    string
	Message string
	Err     error
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("customer key %s unavailable (%s, %s): %s", e.ExternalKeyID, e.Class, e.Code, e.Message)
}
func (e *UnavailableError) Unwrap() error { return e.Err }

// Retryable reports whether the caller should try again later.
func (e *UnavailableError) Retryable() bool { return e.Class == kms.Outage }

func unavailable(extKeyID string, err error) *UnavailableError {
	var ke *kms.Error
	u := &UnavailableError{ExternalKeyID: extKeyID, Class: kms.ClassOf(err), Code: "kms_error", Message: "the customer's key management service could not be reached", Err: err}
	if errors.As(err, &ke) {
		u.Code, u.Message = ke.Code, ke.Message
	} else if errors.Is(err, context.DeadlineExceeded) {
		u.Code, u.Message = "kms_timeout", "the customer's key management service did not answer in time"
	}
	return u
}

// Provider returns the KMS provider for an external key (nil = the default).
func (k *Keyring) Provider(ek *store.ExternalKey) (kms.Provider, error) {
	id, typ, orgID, params := "", k.cfg.Default.Type, "", k.cfg.Default.Params
	if ek != nil {
		id, typ, orgID, params = ek.ID, ek.Type, ek.OrgID, ek.Params
	}
	fp := typ + "|" + orgID + "|" + fingerprint(params)
	k.mu.Lock()
	op, ok := k.providers[id]
	k.mu.Unlock()
	if ok && op.fingerprint == fp {
		return op.p, nil
	}
	p, err := k.cfg.Registry.Open(typ, orgID, params)
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	// Bound the map: registrations that fail validation or are deleted leave
	// entries behind. Opening a provider again is cheap (drivers cache their
	// credentials), so dropping them all at the bound is fine.
	if len(k.providers) >= maxProviders {
		clear(k.providers)
	}
	k.providers[id] = openProvider{fingerprint: fp, p: p}
	k.mu.Unlock()
	return p, nil
}

// maxProviders bounds the provider cache.
const maxProviders = 10000

// Forget drops what the keyring holds for a deleted external key: its open
// provider, its gate and any cached project keys.
func (k *Keyring) Forget(extKeyID string) {
	k.cache.evictExternalKey(extKeyID)
	k.mu.Lock()
	delete(k.providers, extKeyID)
	delete(k.gates, extKeyID)
	k.mu.Unlock()
}

func fingerprint(p kms.Params) string {
	b, _ := json.Marshal(p) // map keys are sorted
	return string(b)
}

func providerName(ek *store.ExternalKey, def string) string {
	if ek == nil {
		return def
	}
	return ek.Type
}

// Call runs fn against ek's provider as one recorded KMS operation (metrics,
// audit, timeout). The health probe uses it so that its calls are recorded
// like every other.
func (k *Keyring) Call(ctx context.Context, ek *store.ExternalKey, op string, fn func(ctx context.Context, p kms.Provider) error) error {
	return k.call(ctx, ek, op, fn)
}

// call runs one KMS operation with a timeout, and records it in metrics and,
// for customer keys, in the org's audit log (kms.call events).
func (k *Keyring) call(ctx context.Context, ek *store.ExternalKey, op string, fn func(ctx context.Context, p kms.Provider) error) error {
	p, err := k.Provider(ek)
	if err != nil {
		return err
	}
	ci := &kms.CallInfo{}
	cctx, cancel := context.WithTimeout(kms.WithCallInfo(ctx, ci), k.cfg.KMSTimeout)
	defer cancel()
	start := time.Now()
	err = fn(cctx, p)
	d := time.Since(start)
	outcome := "ok"
	if err != nil {
		outcome = string(kms.ClassOf(err))
	}
	k.cfg.Metrics.ObserveKMS(providerName(ek, k.cfg.Default.Type), op, outcome, d)
	if ek != nil {
		k.recordCall(ek, op, outcome, d, ci, err)
	}
	return err
}

// KMSCallEvent is the payload of a kms.call audit event.
type KMSCallEvent struct {
	ExternalKeyID string  `json:"external_key_id"`
	Operation     string  `json:"operation"`
	Outcome       string  `json:"outcome"`
	LatencyMS     float64 `json:"latency_ms"`
	RequestID     string  `json:"request_id,omitempty"`
	// RequestIDs lists every request id when the operation made several
	// requests (RequestID is the last of them).
	RequestIDs []string `json:"request_ids,omitempty"`
	ErrorCode  string   `json:"error_code,omitempty"`
}

func (k *Keyring) recordCall(ek *store.ExternalKey, op, outcome string, d time.Duration, ci *kms.CallInfo, err error) {
	ev := KMSCallEvent{ExternalKeyID: ek.ID, Operation: op, Outcome: outcome, LatencyMS: float64(d.Microseconds()) / 1000, RequestID: ci.RequestID}
	if len(ci.RequestIDs) > 1 {
		ev.RequestIDs = ci.RequestIDs
	}
	var ke *kms.Error
	if errors.As(err, &ke) {
		ev.ErrorCode = ke.Code
	}
	data, _ := json.Marshal(ev)
	// Recorded outside any request transaction on purpose: a KMS call happened
	// whether or not the request that caused it commits.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := k.cfg.Store.AppendAudit(ctx, store.AuditEvent{ID: ids.New("audit_log-"), OrgID: ek.OrgID, Type: "kms.call", EffectiveAt: k.cfg.Now(), Data: data}); err != nil {
		k.cfg.Logger.Warn("recording KMS call failed", "external_key_id", ek.ID, "err", err)
	}
}

// NewVersion creates a fresh project key wrapped by ek (nil = default key).
// It returns the record to store (in the caller's transaction) and the
// plaintext, which the caller may pass to Prime after commit and must Zero.
func (k *Keyring) NewVersion(ctx context.Context, orgID, projectID string, version int, ek *store.ExternalKey) (store.ProjectKey, secret.Key, error) {
	if err := k.checkGate(ek); err != nil {
		return store.ProjectKey{}, secret.Key{}, err
	}
	pk := secret.New()
	rec, err := k.wrap(ctx, orgID, projectID, version, ek, pk)
	if err != nil {
		pk.Zero()
		return store.ProjectKey{}, secret.Key{}, err
	}
	return rec, pk, nil
}

func (k *Keyring) wrap(ctx context.Context, orgID, projectID string, version int, ek *store.ExternalKey, pk secret.Key) (store.ProjectKey, error) {
	var w kms.Wrapped
	err := k.call(ctx, ek, "wrap", func(ctx context.Context, p kms.Provider) error {
		var err error
		w, err = p.Wrap(ctx, pk.Bytes())
		return err
	})
	if err != nil {
		return store.ProjectKey{}, k.fail(ek, err)
	}
	extID := ""
	if ek != nil {
		extID = ek.ID
	}
	return store.ProjectKey{OrgID: orgID, ProjectID: projectID, Version: version, ExternalKeyID: extID,
		KEKVersion: w.KeyVersion, Algorithm: w.Algorithm, Wrapped: w.Ciphertext, CreatedAt: k.cfg.Now()}, nil
}

// Prime caches a key just created (after its record committed).
func (k *Keyring) Prime(orgID, projectID string, version int, extKeyID string, key secret.Key) {
	k.cache.put(cacheKey{orgID, projectID, version}, extKeyID, key)
}

// Current returns the version and plaintext key new data of a project is
// written under.
func (k *Keyring) Current(ctx context.Context, orgID, projectID string) (int, secret.Key, error) {
	p, err := k.cfg.Store.GetProject(ctx, orgID, projectID)
	if err != nil {
		return 0, secret.Key{}, err
	}
	key, err := k.Key(ctx, orgID, projectID, p.CurrentKeyVersion)
	return p.CurrentKeyVersion, key, err
}

// Key returns a copy of the plaintext of one project key version.
func (k *Keyring) Key(ctx context.Context, orgID, projectID string, version int) (secret.Key, error) {
	ck := cacheKey{orgID, projectID, version}
	if key, extID, ok := k.cache.get(ck); ok {
		if err := k.checkGateID(extID); err != nil {
			key.Zero()
			return secret.Key{}, err
		}
		k.cfg.Metrics.CacheHit()
		return key, nil
	}
	k.cfg.Metrics.CacheMiss()
	// Coalesce concurrent misses for one version into a single KMS call.
	c, leader := k.join(ck)
	if leader {
		c.key, c.extKeyID, c.err = k.fill(context.WithoutCancel(ctx), orgID, projectID, version)
		k.mu.Lock()
		delete(k.inflight, ck)
		k.mu.Unlock()
		close(c.done)
	} else {
		select {
		case <-c.done:
		case <-ctx.Done():
			k.leave(c)
			return secret.Key{}, ctx.Err()
		}
	}
	defer k.leave(c)
	if c.err != nil {
		return secret.Key{}, c.err
	}
	// The gate is checked again after the unwrap: a revocation observed while
	// it was in flight refuses every waiter, including ones that joined late.
	if err := k.checkGateID(c.extKeyID); err != nil {
		return secret.Key{}, err
	}
	return secret.FromBytes(c.key.Bytes())
}

// flight is one coalesced unwrap. The last waiter to leave zeroes the key.
type flight struct {
	done     chan struct{}
	key      secret.Key
	extKeyID string
	err      error
	refs     int
}

func (k *Keyring) join(ck cacheKey) (*flight, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if c, ok := k.inflight[ck]; ok {
		c.refs++
		return c, false
	}
	c := &flight{done: make(chan struct{}), refs: 1}
	k.inflight[ck] = c
	return c, true
}

func (k *Keyring) leave(c *flight) {
	k.mu.Lock()
	c.refs--
	last := c.refs == 0
	k.mu.Unlock()
	if last {
		<-c.done // a waiter that gave up early must not zero under the leader
		c.key.Zero()
	}
}

func (k *Keyring) fill(ctx context.Context, orgID, projectID string, version int) (secret.Key, string, error) {
	// Generations are read before the record: a re-key (EvictProject) or a
	// revocation (MarkUnavailable / EvictExternalKey) that happens while we
	// read and unwrap makes the result uncacheable.
	gen := k.cache.generation(projectID)
	rec, err := k.cfg.Store.GetProjectKey(ctx, orgID, projectID, version)
	if err != nil {
		return secret.Key{}, "", err
	}
	var ek *store.ExternalKey
	if rec.ExternalKeyID != "" {
		e, err := k.cfg.Store.GetExternalKey(ctx, orgID, rec.ExternalKeyID)
		if err != nil {
			return secret.Key{}, "", fmt.Errorf("external key %s of project %s: %w", rec.ExternalKeyID, projectID, err)
		}
		ek = &e
	}
	if err := k.checkGate(ek); err != nil {
		return secret.Key{}, "", err
	}
	epoch := k.epoch(rec.ExternalKeyID)
	pt, err := k.unwrap(ctx, ek, rec)
	if err != nil {
		return secret.Key{}, "", err
	}
	key, err := secret.FromBytes(pt)
	secret.Wipe(pt)
	if err != nil {
		return secret.Key{}, "", &kms.Error{Class: kms.Invalid, Code: "invalid_project_key", Message: "the KMS returned a key of the wrong size", Err: err}
	}
	if k.epoch(rec.ExternalKeyID) == epoch {
		k.cache.putIfGeneration(cacheKey{orgID, projectID, version}, rec.ExternalKeyID, key, gen)
	}
	return key, rec.ExternalKeyID, nil
}

func (k *Keyring) unwrap(ctx context.Context, ek *store.ExternalKey, rec store.ProjectKey) ([]byte, error) {
	var pt []byte
	err := k.call(ctx, ek, "unwrap", func(ctx context.Context, p kms.Provider) error {
		var err error
		pt, err = p.Unwrap(ctx, kms.Wrapped{KeyVersion: rec.KEKVersion, Algorithm: rec.Algorithm, Ciphertext: rec.Wrapped})
		return err
	})
	if err != nil {
		return nil, k.fail(ek, err)
	}
	return pt, nil
}

// fail turns a KMS error into an UnavailableError and, for revocation-class
// failures, closes the gate at once: we need not wait for the probe to learn
// that the customer withdrew access.
func (k *Keyring) fail(ek *store.ExternalKey, err error) error {
	var ke *kms.Error
	if !errors.As(err, &ke) && !errors.Is(err, context.DeadlineExceeded) && kms.ClassOf(err) != kms.Outage {
		return err
	}
	id := ""
	if ek != nil {
		id = ek.ID
	}
	u := unavailable(id, err)
	if u.Class == kms.Revoked && ek != nil {
		if k.MarkUnavailable(ek.ID, u) {
			k.cfg.Metrics.KeyEvent("unavailable")
			k.cfg.Logger.Warn("external key unavailable: customer withdrew access", "org_id", ek.OrgID, "external_key_id", ek.ID, "code", u.Code)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		k.SetHealth(ctx, *ek, store.KeyHealth{Status: store.StatusUnavailable, Code: u.Code, Message: u.Message}, "external_key.unavailable")
	}
	if u.Class == kms.Invalid {
		return err
	}
	return u
}

func (k *Keyring) checkGate(ek *store.ExternalKey) error {
	if ek == nil {
		return nil
	}
	return k.checkGateID(ek.ID)
}

func (k *Keyring) checkGateID(id string) error {
	if id == "" {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if g := k.gates[id]; g != nil && g.unavailable != nil {
		return g.unavailable
	}
	return nil
}

func (k *Keyring) epoch(id string) uint64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	if g := k.gates[id]; g != nil {
		return g.epoch
	}
	return 0
}

// MarkUnavailable refuses every use of an external key from now on and
// evicts every cached project key it wraps. It reports whether the key was
// available before (a transition).
func (k *Keyring) MarkUnavailable(extKeyID string, u *UnavailableError) bool {
	k.mu.Lock()
	g := k.gates[extKeyID]
	if g == nil {
		g = &gate{}
		k.gates[extKeyID] = g
	}
	was := g.unavailable == nil
	g.unavailable = u
	g.epoch++
	k.mu.Unlock()
	k.cache.evictExternalKey(extKeyID)
	return was
}

// MarkAvailable opens the gate again. It reports whether it was closed.
func (k *Keyring) MarkAvailable(extKeyID string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	g := k.gates[extKeyID]
	if g == nil || g.unavailable == nil {
		return false
	}
	g.unavailable = nil
	return true
}

// GateEpoch returns a token that changes whenever the external key's gate
// closes or its cached keys are evicted.
func (k *Keyring) GateEpoch(extKeyID string) uint64 { return k.epoch(extKeyID) }

// MarkAvailableSince opens the gate only if nothing closed it since epoch
// (from GateEpoch) was read: a probe success that raced a revocation seen by
// a request must not undo it.
func (k *Keyring) MarkAvailableSince(extKeyID string, epoch uint64) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	g := k.gates[extKeyID]
	if g == nil || g.unavailable == nil || g.epoch != epoch {
		return false
	}
	g.unavailable = nil
	return true
}

// Unavailable returns the gate's error for an external key, or nil.
func (k *Keyring) Unavailable(extKeyID string) *UnavailableError {
	k.mu.Lock()
	defer k.mu.Unlock()
	if g := k.gates[extKeyID]; g != nil {
		return g.unavailable
	}
	return nil
}

// EvictExternalKey drops every cached project key wrapped by extKeyID.
func (k *Keyring) EvictExternalKey(extKeyID string) int {
	k.mu.Lock()
	if g := k.gates[extKeyID]; g != nil {
		g.epoch++
	} else {
		k.gates[extKeyID] = &gate{epoch: 1}
	}
	k.mu.Unlock()
	return k.cache.evictExternalKey(extKeyID)
}

// EvictProject drops every cached version of a project's key (after a
// re-key changes which external key wraps it).
func (k *Keyring) EvictProject(projectID string) { k.cache.evictProject(projectID) }

// CachedKeys is the number of project key versions in the cache.
func (k *Keyring) CachedKeys() int { return k.cache.len() }

// Rewrap returns every version of a project's key wrapped by to (nil = the
// default key), for the caller to store in one transaction together with
// the project's new external key id. Nothing is changed if any step fails.
func (k *Keyring) Rewrap(ctx context.Context, orgID, projectID string, to *store.ExternalKey) ([]store.ProjectKey, error) {
	if err := k.checkGate(to); err != nil {
		return nil, err
	}
	recs, err := k.cfg.Store.ListProjectKeys(ctx, orgID, projectID)
	if err != nil {
		return nil, err
	}
	out := make([]store.ProjectKey, 0, len(recs))
	for _, r := range recs {
		pk, err := k.Key(ctx, orgID, projectID, r.Version)
		if err != nil {
			return nil, err
		}
		nr, err := k.wrap(ctx, orgID, projectID, r.Version, to, pk)
		pk.Zero()
		if err != nil {
			return nil, err
		}
		nr.CreatedAt = r.CreatedAt
		out = append(out, nr)
	}
	return out, nil
}

// RewrapVersion rewraps one stored version under the current version of the
// external key that already wraps it (after the customer rotated its KEK).
func (k *Keyring) RewrapVersion(ctx context.Context, rec store.ProjectKey, ek *store.ExternalKey) (store.ProjectKey, error) {
	pk, err := k.Key(ctx, rec.OrgID, rec.ProjectID, rec.Version)
	if err != nil {
		return store.ProjectKey{}, err
	}
	defer pk.Zero()
	nr, err := k.wrap(ctx, rec.OrgID, rec.ProjectID, rec.Version, ek, pk)
	if err != nil {
		return store.ProjectKey{}, err
	}
	nr.CreatedAt = rec.CreatedAt
	return nr, nil
}

// Validate checks an external key end to end: the provider's preflight (key
// type, state, permitted operations), then a wrap and unwrap of a random key.
// It does not touch the gate or the cache.
func (k *Keyring) Validate(ctx context.Context, ek *store.ExternalKey) (kms.KeyInfo, error) {
	var info kms.KeyInfo
	err := k.call(ctx, ek, "validate", func(ctx context.Context, p kms.Provider) error {
		if pf, ok := p.(kms.Preflighter); ok {
			if err := pf.Preflight(ctx); err != nil {
				return err
			}
		}
		probe := secret.New()
		defer probe.Zero()
		w, err := p.Wrap(ctx, probe.Bytes())
		if err != nil {
			return err
		}
		got, err := p.Unwrap(ctx, w)
		if err != nil {
			return err
		}
		defer secret.Wipe(got)
		if !bytes.Equal(got, probe.Bytes()) {
			return &kms.Error{Class: kms.Invalid, Code: "round_trip_mismatch", Message: "the key management service returned different bytes than were encrypted"}
		}
		info, err = p.Describe(ctx)
		if info.CurrentVersion == "" {
			info.CurrentVersion = w.KeyVersion
		}
		return err
	})
	return info, err
}

// Check validates registration params for a type without network calls.
func (k *Keyring) Check(typ, orgID string, p kms.Params) (kms.Params, error) {
	d, ok := k.cfg.Registry.Driver(typ)
	if !ok {
		return nil, &kms.Error{Class: kms.Invalid, Code: "unsupported_type", Message: fmt.Sprintf("external key type %q is not supported by this server", typ)}
	}
	out, err := d.Check(orgID, maps.Clone(p))
	return out, err
}

// RotateProjectKey creates a new project key version under the project's
// current external key and makes it the version new data is written under.
// Old versions stay for reads. It returns the new version.
func (k *Keyring) RotateProjectKey(ctx context.Context, orgID, projectID string) (int, error) {
	p, err := k.cfg.Store.GetProject(ctx, orgID, projectID)
	if err != nil {
		return 0, err
	}
	var ek *store.ExternalKey
	if p.ExternalKeyID != "" {
		e, err := k.cfg.Store.GetExternalKey(ctx, orgID, p.ExternalKeyID)
		if err != nil {
			return 0, err
		}
		ek = &e
	}
	next := p.CurrentKeyVersion + 1
	rec, pk, err := k.NewVersion(ctx, orgID, projectID, next, ek)
	if err != nil {
		return 0, err
	}
	defer pk.Zero()
	err = k.cfg.Store.InTx(ctx, func(q store.Queries) error {
		cur, err := q.GetProject(ctx, orgID, projectID)
		if err != nil {
			return err
		}
		if cur.CurrentKeyVersion != p.CurrentKeyVersion || cur.ExternalKeyID != p.ExternalKeyID {
			return fmt.Errorf("project %s changed while rotating its key: %w", projectID, store.ErrConflict)
		}
		if err := q.PutProjectKey(ctx, rec); err != nil {
			return err
		}
		cur.CurrentKeyVersion = next
		if err := q.UpdateProject(ctx, cur); err != nil {
			return err
		}
		data, _ := json.Marshal(map[string]any{"project_id": projectID, "version": next})
		return q.AppendAudit(ctx, store.AuditEvent{ID: ids.New("audit_log-"), OrgID: orgID, Type: "project.key_rotated", EffectiveAt: k.cfg.Now(), ProjectID: projectID, Data: data})
	})
	if err != nil {
		return 0, err
	}
	k.Prime(orgID, projectID, next, rec.ExternalKeyID, pk)
	return next, nil
}

// SetHealth stores an external key's health and, when its status changes, an
// audit event of type event — once across replicas: only the transaction
// that changes the stored status writes the event.
func (k *Keyring) SetHealth(ctx context.Context, ek store.ExternalKey, h store.KeyHealth, event string) {
	if h.At.IsZero() {
		h.At = k.cfg.Now()
	}
	data, _ := json.Marshal(map[string]string{"external_key_id": ek.ID, "status": h.Status, "code": h.Code, "message": h.Message})
	err := k.cfg.Store.InTx(ctx, func(q store.Queries) error {
		cur, err := q.GetExternalKey(ctx, ek.OrgID, ek.ID)
		if err != nil {
			return err
		}
		if cur.Status == h.Status && cur.StatusCode == h.Code && (h.CurrentKEKVersion == "" || h.CurrentKEKVersion == cur.CurrentKEKVersion) {
			return nil
		}
		if err := q.SetExternalKeyHealth(ctx, ek.OrgID, ek.ID, h); err != nil {
			return err
		}
		if cur.Status == h.Status || event == "" {
			return nil
		}
		return q.AppendAudit(ctx, store.AuditEvent{ID: ids.New("audit_log-"), OrgID: ek.OrgID, Type: event, EffectiveAt: h.At, Data: data})
	})
	if err != nil && ctx.Err() == nil && !errors.Is(err, store.ErrNotFound) {
		k.cfg.Logger.Warn("recording external key health failed", "external_key_id", ek.ID, "err", err)
	}
}
