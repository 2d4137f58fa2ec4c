package readcache_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/cluster"
	"github.com/ekm-dev/ekm/readcache"
	"github.com/ekm-dev/ekm/store"
	"github.com/ekm-dev/ekm/store/sqlstore"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestCacheBoundedOldestFirst(t *testing.T) {
	c := readcache.New[int, int](3, time.Minute, nil)
	for i := range 5 {
		c.Put(i, i, c.Generation())
	}
	if c.Len() != 3 {
		t.Fatalf("len %d, want 3", c.Len())
	}
	for i := range 5 {
		if _, ok := c.Get(i); ok != (i >= 2) {
			t.Fatalf("entry %d present = %v", i, ok)
		}
	}
}

func TestCacheTTL(t *testing.T) {
	clk := &clock{t: time.Unix(1000, 0)}
	c := readcache.New[string, int](10, 5*time.Second, clk.now)
	c.Put("a", 1, c.Generation())
	clk.add(4 * time.Second)
	if _, ok := c.Get("a"); !ok {
		t.Fatal("entry gone before its TTL")
	}
	clk.add(time.Second)
	if _, ok := c.Get("a"); ok {
		t.Fatal("entry served at its TTL")
	}
}

func TestCacheDisabled(t *testing.T) {
	for _, c := range []*readcache.Cache[int, int]{readcache.New[int, int](0, time.Minute, nil), readcache.New[int, int](10, -1, nil)} {
		c.Put(1, 1, c.Generation())
		if _, ok := c.Get(1); ok {
			t.Fatal("a disabled cache cached")
		}
	}
}

// A fill that read the store before an invalidation is not cached after
// it, whichever entry the invalidation named.
func TestCacheFillRacingInvalidation(t *testing.T) {
	c := readcache.New[string, int](10, time.Minute, nil)
	for _, inval := range []func(){
		func() { c.Delete("other") },
		func() { c.DeleteFunc(func(string, int) bool { return false }) },
		c.Reset,
	} {
		gen := c.Generation()
		inval()
		c.Put("a", 1, gen)
		if _, ok := c.Get("a"); ok {
			t.Fatal("a fill older than an invalidation was cached")
		}
	}
}

// fakeStore counts reads.
type fakeStore struct {
	keys     map[[32]byte]store.APIKey
	projects map[string]store.Project
	reads    atomic.Int64
	// during, if set, runs inside a read (after it saw the record).
	during func()
}

func (f *fakeStore) APIKeyByHash(_ context.Context, hash []byte) (store.APIKey, error) {
	f.reads.Add(1)
	k, ok := f.keys[[32]byte(hash)]
	if f.during != nil {
		f.during()
	}
	if !ok {
		return store.APIKey{}, store.ErrNotFound
	}
	return k, nil
}

func (f *fakeStore) GetProject(_ context.Context, orgID, id string) (store.Project, error) {
	f.reads.Add(1)
	p, ok := f.projects[id]
	if f.during != nil {
		f.during()
	}
	if !ok || p.OrgID != orgID {
		return store.Project{}, store.ErrNotFound
	}
	return p, nil
}

func hash(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }

func TestKeysCacheHitsOnlyAndForget(t *testing.T) {
	ctx := context.Background()
	h := hash("sk-proj-a")
	f := &fakeStore{keys: map[[32]byte]store.APIKey{}}
	k := readcache.NewKeys(f, readcache.Config{})
	// Unknown: never cached, so a key created just after works at once.
	for range 3 {
		if _, err := k.APIKeyByHash(ctx, h); !errors.Is(err, store.ErrNotFound) {
			t.Fatal(err)
		}
	}
	if f.reads.Load() != 3 || k.Len() != 0 {
		t.Fatalf("misses: %d reads, %d cached", f.reads.Load(), k.Len())
	}
	f.keys[[32]byte(h)] = store.APIKey{ID: "key_1", OrgID: "org-1", Kind: store.KindProject, ServiceAccountID: "svc_1", Hash: h}
	for range 3 {
		if got, err := k.APIKeyByHash(ctx, h); err != nil || got.ID != "key_1" {
			t.Fatal(got, err)
		}
	}
	if f.reads.Load() != 4 {
		t.Fatalf("%d reads, want 4 (one fill)", f.reads.Load())
	}
	if n := k.ForgetKey("key_2"); n != 0 {
		t.Fatal("forgot another key")
	}
	if n := k.ForgetKey("key_1"); n != 1 {
		t.Fatalf("ForgetKey dropped %d", n)
	}
	k.APIKeyByHash(ctx, h)
	if n := k.ForgetServiceAccount("svc_1"); n != 1 {
		t.Fatalf("ForgetServiceAccount dropped %d", n)
	}
	k.APIKeyByHash(ctx, h)
	k.Reset()
	if k.Len() != 0 {
		t.Fatal("Reset kept keys")
	}
}

// A key deleted while a request was reading it is not cached afterwards.
func TestKeysDeletionDuringFill(t *testing.T) {
	ctx := context.Background()
	h := hash("sk-proj-a")
	f := &fakeStore{keys: map[[32]byte]store.APIKey{[32]byte(h): {ID: "key_1", Hash: h}}}
	k := readcache.NewKeys(f, readcache.Config{})
	f.during = func() { k.ForgetKey("key_1") } // the deletion commits and is applied mid-read
	if _, err := k.APIKeyByHash(ctx, h); err != nil {
		t.Fatal(err)
	}
	if k.Len() != 0 {
		t.Fatal("a key read before its deletion was cached after it")
	}
}

// A project cached for one org is never returned to another.
func TestProjectsTenantSafe(t *testing.T) {
	ctx := context.Background()
	f := &fakeStore{projects: map[string]store.Project{"proj_1": {ID: "proj_1", OrgID: "org-a", CurrentKeyVersion: 1}}}
	p := readcache.NewProjects(f, readcache.Config{})
	if _, err := p.GetProject(ctx, "org-a", "proj_1"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.GetProject(ctx, "org-b", "proj_1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("another org's project: %v", err)
	}
	if got, err := p.GetProject(ctx, "org-a", "proj_1"); err != nil || got.OrgID != "org-a" {
		t.Fatal(got, err)
	}
	if f.reads.Load() != 2 {
		t.Fatalf("%d reads, want 2 (the fill and the other org's miss)", f.reads.Load())
	}
}

// Follow: each kind invalidates what it must, on the replica making the
// change (InTx) and on one reading it from the log (Sync); a reset drops
// everything.
func TestFollow(t *testing.T) {
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, filepath.Join(t.TempDir(), "ekm.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	h := hash("sk-proj-a")
	f := &fakeStore{keys: map[[32]byte]store.APIKey{[32]byte(h): {ID: "key_1", ServiceAccountID: "svc_1", Hash: h}},
		projects: map[string]store.Project{"proj_1": {ID: "proj_1", OrgID: "org-a"}}}

	here, there := cluster.New(cluster.Config{Store: st}), cluster.New(cluster.Config{Store: st})
	if err := there.Sync(ctx); err != nil { // the first Sync notes where the log ends
		t.Fatal(err)
	}
	type caches struct {
		k *readcache.Keys
		p *readcache.Projects
	}
	mk := func(l *cluster.Log) caches {
		c := caches{readcache.NewKeys(f, readcache.Config{}), readcache.NewProjects(f, readcache.Config{})}
		readcache.Follow(l, c.k, c.p)
		return c
	}
	ch, ct := mk(here), mk(there)
	fill := func() {
		for _, c := range []caches{ch, ct} {
			c.k.APIKeyByHash(ctx, h)
			c.p.GetProject(ctx, "org-a", "proj_1")
			if c.k.Len() != 1 || c.p.Len() != 1 {
				t.Fatal("not cached")
			}
		}
	}
	for _, c := range []struct {
		kind, id       string
		keys, projects bool // dropped
	}{
		{cluster.APIKeyDeleted, "key_1", true, false},
		{cluster.ServiceAccountDeleted, "svc_1", true, false},
		{cluster.ProjectArchived, "proj_1", false, true},
		{cluster.ProjectRekeyed, "proj_1", false, true},
		{cluster.ProjectKeyRotated, "proj_1", false, true},
		{cluster.APIKeyDeleted, "key_other", false, false},
		{cluster.ExternalKeyUnavailable, "extkey_1", false, false},
	} {
		fill()
		err := here.InTx(ctx, func(q store.Queries, pub *cluster.Publisher) error {
			return pub.Publish(ctx, c.kind, "org-a", c.id)
		})
		if err != nil {
			t.Fatal(err)
		}
		check := func(where string, cs caches) {
			if (cs.k.Len() == 0) != c.keys || (cs.p.Len() == 0) != c.projects {
				t.Fatalf("%s %s on %s: keys cached %d, projects cached %d", c.kind, c.id, where, cs.k.Len(), cs.p.Len())
			}
		}
		check("the changing replica, as InTx returns", ch)
		if err := there.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		check("another replica, once it read the log", ct)
	}
	// A replica that may have missed changes drops everything.
	fill()
	resets := readcache.NewKeys(f, readcache.Config{})
	fresh := cluster.New(cluster.Config{Store: st})
	readcache.Follow(fresh, resets, nil)
	resets.APIKeyByHash(ctx, h)
	if err := fresh.Sync(ctx); err != nil { // its first Sync is a reset
		t.Fatal(err)
	}
	if resets.Len() != 0 {
		t.Fatal("reset kept keys")
	}
}
