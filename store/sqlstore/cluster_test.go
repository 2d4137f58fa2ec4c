package sqlstore

import (
	"context"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/store"
	"github.com/ekm-dev/ekm/store/sqlstore/pgtest"
)

// A PostgreSQL store listens: a change appended through another process's
// store wakes it at commit (not before), and a lost connection ends
// ListenChanges with an error. Stores in other schemas do not wake it.
func TestPostgresListenChanges(t *testing.T) {
	dsn := pgtest.DSN(t)
	ctx := context.Background()
	open := func(dsn string) store.Store {
		s, err := Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, b, other := open(dsn), open(dsn), open(pgtest.DSN(t))
	l, ok := a.(store.ChangeListener)
	if !ok {
		t.Fatal("a PostgreSQL store is not a ChangeListener")
	}
	if _, ok := open(sqliteDSNForTest(t)).(store.ChangeListener); ok {
		t.Fatal("an SQLite store claims to listen")
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ready, wake, ended := make(chan struct{}), make(chan struct{}, 100), make(chan error, 1)
	go func() {
		ended <- l.ListenChanges(lctx, func() { close(ready) }, func() { wake <- struct{}{} })
	}()
	<-ready

	quiet := func(what string) {
		t.Helper()
		select {
		case <-wake:
			t.Fatalf("woken by %s", what)
		case <-time.After(200 * time.Millisecond):
		}
	}
	woken := func(what string) {
		t.Helper()
		select {
		case <-wake:
		case <-time.After(5 * time.Second):
			t.Fatalf("not woken by %s", what)
		}
	}
	appended := make(chan struct{})
	commit := make(chan struct{})
	go func() {
		_ = b.InTx(ctx, func(q store.Queries) error {
			if _, err := q.AppendChange(ctx, store.Change{Kind: "k", At: time.Now()}); err != nil {
				return err
			}
			close(appended)
			<-commit
			return nil
		})
	}()
	<-appended
	quiet("a change not yet committed")
	close(commit)
	woken("a committed change")
	if _, err := other.AppendChange(ctx, store.Change{Kind: "k", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	quiet("a change in another schema")
	if _, err := b.AppendChange(ctx, store.Change{Kind: "k", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	woken("a change appended outside a transaction")

	// The listening connection dies (a PostgreSQL restart, a network cut).
	raw := openT(t, dsn)
	if _, err := raw.db.ExecContext(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE application_name = 'ekm-changes' AND query LIKE '%' || $1 || '%'`, a.(pgStore).pg.channel); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ended:
		if err == nil || lctx.Err() != nil {
			t.Fatalf("ListenChanges ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ListenChanges did not notice its connection was lost")
	}
}
