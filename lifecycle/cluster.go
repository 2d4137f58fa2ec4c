package lifecycle

import (
	"context"
	"time"

	"github.com/ekm-dev/ekm/cluster"
	"github.com/ekm-dev/ekm/keyring"
	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/store"
)

// follow subscribes the keyring to the change log: what any replica (or an
// operator command) changed, this replica applies. Every handler is
// idempotent: the replica that made a change runs it too (cluster.Log.InTx),
// after having applied the change itself.
//
//   - external_key.unavailable / .available: the gate follows the key's
//     stored health (Follow);
//   - external_key.deleted: the key is forgotten;
//   - project.archived / .rekeyed: the project's cached keys are evicted;
//   - reset (changes may have been missed): every cached key is evicted;
//     gates are brought back in line by the next probe round (Follow).
func (s *Service) follow(l *cluster.Log) {
	health := func(ctx context.Context, c cluster.Change) { s.followStored(ctx, c.OrgID, c.ObjectID) }
	l.Subscribe(cluster.ExternalKeyUnavailable, health)
	l.Subscribe(cluster.ExternalKeyAvailable, health)
	l.Subscribe(cluster.ExternalKeyDeleted, func(_ context.Context, c cluster.Change) { s.kr.Forget(c.ObjectID) })
	evict := func(_ context.Context, c cluster.Change) { s.kr.EvictProject(c.ObjectID) }
	l.Subscribe(cluster.ProjectArchived, evict)
	l.Subscribe(cluster.ProjectRekeyed, evict)
	access := func(ctx context.Context, c cluster.Change) { s.followProject(ctx, c.OrgID, c.ObjectID) }
	l.Subscribe(cluster.ProjectAccessDenied, access)
	l.Subscribe(cluster.ProjectAccessRestored, access)
	l.OnReset(func(ctx context.Context) {
		s.kr.EvictAll()
		s.reloadDeniedProjects(ctx)
	})
}

// followProject brings this replica's gate of one project (on its external
// key) in line with the stored record of a project-scoped refusal.
func (s *Service) followProject(ctx context.Context, orgID, projectID string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	a, err := s.st.GetProjectAccess(ctx, orgID, projectID)
	if err == nil {
		s.kr.MarkProjectUnavailable(a.ExternalKeyID, projectID, deniedError(a))
		return
	}
	if !isNotFound(err) {
		s.log.Warn("reading a project's key access failed; the next probe round retries", "project_id", projectID, "err", err)
		return
	}
	p, err := s.st.GetProject(ctx, orgID, projectID)
	if err == nil && p.ExternalKeyID != "" {
		s.kr.MarkProjectAvailable(p.ExternalKeyID, projectID)
	}
}

// reloadDeniedProjects closes again the gates of every denied project (after
// a reset, when changes may have been missed).
func (s *Service) reloadDeniedProjects(ctx context.Context) {
	s.kr.ClearProjectGates()
	for after := ""; ; {
		page, err := s.st.DeniedProjects(ctx, after, 1000)
		if err != nil {
			s.log.Warn("reading denied projects failed; the next probe round closes their gates again", "err", err)
			return
		}
		for _, a := range page {
			s.kr.MarkProjectUnavailable(a.ExternalKeyID, a.ProjectID, deniedError(a))
		}
		if len(page) < 1000 {
			return
		}
		after = page[len(page)-1].ProjectID
	}
}

func deniedError(a store.ProjectAccess) *keyring.UnavailableError {
	return &keyring.UnavailableError{ExternalKeyID: a.ExternalKeyID, ProjectID: a.ProjectID, Class: kms.Revoked, Code: a.Code, Message: a.Message}
}

// Follow brings this replica's gate of an external key in line with its
// stored health, for a key another replica probes (the probe calls it with
// the key as its round read it): closed while the key is unavailable, open
// once it is valid again; degraded leaves the gate as it is. Only when the
// gate disagrees is the key read again, so this costs nothing while in line.
// This is the repair for a change this replica did not apply (missed, or
// applied while the store still said otherwise): gates follow the store
// within one probe round.
func (s *Service) Follow(ctx context.Context, ek store.ExternalKey) {
	closed := s.kr.Unavailable(ek.ID) != nil
	if (ek.Status == store.StatusUnavailable && !closed) || (ek.Status == store.StatusValid && closed) {
		s.followStored(ctx, ek.OrgID, ek.ID)
	}
}

// followStored reads an external key's stored health and moves the gate.
// A gate is only opened if nothing closed it since the read began (a
// request that just saw a revocation is newer news than the row).
func (s *Service) followStored(ctx context.Context, orgID, id string) {
	epoch := s.kr.GateEpoch(id)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	ek, err := s.st.GetExternalKey(ctx, orgID, id)
	if isNotFound(err) {
		s.kr.Forget(id)
		return
	}
	if err != nil {
		s.log.Warn("reading an external key's health failed; the next probe round retries", "external_key_id", id, "err", err)
		return
	}
	switch ek.Status {
	case store.StatusUnavailable:
		// A gate this replica closed itself keeps its own, richer error.
		if s.kr.Unavailable(id) == nil {
			s.kr.MarkUnavailable(id, &keyring.UnavailableError{ExternalKeyID: id, Class: kms.Revoked, Code: ek.StatusCode, Message: ek.StatusMessage})
		}
	case store.StatusValid:
		s.kr.MarkAvailableSince(id, epoch)
	}
}

// publishHealth announces a change of an external key's stored status from
// prev to next, in the transaction that stores it: other replicas close
// their gate when it becomes unavailable and open it when it becomes valid.
func publishHealth(ctx context.Context, pub *cluster.Publisher, ek store.ExternalKey, prev, next string) error {
	switch {
	case next == prev:
		return nil
	case next == store.StatusUnavailable:
		return pub.Publish(ctx, cluster.ExternalKeyUnavailable, ek.OrgID, ek.ID)
	case next == store.StatusValid:
		return pub.Publish(ctx, cluster.ExternalKeyAvailable, ek.OrgID, ek.ID)
	}
	return nil
}
