package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/ekm-dev/ekm/audit"
	"github.com/ekm-dev/ekm/cluster"
	"github.com/ekm-dev/ekm/ids"
	"github.com/ekm-dev/ekm/keyring"
	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/secret"
	"github.com/ekm-dev/ekm/store"
)

// ProjectIDPrefix is the prefix of project ids.
const ProjectIDPrefix = "proj_"

// NewVersion creates a fresh project key version wrapped by ek (nil = the
// default key). It returns the record to store (in the caller's
// transaction) and the plaintext, which the caller may Prime after commit
// and must Zero.
func (s *Service) NewVersion(ctx context.Context, orgID, projectID string, version int, ek *store.ExternalKey) (store.ProjectKey, secret.Key, error) {
	if err := sameOrg(orgID, ek); err != nil {
		return store.ProjectKey{}, secret.Key{}, err
	}
	if ek != nil {
		if err := s.kr.CheckGate(ek.ID); err != nil {
			return store.ProjectKey{}, secret.Key{}, err
		}
	}
	pk := secret.New()
	rec, err := s.wrap(ctx, orgID, projectID, version, ek, pk)
	if err != nil {
		pk.Zero()
		return store.ProjectKey{}, secret.Key{}, err
	}
	return rec, pk, nil
}

// sameOrg refuses an external key of another org than the project's: a
// caller bug, never to be acted on.
func sameOrg(orgID string, ek *store.ExternalKey) error {
	if ek != nil && ek.OrgID != orgID {
		return fmt.Errorf("lifecycle: external key %s is not of organization %s", ek.ID, orgID)
	}
	return nil
}

// wrap wraps pk as version of a project under ek's current KEK version.
func (s *Service) wrap(ctx context.Context, orgID, projectID string, version int, ek *store.ExternalKey, pk secret.Key) (store.ProjectKey, error) {
	if err := sameOrg(orgID, ek); err != nil {
		return store.ProjectKey{}, err
	}
	rec := store.ProjectKey{OrgID: orgID, ProjectID: projectID, Version: version, CreatedAt: s.cfg.Now()}
	key, err := s.kr.KMS(ek)
	if err == nil {
		var w kms.Wrapped
		if w, err = key.Wrap(ctx, pk.Bytes(), keyring.AAD(rec)); err == nil {
			rec.KEKVersion, rec.Algorithm, rec.Wrapped = w.KeyVersion, w.Algorithm, w.Ciphertext
			if ek != nil {
				rec.ExternalKeyID = ek.ID
			}
			return rec, nil
		}
	}
	return store.ProjectKey{}, s.kr.Fail(ctx, ek, projectID, err)
}

// rewrapVersion rewraps one stored version under the current version of ek
// (after the customer rotated its KEK, or when re-keying to ek).
func (s *Service) rewrapVersion(ctx context.Context, rec store.ProjectKey, ek *store.ExternalKey) (store.ProjectKey, error) {
	pk, err := s.kr.Key(ctx, rec.OrgID, rec.ProjectID, rec.Version)
	if err != nil {
		return store.ProjectKey{}, err
	}
	defer pk.Zero()
	nr, err := s.wrap(ctx, rec.OrgID, rec.ProjectID, rec.Version, ek, pk)
	if err != nil {
		return store.ProjectKey{}, err
	}
	nr.CreatedAt = rec.CreatedAt
	return nr, nil
}

// Rewrap returns every version of a project's key wrapped by to (nil = the
// default key), for the caller to store in one transaction together with
// the project's new external key id. Nothing is changed.
func (s *Service) Rewrap(ctx context.Context, orgID, projectID string, to *store.ExternalKey) ([]store.ProjectKey, error) {
	if err := sameOrg(orgID, to); err != nil {
		return nil, err
	}
	if to != nil {
		if err := s.kr.CheckGate(to.ID); err != nil {
			return nil, err
		}
	}
	recs, err := s.st.ListProjectKeys(ctx, orgID, projectID)
	if err != nil {
		return nil, err
	}
	out := make([]store.ProjectKey, 0, len(recs))
	for _, r := range recs {
		nr, err := s.rewrapVersion(ctx, r, to)
		if err != nil {
			return nil, err
		}
		out = append(out, nr)
	}
	return out, nil
}

// CreateProject creates a project protected by the external key extKeyID
// ("" = the operator's default key). The first key version is wrapped
// before anything is stored: a key that cannot wrap fails the creation with
// nothing stored.
//
// Without extKeyID the org's default key is used (see UpdateOrg); the
// operator's key only if the org has none.
func (s *Service) CreateProject(ctx context.Context, actor, orgID, name, extKeyID string) (store.Project, error) {
	var ek *store.ExternalKey
	param, defaulted := "", false
	if extKeyID == "" {
		set, err := s.st.GetOrgSettings(ctx, orgID)
		if err != nil {
			return store.Project{}, err
		}
		extKeyID, defaulted = set.DefaultExternalKeyID, set.DefaultExternalKeyID != ""
		if extKeyID == "" && set.EKMRequired {
			return store.Project{}, errRequired("external_key_id")
		}
	}
	if extKeyID != "" {
		k, err := s.externalKey(ctx, s.st, orgID, extKeyID)
		if isNotFound(err) {
			return store.Project{}, keyNotFound("external_key_id", extKeyID)
		}
		if err != nil {
			return store.Project{}, err
		}
		ek = k
		if !defaulted {
			param = "external_key_id"
		}
	}
	id := ids.New(ProjectIDPrefix)
	kctx, cancel := s.kmsContext(ctx)
	rec, pk, err := s.NewVersion(kctx, orgID, id, 1, ek)
	cancel()
	if err != nil {
		return store.Project{}, kmsFailure(err, param)
	}
	defer pk.Zero()
	p := store.Project{ID: id, OrgID: orgID, Name: name, ExternalKeyID: extKeyID, CreatedAt: s.cfg.Now(), CurrentKeyVersion: 1}
	ev := audit.ProjectCreated{ID: id, Data: audit.ProjectDetails{Name: name, Title: name}}
	if extKeyID != "" {
		ev.Data.ExternalKeyID = &extKeyID
	}
	err = s.st.InTx(ctx, func(q store.Queries) error {
		if err := q.CreateProject(ctx, p); err != nil {
			if isNotFound(err) && ek != nil {
				return keyNotFound("external_key_id", ek.ID) // removed since we loaded it
			}
			return err
		}
		if err := q.PutProjectKey(ctx, rec); err != nil {
			return err
		}
		return q.AppendAudit(ctx, audit.Record(s.entry(orgID, actor, id), ev))
	})
	if err != nil {
		return store.Project{}, err
	}
	s.kr.Prime(orgID, id, 1, p.ExternalKeyID, pk)
	return p, nil
}

// ProjectUpdate is a change to a project; nil fields stay as they are.
type ProjectUpdate struct {
	Name *string
	// ExternalKeyID re-keys the project: every version of its key is
	// rewrapped under the new key ("" = the operator's default key).
	ExternalKeyID *string
}

func archived(id string) *Error {
	return conflict("project_archived", "Project %s is archived and cannot be changed.", id)
}

// UpdateProject renames and/or re-keys a project. A re-key validates the new
// key, rewraps every version of the project's key under it, then swaps all
// of them and the project's key in one compare-and-set transaction. Where
// the org requires customer keys, a re-key to the operator's key ("") is
// refused.
func (s *Service) UpdateProject(ctx context.Context, actor, orgID, id string, u ProjectUpdate) (store.Project, error) {
	p, err := s.st.GetProject(ctx, orgID, id)
	if err != nil {
		return store.Project{}, err
	}
	if p.ArchivedAt != nil {
		return store.Project{}, archived(id)
	}
	if u.ExternalKeyID != nil && *u.ExternalKeyID == "" && p.ExternalKeyID != "" {
		set, err := s.st.GetOrgSettings(ctx, orgID)
		if err != nil {
			return store.Project{}, err
		}
		if set.EKMRequired {
			return store.Project{}, errRequired("external_key_id")
		}
	}
	return s.updateProject(ctx, actor, p, u, false)
}

// rekeyProject moves project p under toID ("" = the operator's key). With
// evenArchived, archived projects are moved too (the org-wide migration:
// their stored data is the customer's as well); they stay archived.
func (s *Service) rekeyProject(ctx context.Context, actor string, p store.Project, toID string, evenArchived bool) (store.Project, error) {
	return s.updateProject(ctx, actor, p, ProjectUpdate{ExternalKeyID: &toID}, evenArchived)
}

func (s *Service) updateProject(ctx context.Context, actor string, p store.Project, u ProjectUpdate, evenArchived bool) (store.Project, error) {
	orgID, id := p.OrgID, p.ID
	changes, previous := map[string]any{}, map[string]any{}
	if u.Name != nil && *u.Name != p.Name {
		changes["name"], changes["title"], previous["name"] = *u.Name, *u.Name, p.Name
	}
	rekey := u.ExternalKeyID != nil && *u.ExternalKeyID != p.ExternalKeyID
	var recs []store.ProjectKey
	var err error
	if rekey {
		if recs, err = s.rekey(ctx, p, *u.ExternalKeyID); err != nil {
			return store.Project{}, err
		}
		changes["external_key_id"] = *u.ExternalKeyID
		previous["external_key_id"] = nullable(p.ExternalKeyID)
	}
	if len(changes) == 0 {
		return p, nil
	}
	ev := audit.ProjectUpdated{ID: id, ChangesRequested: changes, Previous: previous}
	var out store.Project
	err = s.changes.InTx(ctx, func(q store.Queries, pub *cluster.Publisher) error {
		cur, err := q.GetProject(ctx, orgID, id)
		if err != nil {
			return err
		}
		if cur.ArchivedAt != nil && !evenArchived {
			return archived(id)
		}
		if rekey {
			// Compare-and-set: the rewrapped versions are only right if the
			// project is still on the key (and versions) we rewrapped from.
			if err := sameKeys(ctx, q, p, cur, recs); err != nil {
				return err
			}
			for _, rec := range recs {
				if err := q.PutProjectKey(ctx, rec); err != nil {
					return err
				}
			}
			// A refusal recorded for the old key does not carry over: it is
			// cleared, and every replica opens the project's gate.
			if was, err := q.AllowProject(ctx, orgID, id); err != nil {
				return err
			} else if was {
				if err := pub.Publish(ctx, cluster.ProjectAccessRestored, orgID, id); err != nil {
					return err
				}
			}
			cur.ExternalKeyID = *u.ExternalKeyID
		}
		if u.Name != nil {
			cur.Name = *u.Name
		}
		if err := q.UpdateProject(ctx, cur); err != nil {
			return err
		}
		out = cur
		if err := q.AppendAudit(ctx, audit.Record(s.entry(orgID, actor, id), ev)); err != nil {
			return err
		}
		if rekey {
			// Cached plaintext is tied to the old key's revocation gate:
			// every replica evicts it (this one before returning).
			return pub.Publish(ctx, cluster.ProjectRekeyed, orgID, id)
		}
		return nil
	})
	if err != nil {
		return store.Project{}, err
	}
	if rekey && p.ExternalKeyID != "" {
		// This replica's gate of the project on its old key, if closed.
		s.kr.MarkProjectAvailable(p.ExternalKeyID, id)
	}
	return out, nil
}

// rekey validates the target key and rewraps every version of p's key
// under it. Nothing is stored.
func (s *Service) rekey(ctx context.Context, p store.Project, toID string) ([]store.ProjectKey, error) {
	var to *store.ExternalKey
	if toID != "" {
		k, err := s.externalKey(ctx, s.st, p.OrgID, toID)
		if isNotFound(err) {
			return nil, keyNotFound("external_key_id", toID)
		}
		if err != nil {
			return nil, err
		}
		to = k
		vctx, cancel := s.kmsContext(ctx)
		_, err = s.validate(vctx, to)
		cancel()
		if err != nil {
			return nil, kmsFailure(err, "external_key_id")
		}
	}
	// The rewrap gets its own bound: it unwraps and wraps every version.
	ctx, cancel := s.kmsContext(ctx)
	defer cancel()
	recs, err := s.Rewrap(ctx, p.OrgID, p.ID, to)
	if err != nil {
		// Unwrapping under the current key can fail too: then the request's
		// field is not the culprit.
		var ue *keyring.UnavailableError
		if errors.As(err, &ue) && ue.ExternalKeyID == p.ExternalKeyID && p.ExternalKeyID != toID {
			return nil, kmsFailure(err, "")
		}
		return nil, kmsFailure(err, "external_key_id")
	}
	return recs, nil
}

// sameKeys checks, inside the re-key transaction, that nothing changed the
// project's key since the versions were rewrapped.
func sameKeys(ctx context.Context, q store.Queries, before, cur store.Project, recs []store.ProjectKey) error {
	c := conflict("concurrent_update", "Project %s's key was changed by another request while re-keying; retry the update.", cur.ID)
	if cur.ExternalKeyID != before.ExternalKeyID || cur.CurrentKeyVersion != before.CurrentKeyVersion {
		return c
	}
	stored, err := q.ListProjectKeys(ctx, cur.OrgID, cur.ID)
	if err != nil {
		return err
	}
	if len(stored) != len(recs) {
		return c
	}
	for _, st := range stored {
		if st.ExternalKeyID != before.ExternalKeyID || !slices.ContainsFunc(recs, func(r store.ProjectKey) bool { return r.Version == st.Version }) {
			return c
		}
	}
	return nil
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// ArchiveProject archives a project: its data can no longer be read or
// written, and its cached keys are dropped on every replica (this one
// before returning). Archiving twice is a no-op.
func (s *Service) ArchiveProject(ctx context.Context, actor, orgID, id string) (store.Project, error) {
	var out store.Project
	err := s.changes.InTx(ctx, func(q store.Queries, pub *cluster.Publisher) error {
		p, err := q.GetProject(ctx, orgID, id)
		if err != nil {
			return err
		}
		out = p
		if p.ArchivedAt != nil {
			return nil // already archived: idempotent, no second event
		}
		now := s.cfg.Now()
		p.ArchivedAt = &now
		if err := q.UpdateProject(ctx, p); err != nil {
			return err
		}
		out = p
		if err := q.AppendAudit(ctx, audit.Record(s.entry(orgID, actor, id), audit.ProjectArchived{ID: id})); err != nil {
			return err
		}
		return pub.Publish(ctx, cluster.ProjectArchived, orgID, id)
	})
	if err != nil {
		return store.Project{}, err
	}
	s.kr.EvictProject(id) // also when it was archived already
	return out, nil
}

// RotateOptions qualify a project key rotation.
type RotateOptions struct {
	// Scheduled marks a rotation by the schedule (in its audit event).
	Scheduled bool
	// Expect, if set, is the project as the caller found it: the rotation
	// happens only if the project is still on the same version and external
	// key and not archived (else store.ErrConflict), so two schedulers that
	// find one project due rotate it once.
	Expect *store.Project
	// MinInterval, if > 0, bounds how often the project can be rotated: the
	// rotation is refused with a *RotationRateLimitedError, before any KMS
	// call, while the project's current key version is younger than this.
	// The age is the stored created_at of that version (set by the replica
	// that rotated, kept by re-keys), so the bound holds across replicas
	// and restarts. Version 1 was made by the project's creation, not a
	// rotation: it never holds back the first rotation. The Admin API sets
	// it; the schedule and operator commands do not.
	MinInterval time.Duration
}

// RotationRateLimitedError refuses a rotation asked for less than
// RotateOptions.MinInterval after the previous one. Nothing was wrapped,
// stored or audited.
type RotationRateLimitedError struct {
	ProjectID string
	// Version is the project's current key version and CreatedAt when it
	// was created.
	Version   int
	CreatedAt time.Time
	// Interval is the bound; RetryAfter how long until a rotation is
	// allowed (> 0, at most Interval).
	Interval   time.Duration
	RetryAfter time.Duration
}

func (e *RotationRateLimitedError) Error() string {
	return fmt.Sprintf("project %s: key version %d was created at %s; rotating again is allowed in %s (at most one rotation per %s)",
		e.ProjectID, e.Version, e.CreatedAt.UTC().Format(time.RFC3339), e.RetryAfter, e.Interval)
}

// rotationAllowed refuses a rotation of p before interval has passed since
// its current key version was created (see RotateOptions.MinInterval).
func (s *Service) rotationAllowed(ctx context.Context, p store.Project, interval time.Duration) error {
	if interval <= 0 || p.CurrentKeyVersion <= 1 {
		return nil
	}
	rec, err := s.st.GetProjectKey(ctx, p.OrgID, p.ID, p.CurrentKeyVersion)
	if err != nil {
		return err
	}
	wait := rec.CreatedAt.Add(interval).Sub(s.cfg.Now())
	if wait <= 0 {
		return nil
	}
	// A version stamped by a replica whose clock runs ahead of this one's
	// holds rotations back no longer than the interval itself.
	wait = min(wait, interval)
	return &RotationRateLimitedError{ProjectID: p.ID, Version: rec.Version, CreatedAt: rec.CreatedAt, Interval: interval, RetryAfter: wait}
}

// RotateProjectKey creates a new project key version under the project's
// current external key and makes it the version new data is written under.
// Old versions stay for reads. It returns the new version. With
// opt.MinInterval, a rotation too soon after the previous one is refused
// (*RotationRateLimitedError) before anything else is done.
func (s *Service) RotateProjectKey(ctx context.Context, actor, orgID, projectID string, opt RotateOptions) (int, error) {
	if opt.MinInterval > 0 {
		// Concurrent rotations of one project (a retried or repeated call)
		// would each pass the interval check and each call the customer's
		// KMS, only one version being stored: on this replica the later
		// ones are refused before any call (across replicas, at most one
		// each gets that far). Claimed before the project is read, so a
		// rotation that follows a finished one reads its new version.
		claim := orgID + "/" + projectID
		if _, busy := s.rotating.LoadOrStore(claim, struct{}{}); busy {
			return 0, fmt.Errorf("project %s: another rotation of its key is in progress: %w", projectID, store.ErrConflict)
		}
		defer s.rotating.Delete(claim)
	}
	cur, err := s.st.GetProject(ctx, orgID, projectID)
	if err != nil {
		return 0, err
	}
	p := &cur
	if e := opt.Expect; e != nil && (e.CurrentKeyVersion != cur.CurrentKeyVersion || e.ExternalKeyID != cur.ExternalKeyID || cur.ArchivedAt != nil) {
		// Changed since the caller found it (another replica rotated it):
		// no KMS call for a version that would not be stored.
		return 0, fmt.Errorf("project %s changed since it was found due: %w", projectID, store.ErrConflict)
	}
	if err := s.rotationAllowed(ctx, cur, opt.MinInterval); err != nil {
		return 0, err
	}
	ek, err := s.externalKey(ctx, s.st, orgID, p.ExternalKeyID)
	if err != nil {
		return 0, err
	}
	next := p.CurrentKeyVersion + 1
	rec, pk, err := s.NewVersion(ctx, orgID, projectID, next, ek)
	if err != nil {
		return 0, err
	}
	defer pk.Zero()
	ev := audit.ProjectKeyRotated{ProjectID: projectID, Version: next, Scheduled: opt.Scheduled}
	err = s.changes.InTx(ctx, func(q store.Queries, pub *cluster.Publisher) error {
		cur, err := q.GetProject(ctx, orgID, projectID)
		if err != nil {
			return err
		}
		if cur.CurrentKeyVersion != p.CurrentKeyVersion || cur.ExternalKeyID != p.ExternalKeyID || (opt.Expect != nil && cur.ArchivedAt != nil) {
			return fmt.Errorf("project %s changed while rotating its key: %w", projectID, store.ErrConflict)
		}
		if err := q.PutProjectKey(ctx, rec); err != nil {
			return err
		}
		cur.CurrentKeyVersion = next
		if err := q.UpdateProject(ctx, cur); err != nil {
			return err
		}
		if err := q.AppendAudit(ctx, audit.Record(s.entry(orgID, actor, projectID), ev)); err != nil {
			return err
		}
		return pub.Publish(ctx, cluster.ProjectKeyRotated, orgID, projectID)
	})
	if err != nil {
		return 0, err
	}
	s.kr.Prime(orgID, projectID, next, rec.ExternalKeyID, pk)
	return next, nil
}
