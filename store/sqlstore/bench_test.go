package sqlstore

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/ids"
	"github.com/ekm-dev/ekm/store"
	"github.com/ekm-dev/ekm/store/sqlstore/pgtest"
)

// BenchmarkStore measures the hot paths against Ping, a bare round trip to
// the database, as the baseline in the same run:
//
//	go test -run '^$' -bench Store ./store/sqlstore
func BenchmarkStore(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) { benchStore(b, filepath.Join(b.TempDir(), "bench.db")) })
	b.Run("postgres", func(b *testing.B) { benchStore(b, pgtest.DSN(b)) })
}

func benchStore(b *testing.B, dsn string) {
	ctx := context.Background()
	s, err := open(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	o := store.Org{ID: ids.New("org-"), CreatedAt: time.Now()}
	p := store.Project{ID: ids.New("proj_"), OrgID: o.ID, CreatedAt: time.Now(), CurrentKeyVersion: 1}
	k := store.APIKey{ID: ids.New("key_"), OrgID: o.ID, Kind: store.KindAdmin, Hash: make([]byte, 32), CreatedAt: time.Now()}
	for _, err := range []error{s.CreateOrg(ctx, o), s.CreateProject(ctx, p), s.CreateAPIKey(ctx, k)} {
		if err != nil {
			b.Fatal(err)
		}
	}
	run := func(name string, fn func() error) {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if err := fn(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	run("Ping(baseline)", func() error { return s.Ping(ctx) })
	run("APIKeyByHash", func() error { _, err := s.APIKeyByHash(ctx, k.Hash); return err })
	run("GetProject", func() error { _, err := s.GetProject(ctx, o.ID, p.ID); return err })
	run("AppendAudit", func() error {
		return s.AppendAudit(ctx, store.AuditEvent{ID: ids.New("audit_log-"), OrgID: o.ID, Type: "x", EffectiveAt: time.Now(), Data: []byte(`{}`)})
	})
	run("InTxIncrement", func() error { return increment(ctx, s, o.ID, p.ID) })
}
