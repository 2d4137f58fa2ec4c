package storetest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/store"
)

// testChanges: the change log keeps what was appended, in ID order, after
// a cursor; a rolled-back append leaves nothing; pruning goes by time and
// never lets an ID be reused.
func testChanges(t *testing.T, s store.Store) {
	ctx := context.Background()
	if id := get[int64](t, "last")(s.LastChangeID(ctx)); id != 0 {
		t.Fatalf("LastChangeID of an empty log = %d", id)
	}
	base := time.Unix(1_800_000_000, 0).UTC()
	var ids []int64
	for i := range 5 {
		var id int64
		must(t, s.InTx(ctx, func(q store.Queries) error {
			var err error
			id, err = q.AppendChange(ctx, store.Change{Kind: "k", OrgID: "org-x", ObjectID: fmt.Sprint(i), At: base.Add(time.Duration(i) * time.Minute)})
			return err
		}))
		if len(ids) > 0 && id <= ids[len(ids)-1] {
			t.Fatalf("change IDs not increasing: %d after %v", id, ids)
		}
		ids = append(ids, id)
	}
	// Outside a transaction too.
	id := get[int64](t, "append")(s.AppendChange(ctx, store.Change{Kind: "k2", OrgID: "org-y", ObjectID: "5", At: base.Add(5 * time.Minute)}))
	ids = append(ids, id)
	// Rolled back: not in the log.
	err := s.InTx(ctx, func(q store.Queries) error {
		if _, err := q.AppendChange(ctx, store.Change{Kind: "gone", At: base}); err != nil {
			return err
		}
		return errRollback
	})
	wantErr(t, "rollback", err, errRollback)

	all := get[[]store.Change](t, "after 0")(s.ChangesAfter(ctx, 0, 100))
	equal(t, "ids", idsOf(all, cid), idsOf(changesOf(ids), cid))
	equal(t, "first", all[0], store.Change{ID: ids[0], Kind: "k", OrgID: "org-x", ObjectID: "0", At: base})
	equal(t, "last", all[5].Kind+all[5].OrgID, "k2org-y")
	page := get[[]store.Change](t, "page")(s.ChangesAfter(ctx, ids[1], 2))
	equal(t, "page", idsOf(page, cid), idsOf(changesOf(ids[2:4]), cid))
	if got := get[int64](t, "last")(s.LastChangeID(ctx)); got != ids[5] {
		t.Fatalf("LastChangeID = %d, want %d", got, ids[5])
	}

	n := get[int64](t, "prune")(s.PruneChanges(ctx, base.Add(2*time.Minute)))
	if n != 2 {
		t.Fatalf("PruneChanges deleted %d, want 2", n)
	}
	equal(t, "after prune", idsOf(get[[]store.Change](t, "list")(s.ChangesAfter(ctx, 0, 100)), cid), idsOf(changesOf(ids[2:]), cid))
	get[int64](t, "prune all")(s.PruneChanges(ctx, base.Add(time.Hour)))
	if got := get[int64](t, "last")(s.LastChangeID(ctx)); got != 0 {
		t.Fatalf("LastChangeID of an emptied log = %d", got)
	}
	next := get[int64](t, "append")(s.AppendChange(ctx, store.Change{Kind: "k", At: base}))
	if next <= ids[5] {
		t.Fatalf("ID %d reused after pruning (last was %d)", next, ids[5])
	}
}

type errString string

func (e errString) Error() string { return string(e) }

const errRollback = errString("roll back")

func cid(c store.Change) string { return fmt.Sprint(c.ID) }

func changesOf(ids []int64) []store.Change {
	out := make([]store.Change, len(ids))
	for i, id := range ids {
		out[i].ID = id
	}
	return out
}

// testChangesCommitOrder: a reader that follows the log with a cursor (the
// last ID it saw) misses nothing while transactions append concurrently,
// each doing more work after its append: IDs become visible in order.
func testChangesCommitOrder(t *testing.T, s store.Store) {
	ctx := context.Background()
	o := newOrg(t, s)
	const workers, each = 6, 8
	var wg sync.WaitGroup
	appended := make(chan int64, workers*each)
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				var id int64
				err := s.InTx(ctx, func(q store.Queries) error {
					var err error
					if id, err = q.AppendChange(ctx, store.Change{Kind: "k", OrgID: o.ID, ObjectID: fmt.Sprint(w, "/", i), At: now()}); err != nil {
						return err
					}
					// Time between the append and the commit.
					time.Sleep(time.Duration((w+i)%3) * time.Millisecond)
					return nil
				})
				if err != nil {
					errs <- err
					return
				}
				appended <- id
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	var seen []int64
	var last int64
	follow := func() {
		cs, err := s.ChangesAfter(ctx, last, 1000)
		must(t, err)
		for _, c := range cs {
			seen = append(seen, c.ID)
			last = c.ID
		}
	}
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		follow()
	}
	follow()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	close(appended)
	var want []int64
	for id := range appended {
		want = append(want, id)
	}
	slices.Sort(want)
	if !slices.Equal(seen, want) {
		t.Fatalf("a reader following the log saw %d changes, %d were committed: a change became visible after a later one", len(seen), len(want))
	}
}

// testLeases: a lease goes to one holder until it expires; renewing keeps
// it; release frees it; of holders racing for the same leases exactly one
// takes each.
func testLeases(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := time.Unix(1_800_000_000, 0).UTC()
	names := func(ls []store.Lease) []string {
		out := idsOf(ls, func(l store.Lease) string { return l.Name })
		slices.Sort(out)
		return out
	}
	acquire := func(holder string, ns []string, at time.Time, ttl time.Duration, renew bool) []store.Lease {
		t.Helper()
		return get[[]store.Lease](t, "acquire")(s.AcquireLeases(ctx, holder, ns, at, at.Add(ttl), renew))
	}
	got := acquire("a", []string{"y", "x", "x"}, t0, time.Minute, false)
	equal(t, "a takes both", names(got), []string{"x", "y"})
	for _, l := range got {
		if l.Holder != "a" || !l.Expires.Equal(t0.Add(time.Minute)) || l.Taken != 1 {
			t.Fatalf("lease %+v", l)
		}
	}
	equal(t, "b while held", names(acquire("b", []string{"x", "y", "z"}, t0.Add(30*time.Second), time.Minute, false)), []string{"z"})
	equal(t, "a again without renew", names(acquire("a", []string{"x"}, t0.Add(30*time.Second), time.Minute, false)), []string{})
	equal(t, "a renews", names(acquire("a", []string{"x"}, t0.Add(30*time.Second), time.Minute, true)), []string{"x"})
	equal(t, "b renew is not a's", names(acquire("b", []string{"x"}, t0.Add(31*time.Second), time.Minute, true)), []string{})
	// x now expires at t0+90s, y at t0+60s.
	got = acquire("b", []string{"x", "y"}, t0.Add(60*time.Second), time.Minute, false)
	equal(t, "b after y expired", names(got), []string{"y"})
	if got[0].Taken != 2 || got[0].Holder != "b" {
		t.Fatalf("taken over: %+v", got[0])
	}
	l := get[store.Lease](t, "get")(s.GetLease(ctx, "x"))
	if l.Holder != "a" || l.Taken != 2 || !l.Expires.Equal(t0.Add(90*time.Second)) {
		t.Fatalf("x: %+v", l)
	}
	_, err := s.GetLease(ctx, "never")
	wantErr(t, "get unknown", err, store.ErrNotFound)

	// Release: a's leases are free at once, others' untouched.
	must(t, s.ReleaseLeases(ctx, "a", nil))
	equal(t, "after release", names(acquire("c", []string{"x", "y", "z"}, t0.Add(61*time.Second), time.Minute, false)), []string{"x"})
	must(t, s.ReleaseLeases(ctx, "c", []string{"x"}))
	must(t, s.ReleaseLeases(ctx, "c", []string{}))
	equal(t, "after release by name", names(acquire("d", []string{"x"}, t0.Add(62*time.Second), time.Minute, false)), []string{"x"})

	// Prune: leases expired before the cutoff are deleted (z expired at
	// t0+90s, y at t0+120s; x, d's, at t0+122s stays).
	n := get[int64](t, "prune")(s.PruneLeases(ctx, t0.Add(121*time.Second)))
	if n != 2 {
		t.Fatalf("PruneLeases deleted %d, want 2", n)
	}
	_, err = s.GetLease(ctx, "y")
	wantErr(t, "pruned", err, store.ErrNotFound)
	if l := get[store.Lease](t, "get")(s.GetLease(ctx, "x")); l.Holder != "d" {
		t.Fatalf("unexpired lease pruned: %+v", l)
	}

	// Racing holders: each of 40 free leases goes to exactly one of 6.
	var race []string
	for i := range 40 {
		race = append(race, fmt.Sprintf("race/%02d", i))
	}
	var mu sync.Mutex
	owner := map[string]string{}
	var wg sync.WaitGroup
	for h := range 6 {
		wg.Go(func() {
			holder := fmt.Sprint("h", h)
			ns := slices.Clone(race)
			if h%2 == 1 {
				slices.Reverse(ns)
			}
			ls, err := s.AcquireLeases(ctx, holder, ns, t0, t0.Add(time.Minute), false)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, l := range ls {
				if prev, ok := owner[l.Name]; ok {
					t.Errorf("lease %s taken by %s and %s", l.Name, prev, holder)
				}
				owner[l.Name] = holder
			}
		})
	}
	wg.Wait()
	if len(owner) != len(race) {
		t.Fatalf("%d of %d leases taken", len(owner), len(race))
	}
}
