// Package cluster is how ekm's replicas cooperate through the database they
// share: the change log, which tells every replica within a second what
// another one changed, and the leader lease, which runs the background jobs
// on exactly one replica at a time. (The per-key probe leases are package
// probe's; both kinds of lease are store.Lease.)
//
// # The change log
//
// A change that other replicas must act on (a key revoked or restored, a
// key deleted, a project archived or re-keyed, an API key or service
// account deleted) is published inside the transaction that makes it:
//
//	err := log.InTx(ctx, func(q store.Queries, pub *cluster.Publisher) error {
//		… the change …
//		return pub.Publish(ctx, cluster.ProjectArchived, orgID, projectID)
//	})
//
// The row commits with the change or not at all. When InTx returns, the
// change has been applied on this replica: InTx calls the handlers before
// returning, so an API call that made the change answers only after its
// own replica acts on it. Every other replica reads the log after the last
// change it applied when PostgreSQL notifies it (LISTEN/NOTIFY, at commit:
// well under a second), and at least every Resync interval whatever
// happens (the repair for a notification lost with a dropped connection).
// A replica that could not read the log for half its Retention (changes
// are pruned after it) may have missed changes: it runs the reset handlers
// (drop every cache, re-read state). On SQLite the single replica follows
// its own log by polling; the code path is the same.
//
// Handlers subscribe by kind (Subscribe) and must be safe for concurrent
// use; each change is applied once per replica (on the changing replica by
// InTx, or by its follower if that read the change first, InTx then waiting
// for it). They must still be idempotent: a change committed while the
// replica's first Sync runs may be applied twice, and a reset re-reads
// state anyway.
package cluster

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ekm-dev/ekm/store"
)

// Kinds of change. ObjectID names the object of the kind's first word.
const (
	// ExternalKeyUnavailable: access to an external key was withdrawn (a
	// revocation seen by a probe, a request or a validation): its gate
	// closes and the project keys it wraps are evicted.
	ExternalKeyUnavailable = "external_key.unavailable"
	// ExternalKeyAvailable: an external key is valid again: its gate opens.
	ExternalKeyAvailable = "external_key.available"
	// ExternalKeyDeleted: a registration was removed: forget the key.
	ExternalKeyDeleted = "external_key.deleted"
	// ProjectArchived: the project's cached keys are evicted.
	ProjectArchived = "project.archived"
	// ProjectRekeyed: the project's key versions are wrapped by another
	// external key now (a re-key, or the org-wide migration): evict.
	ProjectRekeyed = "project.rekeyed"
	// ProjectKeyRotated: the project has a new current key version.
	ProjectKeyRotated = "project.key_rotated"
	// APIKeyDeleted: an admin or project API key was deleted (also each
	// key of a deleted service account): it must stop authenticating.
	APIKeyDeleted = "api_key.deleted"
	// ServiceAccountDeleted: a project service account was deleted.
	ServiceAccountDeleted = "service_account.deleted"
	// ProjectAccessDenied / ProjectAccessRestored: a customer's policy
	// refuses (or admits again) one project on its key, the key working for
	// the org's other projects: the project's gate follows the stored record.
	ProjectAccessDenied   = "project.access_denied"
	ProjectAccessRestored = "project.access_restored"
)

// Change is one entry of the log.
type Change = store.Change

// Handler acts on a change.
type Handler func(ctx context.Context, c Change)

// Config configures a Log. Zero values take the defaults noted.
type Config struct {
	Store store.Store
	// Resync is the longest a change waits to be read without a
	// notification (default 30s; ekm uses the probe interval).
	Resync time.Duration
	// Retention is how long changes are kept (default 1h).
	Retention time.Duration
	Now       func() time.Time
	Logger    *slog.Logger
}

// Log publishes changes and follows the log. Safe for concurrent use.
type Log struct {
	cfg Config

	mu     sync.Mutex
	subs   map[string][]Handler
	resets []func(ctx context.Context)
	local  map[int64]struct{} // published here, applied, not yet passed by the follower
	follow map[int64]struct{} // being applied by the follower (InTx waits for it on cond)
	cond   *sync.Cond         // on mu: signalled when the follower finishes a change
	last   int64              // the follower's cursor: every change up to it is applied
	begun  bool               // last is set

	// listening: the PostgreSQL listener is connected, so every change
	// committed from now on wakes the follower at once.
	listening atomic.Bool

	syncMu   sync.Mutex // one Sync at a time
	lastRead time.Time  // start of the last successful Sync
}

// New returns a log; Run follows it.
func New(cfg Config) *Log {
	if cfg.Resync <= 0 {
		cfg.Resync = 30 * time.Second
	}
	if cfg.Retention <= 0 {
		cfg.Retention = time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	l := &Log{cfg: cfg, subs: map[string][]Handler{}, local: map[int64]struct{}{}, follow: map[int64]struct{}{}}
	l.cond = sync.NewCond(&l.mu)
	return l
}

// Subscribe calls h for every change of kind ("" = every kind), published
// here or by another replica, from now on. This is the invalidation point
// for any cache of state that another replica may change.
func (l *Log) Subscribe(kind string, h Handler) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.subs[kind] = append(l.subs[kind], h)
}

// OnReset calls h when this replica may have missed changes (it starts, or
// could not read the log for longer than half the retention): h must drop
// what it caches and re-read the state it depends on.
func (l *Log) OnReset(h func(ctx context.Context)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.resets = append(l.resets, h)
}

// Publisher appends changes inside one transaction of Log.InTx.
type Publisher struct {
	q       store.Queries
	now     func() time.Time
	changes []Change
}

// Publish appends a change to the transaction. Make it the transaction's
// last write where possible: appending orders the transaction after every
// other appending one (store.Queries.AppendChange).
func (p *Publisher) Publish(ctx context.Context, kind, orgID, objectID string) error {
	c := Change{Kind: kind, OrgID: orgID, ObjectID: objectID, At: p.now()}
	id, err := p.q.AppendChange(ctx, c)
	if err != nil {
		return err
	}
	c.ID = id
	p.changes = append(p.changes, c)
	return nil
}

// InTx runs fn in one store transaction (store.Store.InTx, so fn may run
// again on a serialization failure) and, once it committed, applies the
// changes fn published on this replica before returning.
func (l *Log) InTx(ctx context.Context, fn func(q store.Queries, pub *Publisher) error) error {
	return l.InStoreTx(ctx, l.cfg.Store, fn)
}

// InStoreTx is InTx in a transaction of st: a store over the log's
// database (a wrapper of it, as a caller may hold).
func (l *Log) InStoreTx(ctx context.Context, st store.Store, fn func(q store.Queries, pub *Publisher) error) error {
	var pub *Publisher
	err := st.InTx(ctx, func(q store.Queries) error {
		pub = &Publisher{q: q, now: l.cfg.Now} // afresh on each attempt
		return fn(q, pub)
	})
	if err != nil {
		return err
	}
	// Each change is applied here exactly once: by this call, or, when the
	// follower (woken by the commit's notification) got to it first, by
	// the follower, whose handlers have then returned before this does.
	var mine []Change
	l.mu.Lock()
	for _, c := range pub.changes {
		for {
			if _, busy := l.follow[c.ID]; !busy {
				break
			}
			l.cond.Wait()
		}
		if l.begun && c.ID <= l.last {
			continue // the follower applied it
		}
		if l.begun {
			l.local[c.ID] = struct{}{} // the follower need not apply it again
		}
		mine = append(mine, c)
	}
	l.mu.Unlock()
	for _, c := range mine {
		l.dispatch(context.WithoutCancel(ctx), c)
	}
	return nil
}

func (l *Log) dispatch(ctx context.Context, c Change) {
	l.mu.Lock()
	hs := append(append([]Handler(nil), l.subs[c.Kind]...), l.subs[""]...)
	l.mu.Unlock()
	for _, h := range hs {
		h(ctx, c)
	}
}

func (l *Log) reset(ctx context.Context) {
	l.mu.Lock()
	hs := make([]func(context.Context), len(l.resets))
	copy(hs, l.resets)
	l.mu.Unlock()
	for _, h := range hs {
		h(ctx)
	}
}

// LastApplied is the follower's cursor: the ID of the last change read.
func (l *Log) LastApplied() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

// pageSize is how many changes one read of the log returns.
const pageSize = 500

// Sync applies every change committed since the last Sync (by any
// replica). The first Sync only notes where the log ends and runs the reset
// handlers (a replica starting has no state to repair but must read it).
func (l *Log) Sync(ctx context.Context) error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	start := l.cfg.Now()
	l.mu.Lock()
	begun := l.begun
	l.mu.Unlock()
	if !begun {
		last, err := l.cfg.Store.LastChangeID(ctx)
		if err != nil {
			return err
		}
		l.mu.Lock()
		l.last, l.begun = last, true
		l.mu.Unlock()
		l.lastRead = start
		l.reset(ctx)
		return nil
	}
	stale := start.Sub(l.lastRead) > l.cfg.Retention/2
	for {
		l.mu.Lock()
		after := l.last
		l.mu.Unlock()
		cs, err := l.cfg.Store.ChangesAfter(ctx, after, pageSize)
		if err != nil {
			return err
		}
		for _, c := range cs {
			l.mu.Lock()
			_, mine := l.local[c.ID]
			delete(l.local, c.ID)
			if !mine {
				l.follow[c.ID] = struct{}{}
			}
			l.mu.Unlock()
			if !mine {
				l.dispatch(ctx, c)
			}
			l.mu.Lock()
			delete(l.follow, c.ID)
			l.last = c.ID
			l.cond.Broadcast()
			l.mu.Unlock()
		}
		if len(cs) < pageSize {
			break
		}
	}
	l.mu.Lock()
	for id := range l.local {
		if id <= l.last {
			delete(l.local, id)
		}
	}
	l.mu.Unlock()
	l.lastRead = start
	if stale {
		l.cfg.Logger.Warn("change log: not read for longer than half its retention; changes may have been pruned unread: resetting caches")
		l.reset(ctx)
	}
	return nil
}

// Run follows the log until ctx ends: it syncs at once, on every
// notification (PostgreSQL), after (re)connecting its listener, and every
// Resync interval; it prunes changes older than the retention.
func (l *Log) Run(ctx context.Context) {
	wake := make(chan struct{}, 1)
	poke := func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	if ls, ok := l.cfg.Store.(store.ChangeListener); ok {
		wg.Go(func() { l.listen(ctx, ls, poke) })
	}
	resync := time.NewTicker(l.cfg.Resync)
	defer resync.Stop()
	nextPrune := time.Now()
	for {
		if err := l.Sync(ctx); err != nil && ctx.Err() == nil {
			l.cfg.Logger.Warn("change log: read failed; will retry", "err", err)
		}
		if time.Now().After(nextPrune) {
			nextPrune = time.Now().Add(l.cfg.Retention / 4)
			if _, err := l.cfg.Store.PruneChanges(ctx, l.cfg.Now().Add(-l.cfg.Retention)); err != nil && ctx.Err() == nil {
				l.cfg.Logger.Warn("change log: prune failed", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-resync.C:
		}
	}
}

// Listening reports whether the follower's PostgreSQL listener is
// connected: until it is (just after start, or while it reconnects),
// another replica's change reaches this one only at the next resync.
func (l *Log) Listening() bool { return l.listening.Load() }

// listen keeps a listener connected, reconnecting with backoff.
func (l *Log) listen(ctx context.Context, ls store.ChangeListener, poke func()) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		connected := false
		err := ls.ListenChanges(ctx, func() { connected = true; l.listening.Store(true); poke() }, poke)
		l.listening.Store(false)
		if ctx.Err() != nil {
			return
		}
		if connected {
			backoff = 100 * time.Millisecond
		}
		if err == nil {
			err = errors.New("listener stopped")
		}
		l.cfg.Logger.Warn("change log: notifications lost; reading the log every resync interval until reconnected", "err", err, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}
