package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/ekm-dev/ekm/store"
)

// ClaimDeploymentID inserts candidate as the deployment id unless one is
// there (ON CONFLICT DO NOTHING: on PostgreSQL a concurrent insert of the
// row waits for the other to commit, on SQLite writes are serialised),
// then reads the id that is stored, which all claimers therefore share.
func (q *queries) ClaimDeploymentID(ctx context.Context, candidate string) (string, error) {
	if candidate == "" {
		return "", errors.New("sqlstore: claim deployment id: empty candidate")
	}
	if _, err := q.exec(ctx, `INSERT INTO deployment (singleton, id, created_at) VALUES (1, ?, ?)
		ON CONFLICT (singleton) DO NOTHING`, candidate, time.Now().UnixMilli()); err != nil {
		return "", fmt.Errorf("sqlstore: claim deployment id: %w", err)
	}
	return q.DeploymentID(ctx)
}

func (q *queries) DeploymentID(ctx context.Context) (string, error) {
	var id string
	err := q.queryRow(ctx, `SELECT id FROM deployment WHERE singleton = 1`).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", store.ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("sqlstore: deployment id: %w", err)
	}
	return id, nil
}
