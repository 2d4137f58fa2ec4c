package lifecycle

import (
	"context"
	"errors"
	"fmt"

	"github.com/ekm-dev/ekm/audit"
	"github.com/ekm-dev/ekm/store"
)

// OrgState is an org's EKM settings and how far its projects are under
// them.
type OrgState struct {
	Settings store.OrgSettings
	// ProjectsTotal counts the org's projects, archived ones included.
	ProjectsTotal int
	// ProjectsOnOperatorKey counts those still on the operator's default
	// key: not under a key the customer holds.
	ProjectsOnOperatorKey int
}

// Migrating reports whether projects are still to be moved under the org's
// default key (EKM is required and some are on the operator's key).
func (o OrgState) Migrating() bool {
	return o.Settings.EKMRequired && o.ProjectsOnOperatorKey > 0
}

// OrgState returns an org's settings and project coverage.
func (s *Service) OrgState(ctx context.Context, orgID string) (OrgState, error) {
	return s.orgState(ctx, s.st, orgID)
}

func (s *Service) orgState(ctx context.Context, q store.Queries, orgID string) (OrgState, error) {
	set, err := q.GetOrgSettings(ctx, orgID)
	if err != nil {
		return OrgState{}, err
	}
	all, err := q.ProjectIDsByExternalKey(ctx, orgID, "", true)
	if err != nil {
		return OrgState{}, err
	}
	total, err := countProjects(ctx, q, orgID)
	if err != nil {
		return OrgState{}, err
	}
	return OrgState{Settings: set, ProjectsTotal: total, ProjectsOnOperatorKey: len(all)}, nil
}

func countProjects(ctx context.Context, q store.Queries, orgID string) (int, error) {
	n := 0
	for after := ""; ; {
		ps, err := q.ListProjects(ctx, orgID, true, store.Page{After: after, Limit: 1000})
		if err != nil {
			return 0, err
		}
		n += len(ps)
		if len(ps) < 1000 {
			return n, nil
		}
		after = ps[len(ps)-1].ID
	}
}

// OrgUpdate changes an org's EKM settings; nil fields stay as they are.
type OrgUpdate struct {
	// DefaultExternalKeyID is the key new projects without one use ("" =
	// none: the operator's default key).
	DefaultExternalKeyID *string
	// EKMRequired: every project must be under a customer key. Turning it
	// on moves the projects still on the operator's key under the default
	// key (MigrateOrg; the background worker does it too).
	EKMRequired *bool
}

// ActorOperator marks changes made by the operator on the command line
// (`ekm org set-key`), not through the API.
const ActorOperator = audit.ActorOperator

// UpdateOrg changes an org's EKM settings, with an organization.updated
// event. The rules:
//   - the default key must be one of the org's keys and work now (a live
//     validation, as for a re-key);
//   - EKM can only be required with a default key, and the default cannot
//     be cleared while EKM is required (turn the requirement off first).
func (s *Service) UpdateOrg(ctx context.Context, actor, orgID string, u OrgUpdate) (OrgState, error) {
	cur, err := s.st.GetOrgSettings(ctx, orgID)
	if err != nil {
		return OrgState{}, err
	}
	next := cur
	if u.DefaultExternalKeyID != nil {
		next.DefaultExternalKeyID = *u.DefaultExternalKeyID
	}
	if u.EKMRequired != nil {
		next.EKMRequired = *u.EKMRequired
	}
	if next.EKMRequired && next.DefaultExternalKeyID == "" {
		if cur.EKMRequired && u.DefaultExternalKeyID != nil {
			return OrgState{}, conflict("ekm_required", "The organization requires customer-managed keys: its default key cannot be removed. Set ekm_required to false first, or set another default key.")
		}
		return OrgState{}, &Error{Kind: Invalid, Code: "default_key_required", Param: "default_external_key_id",
			Message: "Requiring customer-managed keys needs a default key for the organization: set default_external_key_id to one of its external keys."}
	}
	if next.DefaultExternalKeyID != "" && next.DefaultExternalKeyID != cur.DefaultExternalKeyID {
		k, err := s.externalKey(ctx, s.st, orgID, next.DefaultExternalKeyID)
		if isNotFound(err) {
			return OrgState{}, keyNotFound("default_external_key_id", next.DefaultExternalKeyID)
		}
		if err != nil {
			return OrgState{}, err
		}
		kctx, cancel := s.kmsContext(ctx)
		_, err = s.validate(kctx, k)
		cancel()
		if err != nil {
			return OrgState{}, kmsFailure(err, "default_external_key_id")
		}
	}
	changes, previous := map[string]any{}, map[string]any{}
	if next.DefaultExternalKeyID != cur.DefaultExternalKeyID {
		changes["default_external_key_id"], previous["default_external_key_id"] = nullable(next.DefaultExternalKeyID), nullable(cur.DefaultExternalKeyID)
	}
	if next.EKMRequired != cur.EKMRequired {
		changes["ekm_required"], previous["ekm_required"] = next.EKMRequired, cur.EKMRequired
	}
	var out OrgState
	err = s.st.InTx(ctx, func(q store.Queries) error {
		if len(changes) > 0 {
			again, err := q.GetOrgSettings(ctx, orgID)
			if err != nil {
				return err
			}
			if again != cur {
				return conflict("concurrent_update", "The organization's settings were changed by another request; retry.")
			}
			next.UpdatedAt = s.cfg.Now()
			if err := q.PutOrgSettings(ctx, next); err != nil {
				if isNotFound(err) {
					return keyNotFound("default_external_key_id", next.DefaultExternalKeyID) // removed meanwhile
				}
				return err
			}
			ev := audit.OrganizationUpdated{ID: orgID, ChangesRequested: changes, Previous: previous}
			if err := q.AppendAudit(ctx, audit.Record(s.entry(orgID, actor, ""), ev)); err != nil {
				return err
			}
		}
		var err error
		out, err = s.orgState(ctx, q, orgID)
		return err
	})
	return out, err
}

// errRequired refuses a project that would not be under a customer key.
func errRequired(param string) *Error {
	return &Error{Kind: Invalid, Code: "ekm_required", Param: param,
		Message: "The organization requires customer-managed keys: this project must be protected by one of its external keys (pass external_key_id, or ask an admin to set the organization's default key)."}
}

// MigrateOrg moves the org's projects still on the operator's default key
// (archived ones too: their stored data is the customer's as well) under
// the org's default key, one compare-and-set re-key at a time, up to limit
// projects (0 = all). Safe to interrupt and to run on several replicas at
// once: what is left is read from the store each time. progress, if not
// nil, is called with projects moved so far and the total to move.
func (s *Service) MigrateOrg(ctx context.Context, orgID string, limit int, progress func(done, total int)) (int, error) {
	set, err := s.st.GetOrgSettings(ctx, orgID)
	if err != nil {
		return 0, err
	}
	if !set.EKMRequired || set.DefaultExternalKeyID == "" {
		return 0, nil
	}
	todo, err := s.st.ProjectIDsByExternalKey(ctx, orgID, "", true)
	if err != nil {
		return 0, err
	}
	if limit > 0 && len(todo) > limit {
		todo = todo[:limit]
	}
	if progress == nil {
		progress = func(int, int) {}
	}
	progress(0, len(todo))
	done := 0
	for _, pid := range todo {
		if err := ctx.Err(); err != nil {
			return done, err
		}
		p, err := s.st.GetProject(ctx, orgID, pid)
		if isNotFound(err) {
			continue
		}
		if err != nil {
			return done, err
		}
		if p.ExternalKeyID != "" {
			continue // moved by someone else meanwhile
		}
		_, err = s.rekeyProject(ctx, "", p, set.DefaultExternalKeyID, true)
		var le *Error
		if errors.As(err, &le) && le.Code == "concurrent_update" {
			continue // another replica moved it: the next run sees where it is
		}
		if err != nil {
			return done, fmt.Errorf("moving project %s under key %s: %w", pid, set.DefaultExternalKeyID, err)
		}
		done++
		progress(done, len(todo))
	}
	return done, nil
}

// MigrateOrgs runs MigrateOrg for every org that needs it, moving at most
// budget projects in all (the background worker's round).
func (s *Service) MigrateOrgs(ctx context.Context, budget int) (int, error) {
	moved := 0
	for after := ""; budget > moved; {
		orgs, err := s.st.OrgsToMigrate(ctx, after, 100)
		if err != nil {
			return moved, err
		}
		for _, o := range orgs {
			n, err := s.MigrateOrg(ctx, o.OrgID, budget-moved, nil)
			moved += n
			if err != nil {
				s.log.Warn("moving projects under the organization's key failed; will retry", "org_id", o.OrgID, "err", err)
			}
			if moved >= budget {
				return moved, nil
			}
		}
		if len(orgs) < 100 {
			return moved, nil
		}
		after = orgs[len(orgs)-1].OrgID
	}
	return moved, nil
}
