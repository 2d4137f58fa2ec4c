package adminapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/auth"
	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/kms/local"
	"github.com/ekm-dev/ekm/lifecycle"
	"github.com/ekm-dev/ekm/secret"
	"github.com/ekm-dev/ekm/store"
	"github.com/ekm-dev/ekm/store/sqlstore"
	"github.com/ekm-dev/ekm/store/sqlstore/pgtest"
)

// barrierStore holds every transaction until two have been asked for (or a
// second has passed), so that two requests that both authenticated run
// their transactions against the same starting state: the interleaving in
// which two admin keys deleting each other used to both succeed.
type barrierStore struct {
	store.Store
	mu      sync.Mutex
	waiting int
	release chan struct{}
}

func (b *barrierStore) InTx(ctx context.Context, fn func(store.Queries) error) error {
	b.mu.Lock()
	if b.release == nil {
		b.release = make(chan struct{})
	}
	rel := b.release
	b.waiting++
	if b.waiting == 2 {
		close(rel)
		b.waiting, b.release = 0, nil
	}
	b.mu.Unlock()
	select {
	case <-rel:
	case <-time.After(time.Second):
	}
	return b.Store.InTx(ctx, fn)
}

// TestAdminKeysDeletingEachOther: key 1 deletes key 2 while key 2 deletes
// key 1. Exactly one deletion succeeds (the other finds its own key gone:
// 401), and the org keeps an admin key, on SQLite and on PostgreSQL.
func TestAdminKeysDeletingEachOther(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			dsn := filepath.Join(t.TempDir(), "ekm.db")
			if backend == "postgres" {
				dsn = pgtest.DSN(t)
			}
			ctx := context.Background()
			st, err := sqlstore.Open(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			svc := lifecycle.New(lifecycle.Config{Store: st, Registry: kms.NewRegistry(local.NewDriver(secret.New())),
				Default: kms.Ref{Type: "local", Params: kms.Params{"local_key_id": "default"}}})
			bs := &barrierStore{Store: st}
			srv := httptest.NewServer(New(Deps{Store: bs, Service: svc}))
			defer srv.Close()

			for round := range 5 {
				org, key1, err := CreateOrg(ctx, st, "acme", time.Now())
				if err != nil {
					t.Fatal(err)
				}
				k2, key2, err := CreateAdminKey(ctx, st, org.ID, "second", time.Now())
				if err != nil {
					t.Fatal(err)
				}
				k1, err := st.APIKeyByHash(ctx, auth.Hash(key1))
				if err != nil {
					t.Fatal(err)
				}
				statuses := make([]int, 2)
				var wg sync.WaitGroup
				for i, d := range []struct{ key, target string }{{key1, k2.ID}, {key2, k1.ID}} {
					wg.Go(func() {
						req, _ := http.NewRequest("DELETE", srv.URL+"/v1/organization/admin_api_keys/"+d.target, nil)
						req.Header.Set("Authorization", "Bearer "+d.key)
						res, err := srv.Client().Do(req)
						if err != nil {
							t.Error(err)
							return
						}
						res.Body.Close()
						statuses[i] = res.StatusCode
					})
				}
				wg.Wait()
				left, err := st.ListAPIKeys(ctx, org.ID, store.KindAdmin, store.Page{})
				if err != nil {
					t.Fatal(err)
				}
				ok := 0
				for _, s := range statuses {
					if s == http.StatusOK {
						ok++
					} else if s != http.StatusUnauthorized {
						t.Errorf("round %d: a deletion answered %d", round, s)
					}
				}
				if ok != 1 || len(left) != 1 {
					t.Fatalf("round %d: answers %v, %d admin keys left; want one 200 and one admin key left", round, statuses, len(left))
				}
				evs, err := st.ListAudit(ctx, org.ID, store.AuditFilter{Types: []string{"api_key.deleted"}})
				if err != nil || len(evs) != 1 {
					t.Fatalf("round %d: %d api_key.deleted events (%v), want 1", round, len(evs), err)
				}
			}
		})
	}
}
