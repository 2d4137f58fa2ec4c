package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/ids"
	"github.com/ekm-dev/ekm/store"
	"github.com/ekm-dev/ekm/store/sqlstore/pgtest"
	"github.com/ekm-dev/ekm/store/storetest"
)

func openT(t *testing.T, dsn string) *sqlStore {
	t.Helper()
	s, err := open(context.Background(), dsn)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func sqliteDSNForTest(t *testing.T) string {
	return filepath.Join(t.TempDir(), "ekm.db")
}

func TestSQLite(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openT(t, sqliteDSNForTest(t)) })
}

func TestPostgres(t *testing.T) {
	pgtest.DSN(t) // skip early when unset
	storetest.Run(t, func(t *testing.T) store.Store { return openT(t, pgtest.DSN(t)) })
}

// backends runs fn on a fresh SQLite file and, when configured, a fresh
// PostgreSQL schema. dsn returns the same database on every call.
func backends(t *testing.T, fn func(t *testing.T, dsn string)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, sqliteDSNForTest(t)) })
	t.Run("postgres", func(t *testing.T) { fn(t, pgtest.DSN(t)) })
}

func TestSQLiteDSNForms(t *testing.T) {
	dir := t.TempDir()
	for _, dsn := range []string{
		filepath.Join(dir, "plain.db"),
		"sqlite://" + filepath.Join(dir, "scheme.db"),
		"file:" + filepath.Join(dir, "uri.db") + "?cache=private",
		// Caller settings that would break concurrency are overridden.
		filepath.Join(dir, "override.db") + "?_txlock=deferred&_pragma=journal_mode(DELETE)&_pragma=foreign_keys(0)&_pragma=busy_timeout(1)",
		":memory:",
	} {
		t.Run(dsn, func(t *testing.T) {
			s := openT(t, dsn)
			ctx := context.Background()
			o := store.Org{ID: ids.New("org-"), Name: "x", CreatedAt: time.UnixMilli(1)}
			if err := s.CreateOrg(ctx, o); err != nil {
				t.Fatal(err)
			}
			if _, err := s.GetOrg(ctx, o.ID); err != nil {
				t.Fatal(err)
			}
			var fk, busy int
			var mode string
			if err := s.db.QueryRowContext(ctx, "PRAGMA foreign_keys").Scan(&fk); err != nil {
				t.Fatal(err)
			}
			if err := s.db.QueryRowContext(ctx, "PRAGMA busy_timeout").Scan(&busy); err != nil {
				t.Fatal(err)
			}
			if err := s.db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
				t.Fatal(err)
			}
			wantMode := "wal"
			if dsn == ":memory:" {
				wantMode = "memory" // SQLite has no WAL for in-memory databases
			}
			if fk != 1 || busy != int(sqliteBusyTimeout.Milliseconds()) || mode != wantMode {
				t.Fatalf("foreign_keys=%d busy_timeout=%d journal_mode=%s", fk, busy, mode)
			}
		})
	}
	if _, err := Open(context.Background(), ""); err == nil {
		t.Fatal("Open accepted an empty DSN")
	}
	if _, err := Open(context.Background(), "sqlite://"); err == nil {
		t.Fatal("Open accepted sqlite:// without a path")
	}
}

// TestSQLiteImmediateTransactions: a transaction holds the file's write lock
// from BEGIN, before its first write. With deferred transactions, two that
// both read then write cannot both upgrade, and one fails with SQLITE_BUSY
// whatever the busy timeout.
func TestSQLiteImmediateTransactions(t *testing.T) {
	dsn := sqliteDSNForTest(t)
	s := openT(t, dsn+"?_txlock=deferred") // overridden
	ctx := context.Background()
	// Another process's connection that does not wait for locks.
	other, err := sql.Open("sqlite", dsn+"?_pragma=busy_timeout(0)")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	insert := func() error {
		_, err := other.ExecContext(ctx, `INSERT INTO orgs (id, name, created_at) VALUES (?, '', 0)`, ids.New("org-"))
		return err
	}
	err = s.InTx(ctx, func(q store.Queries) error {
		if _, err := q.GetOrg(ctx, "org-none"); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("GetOrg: %v", err)
		}
		if err := insert(); !sqliteBusy(err) {
			return fmt.Errorf("a write from another connection during a read-only-so-far transaction: %v, want SQLITE_BUSY", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := insert(); err != nil {
		t.Fatalf("write after the transaction: %v", err)
	}
}

// increment runs one read-modify-write of a project's key version.
func increment(ctx context.Context, s store.Store, orgID, projectID string) error {
	return s.InTx(ctx, func(q store.Queries) error {
		p, err := q.GetProject(ctx, orgID, projectID)
		if err != nil {
			return err
		}
		p.CurrentKeyVersion++
		return q.UpdateProject(ctx, p)
	})
}

// TestTwoStores opens one database twice — two replicas on PostgreSQL, the
// server plus an operator command on SQLite — and writes and reads through
// both at once.
func TestTwoStores(t *testing.T) {
	backends(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		a, b := openT(t, dsn), openT(t, dsn)
		o := store.Org{ID: ids.New("org-"), Name: "x", CreatedAt: time.UnixMilli(1)}
		if err := a.CreateOrg(ctx, o); err != nil {
			t.Fatal(err)
		}
		p := store.Project{ID: ids.New("proj_"), OrgID: o.ID, CreatedAt: time.UnixMilli(1)}
		if err := b.CreateProject(ctx, p); err != nil {
			t.Fatal(err)
		}
		const workers, each = 4, 10
		var wg sync.WaitGroup
		errs := make(chan error, 4*workers)
		var orgIDs sync.Map
		for i := range workers {
			s := []*sqlStore{a, b}[i%2]
			wg.Add(3)
			go func() { // transactions
				defer wg.Done()
				for range each {
					if err := increment(ctx, s, o.ID, p.ID); err != nil {
						errs <- fmt.Errorf("increment: %w", err)
						return
					}
				}
			}()
			go func() { // single writes, e.g. `ekm org create`
				defer wg.Done()
				for range each {
					id := ids.New("org-")
					if err := s.CreateOrg(ctx, store.Org{ID: id, CreatedAt: time.UnixMilli(1)}); err != nil {
						errs <- fmt.Errorf("create org: %w", err)
						return
					}
					orgIDs.Store(id, true)
				}
			}()
			go func() { // reads
				defer wg.Done()
				for range each {
					if _, err := s.GetProject(ctx, o.ID, p.ID); err != nil {
						errs <- fmt.Errorf("read: %w", err)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		for _, s := range []*sqlStore{a, b} {
			got, err := s.GetProject(ctx, o.ID, p.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.CurrentKeyVersion != workers*each {
				t.Fatalf("CurrentKeyVersion = %d, want %d", got.CurrentKeyVersion, workers*each)
			}
			n := 0
			orgIDs.Range(func(k, _ any) bool {
				if _, err := s.GetOrg(ctx, k.(string)); err != nil {
					t.Errorf("org %s: %v", k, err)
				}
				n++
				return true
			})
			if n != workers*each {
				t.Fatalf("%d orgs created, want %d", n, workers*each)
			}
		}
	})
}

// TestConcurrentOpen starts several stores on one new database at once:
// migrations must run exactly once and every Open must succeed.
func TestConcurrentOpen(t *testing.T) {
	backends(t, func(t *testing.T, dsn string) {
		const n = 4
		stores := make([]*sqlStore, n)
		errs := make([]error, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				stores[i], errs[i] = open(context.Background(), dsn)
			}()
		}
		close(start)
		wg.Wait()
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("Open %d: %v", i, errs[i])
			}
			defer stores[i].Close()
		}
		ms, err := migrations()
		if err != nil {
			t.Fatal(err)
		}
		var count, max int
		if err := stores[0].db.QueryRow(`SELECT COUNT(*), MAX(version) FROM schema_migrations`).Scan(&count, &max); err != nil {
			t.Fatal(err)
		}
		if count != len(ms) || max != len(ms) {
			t.Fatalf("schema_migrations has %d rows up to version %d, want %d", count, max, len(ms))
		}
		// Reopening finds nothing to do.
		s := openT(t, dsn)
		if err := s.Ping(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
}

// TestPostgresRetry forces a serialization failure: fn reads, another
// transaction commits a write to the same row, then fn writes. InTx must run
// fn again and the final value must include both increments.
func TestPostgresRetry(t *testing.T) {
	s := openT(t, pgtest.DSN(t))
	ctx := context.Background()
	o := store.Org{ID: ids.New("org-"), CreatedAt: time.UnixMilli(1)}
	p := store.Project{ID: ids.New("proj_"), OrgID: o.ID, CreatedAt: time.UnixMilli(1), CurrentKeyVersion: 1}
	if err := s.CreateOrg(ctx, o); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateProject(ctx, p); err != nil {
		t.Fatal(err)
	}
	read, otherDone := make(chan struct{}), make(chan struct{})
	var attempts atomic.Int32
	errc := make(chan error, 1)
	go func() {
		errc <- s.InTx(ctx, func(q store.Queries) error {
			n := attempts.Add(1)
			cur, err := q.GetProject(ctx, o.ID, p.ID)
			if err != nil {
				return err
			}
			if n == 1 {
				close(read)
				<-otherDone
			}
			cur.CurrentKeyVersion++
			return q.UpdateProject(ctx, cur)
		})
	}()
	<-read
	if err := increment(ctx, s, o.ID, p.ID); err != nil {
		t.Fatal(err)
	}
	close(otherDone)
	if err := <-errc; err != nil {
		t.Fatalf("InTx: %v", err)
	}
	if n := attempts.Load(); n != 2 {
		t.Fatalf("fn ran %d times, want 2 (one serialization failure, one retry)", n)
	}
	got, err := s.GetProject(ctx, o.ID, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.CurrentKeyVersion != 3 {
		t.Fatalf("CurrentKeyVersion = %d, want 3", got.CurrentKeyVersion)
	}
}

// TestInTxNoRetryOnOtherErrors: fn's own errors end InTx at once.
func TestInTxNoRetryOnOtherErrors(t *testing.T) {
	backends(t, func(t *testing.T, dsn string) {
		s := openT(t, dsn)
		var runs int
		boom := errors.New("boom")
		err := s.InTx(context.Background(), func(store.Queries) error { runs++; return boom })
		if !errors.Is(err, boom) || runs != 1 {
			t.Fatalf("InTx = %v after %d runs, want boom after 1", err, runs)
		}
	})
}

func TestSplitStatements(t *testing.T) {
	got := splitStatements("-- comment\nCREATE TABLE a (\n  x BLOB -- trailing\n);\n\nCREATE INDEX i ON a (x);\nSELECT 1")
	want := []string{"CREATE TABLE a (\n  x BLOB -- trailing\n);", "CREATE INDEX i ON a (x);", "SELECT 1"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("splitStatements = %q, want %q", got, want)
	}
	if s := forDialect(dialectPostgres, "x BLOB, y BLOBS, BLOB_z"); s != "x BYTEA, y BLOBS, BLOB_z" {
		t.Fatalf("forDialect = %q", s)
	}
	if s := forDialect(dialectSQLite, "x BLOB"); s != "x BLOB" {
		t.Fatalf("forDialect sqlite = %q", s)
	}
}

func TestRebind(t *testing.T) {
	q := &queries{d: dialectPostgres}
	if got := q.rebind("a = ? AND b IN (?, ?)"); got != "a = $1 AND b IN ($2, $3)" {
		t.Fatalf("rebind = %q", got)
	}
	q.d = dialectSQLite
	if got := q.rebind("a = ?"); got != "a = ?" {
		t.Fatalf("sqlite rebind = %q", got)
	}
}

func TestOpenErrorHidesPassword(t *testing.T) {
	_, err := Open(context.Background(), "postgres://u:hunter2@127.0.0.1:1/db?connect_timeout=1&sslmode=disable")
	if err == nil {
		t.Fatal("Open succeeded against a closed port")
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error reveals the password: %v", err)
	}
}

// TestPostgresOptionsSearchPath: a schema chosen with options=-c search_path
// is where the tables go.
func TestPostgresOptionsSearchPath(t *testing.T) {
	u, err := url.Parse(pgtest.DSN(t))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	schema := q.Get("search_path")
	q.Del("search_path")
	base := *u
	base.RawQuery = q.Encode()
	q.Set("options", "-c search_path="+schema)
	// pgx does not decode + as a space in URL parameters.
	u.RawQuery = strings.ReplaceAll(q.Encode(), "+", "%20")

	ctx := context.Background()
	s := openT(t, u.String())
	if err := s.CreateOrg(ctx, store.Org{ID: ids.New("org-"), CreatedAt: time.UnixMilli(1)}); err != nil {
		t.Fatal(err)
	}
	plain, err := sql.Open("pgx", base.String())
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	var n int
	if err := plain.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+schema+`.orgs`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("%s.orgs has %d rows, want 1", schema, n)
	}
}

// TestSQLiteFilesArePrivate: in a data dir others can read, the database
// and its -wal and -shm files are still created readable by the owner only
// (SQLite alone creates them 0644).
func TestSQLiteFilesArePrivate(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "ekm.db")
	s := openT(t, path)
	ctx := context.Background()
	if err := s.CreateOrg(ctx, store.Org{ID: ids.New("org-"), Name: "x", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s has mode %#o, want 0600", filepath.Base(f), perm)
		}
	}
}

// TestSQLitePoolIsBounded: a burst of 200 concurrent callers opens at most
// SQLiteMaxConns connections (each is a descriptor and, while it waits, an
// OS thread).
func TestSQLitePoolIsBounded(t *testing.T) {
	s := openT(t, sqliteDSNForTest(t))
	ctx := context.Background()
	o := store.Org{ID: ids.New("org-"), Name: "x", CreatedAt: time.Now()}
	if err := s.CreateOrg(ctx, o); err != nil {
		t.Fatal(err)
	}
	var peak atomic.Int64
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			var err error
			if i%10 == 0 {
				err = s.InTx(ctx, func(q store.Queries) error {
					return q.AppendAudit(ctx, store.AuditEvent{ID: ids.New("audit_log-"), OrgID: o.ID, Type: "x", EffectiveAt: time.Now(), Data: []byte(`{}`)})
				})
			} else {
				_, err = s.GetOrg(ctx, o.ID)
			}
			if err != nil {
				t.Error(err)
			}
			if n := int64(s.db.Stats().OpenConnections); n > peak.Load() {
				peak.Store(n)
			}
		})
	}
	wg.Wait()
	if st := s.db.Stats(); st.MaxOpenConnections != SQLiteMaxConns || peak.Load() > SQLiteMaxConns {
		t.Fatalf("pool bound %d, peak %d open connections; want at most %d", st.MaxOpenConnections, peak.Load(), SQLiteMaxConns)
	}
}

// TestMigrateLastUsed: a database from before migration 0003 (with keys)
// migrates; its keys have no last use until touched.
func TestMigrateLastUsed(t *testing.T) {
	backends(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		ms, err := migrations()
		if err != nil {
			t.Fatal(err)
		}
		d, driverName := dialectSQLite, "sqlite"
		if strings.HasPrefix(dsn, "postgres") {
			d, driverName = dialectPostgres, "pgx"
		}
		db, err := sql.Open(driverName, dsn)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			if m.version >= 3 {
				break
			}
			if err := applyOne(ctx, conn, d, m); err != nil {
				t.Fatal(err)
			}
		}
		q := &queries{x: conn, d: d}
		if _, err := q.exec(ctx, `INSERT INTO orgs (id, name, created_at) VALUES ('org-1', 'o', 1)`); err != nil {
			t.Fatal(err)
		}
		if _, err := q.exec(ctx, `INSERT INTO api_keys (id, org_id, kind, name, hash, redacted_value, created_at) VALUES ('key_1', 'org-1', 'admin', 'k', ?, 'r', 1)`, []byte("h")); err != nil {
			t.Fatal(err)
		}
		conn.Close()
		db.Close()

		s := openT(t, dsn)
		k, err := s.GetAPIKey(ctx, "org-1", "key_1")
		if err != nil || !k.LastUsedAt.IsZero() {
			t.Fatalf("migrated key: %+v %v", k, err)
		}
		at := time.UnixMilli(120_000).UTC()
		if err := s.TouchAPIKeys(ctx, at, []string{"key_1"}); err != nil {
			t.Fatal(err)
		}
		if k, err := s.GetAPIKey(ctx, "org-1", "key_1"); err != nil || !k.LastUsedAt.Equal(at) {
			t.Fatalf("touched key: %+v %v", k, err)
		}
	})
}
