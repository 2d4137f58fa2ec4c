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

// testProjectProbeBatch: the projects on a key, in id order after a
// cursor, each with its newest version and its recorded refusal; archived
// projects, other keys' and other orgs' projects are not listed.
func testProjectProbeBatch(t *testing.T, s store.Store) {
	ctx := context.Background()
	o, other := newOrg(t, s), newOrg(t, s)
	k, k2 := newExternalKey(t, s, o.ID), newExternalKey(t, s, o.ID)
	var ps []store.Project
	for range 4 {
		p := newProject(t, s, o.ID, k.ID)
		newProjectKey(t, s, p, 1, "v1")
		ps = append(ps, p)
	}
	newProjectKey(t, s, ps[1], 2, "v2")
	slices.SortFunc(ps, func(a, b store.Project) int { return cmpString(a.ID, b.ID) })
	// Archived, and on another key: not listed.
	gone := newProject(t, s, o.ID, k.ID)
	newProjectKey(t, s, gone, 1, "v1")
	at := now()
	gone.ArchivedAt = &at
	must(t, s.UpdateProject(ctx, gone))
	newProjectKey(t, s, newProject(t, s, o.ID, k2.ID), 1, "v1")
	denied := store.ProjectAccess{OrgID: o.ID, ProjectID: ps[2].ID, ExternalKeyID: k.ID, Code: "c", Message: "m", At: now()}
	must(t, s.DenyProject(ctx, denied))

	batch := func(after string, limit int) []store.ProjectSample {
		t.Helper()
		return get[[]store.ProjectSample](t, "batch")(s.ProjectProbeBatch(ctx, o.ID, k.ID, after, limit))
	}
	all := batch("", 10)
	if len(all) != 4 {
		t.Fatalf("batch of %d, want the 4 active projects on the key", len(all))
	}
	for i, smp := range all {
		p := ps[i]
		if smp.Key.ProjectID != p.ID || smp.Key.ExternalKeyID != k.ID {
			t.Fatalf("sample %d: %+v, want project %s", i, smp.Key, p.ID)
		}
		wantV := 1
		if p.ID == ps[1].ID {
			wantV = 2
		}
		if smp.Key.Version != wantV || len(smp.Key.Wrapped) == 0 {
			t.Fatalf("sample of %s: version %d, want the newest (%d)", p.ID, smp.Key.Version, wantV)
		}
		if (smp.Denied != nil) != (p.ID == denied.ProjectID) {
			t.Fatalf("sample of %s: refusal %+v", p.ID, smp.Denied)
		}
	}
	equal(t, "refusal", *all[2].Denied, denied)
	got := batch(ps[1].ID, 1)
	if len(got) != 1 || got[0].Key.ProjectID != ps[2].ID {
		t.Fatalf("after %s, limit 1: %+v", ps[1].ID, got)
	}
	equal(t, "after the last", len(batch(ps[3].ID, 10)), 0)
	equal(t, "other org", len(get[[]store.ProjectSample](t, "batch")(s.ProjectProbeBatch(ctx, other.ID, k.ID, "", 10))), 0)

	// The cursor: "" until set; per key; unknown keys have none.
	equal(t, "cursor", get[string](t, "cursor")(s.ProjectProbeCursor(ctx, o.ID, k.ID)), "")
	must(t, s.SetProjectProbeCursor(ctx, o.ID, k.ID, ps[1].ID))
	equal(t, "cursor set", get[string](t, "cursor")(s.ProjectProbeCursor(ctx, o.ID, k.ID)), ps[1].ID)
	equal(t, "other key's cursor", get[string](t, "cursor")(s.ProjectProbeCursor(ctx, o.ID, k2.ID)), "")
	equal(t, "other org's view", get[string](t, "cursor")(s.ProjectProbeCursor(ctx, other.ID, k.ID)), "")
	wantErr(t, "set for another org", s.SetProjectProbeCursor(ctx, other.ID, k.ID, "x"), store.ErrNotFound)
	// Health writes leave it alone.
	must(t, s.SetExternalKeyHealth(ctx, o.ID, k.ID, store.KeyHealth{Status: store.StatusDegraded, At: now()}))
	equal(t, "cursor after a health write", get[string](t, "cursor")(s.ProjectProbeCursor(ctx, o.ID, k.ID)), ps[1].ID)
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// testLeasesOnDBClock: AcquireLeasesFor times leases by the database's
// clock: a lease lasts ttl from the statement, is not taken by another
// holder meanwhile, is renewed by its holder, and one that has expired
// (ttl 0) is free at once; of racing holders one takes each lease.
func testLeasesOnDBClock(t *testing.T, s store.Store) {
	ctx := context.Background()
	acquire := func(holder string, ns []string, ttl time.Duration, renew bool) []string {
		t.Helper()
		ls := get[[]store.Lease](t, "acquire")(s.AcquireLeasesFor(ctx, holder, ns, ttl, renew))
		out := idsOf(ls, func(l store.Lease) string { return l.Name })
		slices.Sort(out)
		return out
	}
	before := time.Now()
	equal(t, "a takes", acquire("a", []string{"db/y", "db/x", "db/x"}, time.Hour, false), []string{"db/x", "db/y"})
	after := time.Now()
	l := get[store.Lease](t, "get")(s.GetLease(ctx, "db/x"))
	// The database runs on this machine here: its clock is this one's.
	if l.Holder != "a" || l.Taken != 1 || l.Expires.Before(before.Add(time.Hour-time.Second)) || l.Expires.After(after.Add(time.Hour+time.Second)) {
		t.Fatalf("lease %+v, want a's until about %v", l, before.Add(time.Hour))
	}
	equal(t, "b while held", acquire("b", []string{"db/x", "db/y", "db/z"}, time.Hour, false), []string{"db/z"})
	equal(t, "a again without renew", acquire("a", []string{"db/x"}, time.Hour, false), []string{})
	equal(t, "a renews", acquire("a", []string{"db/x"}, time.Hour, true), []string{"db/x"})
	equal(t, "b cannot renew a's", acquire("b", []string{"db/x"}, time.Hour, true), []string{})
	// A lease of ttl 0 has expired by the next statement.
	equal(t, "c takes w for no time", acquire("c", []string{"db/w"}, 0, false), []string{"db/w"})
	equal(t, "d takes w at once", acquire("d", []string{"db/w"}, time.Hour, false), []string{"db/w"})
	if l := get[store.Lease](t, "get")(s.GetLease(ctx, "db/w")); l.Holder != "d" || l.Taken != 2 {
		t.Fatalf("w: %+v", l)
	}
	must(t, s.ReleaseLeases(ctx, "a", []string{"db/x"}))
	equal(t, "after release", acquire("b", []string{"db/x"}, time.Hour, false), []string{"db/x"})

	var race []string
	for i := range 30 {
		race = append(race, fmt.Sprintf("dbrace/%02d", i))
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
			ls, err := s.AcquireLeasesFor(ctx, holder, ns, time.Hour, false)
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
