package keyring

import (
	"container/list"
	"sync"
	"time"

	"github.com/ekm-dev/ekm/secret"
)

// cacheKey includes the org so that a cache hit is tenant-checked exactly like
// a store lookup.
type cacheKey struct {
	orgID     string
	projectID string
	version   int
}

type entry struct {
	k        cacheKey
	key      secret.Key
	extKeyID string // "" = operator default key
	expires  time.Time
	elem     *list.Element // in cache.lru
	org      *list.List    // cache.orgs[k.orgID]
	orgElem  *list.Element // in org
}

// cache holds unwrapped project keys: bounded (LRU), with a hard TTL, and
// evictable by the external key that wraps them. Evicted keys are zeroed.
// Callers only ever receive copies, so zeroing never pulls a key out from
// under a request that is using it.
//
// The cache is shared by every org, so it also caps each org's share: when
// a put must evict (the cache is full) and the putting org holds more than
// orgMax entries, the org's own least recently used entry goes, not the
// global one. One org touching many projects therefore recycles its own
// share and cannot push other orgs' keys out (which would cost them KMS
// calls and latency, and let one tenant amplify KMS traffic on another's
// key): whatever one org does, the others keep at least max−orgMax entries
// between them, by LRU among themselves. While the cache is not full the
// cap does not bind, so a lone org can use all of it.
type cache struct {
	mu     sync.Mutex
	ttl    time.Duration
	max    int
	orgMax int // entries one org may hold once the cache is full (≥ 1)
	now    func() time.Time
	m      map[cacheKey]*entry
	lru    *list.List            // front = most recently used
	orgs   map[string]*list.List // per org, front = most recently used
	byEK   map[string]map[cacheKey]struct{}
	// gens counts evictions per project (ids are unique across orgs), so that an unwrap that
	// started before a re-key is not cached after it. Bounded: at maxGens
	// entries it is cleared and epoch bumped, which makes every fill in flight
	// uncacheable (safe, and rare).
	gens  map[string]uint64
	epoch uint64
}

// maxGens bounds the per-project eviction counters.
const maxGens = 10000

// generation is a project's eviction count, valid within one epoch.
type generation struct{ epoch, n uint64 }

// DefaultCacheOrgShare is the share of the project-key cache one org may
// hold once the cache is full (Config.CacheOrgShare): the other orgs keep
// at least three quarters of it between them.
const DefaultCacheOrgShare = 0.25

func newCache(ttl time.Duration, max int, now func() time.Time) *cache {
	c := &cache{ttl: ttl, max: max, now: now, m: map[cacheKey]*entry{}, lru: list.New(), orgs: map[string]*list.List{},
		byEK: map[string]map[cacheKey]struct{}{}, gens: map[string]uint64{}}
	return c.withOrgShare(DefaultCacheOrgShare)
}

// withOrgShare sets the share of the cache one org may hold once it is full:
// share of max, at least one entry; a share of 1 or more disables the cap.
func (c *cache) withOrgShare(share float64) *cache {
	c.orgMax = c.max
	if share > 0 && share < 1 {
		c.orgMax = max(1, int(share*float64(c.max)))
	}
	return c
}

// get returns a copy of the cached key and the external key that wraps it.
func (c *cache) get(k cacheKey) (secret.Key, string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok {
		return secret.Key{}, "", false
	}
	if !c.now().Before(e.expires) {
		c.removeLocked(e)
		return secret.Key{}, "", false
	}
	c.lru.MoveToFront(e.elem)
	e.org.MoveToFront(e.orgElem)
	// A clone: the caller zeroes it when done; the envelope's derived
	// state (secret.Memo) is shared with every clone of this entry's key.
	return e.key.Clone(), e.extKeyID, true
}

// put stores a copy of key.
func (c *cache) put(k cacheKey, extKeyID string, key secret.Key) {
	if c.max <= 0 || c.ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.putLocked(k, extKeyID, key)
}

func (c *cache) putLocked(k cacheKey, extKeyID string, key secret.Key) {
	if c.max <= 0 || c.ttl <= 0 {
		return
	}
	if key.Bytes() == nil {
		return
	}
	cp := key.Clone()
	if old, ok := c.m[k]; ok {
		c.removeLocked(old)
	}
	e := &entry{k: k, key: cp, extKeyID: extKeyID, expires: c.now().Add(c.ttl)}
	e.elem = c.lru.PushFront(e)
	ol := c.orgs[k.orgID]
	if ol == nil {
		ol = list.New()
		c.orgs[k.orgID] = ol
	}
	e.org, e.orgElem = ol, ol.PushFront(e)
	c.m[k] = e
	set := c.byEK[extKeyID]
	if set == nil {
		set = map[cacheKey]struct{}{}
		c.byEK[extKeyID] = set
	}
	set[k] = struct{}{}
	for c.lru.Len() > c.max {
		victim := c.lru.Back()
		if ol.Len() > c.orgMax {
			// Over its share: the org makes room from its own entries
			// (never e itself: orgMax ≥ 1 and e is at the front).
			victim = ol.Back()
		}
		c.removeLocked(victim.Value.(*entry))
	}
}

func (c *cache) removeLocked(e *entry) {
	e.key.Zero()
	c.lru.Remove(e.elem)
	e.org.Remove(e.orgElem)
	if e.org.Len() == 0 {
		delete(c.orgs, e.k.orgID)
	}
	delete(c.m, e.k)
	if set := c.byEK[e.extKeyID]; set != nil {
		delete(set, e.k)
		if len(set) == 0 {
			delete(c.byEK, e.extKeyID)
		}
	}
}

// evictExternalKey drops every key wrapped by extKeyID and reports how many.
func (c *cache) evictExternalKey(extKeyID string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for k := range c.byEK[extKeyID] {
		c.removeLocked(c.m[k])
		n++
	}
	return n
}

// evictProject drops every version of one project's key.
func (c *cache) evictProject(projectID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.gens[projectID]; !ok && len(c.gens) >= maxGens {
		clear(c.gens)
		c.epoch++
	}
	c.gens[projectID]++
	for k, e := range c.m {
		if k.projectID == projectID {
			c.removeLocked(e)
		}
	}
}

// evictAll drops every key and makes every fill in flight uncacheable.
func (c *cache) evictAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.m {
		c.removeLocked(e)
	}
	clear(c.gens)
	c.epoch++
}

func (c *cache) generation(projectID string) generation {
	c.mu.Lock()
	defer c.mu.Unlock()
	return generation{c.epoch, c.gens[projectID]}
}

// putIfGeneration caches key unless the project was evicted since gen.
func (c *cache) putIfGeneration(k cacheKey, extKeyID string, key secret.Key, gen generation) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if (generation{c.epoch, c.gens[k.projectID]}) == gen {
		c.putLocked(k, extKeyID, key)
	}
}

func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
