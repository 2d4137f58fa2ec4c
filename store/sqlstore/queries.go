package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ekm-dev/ekm/store"
)

// execer is what *sql.DB and *sql.Tx have in common.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// queries implements store.Queries on a pool (each statement its own
// transaction) or inside a transaction. Every method is a single statement,
// so it is atomic either way.
type queries struct {
	x  execer
	d  dialect
	pg *pgShared // PostgreSQL only
}

var _ store.Queries = (*queries)(nil)

// rebind rewrites ? placeholders to $1, $2, … for PostgreSQL. The SQL in this
// package never has a ? inside a literal.
func (q *queries) rebind(query string) string {
	if q.d != dialectPostgres {
		return query
	}
	var b strings.Builder
	b.Grow(len(query) + 16)
	n := 0
	for i := 0; i < len(query); i++ {
		if query[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(query[i])
	}
	return b.String()
}

func (q *queries) exec(ctx context.Context, query string, args ...any) (int64, error) {
	res, err := q.x.ExecContext(ctx, q.rebind(query), args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (q *queries) queryRow(ctx context.Context, query string, args ...any) *sql.Row {
	return q.x.QueryRowContext(ctx, q.rebind(query), args...)
}

// queryAll runs query and scans every row with scan.
func queryAll[T any](ctx context.Context, q *queries, scan func(scanner) (T, error), query string, args ...any) ([]T, error) {
	rows, err := q.x.QueryContext(ctx, q.rebind(query), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []T{} // empty, not nil: lists render as [] in JSON
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

type scanner interface{ Scan(dest ...any) error }

// --- value conversions ---

// Times are unix milliseconds; they come back in UTC.
func ms(t time.Time) int64 { return t.UnixMilli() }

func fromMS(v int64) time.Time { return time.UnixMilli(v).UTC() }

// nullable stores "" as NULL (optional references).
func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// page appends the cursor condition to where and returns the ORDER BY/LIMIT
// tail. Ids are time-ordered, so id order is creation order.
func page(p store.Page, where string, args []any) (string, []any) {
	dir := "ASC"
	if p.Desc {
		dir = "DESC"
	}
	if p.After != "" {
		if p.Desc {
			where += " AND id < ?"
		} else {
			where += " AND id > ?"
		}
		args = append(args, p.After)
	}
	where += " ORDER BY id " + dir
	if p.Limit > 0 {
		where += " LIMIT ?"
		args = append(args, p.Limit)
	}
	return where, args
}

// createErr maps an insert's error: a duplicate is ErrConflict, a missing
// parent (org, project, external key of this org) ErrNotFound.
func createErr(what string, err error) error {
	switch classify(err) {
	case errUnique:
		return fmt.Errorf("%w: %s already exists", store.ErrConflict, what)
	case errForeignKey:
		return fmt.Errorf("%w: %s refers to a missing org, project or external key", store.ErrNotFound, what)
	}
	return fmt.Errorf("sqlstore: create %s: %w", what, err)
}

// getErr maps a single-row read's error.
func getErr(what string, err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%w: %s", store.ErrNotFound, what)
	}
	return fmt.Errorf("sqlstore: get %s: %w", what, err)
}

// changed maps an update or delete's result: no row means ErrNotFound.
func changed(op, what string, n int64, err error) error {
	if err != nil {
		switch classify(err) {
		case errForeignKey:
			if op == "delete" {
				return fmt.Errorf("%w: %s is still in use", store.ErrConflict, what)
			}
			return fmt.Errorf("%w: %s refers to a missing external key", store.ErrNotFound, what)
		case errUnique:
			return fmt.Errorf("%w: %s", store.ErrConflict, what)
		}
		return fmt.Errorf("sqlstore: %s %s: %w", op, what, err)
	}
	if n == 0 {
		return fmt.Errorf("%w: %s", store.ErrNotFound, what)
	}
	return nil
}

func listErr(what string, err error) error {
	return fmt.Errorf("sqlstore: list %s: %w", what, err)
}

// --- orgs ---

func (q *queries) CreateOrg(ctx context.Context, o store.Org) error {
	_, err := q.exec(ctx, `INSERT INTO orgs (id, name, created_at) VALUES (?, ?, ?)`, o.ID, o.Name, ms(o.CreatedAt))
	if err != nil {
		return createErr("org", err)
	}
	return nil
}

func (q *queries) GetOrg(ctx context.Context, id string) (store.Org, error) {
	var o store.Org
	var created int64
	err := q.queryRow(ctx, `SELECT id, name, created_at FROM orgs WHERE id = ?`, id).Scan(&o.ID, &o.Name, &created)
	if err != nil {
		return store.Org{}, getErr("org", err)
	}
	o.CreatedAt = fromMS(created)
	return o, nil
}

func (q *queries) GetOrgSettings(ctx context.Context, orgID string) (store.OrgSettings, error) {
	if _, err := q.GetOrg(ctx, orgID); err != nil {
		return store.OrgSettings{}, err
	}
	s, err := scanOrgSettings(q.queryRow(ctx, `SELECT `+orgSettingsCols+` FROM org_settings WHERE org_id = ?`, orgID))
	if errors.Is(err, sql.ErrNoRows) {
		return store.OrgSettings{OrgID: orgID}, nil
	}
	if err != nil {
		return store.OrgSettings{}, getErr("org settings", err)
	}
	return s, nil
}

const orgSettingsCols = `org_id, default_external_key_id, ekm_required, updated_at`

func scanOrgSettings(r scanner) (store.OrgSettings, error) {
	var s store.OrgSettings
	var def sql.NullString
	var required, updated int64
	if err := r.Scan(&s.OrgID, &def, &required, &updated); err != nil {
		return store.OrgSettings{}, err
	}
	s.DefaultExternalKeyID, s.EKMRequired, s.UpdatedAt = def.String, required != 0, fromMS(updated)
	return s, nil
}

func (q *queries) PutOrgSettings(ctx context.Context, s store.OrgSettings) error {
	required := 0
	if s.EKMRequired {
		required = 1
	}
	_, err := q.exec(ctx, `INSERT INTO org_settings (`+orgSettingsCols+`) VALUES (?, ?, ?, ?)
		ON CONFLICT (org_id) DO UPDATE SET
			default_external_key_id = excluded.default_external_key_id,
			ekm_required = excluded.ekm_required,
			updated_at = excluded.updated_at`,
		s.OrgID, nullable(s.DefaultExternalKeyID), required, ms(s.UpdatedAt))
	if err != nil {
		// A missing org or a key of another org breaks a foreign key:
		// ErrNotFound.
		return createErr("org settings", err)
	}
	return nil
}

func (q *queries) OrgsToMigrate(ctx context.Context, after string, limit int) ([]store.OrgSettings, error) {
	cols := "s." + strings.ReplaceAll(orgSettingsCols, ", ", ", s.")
	out, err := queryAll(ctx, q, scanOrgSettings, `SELECT `+cols+` FROM org_settings s
		WHERE s.ekm_required <> 0 AND s.default_external_key_id IS NOT NULL AND s.org_id > ?
		AND EXISTS (SELECT 1 FROM projects p WHERE p.org_id = s.org_id AND p.external_key_id IS NULL)
		ORDER BY s.org_id LIMIT ?`, after, limit)
	if err != nil {
		return nil, listErr("orgs to migrate", err)
	}
	return out, nil
}

func (q *queries) ListOrgs(ctx context.Context, p store.Page) ([]store.Org, error) {
	query, args := page(p, `SELECT id, name, created_at FROM orgs WHERE 1 = 1`, nil)
	out, err := queryAll(ctx, q, func(r scanner) (store.Org, error) {
		var o store.Org
		var created int64
		if err := r.Scan(&o.ID, &o.Name, &created); err != nil {
			return store.Org{}, err
		}
		o.CreatedAt = fromMS(created)
		return o, nil
	}, query, args...)
	if err != nil {
		return nil, listErr("orgs", err)
	}
	return out, nil
}

// --- API keys ---

const apiKeyCols = `id, org_id, kind, project_id, service_account_id, name, hash, redacted_value, created_at, last_used_at`

func scanAPIKey(r scanner) (store.APIKey, error) {
	var k store.APIKey
	var proj, sa sql.NullString
	var created int64
	var lastUsed sql.NullInt64
	if err := r.Scan(&k.ID, &k.OrgID, &k.Kind, &proj, &sa, &k.Name, &k.Hash, &k.RedactedValue, &created, &lastUsed); err != nil {
		return store.APIKey{}, err
	}
	k.ProjectID, k.ServiceAccountID, k.CreatedAt = proj.String, sa.String, fromMS(created)
	if lastUsed.Valid {
		k.LastUsedAt = fromMS(lastUsed.Int64)
	}
	return k, nil
}

// nullTime stores the zero time as NULL.
func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return ms(t)
}

func (q *queries) CreateAPIKey(ctx context.Context, k store.APIKey) error {
	if len(k.Hash) == 0 {
		return errors.New("sqlstore: create API key: empty hash")
	}
	_, err := q.exec(ctx, `INSERT INTO api_keys (`+apiKeyCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		k.ID, k.OrgID, k.Kind, nullable(k.ProjectID), nullable(k.ServiceAccountID), k.Name, k.Hash, k.RedactedValue, ms(k.CreatedAt), nullTime(k.LastUsedAt))
	if err != nil {
		return createErr("API key", err)
	}
	return nil
}

func (q *queries) APIKeyByHash(ctx context.Context, hash []byte) (store.APIKey, error) {
	k, err := scanAPIKey(q.queryRow(ctx, `SELECT `+apiKeyCols+` FROM api_keys WHERE hash = ?`, hash))
	if err != nil {
		return store.APIKey{}, getErr("API key", err)
	}
	return k, nil
}

func (q *queries) GetAPIKey(ctx context.Context, orgID, id string) (store.APIKey, error) {
	k, err := scanAPIKey(q.queryRow(ctx, `SELECT `+apiKeyCols+` FROM api_keys WHERE org_id = ? AND id = ?`, orgID, id))
	if err != nil {
		return store.APIKey{}, getErr("API key", err)
	}
	return k, nil
}

// ListAPIKeys lists an org's keys of one kind; kind "" means all kinds.
func (q *queries) ListAPIKeys(ctx context.Context, orgID, kind string, p store.Page) ([]store.APIKey, error) {
	where, args := `SELECT `+apiKeyCols+` FROM api_keys WHERE org_id = ?`, []any{orgID}
	if kind != "" {
		where += ` AND kind = ?`
		args = append(args, kind)
	}
	query, args := page(p, where, args)
	out, err := queryAll(ctx, q, scanAPIKey, query, args...)
	if err != nil {
		return nil, listErr("API keys", err)
	}
	return out, nil
}

// TouchAPIKeys moves last_used_at forward only, so replicas flushing in
// any order never move it back.
func (q *queries) TouchAPIKeys(ctx context.Context, at time.Time, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	args := make([]any, 0, len(ids)+2)
	args = append(args, ms(at))
	for _, id := range ids {
		args = append(args, id)
	}
	args = append(args, ms(at))
	_, err := q.exec(ctx, `UPDATE api_keys SET last_used_at = ? WHERE id IN (?`+strings.Repeat(", ?", len(ids)-1)+`) AND (last_used_at IS NULL OR last_used_at < ?)`, args...)
	if err != nil {
		return fmt.Errorf("sqlstore: touch API keys: %w", err)
	}
	return nil
}

func (q *queries) DeleteAPIKey(ctx context.Context, orgID, id string) error {
	n, err := q.exec(ctx, `DELETE FROM api_keys WHERE org_id = ? AND id = ?`, orgID, id)
	return changed("delete", "API key", n, err)
}

// --- service accounts ---

const serviceAccountCols = `id, org_id, project_id, name, role, created_at`

func scanServiceAccount(r scanner) (store.ServiceAccount, error) {
	var s store.ServiceAccount
	var created int64
	if err := r.Scan(&s.ID, &s.OrgID, &s.ProjectID, &s.Name, &s.Role, &created); err != nil {
		return store.ServiceAccount{}, err
	}
	s.CreatedAt = fromMS(created)
	return s, nil
}

func (q *queries) CreateServiceAccount(ctx context.Context, s store.ServiceAccount) error {
	_, err := q.exec(ctx, `INSERT INTO service_accounts (`+serviceAccountCols+`) VALUES (?, ?, ?, ?, ?, ?)`,
		s.ID, s.OrgID, s.ProjectID, s.Name, s.Role, ms(s.CreatedAt))
	if err != nil {
		return createErr("service account", err)
	}
	return nil
}

func (q *queries) GetServiceAccount(ctx context.Context, orgID, projectID, id string) (store.ServiceAccount, error) {
	s, err := scanServiceAccount(q.queryRow(ctx, `SELECT `+serviceAccountCols+` FROM service_accounts WHERE org_id = ? AND project_id = ? AND id = ?`, orgID, projectID, id))
	if err != nil {
		return store.ServiceAccount{}, getErr("service account", err)
	}
	return s, nil
}

func (q *queries) UpdateServiceAccount(ctx context.Context, s store.ServiceAccount) error {
	n, err := q.exec(ctx, `UPDATE service_accounts SET name = ?, role = ? WHERE org_id = ? AND project_id = ? AND id = ?`,
		s.Name, s.Role, s.OrgID, s.ProjectID, s.ID)
	return changed("update", "service account", n, err)
}

func (q *queries) ListServiceAccounts(ctx context.Context, orgID, projectID string, p store.Page) ([]store.ServiceAccount, error) {
	query, args := page(p, `SELECT `+serviceAccountCols+` FROM service_accounts WHERE org_id = ? AND project_id = ?`, []any{orgID, projectID})
	out, err := queryAll(ctx, q, scanServiceAccount, query, args...)
	if err != nil {
		return nil, listErr("service accounts", err)
	}
	return out, nil
}

// DeleteServiceAccount deletes the account; its API keys go with it
// (ON DELETE CASCADE), in the same statement.
func (q *queries) DeleteServiceAccount(ctx context.Context, orgID, projectID, id string) error {
	n, err := q.exec(ctx, `DELETE FROM service_accounts WHERE org_id = ? AND project_id = ? AND id = ?`, orgID, projectID, id)
	return changed("delete", "service account", n, err)
}

// --- external keys ---

const externalKeyCols = `id, org_id, type, name, purpose, params, status, status_code, status_message, status_at, current_kek_version, created_at`

func scanExternalKey(r scanner) (store.ExternalKey, error) {
	var k store.ExternalKey
	var params string
	var statusAt, created int64
	if err := r.Scan(&k.ID, &k.OrgID, &k.Type, &k.Name, &k.Purpose, &params, &k.Status, &k.StatusCode, &k.StatusMessage, &statusAt, &k.CurrentKEKVersion, &created); err != nil {
		return store.ExternalKey{}, err
	}
	if err := json.Unmarshal([]byte(params), &k.Params); err != nil {
		return store.ExternalKey{}, fmt.Errorf("external key %s: params: %w", k.ID, err)
	}
	k.StatusAt, k.CreatedAt = fromMS(statusAt), fromMS(created)
	return k, nil
}

// scanExternalKeyAndProjectKey scans externalKeyCols then projectKeyCols.
func scanExternalKeyAndProjectKey(r scanner) (store.ExternalKey, store.ProjectKey, error) {
	var k store.ExternalKey
	var pk store.ProjectKey
	var params string
	var statusAt, created, pkCreated int64
	var ext sql.NullString
	if err := r.Scan(&k.ID, &k.OrgID, &k.Type, &k.Name, &k.Purpose, &params, &k.Status, &k.StatusCode, &k.StatusMessage, &statusAt, &k.CurrentKEKVersion, &created,
		&pk.OrgID, &pk.ProjectID, &pk.Version, &ext, &pk.KEKVersion, &pk.Algorithm, &pk.Wrapped, &pkCreated); err != nil {
		return k, pk, err
	}
	if err := json.Unmarshal([]byte(params), &k.Params); err != nil {
		return k, pk, fmt.Errorf("external key %s: params: %w", k.ID, err)
	}
	k.StatusAt, k.CreatedAt = fromMS(statusAt), fromMS(created)
	pk.ExternalKeyID, pk.CreatedAt = ext.String, fromMS(pkCreated)
	return k, pk, nil
}

func (q *queries) CreateExternalKey(ctx context.Context, k store.ExternalKey) error {
	params, err := json.Marshal(k.Params)
	if err != nil {
		return fmt.Errorf("sqlstore: create external key: params: %w", err)
	}
	_, err = q.exec(ctx, `INSERT INTO external_keys (`+externalKeyCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		k.ID, k.OrgID, k.Type, k.Name, k.Purpose, string(params), k.Status, k.StatusCode, k.StatusMessage, ms(k.StatusAt), k.CurrentKEKVersion, ms(k.CreatedAt))
	if err != nil {
		return createErr("external key", err)
	}
	return nil
}

func (q *queries) GetExternalKey(ctx context.Context, orgID, id string) (store.ExternalKey, error) {
	k, err := scanExternalKey(q.queryRow(ctx, `SELECT `+externalKeyCols+` FROM external_keys WHERE org_id = ? AND id = ?`, orgID, id))
	if err != nil {
		return store.ExternalKey{}, getErr("external key", err)
	}
	return k, nil
}

func (q *queries) ListExternalKeys(ctx context.Context, orgID, purpose string, p store.Page) ([]store.ExternalKey, error) {
	where, args := `SELECT `+externalKeyCols+` FROM external_keys WHERE org_id = ?`, []any{orgID}
	if purpose != "" {
		where += ` AND purpose = ?`
		args = append(args, purpose)
	}
	query, args := page(p, where, args)
	out, err := queryAll(ctx, q, scanExternalKey, query, args...)
	if err != nil {
		return nil, listErr("external keys", err)
	}
	return out, nil
}

func (q *queries) SetExternalKeyHealth(ctx context.Context, orgID, id string, h store.KeyHealth) error {
	n, err := q.exec(ctx, `UPDATE external_keys SET status = ?, status_code = ?, status_message = ?, status_at = ?,
		current_kek_version = CASE WHEN ? = '' THEN current_kek_version ELSE ? END
		WHERE org_id = ? AND id = ?`,
		h.Status, h.Code, h.Message, ms(h.At), h.CurrentKEKVersion, h.CurrentKEKVersion, orgID, id)
	return changed("update", "external key", n, err)
}

func (q *queries) UpdateExternalKeyParams(ctx context.Context, orgID, id string, params map[string]string) error {
	b, err := json.Marshal(params)
	if err != nil {
		return fmt.Errorf("sqlstore: update external key: params: %w", err)
	}
	n, err := q.exec(ctx, `UPDATE external_keys SET params = ? WHERE org_id = ? AND id = ?`, string(b), orgID, id)
	return changed("update", "external key", n, err)
}

// DeleteExternalKey fails with ErrConflict while a project or project key
// still refers to the key: deleting it would lose the only way to unwrap.
func (q *queries) DeleteExternalKey(ctx context.Context, orgID, id string) error {
	n, err := q.exec(ctx, `DELETE FROM external_keys WHERE org_id = ? AND id = ?`, orgID, id)
	return changed("delete", "external key", n, err)
}

func (q *queries) ProbeTargets(ctx context.Context, after string, limit int) ([]store.ProbeTarget, error) {
	ekCols := "ek." + strings.ReplaceAll(externalKeyCols, ", ", ", ek.")
	pkCols := "pk." + strings.ReplaceAll(projectKeyCols, ", ", ", pk.")
	// The sample is the newest version of a non-archived project wrapped by
	// the key; keys without one are not in use and have no row.
	out, err := queryAll(ctx, q, func(r scanner) (store.ProbeTarget, error) {
		var t store.ProbeTarget
		var err error
		t.Key, t.Sample, err = scanExternalKeyAndProjectKey(r)
		return t, err
	}, `SELECT `+ekCols+`, `+pkCols+` FROM external_keys ek
		JOIN project_keys pk ON pk.org_id = ek.org_id AND pk.external_key_id = ek.id
		WHERE ek.id > ? AND (pk.project_id, pk.version) = (
			SELECT pk2.project_id, pk2.version FROM project_keys pk2
			JOIN projects p ON p.org_id = pk2.org_id AND p.id = pk2.project_id
			WHERE pk2.org_id = ek.org_id AND pk2.external_key_id = ek.id AND p.archived_at IS NULL
			ORDER BY pk2.created_at DESC, pk2.project_id DESC, pk2.version DESC LIMIT 1)
		ORDER BY ek.id LIMIT ?`, after, limit)
	if err != nil {
		return nil, listErr("probe targets", err)
	}
	return out, nil
}

// --- projects ---

const projectCols = `id, org_id, name, external_key_id, created_at, archived_at, current_key_version`

func scanProject(r scanner) (store.Project, error) {
	var p store.Project
	var ext sql.NullString
	var created int64
	var archived sql.NullInt64
	if err := r.Scan(&p.ID, &p.OrgID, &p.Name, &ext, &created, &archived, &p.CurrentKeyVersion); err != nil {
		return store.Project{}, err
	}
	p.ExternalKeyID, p.CreatedAt = ext.String, fromMS(created)
	if archived.Valid {
		t := fromMS(archived.Int64)
		p.ArchivedAt = &t
	}
	return p, nil
}

func archivedAt(t *time.Time) any {
	if t == nil {
		return nil
	}
	return ms(*t)
}

func (q *queries) CreateProject(ctx context.Context, p store.Project) error {
	_, err := q.exec(ctx, `INSERT INTO projects (`+projectCols+`) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		p.ID, p.OrgID, p.Name, nullable(p.ExternalKeyID), ms(p.CreatedAt), archivedAt(p.ArchivedAt), p.CurrentKeyVersion)
	if err != nil {
		return createErr("project", err)
	}
	return nil
}

func (q *queries) GetProject(ctx context.Context, orgID, id string) (store.Project, error) {
	p, err := scanProject(q.queryRow(ctx, `SELECT `+projectCols+` FROM projects WHERE org_id = ? AND id = ?`, orgID, id))
	if err != nil {
		return store.Project{}, getErr("project", err)
	}
	return p, nil
}

func (q *queries) ListProjects(ctx context.Context, orgID string, includeArchived bool, p store.Page) ([]store.Project, error) {
	where := `SELECT ` + projectCols + ` FROM projects WHERE org_id = ?`
	if !includeArchived {
		where += ` AND archived_at IS NULL`
	}
	query, args := page(p, where, []any{orgID})
	out, err := queryAll(ctx, q, scanProject, query, args...)
	if err != nil {
		return nil, listErr("projects", err)
	}
	return out, nil
}

func (q *queries) UpdateProject(ctx context.Context, p store.Project) error {
	n, err := q.exec(ctx, `UPDATE projects SET name = ?, external_key_id = ?, archived_at = ?, current_key_version = ? WHERE org_id = ? AND id = ?`,
		p.Name, nullable(p.ExternalKeyID), archivedAt(p.ArchivedAt), p.CurrentKeyVersion, p.OrgID, p.ID)
	return changed("update", "project", n, err)
}

// ProjectIDsByExternalKey lists project ids in id order; extKeyID "" selects
// the projects on the operator's default key.
func (q *queries) ProjectsDueForRotation(ctx context.Context, cutoff time.Time, after string, limit int) ([]store.Project, error) {
	cols := "p." + strings.ReplaceAll(projectCols, ", ", ", p.")
	out, err := queryAll(ctx, q, scanProject, `SELECT `+cols+` FROM projects p
		JOIN project_keys pk ON pk.org_id = p.org_id AND pk.project_id = p.id AND pk.version = p.current_key_version
		WHERE p.archived_at IS NULL AND pk.created_at <= ? AND p.id > ? ORDER BY p.id LIMIT ?`, ms(cutoff), after, limit)
	if err != nil {
		return nil, listErr("projects due for rotation", err)
	}
	return out, nil
}

func (q *queries) ProjectIDsByExternalKey(ctx context.Context, orgID, extKeyID string, includeArchived bool) ([]string, error) {
	query, args := `SELECT id FROM projects WHERE org_id = ?`, []any{orgID}
	if extKeyID == "" {
		query += ` AND external_key_id IS NULL`
	} else {
		query += ` AND external_key_id = ?`
		args = append(args, extKeyID)
	}
	if !includeArchived {
		query += ` AND archived_at IS NULL`
	}
	query += ` ORDER BY id`
	out, err := queryAll(ctx, q, func(r scanner) (string, error) {
		var id string
		err := r.Scan(&id)
		return id, err
	}, query, args...)
	if err != nil {
		return nil, listErr("projects by external key", err)
	}
	return out, nil
}

// --- project keys ---

const projectKeyCols = `org_id, project_id, version, external_key_id, kek_version, algorithm, wrapped, created_at`

func scanProjectKey(r scanner) (store.ProjectKey, error) {
	var k store.ProjectKey
	var ext sql.NullString
	var created int64
	if err := r.Scan(&k.OrgID, &k.ProjectID, &k.Version, &ext, &k.KEKVersion, &k.Algorithm, &k.Wrapped, &created); err != nil {
		return store.ProjectKey{}, err
	}
	k.ExternalKeyID, k.CreatedAt = ext.String, fromMS(created)
	return k, nil
}

// PutProjectKey inserts a version or, for an existing one, replaces its
// wrapping (external key, KEK version, algorithm, ciphertext) and keeps its
// creation time.
func (q *queries) PutProjectKey(ctx context.Context, k store.ProjectKey) error {
	if len(k.Wrapped) == 0 {
		return errors.New("sqlstore: put project key: empty wrapped key")
	}
	_, err := q.exec(ctx, `INSERT INTO project_keys (`+projectKeyCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (org_id, project_id, version) DO UPDATE SET
			external_key_id = excluded.external_key_id,
			kek_version = excluded.kek_version,
			algorithm = excluded.algorithm,
			wrapped = excluded.wrapped`,
		k.OrgID, k.ProjectID, k.Version, nullable(k.ExternalKeyID), k.KEKVersion, k.Algorithm, k.Wrapped, ms(k.CreatedAt))
	if err != nil {
		return createErr("project key", err)
	}
	return nil
}

func (q *queries) GetProjectKey(ctx context.Context, orgID, projectID string, version int) (store.ProjectKey, error) {
	k, err := scanProjectKey(q.queryRow(ctx, `SELECT `+projectKeyCols+` FROM project_keys WHERE org_id = ? AND project_id = ? AND version = ?`, orgID, projectID, version))
	if err != nil {
		return store.ProjectKey{}, getErr("project key", err)
	}
	return k, nil
}

// ListProjectKeys lists a project's key versions, oldest first.
func (q *queries) ListProjectKeys(ctx context.Context, orgID, projectID string) ([]store.ProjectKey, error) {
	out, err := queryAll(ctx, q, scanProjectKey, `SELECT `+projectKeyCols+` FROM project_keys WHERE org_id = ? AND project_id = ? ORDER BY version`, orgID, projectID)
	if err != nil {
		return nil, listErr("project keys", err)
	}
	return out, nil
}

func (q *queries) ProjectSamples(ctx context.Context, orgID, extKeyID string, limit int) ([]store.ProjectKey, error) {
	cols := "pk." + strings.ReplaceAll(projectKeyCols, ", ", ", pk.")
	out, err := queryAll(ctx, q, scanProjectKey, `SELECT `+cols+` FROM project_keys pk
		JOIN projects p ON p.org_id = pk.org_id AND p.id = pk.project_id
		WHERE pk.org_id = ? AND pk.external_key_id = ? AND p.archived_at IS NULL
		AND pk.version = (SELECT MAX(pk2.version) FROM project_keys pk2
			WHERE pk2.org_id = pk.org_id AND pk2.project_id = pk.project_id AND pk2.external_key_id = pk.external_key_id)
		ORDER BY pk.project_id LIMIT ?`, orgID, extKeyID, limit)
	if err != nil {
		return nil, listErr("project samples", err)
	}
	return out, nil
}

// ProjectProbeBatch walks the projects by their key (index
// projects_by_external_key), each joined to the newest version of its key
// and to its refusal, if recorded.
func (q *queries) ProjectProbeBatch(ctx context.Context, orgID, extKeyID, after string, limit int) ([]store.ProjectSample, error) {
	cols := "pk." + strings.ReplaceAll(projectKeyCols, ", ", ", pk.")
	out, err := queryAll(ctx, q, func(r scanner) (store.ProjectSample, error) {
		var s store.ProjectSample
		var ext, aKey, aCode, aMessage sql.NullString
		var created int64
		var aAt sql.NullInt64
		k := &s.Key
		if err := r.Scan(&k.OrgID, &k.ProjectID, &k.Version, &ext, &k.KEKVersion, &k.Algorithm, &k.Wrapped, &created,
			&aKey, &aCode, &aMessage, &aAt); err != nil {
			return store.ProjectSample{}, err
		}
		k.ExternalKeyID, k.CreatedAt = ext.String, fromMS(created)
		if aKey.Valid {
			s.Denied = &store.ProjectAccess{OrgID: k.OrgID, ProjectID: k.ProjectID, ExternalKeyID: aKey.String,
				Code: aCode.String, Message: aMessage.String, At: fromMS(aAt.Int64)}
		}
		return s, nil
	}, `SELECT `+cols+`, pa.external_key_id, pa.code, pa.message, pa.at FROM projects p
		JOIN project_keys pk ON pk.org_id = p.org_id AND pk.project_id = p.id AND pk.version = (
			SELECT MAX(pk2.version) FROM project_keys pk2
			WHERE pk2.org_id = p.org_id AND pk2.project_id = p.id AND pk2.external_key_id = ?)
		LEFT JOIN project_access pa ON pa.org_id = p.org_id AND pa.project_id = p.id
		WHERE p.org_id = ? AND p.external_key_id = ? AND p.archived_at IS NULL AND p.id > ?
		ORDER BY p.id LIMIT ?`, extKeyID, orgID, extKeyID, after, limit)
	if err != nil {
		return nil, listErr("project probe batch", err)
	}
	return out, nil
}

func (q *queries) ProjectProbeCursor(ctx context.Context, orgID, extKeyID string) (string, error) {
	var after string
	err := q.queryRow(ctx, `SELECT project_probe_after FROM external_keys WHERE org_id = ? AND id = ?`, orgID, extKeyID).Scan(&after)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("sqlstore: project probe cursor: %w", err)
	}
	return after, nil
}

func (q *queries) SetProjectProbeCursor(ctx context.Context, orgID, extKeyID, after string) error {
	n, err := q.exec(ctx, `UPDATE external_keys SET project_probe_after = ? WHERE org_id = ? AND id = ?`, after, orgID, extKeyID)
	return changed("update", "external key", n, err)
}

const projectAccessCols = `org_id, project_id, external_key_id, code, message, at`

func scanProjectAccess(r scanner) (store.ProjectAccess, error) {
	var a store.ProjectAccess
	var at int64
	if err := r.Scan(&a.OrgID, &a.ProjectID, &a.ExternalKeyID, &a.Code, &a.Message, &at); err != nil {
		return store.ProjectAccess{}, err
	}
	a.At = fromMS(at)
	return a, nil
}

func (q *queries) DenyProject(ctx context.Context, a store.ProjectAccess) error {
	_, err := q.exec(ctx, `INSERT INTO project_access (`+projectAccessCols+`) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (org_id, project_id) DO UPDATE SET
			external_key_id = excluded.external_key_id, code = excluded.code, message = excluded.message, at = excluded.at`,
		a.OrgID, a.ProjectID, a.ExternalKeyID, a.Code, a.Message, ms(a.At))
	if err != nil {
		return createErr("project access", err)
	}
	return nil
}

func (q *queries) AllowProject(ctx context.Context, orgID, projectID string) (bool, error) {
	n, err := q.exec(ctx, `DELETE FROM project_access WHERE org_id = ? AND project_id = ?`, orgID, projectID)
	if err != nil {
		return false, fmt.Errorf("sqlstore: allow project: %w", err)
	}
	return n > 0, nil
}

func (q *queries) GetProjectAccess(ctx context.Context, orgID, projectID string) (store.ProjectAccess, error) {
	a, err := scanProjectAccess(q.queryRow(ctx, `SELECT `+projectAccessCols+` FROM project_access WHERE org_id = ? AND project_id = ?`, orgID, projectID))
	if err != nil {
		return store.ProjectAccess{}, getErr("project access", err)
	}
	return a, nil
}

func (q *queries) DeniedProjects(ctx context.Context, after string, limit int) ([]store.ProjectAccess, error) {
	out, err := queryAll(ctx, q, scanProjectAccess, `SELECT `+projectAccessCols+` FROM project_access
		WHERE project_id > ? ORDER BY project_id LIMIT ?`, after, limit)
	if err != nil {
		return nil, listErr("denied projects", err)
	}
	return out, nil
}

func (q *queries) ProjectKeysToRewrap(ctx context.Context, orgID, extKeyID, current, algorithm string, limit int) ([]store.ProjectKey, error) {
	out, err := queryAll(ctx, q, scanProjectKey, `SELECT `+projectKeyCols+` FROM project_keys
		WHERE org_id = ? AND external_key_id = ? AND (kek_version <> ? OR (? <> '' AND algorithm <> ?))
		ORDER BY project_id, version LIMIT ?`,
		orgID, extKeyID, current, algorithm, algorithm, limit)
	if err != nil {
		return nil, listErr("project keys to rewrap", err)
	}
	return out, nil
}

// CountProjectKeysByKEKVersion: extKeyID "" counts keys wrapped by the
// operator's default key.
func (q *queries) CountProjectKeysByKEKVersion(ctx context.Context, orgID, extKeyID string) (map[string]int, error) {
	query, args := `SELECT kek_version, COUNT(*) FROM project_keys WHERE org_id = ?`, []any{orgID}
	if extKeyID == "" {
		query += ` AND external_key_id IS NULL`
	} else {
		query += ` AND external_key_id = ?`
		args = append(args, extKeyID)
	}
	type row struct {
		v string
		n int
	}
	rows, err := queryAll(ctx, q, func(r scanner) (row, error) {
		var x row
		err := r.Scan(&x.v, &x.n)
		return x, err
	}, query+` GROUP BY kek_version`, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: count project keys: %w", err)
	}
	out := make(map[string]int, len(rows))
	for _, r := range rows {
		out[r.v] = r.n
	}
	return out, nil
}

// --- audit ---

const auditCols = `id, org_id, type, effective_at, actor, project_id, data`

func scanAudit(r scanner) (store.AuditEvent, error) {
	var e store.AuditEvent
	var at int64
	var data string
	if err := r.Scan(&e.ID, &e.OrgID, &e.Type, &at, &e.Actor, &e.ProjectID, &data); err != nil {
		return store.AuditEvent{}, err
	}
	e.EffectiveAt = fromMS(at)
	if data != "" {
		e.Data = json.RawMessage(data)
	}
	return e, nil
}

func (q *queries) AppendAudit(ctx context.Context, e store.AuditEvent) error {
	if len(e.Data) > 0 && !json.Valid(e.Data) {
		return errors.New("sqlstore: append audit event: data is not valid JSON")
	}
	_, err := q.exec(ctx, `INSERT INTO audit_events (`+auditCols+`) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		e.ID, e.OrgID, e.Type, ms(e.EffectiveAt), e.Actor, e.ProjectID, string(e.Data))
	if err != nil {
		return createErr("audit event", err)
	}
	return nil
}

// ListAudit returns an org's events newest first. Time bounds compare whole
// unix seconds, as the API shows them: GT t keeps events whose second is
// after t's second, and so on. After keeps events older than the cursor,
// Before events newer than it; with Before the page is the Limit events
// just newer than the cursor (the previous page), still newest first.
func (q *queries) ListAudit(ctx context.Context, orgID string, f store.AuditFilter) ([]store.AuditEvent, error) {
	var b strings.Builder
	b.WriteString(`SELECT ` + auditCols + ` FROM audit_events WHERE org_id = ?`)
	args := []any{orgID}
	in := func(col string, vals []string) {
		if len(vals) == 0 {
			return
		}
		b.WriteString(" AND " + col + " IN (?" + strings.Repeat(", ?", len(vals)-1) + ")")
		for _, v := range vals {
			args = append(args, v)
		}
	}
	in("type", f.Types)
	in("project_id", f.ProjectIDs)
	bound := func(op string, t *time.Time, nextSecond bool) {
		if t == nil {
			return
		}
		s := t.Unix()
		if nextSecond {
			s++
		}
		b.WriteString(" AND effective_at " + op + " ?")
		args = append(args, s*1000)
	}
	bound(">=", f.GT, true)
	bound(">=", f.GTE, false)
	bound("<", f.LT, false)
	bound("<", f.LTE, true)
	if f.After != "" {
		b.WriteString(" AND id < ?")
		args = append(args, f.After)
	}
	asc := f.Before != ""
	if asc {
		b.WriteString(" AND id > ? ORDER BY id ASC")
		args = append(args, f.Before)
	} else {
		b.WriteString(" ORDER BY id DESC")
	}
	if f.Limit > 0 {
		b.WriteString(" LIMIT ?")
		args = append(args, f.Limit)
	}
	out, err := queryAll(ctx, q, scanAudit, b.String(), args...)
	if err != nil {
		return nil, listErr("audit events", err)
	}
	if asc {
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	}
	return out, nil
}

func (q *queries) PruneAudit(ctx context.Context, before time.Time) (int64, error) {
	n, err := q.exec(ctx, `DELETE FROM audit_events WHERE effective_at < ?`, ms(before))
	if err != nil {
		return 0, fmt.Errorf("sqlstore: prune audit events: %w", err)
	}
	return n, nil
}

// --- files ---

const fileCols = `id, org_id, project_id, purpose, bytes, created_at, key_version, name_ciphertext, blob_key`

func scanFile(r scanner) (store.File, error) {
	var f store.File
	var created int64
	if err := r.Scan(&f.ID, &f.OrgID, &f.ProjectID, &f.Purpose, &f.Bytes, &created, &f.KeyVersion, &f.NameCiphertext, &f.BlobKey); err != nil {
		return store.File{}, err
	}
	f.CreatedAt = fromMS(created)
	return f, nil
}

func (q *queries) CreateFile(ctx context.Context, f store.File) error {
	name := f.NameCiphertext
	if name == nil {
		name = []byte{} // NOT NULL column; an empty slice binds as an empty blob
	}
	_, err := q.exec(ctx, `INSERT INTO files (`+fileCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		f.ID, f.OrgID, f.ProjectID, f.Purpose, f.Bytes, ms(f.CreatedAt), f.KeyVersion, name, f.BlobKey)
	if err != nil {
		return createErr("file", err)
	}
	return nil
}

func (q *queries) GetFile(ctx context.Context, orgID, projectID, id string) (store.File, error) {
	f, err := scanFile(q.queryRow(ctx, `SELECT `+fileCols+` FROM files WHERE org_id = ? AND project_id = ? AND id = ?`, orgID, projectID, id))
	if err != nil {
		return store.File{}, getErr("file", err)
	}
	return f, nil
}

func (q *queries) ListFiles(ctx context.Context, orgID, projectID, purpose string, p store.Page) ([]store.File, error) {
	where, args := `SELECT `+fileCols+` FROM files WHERE org_id = ? AND project_id = ?`, []any{orgID, projectID}
	if purpose != "" {
		where += ` AND purpose = ?`
		args = append(args, purpose)
	}
	query, args := page(p, where, args)
	out, err := queryAll(ctx, q, scanFile, query, args...)
	if err != nil {
		return nil, listErr("files", err)
	}
	return out, nil
}

func (q *queries) DeleteFile(ctx context.Context, orgID, projectID, id string) error {
	n, err := q.exec(ctx, `DELETE FROM files WHERE org_id = ? AND project_id = ? AND id = ?`, orgID, projectID, id)
	return changed("delete", "file", n, err)
}

func (q *queries) FilesBelowKeyVersion(ctx context.Context, orgID, projectID string, version int, after string, limit int) ([]store.File, error) {
	out, err := queryAll(ctx, q, scanFile, `SELECT `+fileCols+` FROM files WHERE org_id = ? AND project_id = ? AND key_version < ? AND id > ? ORDER BY id LIMIT ?`,
		orgID, projectID, version, after, limit)
	if err != nil {
		return nil, listErr("files", err)
	}
	return out, nil
}

func (q *queries) CountFilesBelowKeyVersion(ctx context.Context, orgID, projectID string, version int) (int, error) {
	var n int
	if err := q.queryRow(ctx, `SELECT COUNT(*) FROM files WHERE org_id = ? AND project_id = ? AND key_version < ?`, orgID, projectID, version).Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlstore: count files: %w", err)
	}
	return n, nil
}

func (q *queries) ReplaceFileContent(ctx context.Context, f store.File, oldBlobKey string) error {
	n, err := q.exec(ctx, `UPDATE files SET key_version = ?, name_ciphertext = ?, blob_key = ? WHERE org_id = ? AND project_id = ? AND id = ? AND blob_key = ?`,
		f.KeyVersion, f.NameCiphertext, f.BlobKey, f.OrgID, f.ProjectID, f.ID, oldBlobKey)
	if err != nil {
		return fmt.Errorf("sqlstore: replace file content: %w", err)
	}
	if n == 1 {
		return nil
	}
	if _, err := q.GetFile(ctx, f.OrgID, f.ProjectID, f.ID); err != nil {
		return err
	}
	return fmt.Errorf("sqlstore: file %s changed concurrently: %w", f.ID, store.ErrConflict)
}
