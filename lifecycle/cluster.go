package lifecycle

import (
	"context"
	"time"

	"github.com/ekm-dev/ekm/audit"
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
//     on a re-key the project's gate follows its stored refusal (none);
//   - project.access_denied / .access_restored: the project's gate follows
//     its stored refusal (followProject);
//   - reset (changes may have been missed): every cached key is evicted;
//     gates are brought back in line by the next probe round (Follow).
func (s *Service) follow(l *cluster.Log) {
	health := func(ctx context.Context, c cluster.Change) { s.followStored(ctx, c.OrgID, c.ObjectID) }
	// A revocation evicts the key's cached project keys before reading the
	// stored health: a change is applied once, so should that read fail,
	// the next use still asks the customer's KMS (which refuses) rather
	// than a cache filled before the revocation.
	l.Subscribe(cluster.ExternalKeyUnavailable, func(ctx context.Context, c cluster.Change) {
		s.kr.EvictExternalKey(c.ObjectID)
		health(ctx, c)
	})
	l.Subscribe(cluster.ExternalKeyAvailable, health)
	l.Subscribe(cluster.ExternalKeyDeleted, func(_ context.Context, c cluster.Change) { s.forget(c.ObjectID) })
	evict := func(_ context.Context, c cluster.Change) { s.kr.EvictProject(c.ObjectID) }
	l.Subscribe(cluster.ProjectArchived, evict)
	access := func(ctx context.Context, c cluster.Change) { s.followProject(ctx, c.OrgID, c.ObjectID) }
	// A re-key also brings the project's gate on its new key in line with
	// the stored refusal (none, after a re-key): a gate left closed from an
	// earlier time on that key must not refuse it.
	l.Subscribe(cluster.ProjectRekeyed, func(ctx context.Context, c cluster.Change) {
		evict(ctx, c)
		access(ctx, c)
	})
	l.Subscribe(cluster.ProjectAccessDenied, access)
	l.Subscribe(cluster.ProjectAccessRestored, access)
	l.OnReset(func(ctx context.Context) {
		s.kr.EvictAll()
		s.reloadDeniedProjects(ctx)
	})
}

// followProject brings this replica's gate of one project (on its external
// key) in line with the stored record of a project-scoped refusal. It
// evicts the project's cached keys first, whatever the read finds: a change
// is applied once, so should the read fail, the next use of the project
// still asks the customer's KMS (which enforces a refusal) rather than a
// cache filled before it.
func (s *Service) followProject(ctx context.Context, orgID, projectID string) {
	s.kr.EvictProject(projectID)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	a, err := s.st.GetProjectAccess(ctx, orgID, projectID)
	if err == nil {
		s.kr.MarkProjectUnavailable(a.ExternalKeyID, projectID, deniedError(a))
		return
	}
	if !isNotFound(err) {
		s.log.Warn("reading a project's key access failed; its cached keys are evicted, the next use asks the KMS and the next probe round retries", "project_id", projectID, "err", err)
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
//   - unavailable: the gate closes (a gate this replica closed itself keeps
//     its own, richer error);
//   - valid: the gate opens only if the valid status was recorded after the
//     revocation that closed it (its StatusAt is later than the closure's)
//     and nothing closed it since the read began (a request that just saw a
//     revocation is newer news than the row). A stale valid — this
//     replica saw a revocation the store does not show, its record having
//     failed or not yet landed — keeps the gate closed and records the
//     revocation again, so the key's prober confirms or restores it;
//   - degraded leaves the gate as it is.
func (s *Service) followStored(ctx context.Context, orgID, id string) {
	epoch := s.kr.GateEpoch(id)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	ek, err := s.st.GetExternalKey(ctx, orgID, id)
	if isNotFound(err) {
		s.forget(id)
		return
	}
	if err != nil {
		s.log.Warn("reading an external key's health failed; the next probe round retries", "external_key_id", id, "err", err)
		return
	}
	switch ek.Status {
	case store.StatusUnavailable:
		if s.kr.Unavailable(id) == nil {
			s.kr.MarkUnavailable(id, &keyring.UnavailableError{ExternalKeyID: id, Class: kms.Revoked, Code: ek.StatusCode, Message: ek.StatusMessage})
		}
		s.markClosed(id, ek.StatusAt)
	case store.StatusValid:
		u := s.kr.Unavailable(id)
		if u == nil {
			return
		}
		if at, ok := s.closedSince(id); ok && !ek.StatusAt.After(at) {
			s.setHealthIf(ctx, ek, store.KeyHealth{Status: store.StatusUnavailable, Code: u.Code, Message: u.Message, At: at}, audit.TypeExternalKeyUnavailable,
				func(cur store.ExternalKey) bool { return cur.Status == store.StatusValid && !cur.StatusAt.After(at) })
			return
		}
		if s.kr.MarkAvailableSince(id, epoch) {
			s.markOpen(id)
		}
	}
}

// markClosed notes when the revocation behind a closed gate happened (the
// latest such news wins).
func (s *Service) markClosed(id string, at time.Time) {
	s.closedMu.Lock()
	defer s.closedMu.Unlock()
	if prev, ok := s.closedAt[id]; !ok || at.After(prev) {
		s.closedAt[id] = at.Truncate(time.Millisecond)
	}
}

// markOpen forgets the closure time of a gate that opened.
func (s *Service) markOpen(id string) {
	s.closedMu.Lock()
	defer s.closedMu.Unlock()
	delete(s.closedAt, id)
}

func (s *Service) closedSince(id string) (time.Time, bool) {
	s.closedMu.Lock()
	defer s.closedMu.Unlock()
	at, ok := s.closedAt[id]
	return at, ok
}

// forget drops everything this replica holds of a removed external key.
func (s *Service) forget(id string) {
	s.kr.Forget(id)
	s.markOpen(id)
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
