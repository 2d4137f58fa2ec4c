package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/cluster"
	"github.com/ekm-dev/ekm/store"
	"github.com/ekm-dev/ekm/store/sqlstore"
	"github.com/ekm-dev/ekm/store/sqlstore/pgtest"
)

// backends runs fn on SQLite and, when configured, PostgreSQL; open opens
// another connection pool on the same database (another replica).
func backends(t *testing.T, fn func(t *testing.T, open func() store.Store)) {
	for _, b := range []string{"sqlite", "postgres"} {
		t.Run(b, func(t *testing.T) {
			t.Parallel()
			var dsn string
			if b == "sqlite" {
				dsn = filepath.Join(t.TempDir(), "ekm.db")
			} else {
				dsn = pgtest.DSN(t)
			}
			fn(t, func() store.Store {
				s, err := sqlstore.Open(context.Background(), dsn)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { s.Close() })
				return s
			})
		})
	}
}

func postgres(t *testing.T) func() store.Store {
	dsn := pgtest.DSN(t)
	return func() store.Store {
		s, err := sqlstore.Open(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
}

// recorder collects the changes a replica's handlers saw.
type recorder struct {
	mu  sync.Mutex
	got []cluster.Change
}

func (r *recorder) handle(_ context.Context, c cluster.Change) {
	r.mu.Lock()
	r.got = append(r.got, c)
	r.mu.Unlock()
}

func (r *recorder) count(kind, id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.got {
		if c.Kind == kind && c.ObjectID == id {
			n++
		}
	}
	return n
}

// waitApplied polls until r has seen the change, failing after d.
func waitApplied(t *testing.T, r *recorder, kind, id string, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for r.count(kind, id) == 0 {
		if time.Since(start) > d {
			t.Fatalf("%s %s not applied within %v", kind, id, d)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Since(start)
}

func publish(t *testing.T, l *cluster.Log, kind, org, id string) {
	t.Helper()
	if err := l.InTx(context.Background(), func(q store.Queries, pub *cluster.Publisher) error {
		return pub.Publish(context.Background(), kind, org, id)
	}); err != nil {
		t.Fatal(err)
	}
}

func run(t *testing.T, l *cluster.Log) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// Every kind published on one replica is applied on the others, each
// within a second through LISTEN/NOTIFY (the resync interval is a minute,
// so only a notification can deliver it in time); the publishing replica
// applies it before InTx returns, and only once.
func TestPropagationWithinASecond(t *testing.T) {
	open := postgres(t)
	a := cluster.New(cluster.Config{Store: open(), Resync: time.Minute})
	var ra, rb, rc recorder
	a.Subscribe("", ra.handle)
	others := []*recorder{&rb, &rc}
	for _, r := range others {
		l := cluster.New(cluster.Config{Store: open(), Resync: time.Minute})
		l.Subscribe("", r.handle)
		if err := l.Sync(context.Background()); err != nil { // started: at the end of the log
			t.Fatal(err)
		}
		run(t, l)
	}
	if err := a.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	run(t, a)
	// Let the listeners connect: a change now is delivered by notification
	// or, at the latest, by the first sync after connecting.
	time.Sleep(100 * time.Millisecond)
	kinds := []string{cluster.ExternalKeyUnavailable, cluster.ExternalKeyAvailable, cluster.ExternalKeyDeleted,
		cluster.ProjectArchived, cluster.ProjectRekeyed, cluster.ProjectKeyRotated, cluster.APIKeyDeleted, cluster.ServiceAccountDeleted}
	for i, k := range kinds {
		id := fmt.Sprint("obj", i)
		publish(t, a, k, "org-1", id)
		if ra.count(k, id) != 1 {
			t.Fatalf("%s not applied on the publishing replica before InTx returned", k)
		}
		for j, r := range others {
			d := waitApplied(t, r, k, id, time.Second)
			t.Logf("%s applied on replica %d after %v", k, j+1, d.Round(time.Millisecond))
		}
	}
	// The publisher's own follower does not apply its changes again.
	for a.LastApplied() < lastID(t, open()) {
		time.Sleep(5 * time.Millisecond)
	}
	for i, k := range kinds {
		if n := ra.count(k, fmt.Sprint("obj", i)); n != 1 {
			t.Fatalf("%s applied %d times on the publishing replica", k, n)
		}
	}
}

func lastID(t *testing.T, s store.Store) int64 {
	id, err := s.LastChangeID(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// A rolled-back transaction publishes nothing, anywhere.
func TestRollbackPublishesNothing(t *testing.T) {
	backends(t, func(t *testing.T, open func() store.Store) {
		a, b := cluster.New(cluster.Config{Store: open()}), cluster.New(cluster.Config{Store: open()})
		var ra, rb recorder
		a.Subscribe("", ra.handle)
		b.Subscribe(cluster.ProjectArchived, rb.handle)
		ctx := context.Background()
		for _, l := range []*cluster.Log{a, b} {
			if err := l.Sync(ctx); err != nil {
				t.Fatal(err)
			}
		}
		boom := errors.New("boom")
		err := a.InTx(ctx, func(q store.Queries, pub *cluster.Publisher) error {
			if err := pub.Publish(ctx, cluster.ProjectArchived, "org-1", "p1"); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatal(err)
		}
		publish(t, a, cluster.ProjectRekeyed, "org-1", "p2")
		if err := b.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if ra.count(cluster.ProjectArchived, "p1")+rb.count(cluster.ProjectArchived, "p1") != 0 {
			t.Fatal("a rolled-back change was applied")
		}
		if rb.count(cluster.ProjectRekeyed, "p2") != 0 {
			t.Fatal("handler of another kind called")
		}
	})
}

// hiddenListener is a store whose notifications the test can cut, as when
// the listening connection drops and cannot reconnect (PostgreSQL
// restarting, a network partition).
type hiddenListener struct {
	store.Store
	ls     store.ChangeListener
	down   atomic.Bool
	cut    chan struct{}
	listen atomic.Int32 // successful (re)connections
}

func (h *hiddenListener) ListenChanges(ctx context.Context, ready, wake func()) error {
	if h.down.Load() {
		return errors.New("connection refused")
	}
	inner := ready
	ready = func() { h.listen.Add(1); inner() }
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-h.cut:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := h.ls.ListenChanges(ctx, ready, wake)
	if err == nil || errors.Is(err, context.Canceled) {
		err = errors.New("connection reset")
	}
	return err
}

// With its notifications lost (the connection dropped and cannot
// reconnect), a replica still applies every change within one resync
// interval; once it reconnects, within a second again.
func TestResyncAfterLostConnection(t *testing.T) {
	open := postgres(t)
	const resync = time.Second
	a := cluster.New(cluster.Config{Store: open(), Resync: time.Minute})
	s := open()
	h := &hiddenListener{Store: s, ls: s.(store.ChangeListener), cut: make(chan struct{})}
	b := cluster.New(cluster.Config{Store: h, Resync: resync})
	var rb recorder
	b.Subscribe("", rb.handle)
	if err := b.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	run(t, b)
	time.Sleep(100 * time.Millisecond)
	publish(t, a, cluster.APIKeyDeleted, "org-1", "k1")
	waitApplied(t, &rb, cluster.APIKeyDeleted, "k1", time.Second)

	h.down.Store(true)
	close(h.cut) // the connection drops; reconnecting fails from now on
	time.Sleep(50 * time.Millisecond)
	for i := range 3 {
		id := fmt.Sprint("k-lost-", i)
		publish(t, a, cluster.APIKeyDeleted, "org-1", id)
		d := waitApplied(t, &rb, cluster.APIKeyDeleted, id, resync+300*time.Millisecond)
		t.Logf("without notifications: applied after %v (resync %v)", d.Round(time.Millisecond), resync)
	}

	// The connection can be made again: the listener reconnects within
	// its backoff (at most 5 s), and changes arrive by notification again,
	// well before a resync.
	h.cut = make(chan struct{})
	before := h.listen.Load()
	h.down.Store(false)
	for deadline := time.Now().Add(10 * time.Second); h.listen.Load() == before; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the listener did not reconnect")
		}
	}
	for i := range 3 {
		id := fmt.Sprint("k-back-", i)
		publish(t, a, cluster.APIKeyDeleted, "org-1", id)
		waitApplied(t, &rb, cluster.APIKeyDeleted, id, 250*time.Millisecond)
	}
}

// On SQLite (one replica, no notifications) the follower polls; a second
// process's change (an operator command) is applied within a resync.
func TestSQLitePolls(t *testing.T) {
	dsn := filepath.Join(t.TempDir(), "ekm.db")
	open := func() store.Store {
		s, err := sqlstore.Open(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	const resync = 200 * time.Millisecond
	srv := cluster.New(cluster.Config{Store: open(), Resync: resync})
	var r recorder
	srv.Subscribe(cluster.ProjectRekeyed, r.handle)
	if err := srv.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	run(t, srv)
	tool := cluster.New(cluster.Config{Store: open()})
	publish(t, tool, cluster.ProjectRekeyed, "org-1", "p1")
	waitApplied(t, &r, cluster.ProjectRekeyed, "p1", resync+300*time.Millisecond)
}

// A replica starting, or one that could not read the log for half its
// retention (changes may have been pruned unread), runs the reset handlers.
func TestResetWhenChangesMayBeLost(t *testing.T) {
	backends(t, func(t *testing.T, open func() store.Store) {
		var mu sync.Mutex
		now := time.Unix(1_800_000_000, 0)
		clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
		advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
		l := cluster.New(cluster.Config{Store: open(), Retention: time.Hour, Now: clock})
		var resets atomic.Int32
		l.OnReset(func(context.Context) { resets.Add(1) })
		ctx := context.Background()
		sync := func() {
			t.Helper()
			if err := l.Sync(ctx); err != nil {
				t.Fatal(err)
			}
		}
		sync()
		if resets.Load() != 1 {
			t.Fatalf("%d resets at start, want 1", resets.Load())
		}
		advance(29 * time.Minute)
		sync()
		advance(29 * time.Minute)
		sync()
		if resets.Load() != 1 {
			t.Fatal("reset although the log was read often enough")
		}
		advance(31 * time.Minute)
		sync()
		if resets.Load() != 2 {
			t.Fatalf("%d resets after 31 minutes unread (retention 1h), want 2", resets.Load())
		}
	})
}

// killable is a store a test can cut off, as a replica's view when it dies
// (SIGKILL) or is partitioned: its lease calls fail.
type killable struct {
	store.Store
	dead atomic.Bool
}

// AcquireLeases times leases by the caller's clock: the leader must not use
// it (L4: replicas' clocks may disagree), only AcquireLeasesFor.
func (k *killable) AcquireLeases(ctx context.Context, holder string, names []string, now, until time.Time, renew bool) ([]store.Lease, error) {
	return nil, errors.New("the leader lease must be timed by the database's clock (AcquireLeasesFor)")
}

func (k *killable) AcquireLeasesFor(ctx context.Context, holder string, names []string, ttl time.Duration, renew bool) ([]store.Lease, error) {
	if k.dead.Load() {
		return nil, errors.New("dead")
	}
	return k.Store.AcquireLeasesFor(ctx, holder, names, ttl, renew)
}

func (k *killable) ReleaseLeases(ctx context.Context, holder string, names []string) error {
	if k.dead.Load() {
		return errors.New("dead")
	}
	return k.Store.ReleaseLeases(ctx, holder, names)
}

// Three replicas campaign: exactly one runs the jobs at any time; when the
// leader dies another takes over once its lease expired, and the dead one
// stops its jobs before that; a leader that stops cleanly hands over
// within one renewal.
func TestLeaderRunsJobsOnce(t *testing.T) {
	backends(t, func(t *testing.T, open func() store.Store) {
		const ttl, renew = 800 * time.Millisecond, 200 * time.Millisecond
		var active, maxActive atomic.Int32
		var mu sync.Mutex
		started := map[int]int{}
		starts := make(chan struct{}, 100) // one per jobs start, after it is counted
		type replica struct {
			st     *killable
			l      *cluster.Leader
			cancel context.CancelFunc
			done   chan struct{}
		}
		var rs []*replica
		for i := range 3 {
			r := &replica{st: &killable{Store: open()}, done: make(chan struct{})}
			r.l = cluster.NewLeader(cluster.LeaderConfig{Store: r.st, Holder: fmt.Sprint("replica-", i), TTL: ttl, Renew: renew})
			ctx, cancel := context.WithCancel(context.Background())
			r.cancel = cancel
			go func() {
				defer close(r.done)
				r.l.Run(ctx, func(ctx context.Context) {
					n := active.Add(1)
					for m := maxActive.Load(); n > m && !maxActive.CompareAndSwap(m, n); m = maxActive.Load() {
					}
					mu.Lock()
					started[i]++
					mu.Unlock()
					starts <- struct{}{}
					<-ctx.Done()
					active.Add(-1)
				})
			}()
			rs = append(rs, r)
			t.Cleanup(func() { cancel(); <-r.done })
		}
		leader := func(d time.Duration, not int) int {
			t.Helper()
			deadline := time.Now().Add(d)
			for {
				n, who := 0, -1
				for i, r := range rs {
					if r.l.Leading() {
						n, who = n+1, i
					}
				}
				if n > 1 {
					t.Fatalf("%d replicas lead at once", n)
				}
				if n == 1 && who != not {
					return who
				}
				if time.Now().After(deadline) {
					t.Fatalf("no new leader within %v", d)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		first := leader(2*ttl, -1)
		time.Sleep(3 * ttl) // renewals keep it
		if again := leader(0, -1); again != first {
			t.Fatalf("leadership moved from %d to %d without cause", first, again)
		}

		// The leader dies: its lease calls fail from now on.
		died := time.Now()
		rs[first].st.dead.Store(true)
		second := leader(ttl+2*renew+500*time.Millisecond, first)
		t.Logf("replica %d took over %v after replica %d died (lease TTL %v)", second, time.Since(died).Round(time.Millisecond), first, ttl)
		for rs[first].l.Leading() {
			time.Sleep(5 * time.Millisecond)
		}

		// The new leader stops cleanly: it releases the lease.
		stopped := time.Now()
		rs[second].cancel()
		<-rs[second].done
		third := leader(renew+500*time.Millisecond, second)
		if third == first {
			t.Fatal("the dead replica leads again")
		}
		t.Logf("replica %d took over %v after a clean stop", third, time.Since(stopped).Round(time.Millisecond))
		if m := maxActive.Load(); m != 1 {
			t.Fatalf("jobs ran on %d replicas at once", m)
		}
		// Leading() turns true just before the jobs start: wait for the
		// three starts to be counted.
		for range 3 {
			select {
			case <-starts:
			case <-time.After(10 * time.Second):
				t.Fatal("the leaders' jobs did not start")
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if started[first] != 1 || started[second] != 1 || started[third] != 1 {
			t.Fatalf("jobs started %v times per replica", started)
		}
	})
}
