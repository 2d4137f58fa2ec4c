package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ekm-dev/ekm/store"
)

// pgShared is what the queries of one PostgreSQL store share: the
// notification channel and the lock that orders change appends. Both are
// per schema, so that stores in different schemas of one database (tests)
// never wake or block each other.
type pgShared struct {
	channel string
	lockKey int64
}

func newPGShared(ctx context.Context, db *sql.DB) (*pgShared, error) {
	var schema string
	if err := db.QueryRowContext(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		return nil, fmt.Errorf("sqlstore: current schema: %w", err)
	}
	h := fnv.New64a()
	h.Write([]byte("ekm/sqlstore/changes\x00" + schema))
	sum := h.Sum64()
	return &pgShared{channel: fmt.Sprintf("ekm_changes_%016x", sum), lockKey: int64(sum)}, nil
}

// --- change log ---

// AppendChange inserts the change. On PostgreSQL it first takes a
// transaction-scoped advisory lock, held until commit, so that appending
// transactions commit one after the other and IDs (from a sequence) are in
// commit order: a reader that saw ID n can never later see a smaller ID
// commit. Then pg_notify, delivered to every listener at commit. SQLite
// transactions are serial anyway (BEGIN IMMEDIATE).
func (q *queries) AppendChange(ctx context.Context, c store.Change) (int64, error) {
	if db, ok := q.x.(*sql.DB); ok {
		// Outside a transaction: the lock and the notification need one.
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return 0, fmt.Errorf("sqlstore: append change: %w", err)
		}
		defer tx.Rollback()
		id, err := (&queries{x: tx, d: q.d, pg: q.pg}).AppendChange(ctx, c)
		if err != nil {
			return 0, err
		}
		if err := tx.Commit(); err != nil {
			return 0, fmt.Errorf("sqlstore: append change: commit: %w", err)
		}
		return id, nil
	}
	if q.d == dialectPostgres {
		if _, err := q.x.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, q.pg.lockKey); err != nil {
			return 0, fmt.Errorf("sqlstore: append change: lock: %w", err)
		}
	}
	var id int64
	if err := q.queryRow(ctx, `INSERT INTO changes (kind, org_id, object_id, at) VALUES (?, ?, ?, ?) RETURNING id`,
		c.Kind, c.OrgID, c.ObjectID, ms(c.At)).Scan(&id); err != nil {
		return 0, fmt.Errorf("sqlstore: append change: %w", err)
	}
	if q.d == dialectPostgres {
		if _, err := q.x.ExecContext(ctx, `SELECT pg_notify($1, '')`, q.pg.channel); err != nil {
			return 0, fmt.Errorf("sqlstore: append change: notify: %w", err)
		}
	}
	return id, nil
}

func (q *queries) ChangesAfter(ctx context.Context, after int64, limit int) ([]store.Change, error) {
	out, err := queryAll(ctx, q, func(r scanner) (store.Change, error) {
		var c store.Change
		var at int64
		err := r.Scan(&c.ID, &c.Kind, &c.OrgID, &c.ObjectID, &at)
		c.At = fromMS(at)
		return c, err
	}, `SELECT id, kind, org_id, object_id, at FROM changes WHERE id > ? ORDER BY id LIMIT ?`, after, limit)
	if err != nil {
		return nil, listErr("changes", err)
	}
	return out, nil
}

func (q *queries) LastChangeID(ctx context.Context) (int64, error) {
	var id sql.NullInt64
	if err := q.queryRow(ctx, `SELECT MAX(id) FROM changes`).Scan(&id); err != nil {
		return 0, fmt.Errorf("sqlstore: last change: %w", err)
	}
	return id.Int64, nil
}

func (q *queries) PruneChanges(ctx context.Context, before time.Time) (int64, error) {
	n, err := q.exec(ctx, `DELETE FROM changes WHERE at < ?`, ms(before))
	if err != nil {
		return 0, fmt.Errorf("sqlstore: prune changes: %w", err)
	}
	return n, nil
}

// --- leases ---

// AcquireLeases is one upsert: a lease row is inserted if absent, or
// updated only where the WHERE clause finds it free; RETURNING lists the
// rows inserted or updated. On PostgreSQL a concurrent upsert of the same
// row waits for the first to commit and then re-checks the WHERE clause
// against the row it wrote, so exactly one replica takes a free lease.
// Names are sorted, so that replicas lock rows in one order (no deadlock).
func (q *queries) AcquireLeases(ctx context.Context, holder string, names []string, now, until time.Time, renew bool) ([]store.Lease, error) {
	return q.acquireLeases(ctx, holder, names, "?", []any{ms(until)}, "?", []any{ms(now)}, renew)
}

// AcquireLeasesFor is AcquireLeases with now read from the database's
// clock once for the statement (PostgreSQL's statement_timestamp(),
// SQLite's 'now', both constant within one statement): a row is free if it
// expired by then, and a lease taken lasts until then + ttl. The free test
// reads now back from the row being written (excluded.expires_at - ttl), so
// both use the very same instant.
func (q *queries) AcquireLeasesFor(ctx context.Context, holder string, names []string, ttl time.Duration, renew bool) ([]store.Lease, error) {
	t := ttl.Milliseconds()
	return q.acquireLeases(ctx, holder, names, q.dbNowMS()+" + ?", []any{t}, "excluded.expires_at - ?", []any{t}, renew)
}

// dbNowMS is the database's clock in Unix milliseconds, as SQL.
func (q *queries) dbNowMS() string {
	if q.d == dialectPostgres {
		return `CAST(EXTRACT(EPOCH FROM statement_timestamp()) * 1000 AS BIGINT)`
	}
	return `CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)`
}

// acquireLeases builds the upsert: until is the SQL of the new expiry (with
// its arguments), now that of the instant a lease must have expired by.
func (q *queries) acquireLeases(ctx context.Context, holder string, names []string, until string, untilArgs []any, now string, nowArgs []any, renew bool) ([]store.Lease, error) {
	names = slices.Compact(slices.Sorted(slices.Values(names)))
	if len(names) == 0 {
		return nil, nil
	}
	var b strings.Builder
	args := make([]any, 0, (2+len(untilArgs))*len(names)+len(nowArgs))
	b.WriteString(`INSERT INTO leases (name, holder, expires_at, taken) VALUES `)
	for i, n := range names {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(?, ?, " + until + ", 1)")
		args = append(args, n, holder)
		args = append(args, untilArgs...)
	}
	b.WriteString(` ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at, taken = leases.taken + 1
		WHERE leases.expires_at <= ` + now)
	args = append(args, nowArgs...)
	if renew {
		b.WriteString(` OR leases.holder = excluded.holder`)
	}
	b.WriteString(` RETURNING name, holder, expires_at, taken`)
	out, err := queryAll(ctx, q, scanLease, b.String(), args...)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: acquire leases: %w", err)
	}
	return out, nil
}

func scanLease(r scanner) (store.Lease, error) {
	var l store.Lease
	var exp int64
	err := r.Scan(&l.Name, &l.Holder, &exp, &l.Taken)
	l.Expires = fromMS(exp)
	return l, err
}

func (q *queries) ReleaseLeases(ctx context.Context, holder string, names []string) error {
	query, args := `UPDATE leases SET expires_at = 0 WHERE holder = ?`, []any{holder}
	if names != nil {
		if len(names) == 0 {
			return nil
		}
		query += ` AND name IN (?` + strings.Repeat(", ?", len(names)-1) + `)`
		for _, n := range names {
			args = append(args, n)
		}
	}
	if _, err := q.exec(ctx, query, args...); err != nil {
		return fmt.Errorf("sqlstore: release leases: %w", err)
	}
	return nil
}

func (q *queries) GetLease(ctx context.Context, name string) (store.Lease, error) {
	l, err := scanLease(q.queryRow(ctx, `SELECT name, holder, expires_at, taken FROM leases WHERE name = ?`, name))
	if err != nil {
		return store.Lease{}, getErr("lease", err)
	}
	return l, nil
}

func (q *queries) PruneLeases(ctx context.Context, before time.Time) (int64, error) {
	n, err := q.exec(ctx, `DELETE FROM leases WHERE expires_at < ?`, ms(before))
	if err != nil {
		return 0, fmt.Errorf("sqlstore: prune leases: %w", err)
	}
	return n, nil
}

// --- notifications ---

// pgStore is a PostgreSQL store: a sqlStore that can also listen.
type pgStore struct{ *sqlStore }

var _ store.ChangeListener = pgStore{}

// ListenChanges holds one connection of its own (application_name
// ekm-changes) that LISTENs on the store's channel.
func (s pgStore) ListenChanges(ctx context.Context, ready, wake func()) error {
	cfg, err := pgx.ParseConfig(s.dsn)
	if err != nil {
		return fmt.Errorf("sqlstore: listen: %w", redact(err))
	}
	cfg.RuntimeParams["application_name"] = "ekm-changes"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("sqlstore: listen: connect: %w", redact(err))
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, `LISTEN `+pgx.Identifier{s.pg.channel}.Sanitize()); err != nil {
		return fmt.Errorf("sqlstore: listen: %w", err)
	}
	ready()
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("sqlstore: listen: %w", err)
		}
		wake()
	}
}
