// Package readcache takes the data plane's per-request store reads off its
// hot path: the API key a bearer value hashes to, and the key's project.
// Both are read-through caches in front of the store, bounded in size and
// age, and invalidated through the change log (package cluster), so that
// what they guarantee is what the store lookups guaranteed:
//
//   - a deleted API key, the keys of a deleted service account and an
//     archived project are refused by the next request on the replica
//     that made the change (the change log runs the invalidation before
//     the deleting call answers), and within the change log's delivery
//     (under a second) on every other replica;
//   - a project's rotation (new current key version) and re-key (another
//     external key) are followed the same way;
//   - when a replica may have missed changes (the change log's reset), the
//     caches are dropped whole;
//   - an entry is never older than the TTL (a few seconds), the last line
//     of defence should a change reach the store without the log;
//   - only hits are cached: an unknown key or project is read from the
//     store every time, so a just-created key works at once;
//   - a hit never crosses tenants: API keys are found by the hash of their
//     whole value (as in the store), projects by id and checked against
//     the caller's org.
//
// A read racing an invalidation is not cached (a generation is taken before
// the store read and checked at the insert), so an invalidation is never
// undone by a fill that read the store before the change committed.
package readcache

import (
	"container/list"
	"context"
	"sync"
	"time"

	"github.com/ekm-dev/ekm/cluster"
	"github.com/ekm-dev/ekm/store"
)

// Defaults of Config.
const (
	// DefaultTTL is the longest an entry is served without reading the
	// store again. Invalidation is the change log's job; this only bounds
	// the damage of a change that bypassed it.
	DefaultTTL = 5 * time.Second
	// DefaultSize bounds the entries of each cache (API keys, projects).
	DefaultSize = 10000
)

// Cache is a bounded map whose entries expire after a TTL. When full, the
// oldest entry goes first (entries share one TTL, so that is also the one
// closest to expiry). Safe for concurrent use; reads take a shared lock.
type Cache[K comparable, V any] struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu    sync.RWMutex
	m     map[K]*entry[K, V]
	order *list.List // of *entry, oldest first
	gen   uint64     // bumped by every invalidation
}

type entry[K comparable, V any] struct {
	k       K
	v       V
	expires time.Time
	elem    *list.Element
}

// New returns a cache of at most size entries (<= 0: caches nothing)
// served for at most ttl (<= 0: caches nothing). now may be nil.
func New[K comparable, V any](size int, ttl time.Duration, now func() time.Time) *Cache[K, V] {
	if now == nil {
		now = time.Now
	}
	return &Cache[K, V]{ttl: ttl, max: size, now: now, m: map[K]*entry[K, V]{}, order: list.New()}
}

// Get returns the entry of k if it is younger than the TTL.
func (c *Cache[K, V]) Get(k K) (V, bool) {
	c.mu.RLock()
	e, ok := c.m[k]
	c.mu.RUnlock()
	if !ok || !c.now().Before(e.expires) {
		var zero V
		return zero, false
	}
	return e.v, true
}

// Generation is a token for Put: take it before reading what will be put.
func (c *Cache[K, V]) Generation() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.gen
}

// Put stores v under k, unless an invalidation happened since gen was
// taken (Generation): v may predate it.
func (c *Cache[K, V]) Put(k K, v V, gen uint64) {
	if c.max <= 0 || c.ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	if old, ok := c.m[k]; ok {
		c.removeLocked(old)
	}
	for len(c.m) >= c.max {
		c.removeLocked(c.order.Front().Value.(*entry[K, V]))
	}
	e := &entry[K, V]{k: k, v: v, expires: c.now().Add(c.ttl)}
	e.elem = c.order.PushBack(e)
	c.m[k] = e
}

func (c *Cache[K, V]) removeLocked(e *entry[K, V]) {
	c.order.Remove(e.elem)
	delete(c.m, e.k)
}

// Delete drops k's entry and makes every read in flight uncacheable.
func (c *Cache[K, V]) Delete(k K) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	if e, ok := c.m[k]; ok {
		c.removeLocked(e)
	}
}

// DeleteFunc drops every entry for which drop is true (a scan: for rare
// invalidations by something other than the key) and makes every read in
// flight uncacheable. It returns how many it dropped.
func (c *Cache[K, V]) DeleteFunc(drop func(K, V) bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	n := 0
	for k, e := range c.m {
		if drop(k, e.v) {
			c.removeLocked(e)
			n++
		}
	}
	return n
}

// Reset drops everything and makes every read in flight uncacheable.
func (c *Cache[K, V]) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	clear(c.m)
	c.order.Init()
}

// Len is the number of entries (expired ones included until replaced).
func (c *Cache[K, V]) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}

// Config configures the data plane's caches. Zero values take the defaults.
type Config struct {
	Size int           // entries per cache (default DefaultSize)
	TTL  time.Duration // default DefaultTTL
	Now  func() time.Time
}

func (c *Config) defaults() {
	if c.Size == 0 {
		c.Size = DefaultSize
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
}

// KeyFinder finds an API key by the SHA-256 of its value (store.Queries
// has it; auth.Authenticate uses it).
type KeyFinder interface {
	APIKeyByHash(ctx context.Context, hash []byte) (store.APIKey, error)
}

// ProjectGetter reads a project of an org (store.Queries has it).
type ProjectGetter interface {
	GetProject(ctx context.Context, orgID, id string) (store.Project, error)
}

// Keys is a KeyFinder that caches the API keys it finds in st.
type Keys struct {
	st KeyFinder
	c  *Cache[[32]byte, store.APIKey]
}

// NewKeys returns a cache of st's API keys.
func NewKeys(st KeyFinder, cfg Config) *Keys {
	cfg.defaults()
	return &Keys{st: st, c: New[[32]byte, store.APIKey](cfg.Size, cfg.TTL, cfg.Now)}
}

// APIKeyByHash returns the key whose value hashes to hash: from the cache,
// or from the store (then cached). Misses and errors are not cached. The
// record is shared: callers must not modify it.
func (k *Keys) APIKeyByHash(ctx context.Context, hash []byte) (store.APIKey, error) {
	if len(hash) != 32 {
		return k.st.APIKeyByHash(ctx, hash)
	}
	h := [32]byte(hash)
	if v, ok := k.c.Get(h); ok {
		return v, nil
	}
	gen := k.c.Generation()
	v, err := k.st.APIKeyByHash(ctx, hash)
	if err != nil {
		return v, err
	}
	if len(v.Hash) == 32 && [32]byte(v.Hash) == h {
		k.c.Put(h, v, gen)
	}
	return v, nil
}

// ForgetKey drops API key id (deleted).
func (k *Keys) ForgetKey(id string) int {
	return k.c.DeleteFunc(func(_ [32]byte, v store.APIKey) bool { return v.ID == id })
}

// ForgetServiceAccount drops the keys of service account id (deleted).
func (k *Keys) ForgetServiceAccount(id string) int {
	return k.c.DeleteFunc(func(_ [32]byte, v store.APIKey) bool { return v.ServiceAccountID != "" && v.ServiceAccountID == id })
}

// Reset drops every key.
func (k *Keys) Reset() { k.c.Reset() }

// Len is the number of cached keys.
func (k *Keys) Len() int { return k.c.Len() }

// Projects is a ProjectGetter that caches the projects it reads from st.
type Projects struct {
	st ProjectGetter
	c  *Cache[string, store.Project]
}

// NewProjects returns a cache of st's projects.
func NewProjects(st ProjectGetter, cfg Config) *Projects {
	cfg.defaults()
	return &Projects{st: st, c: New[string, store.Project](cfg.Size, cfg.TTL, cfg.Now)}
}

// GetProject returns project id of orgID: from the cache, or from the store
// (then cached). A cached project of another org is never returned: the
// store answers instead. Misses and errors are not cached. The record is
// shared: callers must not modify it (nor *ArchivedAt).
func (p *Projects) GetProject(ctx context.Context, orgID, id string) (store.Project, error) {
	if v, ok := p.c.Get(id); ok && v.OrgID == orgID {
		return v, nil
	}
	gen := p.c.Generation()
	v, err := p.st.GetProject(ctx, orgID, id)
	if err != nil {
		return v, err
	}
	if v.ID == id && v.OrgID == orgID {
		p.c.Put(id, v, gen)
	}
	return v, nil
}

// Forget drops project id (archived, re-keyed, rotated).
func (p *Projects) Forget(id string) { p.c.Delete(id) }

// Reset drops every project.
func (p *Projects) Reset() { p.c.Reset() }

// Len is the number of cached projects.
func (p *Projects) Len() int { return p.c.Len() }

// Follow subscribes the caches to the change log (either may be nil):
//
//   - api_key.deleted: the key is dropped;
//   - service_account.deleted: its keys are dropped (each also has its
//     own api_key.deleted);
//   - project.archived, project.rekeyed, project.key_rotated: the project
//     is dropped, so the next request reads its archived state, its
//     external key or its current key version from the store;
//   - reset (this replica may have missed changes): everything is dropped.
//
// The replica making a change runs these before its call answers; the
// others when they read the log.
func Follow(l *cluster.Log, keys *Keys, projects *Projects) {
	if keys != nil {
		l.Subscribe(cluster.APIKeyDeleted, func(_ context.Context, c cluster.Change) { keys.ForgetKey(c.ObjectID) })
		l.Subscribe(cluster.ServiceAccountDeleted, func(_ context.Context, c cluster.Change) { keys.ForgetServiceAccount(c.ObjectID) })
		l.OnReset(func(context.Context) { keys.Reset() })
	}
	if projects != nil {
		forget := func(_ context.Context, c cluster.Change) { projects.Forget(c.ObjectID) }
		l.Subscribe(cluster.ProjectArchived, forget)
		l.Subscribe(cluster.ProjectRekeyed, forget)
		l.Subscribe(cluster.ProjectKeyRotated, forget)
		l.OnReset(func(context.Context) { projects.Reset() })
	}
}
