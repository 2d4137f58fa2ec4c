// Package keyring is the hot path of ekm's key hierarchy: it hands out
// plaintext project keys.
//
//	customer KEK (in the customer's KMS) → project key (stored wrapped) → data
//
// It unwraps project key versions on demand through the KMS call layer
// (kms.Keys), keeps the plaintext in a bounded cache with a hard TTL,
// coalesces concurrent misses into one KMS call, and refuses fast when an
// external key is unavailable (its gate is closed). Plaintext keys handed
// out are copies: callers must Zero them when done.
//
// Everything that changes keys or their health (creating, rotating and
// re-keying project keys, validation, revocation and restoration) belongs to
// package lifecycle, which drives the gates and the cache through the
// methods here.
package keyring

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/metrics"
	"github.com/ekm-dev/ekm/secret"
	"github.com/ekm-dev/ekm/store"
)

// Config configures a Keyring. Zero durations take the defaults noted.
type Config struct {
	Store store.Store
	// Keys is the KMS call layer every unwrap goes through.
	Keys *kms.Keys
	// Default is the operator's key for projects created without an
	// external key (a local key by default). Its ID must be "".
	Default kms.Ref
	// CacheTTL is the hard TTL of an unwrapped project key (default 1h). It is
	// also how long cached keys keep serving through a KMS outage.
	CacheTTL time.Duration
	// CacheSize bounds the number of cached project key versions (default 10000).
	CacheSize int
	// CacheOrgShare is the share of CacheSize one org may hold once the
	// cache is full (default DefaultCacheOrgShare, a quarter): an org over
	// it evicts its own least recently used keys, never other orgs'. 1 or
	// more turns the cap off (one LRU for all orgs).
	CacheOrgShare float64
	Now           func() time.Time
	Metrics       *metrics.Metrics
	// Logger receives what only an operator should see: a panic recovered
	// below an unwrap (default slog.Default()).
	Logger *slog.Logger
}

// RevocationHandler learns that an unwrap found access to ek withdrawn. The
// gate is already closed; first reports whether it was open. projectID is
// "" when the whole key is refused, or the one project the customer's
// policy refuses (u.Scope is kms.ScopeProject). It records the new health
// (package lifecycle installs it).
type RevocationHandler func(ctx context.Context, ek store.ExternalKey, projectID string, u *UnavailableError, first bool)

// Keyring is safe for concurrent use.
type Keyring struct {
	cfg   Config
	cache *cache

	mu        sync.Mutex
	gates     map[string]*gate // by external key id
	projects  map[projectGate]*closedProject
	closed    *list.List           // of projectGate, front = most recently closed or confirmed
	maxClosed int                  // bound of projects (maxProjectGates; tests lower it)
	inflight  map[cacheKey]*flight // coalesced unwraps
	onRevoked RevocationHandler    // may be nil
	joined    func()               // tests: called when a caller joins an unwrap in flight
}

// projectGate names one project's use of one external key: closed when the
// customer's policy refuses that project only (kms.ScopeProject).
type projectGate struct{ extKeyID, projectID string }

// closedProject is a closed project gate: its error and its place in the
// eviction order.
type closedProject struct {
	u    *UnavailableError
	elem *list.Element
}

// maxProjectGates bounds the closed project gates kept (each is a project
// the customer refuses; far more than any org has). Past it the oldest
// closed gate is forgotten (see MarkProjectUnavailable).
const maxProjectGates = 100000

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
	if cfg.CacheOrgShare == 0 {
		cfg.CacheOrgShare = DefaultCacheOrgShare
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Default.ID, cfg.Default.OrgID = "", ""
	return &Keyring{cfg: cfg, cache: newCache(cfg.CacheTTL, cfg.CacheSize, cfg.Now).withOrgShare(cfg.CacheOrgShare), gates: map[string]*gate{},
		projects: map[projectGate]*closedProject{}, closed: list.New(), maxClosed: maxProjectGates, inflight: map[cacheKey]*flight{}}
}

// SetRevocationHandler installs h (package lifecycle does, once).
func (k *Keyring) SetRevocationHandler(h RevocationHandler) {
	k.mu.Lock()
	k.onRevoked = h
	k.mu.Unlock()
}

// UnavailableError means a project's key cannot be used now. Its diagnosis
// (kms.Diagnose) is safe to show to the customer.
type UnavailableError struct {
	ExternalKeyID string
	// ProjectID is set when only this project is refused (kms.ScopeProject).
	ProjectID string
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

// Diagnosis implements kms.Diagnoser: the gate's class, code and message,
// and the step and parameter of the KMS failure behind it.
func (e *UnavailableError) Diagnosis() kms.Diagnosis {
	d := kms.Diagnosis{Class: e.Class, Code: e.Code, Message: e.Message}
	if e.ProjectID != "" {
		d.Scope = kms.ScopeProject
	}
	var ke *kms.Error
	if errors.As(e.Err, &ke) {
		d.Step, d.Param = ke.Step, ke.Param
	}
	return d
}

// NewUnavailable is the gate error for an external key whose use failed with
// err (a KMS failure).
func NewUnavailable(extKeyID string, err error) *UnavailableError {
	d, ok := kms.Diagnose(err)
	if !ok {
		d = kms.Diagnosis{Class: kms.Outage, Code: kms.CodeUnreachable, Message: "The customer's key management service could not be reached."}
	}
	return &UnavailableError{ExternalKeyID: extKeyID, Class: d.Class, Code: d.Code, Message: d.Message, Err: err}
}

// Ref names the KEK of an external key (nil = the operator's default key).
func (k *Keyring) Ref(ek *store.ExternalKey) kms.Ref {
	if ek == nil {
		return k.cfg.Default
	}
	return kms.Ref{ID: ek.ID, OrgID: ek.OrgID, Type: ek.Type, Params: ek.Params}
}

// KMS returns the open KEK of an external key (nil = the default key).
func (k *Keyring) KMS(ek *store.ExternalKey) (*kms.Key, error) {
	return k.cfg.Keys.Open(k.Ref(ek))
}

// Forget drops what the keyring holds for a deleted external key: its open
// provider, its gate and any cached project keys.
func (k *Keyring) Forget(extKeyID string) {
	k.cache.evictExternalKey(extKeyID)
	k.cfg.Keys.Forget(extKeyID)
	k.mu.Lock()
	delete(k.gates, extKeyID)
	for g, cp := range k.projects {
		if g.extKeyID == extKeyID {
			k.openProjectLocked(g, cp)
		}
	}
	k.mu.Unlock()
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
	return k.key(ctx, orgID, projectID, version, nil)
}

// KeyOf is Key for a project as the caller just read it: a cached key
// wrapped by another external key than the project names (the project was
// re-keyed by another process or replica since it was cached) is dropped
// and read again, so it answers to the gate of the key that wraps it now.
func (k *Keyring) KeyOf(ctx context.Context, p store.Project, version int) (secret.Key, error) {
	return k.key(ctx, p.OrgID, p.ID, version, &p.ExternalKeyID)
}

func (k *Keyring) key(ctx context.Context, orgID, projectID string, version int, wantExtID *string) (secret.Key, error) {
	ck := cacheKey{orgID, projectID, version}
	if key, extID, ok := k.cache.get(ck); ok && wantExtID != nil && extID != *wantExtID {
		key.Zero()
		k.cache.evictProject(projectID)
	} else if ok {
		if err := k.checkGates(extID, projectID); err != nil {
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
		k.lead(ctx, ck, c)
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
	if err := k.checkGates(c.extKeyID, projectID); err != nil {
		return secret.Key{}, err
	}
	return c.key.Clone(), nil
}

// lead runs the unwrap of c for every caller that joins it, and always
// completes it, whatever happens below: the flight leaves the inflight map
// and done is closed, so no waiter blocks forever and the next request for
// this key version starts a new unwrap.
//
// A panic below it (a bug in a KMS provider, its SDK or the store) is
// recovered and becomes c.err, the same retryable outage for the leader and
// every waiter (ErrPanicked inside an UnavailableError of class kms.Outage:
// never a revocation, so no gate closes and the key's health is left as it
// is; nothing is cached). It is logged here, with where it happened and
// without its value, which could hold anything. It is not re-raised:
// the leader is just whichever caller came first, and not every caller is
// an HTTP handler under the server's per-request recovery — rewraps (after
// a KEK rotation, on a re-key) and `ekm reencrypt` read keys here outside
// any request, where a panic would end the process and, for a server, every
// tenant's service on this replica. An HTTP caller also gets a 503 with
// Retry-After this way rather than a 500, like every waiter.
func (k *Keyring) lead(ctx context.Context, ck cacheKey, c *flight) {
	completed := false
	defer func() {
		if !completed {
			// A panic, or runtime.Goexit (recover returns nil then).
			v := recover()
			c.key, c.extKeyID = secret.Key{}, ""
			c.err = &UnavailableError{Class: kms.Outage, Code: kms.CodeUnreachable,
				Message: "Reading this project's key failed unexpectedly; retry later.", Err: ErrPanicked}
			k.cfg.Logger.Error("keyring: reading a project key panicked; every caller waiting for it gets a retryable error, no gate or health changes",
				"org_id", ck.orgID, "project_id", ck.projectID, "version", ck.version, "panic", kms.DescribePanic(v), "stack", kms.PanicStack())
		}
		k.mu.Lock()
		delete(k.inflight, ck)
		k.mu.Unlock()
		close(c.done)
	}()
	c.key, c.extKeyID, c.err = k.fill(context.WithoutCancel(ctx), ck.orgID, ck.projectID, ck.version)
	completed = true
}

// ErrPanicked is inside the error every caller of a coalesced unwrap gets
// when reading the key panicked (see lead).
var ErrPanicked = errors.New("keyring: reading the project key panicked")

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
		if k.joined != nil {
			k.joined()
		}
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
	// revocation (MarkUnavailable) that happens while we
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
	if err := k.checkGates(rec.ExternalKeyID, projectID); err != nil {
		return secret.Key{}, "", err
	}
	epoch := k.GateEpoch(rec.ExternalKeyID)
	pt, err := k.unwrap(ctx, ek, rec)
	if err != nil {
		return secret.Key{}, "", err
	}
	key, err := secret.FromBytes(pt)
	secret.Wipe(pt)
	if err != nil {
		return secret.Key{}, "", &kms.Error{Class: kms.Invalid, Code: kms.CodeInvalidKeyLength, Message: "the KMS returned a key of the wrong size", Err: err}
	}
	if k.GateEpoch(rec.ExternalKeyID) == epoch {
		k.cache.putIfGeneration(cacheKey{orgID, projectID, version}, rec.ExternalKeyID, key, gen)
	}
	return key, rec.ExternalKeyID, nil
}

// AAD is the associated data a project key version is wrapped with.
func AAD(rec store.ProjectKey) kms.AAD {
	return kms.AAD{OrgID: rec.OrgID, ProjectID: rec.ProjectID, Version: rec.Version}
}

// Wrapped is the stored wrapping of rec as the KMS returned it.
func Wrapped(rec store.ProjectKey) kms.Wrapped {
	return kms.Wrapped{KeyVersion: rec.KEKVersion, Algorithm: rec.Algorithm, Ciphertext: rec.Wrapped}
}

// unwrap asks the KMS for rec's plaintext. Refused and unreachable KMSs
// become UnavailableErrors; a revocation closes the gate at once (no need
// to wait for the probe) and is reported to the revocation handler.
func (k *Keyring) unwrap(ctx context.Context, ek *store.ExternalKey, rec store.ProjectKey) ([]byte, error) {
	key, err := k.KMS(ek)
	if err == nil {
		var pt []byte
		if pt, err = key.Unwrap(ctx, Wrapped(rec), AAD(rec)); err == nil {
			return pt, nil
		}
	}
	return nil, k.Fail(ctx, ek, rec.ProjectID, err)
}

// Fail turns a failed use of ek's KEK for projectID ("" = no project) into
// the error callers see: an Invalid failure (e.g. a corrupt wrapped key) as
// it is, anything else as an UnavailableError. A revocation-class failure
// closes ek's gate at once — or only the project's, when the KMS refused
// that project alone (kms.ScopeProject) — and is reported to the
// revocation handler.
func (k *Keyring) Fail(ctx context.Context, ek *store.ExternalKey, projectID string, err error) error {
	if kms.ClassOf(err) == kms.Invalid {
		return err
	}
	id := ""
	if ek != nil {
		id = ek.ID
	}
	u := NewUnavailable(id, err)
	if u.Class == kms.Revoked && ek != nil {
		var first bool
		scoped := ""
		if d, _ := kms.Diagnose(err); d.Scope == kms.ScopeProject && projectID != "" {
			u.ProjectID, scoped = projectID, projectID
			first = k.MarkProjectUnavailable(ek.ID, projectID, u)
		} else {
			first = k.MarkUnavailable(ek.ID, u)
		}
		k.mu.Lock()
		h := k.onRevoked
		k.mu.Unlock()
		if h != nil {
			h(ctx, *ek, scoped, u, first)
		}
	}
	return u
}

// checkGates returns the error of ek's gate, or of the project's gate.
func (k *Keyring) checkGates(extKeyID, projectID string) error {
	if err := k.CheckGate(extKeyID); err != nil {
		return err
	}
	if extKeyID == "" {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if cp := k.projects[projectGate{extKeyID, projectID}]; cp != nil {
		return cp.u
	}
	return nil
}

// MarkProjectUnavailable refuses every use of ek for one project (the
// customer's policy refuses it; other projects keep working) and evicts
// the project's cached keys. It reports whether the project's gate was open.
//
// Closed project gates are bounded (maxProjectGates). At the bound the
// gate closed (or confirmed by this call) longest ago is forgotten, one per
// new gate — never all at once. A forgotten gate is not a decision that the
// project may use its key again: the stored project-access row (written
// when the refusal was first seen, removed only when access is seen back)
// stays the source of truth. In this keyring it only means the refusal is
// no longer known from memory. Nothing of the project is cached (closing
// the gate evicted its keys; while it is closed fills refuse before the
// unwrap, and one already in flight is not cached, its generation having
// changed; forgetting it evicts the project once more): the next use of the
// project asks the customer's KMS, and while the KMS still refuses, that
// unwrap fails as a project-scoped revocation, which closes the gate again
// (Fail).
func (k *Keyring) MarkProjectUnavailable(extKeyID, projectID string, u *UnavailableError) bool {
	k.mu.Lock()
	g := projectGate{extKeyID, projectID}
	var forgot []string
	cp, was := k.projects[g]
	if was {
		cp.u = u
		k.closed.MoveToFront(cp.elem)
	} else {
		for len(k.projects) >= max(1, k.maxClosed) {
			old := k.closed.Back().Value.(projectGate)
			k.openProjectLocked(old, k.projects[old])
			forgot = append(forgot, old.projectID)
		}
		k.projects[g] = &closedProject{u: u, elem: k.closed.PushFront(g)}
	}
	k.mu.Unlock()
	k.cache.evictProject(projectID)
	for _, p := range forgot {
		k.cache.evictProject(p)
	}
	return !was
}

// openProjectLocked forgets a closed project gate. k.mu is held.
func (k *Keyring) openProjectLocked(g projectGate, cp *closedProject) {
	k.closed.Remove(cp.elem)
	delete(k.projects, g)
}

// MarkProjectAvailable opens a project's gate again; it reports whether it
// was closed.
func (k *Keyring) MarkProjectAvailable(extKeyID, projectID string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	g := projectGate{extKeyID, projectID}
	cp, was := k.projects[g]
	if was {
		k.openProjectLocked(g, cp)
	}
	return was
}

// ClearProjectGates opens every project's gate (before they are closed
// again from the store).
func (k *Keyring) ClearProjectGates() {
	k.mu.Lock()
	clear(k.projects)
	k.closed.Init()
	k.mu.Unlock()
}

// ProjectUnavailable returns a project's gate error for ek, or nil.
func (k *Keyring) ProjectUnavailable(extKeyID, projectID string) *UnavailableError {
	k.mu.Lock()
	defer k.mu.Unlock()
	if cp := k.projects[projectGate{extKeyID, projectID}]; cp != nil {
		return cp.u
	}
	return nil
}

// ClosedProjectGates is the number of closed project gates this keyring
// holds (at most maxProjectGates).
func (k *Keyring) ClosedProjectGates() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.projects)
}

// CheckGate returns the gate's error if the external key is marked
// unavailable ("" = the default key, never gated).
func (k *Keyring) CheckGate(extKeyID string) error {
	if extKeyID == "" {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if g := k.gates[extKeyID]; g != nil && g.unavailable != nil {
		return g.unavailable
	}
	return nil
}

// GateEpoch returns a token that changes whenever the external key's gate
// closes or its cached keys are evicted.
func (k *Keyring) GateEpoch(extKeyID string) uint64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	if g := k.gates[extKeyID]; g != nil {
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

// EvictExternalKey drops every cached project key wrapped by extKeyID (so
// the next read of each unwraps again), without closing its gate.
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
// re-key changes which external key wraps it, or an archive).
func (k *Keyring) EvictProject(projectID string) { k.cache.evictProject(projectID) }

// EvictAll drops every cached project key, and any unwrap in flight is not
// cached (after this replica may have missed changes: package cluster's
// reset).
func (k *Keyring) EvictAll() { k.cache.evictAll() }

// CachedKeys is the number of project key versions in the cache.
func (k *Keyring) CachedKeys() int { return k.cache.len() }
