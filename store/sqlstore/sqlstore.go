// Package sqlstore implements store.Store over database/sql for SQLite (the
// embedded default, pure Go) and PostgreSQL (several replicas sharing one
// database). Both dialects run the same SQL; PostgreSQL only gets its
// placeholders rewritten from ? to $n and BLOB spelled BYTEA in migrations.
package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	_ "modernc.org/sqlite"             // registers the "sqlite" driver

	"github.com/ekm-dev/ekm/store"
)

type dialect int

const (
	dialectSQLite dialect = iota
	dialectPostgres
)

// sqliteBusyTimeout is how long an SQLite statement waits for another
// connection or process holding the write lock before failing.
const sqliteBusyTimeout = 10 * time.Second

// maxTxAttempts bounds how many times InTx runs fn when PostgreSQL reports a
// serialization failure or deadlock.
const maxTxAttempts = 30

// sqlStore is a store.Store over one SQL database.
type sqlStore struct {
	queries
	db  *sql.DB
	dsn string // PostgreSQL: for the listening connection
}

var _ store.Store = (*sqlStore)(nil)

// Open connects to the database named by dsn and applies pending migrations.
//
// dsn is either a PostgreSQL URL (postgres://… or postgresql://…, any pgx
// parameter such as search_path=… or options=-c%20search_path%3D… is
// honoured; pgx does not read + as a space) or
// an SQLite database: a file path, sqlite://path or a file: URI. SQLite
// connections always run in WAL mode with foreign keys on, a busy timeout and
// BEGIN IMMEDIATE transactions, whatever the DSN says, so that a second
// process (e.g. `ekm org create`) can write to the same file safely.
//
// A PostgreSQL store also implements store.ChangeListener.
func Open(ctx context.Context, dsn string) (store.Store, error) {
	s, err := open(ctx, dsn)
	if err != nil {
		return nil, err
	}
	if s.d == dialectPostgres {
		return pgStore{s}, nil
	}
	return s, nil
}

// SQLiteMaxConns bounds the connections to an SQLite file. Every connection
// is a file descriptor and, while it waits for the write lock or the disk,
// an OS thread; writers are serialised by the file's lock anyway, and WAL
// readers gain little beyond the number of cores. Callers beyond the bound
// wait in database/sql's queue, which costs neither. docs/PERFORMANCE.md
// ("SQLite connection pool") has the measurement.
const SQLiteMaxConns = 8

func open(ctx context.Context, dsn string) (*sqlStore, error) {
	return openPool(ctx, dsn, SQLiteMaxConns)
}

// openPool is open with a given bound on SQLite connections (0: unbounded,
// which only the benchmark's baseline uses).
func openPool(ctx context.Context, dsn string, sqliteMaxConns int) (*sqlStore, error) {
	if dsn == "" {
		return nil, errors.New("sqlstore: empty database DSN")
	}
	var (
		d   dialect
		db  *sql.DB
		err error
	)
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		d = dialectPostgres
		db, err = sql.Open("pgx", dsn)
	} else {
		d = dialectSQLite
		var sdsn string
		var memory bool
		sdsn, memory, err = sqliteDSN(dsn)
		if err != nil {
			return nil, err
		}
		if !memory {
			if err := createPrivate(sqlitePath(dsn)); err != nil {
				return nil, err
			}
		}
		db, err = sql.Open("sqlite", sdsn)
		if err == nil {
			if memory {
				// Every connection to :memory: is a separate database.
				db.SetMaxOpenConns(1)
			} else {
				db.SetMaxOpenConns(sqliteMaxConns)
				db.SetMaxIdleConns(4)
				if sqliteMaxConns > 0 {
					db.SetMaxIdleConns(sqliteMaxConns)
				}
			}
		}
	}
	if err != nil {
		// The DSN may hold a password: never echo it.
		return nil, fmt.Errorf("sqlstore: open database: %w", err)
	}
	s := &sqlStore{queries: queries{x: db, d: d}, db: db}
	if err := connect(ctx, db, d); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlstore: connect: %w", redact(err))
	}
	if d == dialectPostgres {
		s.dsn = dsn
		if s.pg, err = newPGShared(ctx, db); err != nil {
			db.Close()
			return nil, err
		}
	}
	if err := migrate(ctx, db, d); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// connect opens the first connection. Two processes creating one new SQLite
// file at once race to switch it to WAL, and SQLite fails the loser at once
// with SQLITE_BUSY rather than waiting (the busy handler cannot run there);
// retry that until the busy timeout. WAL is persistent, so only the first
// connections to a new file can meet this.
func connect(ctx context.Context, db *sql.DB, d dialect) error {
	deadline := time.Now().Add(sqliteBusyTimeout)
	wait := time.Millisecond
	for {
		err := db.PingContext(ctx)
		if err == nil || d != dialectSQLite || !sqliteBusy(err) || time.Now().After(deadline) {
			return err
		}
		t := time.NewTimer(rand.N(wait) + time.Microsecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		if wait < 100*time.Millisecond {
			wait *= 2
		}
	}
}

// redact drops errors that could carry connection secrets; the pgx driver
// never puts the password in its errors, so this is belt and braces for
// URL parse errors, which quote the whole URL.
func redact(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return errors.New("invalid database URL")
	}
	return err
}

// sqliteDSN turns a path, sqlite://path or file: URI into a modernc DSN with
// the connection settings ekm depends on. memory reports an in-memory
// database.
func sqliteDSN(dsn string) (out string, memory bool, err error) {
	base, query, _ := strings.Cut(dsn, "?")
	if rest, ok := strings.CutPrefix(base, "sqlite://"); ok {
		base = rest
	}
	if base == "" {
		return "", false, errors.New("sqlstore: SQLite DSN has no path")
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return "", false, fmt.Errorf("sqlstore: SQLite DSN query: %w", err)
	}
	memory = base == ":memory:" || base == "file::memory:" || q.Get("mode") == "memory"
	// Our settings replace any the caller gave: correctness depends on them.
	for _, k := range []string{"_txlock", "_busy_timeout", "_timeout", "_foreign_keys", "_fk", "_journal_mode", "_journal"} {
		q.Del(k)
	}
	var pragmas []string
	for _, p := range q["_pragma"] {
		name := strings.ToLower(strings.TrimSpace(p))
		if strings.HasPrefix(name, "busy_timeout") || strings.HasPrefix(name, "journal_mode") || strings.HasPrefix(name, "foreign_keys") {
			continue
		}
		pragmas = append(pragmas, p)
	}
	pragmas = append(pragmas,
		fmt.Sprintf("busy_timeout(%d)", sqliteBusyTimeout.Milliseconds()),
		"journal_mode(WAL)",
		"foreign_keys(1)",
	)
	if !hasPragma(pragmas, "synchronous") {
		// WAL + NORMAL is durable against application crashes; only an OS
		// crash may lose the last commits. That is SQLite's recommended
		// setting for WAL.
		pragmas = append(pragmas, "synchronous(NORMAL)")
	}
	q["_pragma"] = pragmas
	// Writers take the write lock at BEGIN, so two transactions never both
	// read then fail to upgrade (SQLITE_BUSY that busy_timeout cannot fix).
	q.Set("_txlock", "immediate")
	return base + "?" + q.Encode(), memory, nil
}

// sqlitePath is the file of a non-memory SQLite DSN.
func sqlitePath(dsn string) string {
	base, _, _ := strings.Cut(dsn, "?")
	base = strings.TrimPrefix(base, "sqlite://")
	return strings.TrimPrefix(base, "file:")
}

// createPrivate creates the database file 0600 if it does not exist yet.
// SQLite would create it with 0644 (less the umask); it gives the -wal and
// -shm files it creates later the mode of the database file, so all three
// end up readable by the owner only.
func createPrivate(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("sqlstore: creating database file: %w", err)
	}
	return f.Close()
}

func hasPragma(ps []string, name string) bool {
	for _, p := range ps {
		if strings.HasPrefix(strings.ToLower(strings.TrimSpace(p)), name) {
			return true
		}
	}
	return false
}

// InTx runs fn in one transaction.
//
// SQLite: the transaction starts with BEGIN IMMEDIATE, so it holds the
// database's single write lock from the start; transactions are therefore
// serial across connections and processes and never need a retry.
//
// PostgreSQL: the transaction runs at SERIALIZABLE, so any interleaving of
// concurrent transactions from any replica behaves as some serial order —
// including read-modify-write of a row read through the plain Get methods,
// which cannot take row locks. PostgreSQL aborts one side of a conflict with
// SQLSTATE 40001 (or 40P01 on deadlock); InTx then rolls back and runs fn
// again, up to maxTxAttempts times, after a short randomized backoff.
func (s *sqlStore) InTx(ctx context.Context, fn func(q store.Queries) error) error {
	var opts *sql.TxOptions
	if s.d == dialectPostgres {
		opts = &sql.TxOptions{Isolation: sql.LevelSerializable}
	}
	backoff := time.Millisecond
	for attempt := 1; ; attempt++ {
		err := s.tryTx(ctx, opts, fn)
		if err == nil || !retryable(err) || attempt >= maxTxAttempts {
			return err
		}
		// Full jitter keeps retrying replicas from colliding in lock step.
		wait := rand.N(backoff) + time.Microsecond
		if backoff < 50*time.Millisecond {
			backoff *= 2
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

func (s *sqlStore) tryTx(ctx context.Context, opts *sql.TxOptions, fn func(q store.Queries) error) (err error) {
	tx, err := s.db.BeginTx(ctx, opts)
	if err != nil {
		return fmt.Errorf("sqlstore: begin transaction: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			// Also on panic: the connection must not stay in the transaction.
			_ = tx.Rollback()
		}
	}()
	if err := fn(&queries{x: tx, d: s.d, pg: s.pg}); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		committed = true // database/sql has released the connection either way
		return fmt.Errorf("sqlstore: commit: %w", err)
	}
	committed = true
	return nil
}

// Ping checks the database answers.
func (s *sqlStore) Ping(ctx context.Context) error {
	if err := s.db.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlstore: ping: %w", err)
	}
	return nil
}

// Close closes the connection pool.
func (s *sqlStore) Close() error { return s.db.Close() }
