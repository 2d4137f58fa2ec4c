package app

import (
	"context"
	"time"
)

// orgMigrationBudget bounds the projects one round of the org migration
// moves (each is a rewrap of all its key versions under the org's key), so
// that turning EKM on for a large org reaches its KMS spread out.
const orgMigrationBudget = 20

// migrateOrgs moves, every probe interval, projects still on the operator's
// key under their org's default key in orgs that require EKM (see
// lifecycle.Service.MigrateOrg). It runs on the leader only (leaderJobs);
// every move is a compare-and-set anyway, so an operator's `ekm org
// set-key` running at the same time skips what the leader moved first.
func (a *App) migrateOrgs(ctx context.Context) {
	t := time.NewTicker(a.Config.ProbeInterval)
	defer t.Stop()
	for {
		n, err := a.Service.MigrateOrgs(ctx, orgMigrationBudget)
		if err != nil && ctx.Err() == nil {
			a.Logger.Warn("organization key migration: round failed", "err", err)
		} else if n > 0 {
			a.Logger.Info("organization key migration: projects moved under their organization's key", "projects", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
