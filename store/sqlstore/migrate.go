package sqlstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"fmt"
	"hash/fnv"
	"io/fs"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

var migrationName = regexp.MustCompile(`^(\d{4})_[a-z0-9_]+\.sql$`)

// migrations returns the embedded migrations in version order. Names are
// NNNN_description.sql with versions 1, 2, 3, … and no gaps.
func migrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, e := range entries {
		m := migrationName.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("sqlstore: bad migration file name %q", e.Name())
		}
		v, _ := strconv.Atoi(m[1])
		b, err := migrationFS.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: e.Name(), sql: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	for i, m := range out {
		if m.version != i+1 {
			return nil, fmt.Errorf("sqlstore: migration %s out of sequence (want version %d)", m.name, i+1)
		}
	}
	return out, nil
}

var (
	blobType = regexp.MustCompile(`\bBLOB\b`)
	serialID = regexp.MustCompile(`\bINTEGER PRIMARY KEY AUTOINCREMENT\b`)
)

// forDialect adapts shared DDL: PostgreSQL spells BLOB as BYTEA, and an
// auto-incremented key (SQLite's INTEGER PRIMARY KEY AUTOINCREMENT, whose
// values are never reused) as BIGSERIAL PRIMARY KEY.
func forDialect(d dialect, ddl string) string {
	if d == dialectPostgres {
		ddl = serialID.ReplaceAllString(ddl, "BIGSERIAL PRIMARY KEY")
		return blobType.ReplaceAllString(ddl, "BYTEA")
	}
	return ddl
}

// migrate applies pending migrations, each in its own transaction together
// with its schema_migrations row.
//
// Concurrent starts are safe. PostgreSQL: every step runs on one connection
// holding a session advisory lock keyed by the current schema, so replicas
// migrate one after the other and the later one finds nothing to do. SQLite:
// each migration transaction is BEGIN IMMEDIATE, which holds the file's write
// lock, and re-reads the applied versions under it.
func migrate(ctx context.Context, db *sql.DB, d dialect) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("sqlstore: migrate: %w", err)
	}
	defer conn.Close()

	if d == dialectPostgres {
		var schema string
		if err := conn.QueryRowContext(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
			return fmt.Errorf("sqlstore: migrate: current schema: %w", err)
		}
		h := fnv.New64a()
		h.Write([]byte("ekm/sqlstore/migrate\x00" + schema))
		key := int64(h.Sum64())
		if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, key); err != nil {
			return fmt.Errorf("sqlstore: migrate: lock: %w", err)
		}
		defer func() {
			// On a canceled ctx the unlock still has to happen, or the
			// pooled session would keep the lock.
			uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if _, err := conn.ExecContext(uctx, `SELECT pg_advisory_unlock($1)`, key); err != nil {
				// Discard the session so the lock dies with it.
				_ = conn.Raw(func(any) error { return driver.ErrBadConn })
			}
		}()
	}

	for _, m := range ms {
		if err := applyOne(ctx, conn, d, m); err != nil {
			return err
		}
	}
	return nil
}

func applyOne(ctx context.Context, conn *sql.Conn, d dialect, m migration) error {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlstore: migrate %s: %w", m.name, err)
	}
	defer tx.Rollback()
	q := &queries{x: tx, d: d}
	// Inside the transaction, so on SQLite it runs under the write lock.
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    BIGINT PRIMARY KEY,
		applied_at BIGINT NOT NULL)`); err != nil {
		return fmt.Errorf("sqlstore: migrate: create schema_migrations: %w", err)
	}
	var n int
	if err := q.queryRow(ctx, `SELECT COUNT(*) FROM schema_migrations WHERE version = ?`, m.version).Scan(&n); err != nil {
		return fmt.Errorf("sqlstore: migrate %s: %w", m.name, err)
	}
	if n > 0 {
		return nil
	}
	for _, stmt := range splitStatements(forDialect(d, m.sql)) {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("sqlstore: migrate %s: %w", m.name, err)
		}
	}
	if _, err := q.exec(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`, m.version, time.Now().UnixMilli()); err != nil {
		return fmt.Errorf("sqlstore: migrate %s: record version: %w", m.name, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlstore: migrate %s: commit: %w", m.name, err)
	}
	return nil
}

// splitStatements splits a migration at semicolons ending a line and drops
// -- comments, so each driver gets one statement at a time. Migrations
// therefore must not put a semicolon at the end of a line inside a literal.
func splitStatements(src string) []string {
	var out []string
	var cur strings.Builder
	for line := range strings.SplitSeq(src, "\n") {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "--") {
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
		if strings.HasSuffix(trimmed, ";") {
			out = append(out, strings.TrimSpace(cur.String()))
			cur.Reset()
		}
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		out = append(out, s)
	}
	return out
}
