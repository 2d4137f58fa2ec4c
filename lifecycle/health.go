package lifecycle

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/ekm-dev/ekm/audit"
	"github.com/ekm-dev/ekm/cluster"
	"github.com/ekm-dev/ekm/keyring"
	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/secret"
	"github.com/ekm-dev/ekm/store"
)

// StatusOf is the health an external key has after a failure diagnosed as
// d: a revocation or an invalid key (the customer's doing) makes it
// unavailable; an outage or ekm's own misconfiguration only degraded, since
// cached keys keep serving.
func StatusOf(d kms.Diagnosis) string {
	if d.Class == kms.Revoked || d.Class == kms.Invalid {
		return store.StatusUnavailable
	}
	return store.StatusDegraded
}

// ProbeResult is what one health check concluded.
type ProbeResult struct {
	Status string
	// Current is the KEK version the key's project keys should be wrapped
	// by, when the check found the key healthy ("" otherwise): the caller
	// runs RewrapRotated with it, outside the check, so that rewraps never
	// hold up health checks.
	Current string
}

// ProbeOptions tune one health check.
type ProbeOptions struct {
	// Deep also describes the key (detecting a KEK rotation) and does an
	// encrypt; otherwise the check is one decrypt.
	Deep bool
	// ProjectsPerCheck and ProjectConcurrency bound the per-project part of
	// the check of a type whose customer can refuse single projects: at
	// most ProjectsPerCheck projects (default DefaultProjectsPerCheck),
	// decrypted at most ProjectConcurrency at once (default
	// DefaultProjectConcurrency).
	ProjectsPerCheck   int
	ProjectConcurrency int
}

// DefaultProjectsPerCheck and DefaultProjectConcurrency are the defaults of
// ProbeOptions: a key with N projects has each probed once every
// ceil(N/100) checks.
const (
	DefaultProjectsPerCheck   = 100
	DefaultProjectConcurrency = 8
)

// Probe checks one external key in use and applies what it finds: a decrypt
// of a stored project key (the exact KEK version data depends on); with
// Deep, a describe and an encrypt. Then:
//   - revocation-class failure: the key is marked unavailable, its gate
//     closes and its cached project keys are evicted;
//   - any other failure: degraded, cached keys keep serving;
//   - success: restored if it was not valid, a new current KEK version is
//     recorded, and project keys on older versions are rewrapped.
//
// For a type whose customer can refuse single projects (kms.Spec
// ProjectScoped: AWS, whose key policy can deny one project's encryption
// context), the key's health is decided at the org level only: by the one
// decrypt above (which also diagnoses what only stored data shows, such as
// an alias re-pointed to another key), where a refusal of the sample's
// project alone does not count — then an encrypt and a decrypt under the
// org's associated data alone, which no per-project statement concerns,
// decide. Then, if the key is valid and time is left, one batch of its
// projects is probed (probeProjects): a project's refusal closes that
// project only and never degrades the key.
func (s *Service) Probe(ctx context.Context, t store.ProbeTarget, opt ProbeOptions) ProbeResult {
	ek := t.Key
	epoch := s.kr.GateEpoch(ek.ID)
	began := s.cfg.Now()
	key, err := s.kr.KMS(&ek)
	spec, _, _ := s.cfg.Registry.Spec(ek.Type)
	scoped := err == nil && spec.ProjectScoped
	if err == nil {
		err = s.decryptSample(ctx, key, "probe_decrypt", t.Sample)
		if kms.ClassOf(err) == kms.Revoked {
			// The sample was read at the start of the round: another
			// replica may have rewrapped it since (and the customer then
			// disabled the old KEK version). Only the stored wrapping counts.
			if cur, rerr := s.st.GetProjectKey(ctx, t.Sample.OrgID, t.Sample.ProjectID, t.Sample.Version); rerr == nil &&
				(cur.ExternalKeyID != t.Sample.ExternalKeyID || cur.KEKVersion != t.Sample.KEKVersion || cur.Algorithm != t.Sample.Algorithm) {
				if cur.ExternalKeyID != ek.ID {
					return ProbeResult{Status: ek.Status} // re-keyed away: the next round picks another sample
				}
				err = s.decryptSample(ctx, key, "probe_decrypt", cur)
			}
		}
		if d, _ := kms.Diagnose(err); scoped && err != nil && d.Scope == kms.ScopeProject {
			// The customer refuses the sample's project alone (the project
			// probe records it): the key is judged at the org level.
			err = s.orgCheck(ctx, key, ek)
		}
	}
	var info kms.KeyInfo
	if err == nil && opt.Deep {
		info, err = s.describeAndEncrypt(ctx, key, ek)
	}
	if errors.Is(ctx.Err(), context.Canceled) && !errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
		return ProbeResult{Status: ek.Status} // the prober is stopping, or lost the check's lease: not the customer's doing (a check that ran out of time is an outage)
	}
	// A check that ran out of time is an outage, recorded with a fresh
	// bound (the check's own context may be spent).
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	switch kms.ClassOf(err) {
	case "":
		res := s.healthy(rctx, ek, info, epoch, began)
		if scoped && res.Status == store.StatusValid && ctx.Err() == nil {
			s.probeProjects(ctx, key, ek, opt)
		}
		return res
	case kms.Revoked:
		s.revoked(rctx, ek, keyring.NewUnavailable(ek.ID, err), began)
		return ProbeResult{Status: store.StatusUnavailable}
	default: // Outage, Operator, Invalid: not the customer withdrawing access
		return ProbeResult{Status: s.degraded(rctx, ek, err)}
	}
}

// orgCheck is the check of a key whose customer can refuse single
// projects: an encrypt and a decrypt of a fresh random key under the org's
// associated data alone (no project), as the provider's own test of a
// refusal's scope does. A per-project statement does not concern it; a
// refusal here is the key's.
func (s *Service) orgCheck(ctx context.Context, key *kms.Key, ek store.ExternalKey) error {
	return key.Do(ctx, "probe_org_check", func(ctx context.Context, p kms.Provider) error {
		k := secret.New()
		defer k.Zero()
		aad := kms.AAD{OrgID: ek.OrgID}
		w, err := p.Wrap(ctx, k.Bytes(), aad)
		if err != nil {
			return err
		}
		pt, err := p.Unwrap(ctx, w, aad)
		secret.Wipe(pt)
		return err
	})
}

// probeProjects probes one batch of the projects of ek (a type whose
// customer can refuse single projects): up to opt.ProjectsPerCheck of them,
// in project id order from the key's stored cursor (shared by every
// replica: whichever holds the key's probe lease goes on where the last
// one stopped), decrypting the newest key version of each, at most
// opt.ProjectConcurrency at once, within what is left of the check's time.
// The cursor then moves past every project probed; after the last project
// it starts over. So with N projects every project is probed once every
// ceil(N/ProjectsPerCheck) checks of the key.
//
// What a project's decrypt finds only ever concerns that project:
//   - success: its refusal, if stored, is cleared (project.access_restored);
//   - a refusal of that project alone (kms.ScopeProject): it is denied
//     (project.access_denied), its gate closed;
//   - anything else (an outage, a timeout, a refusal of the whole key that
//     the next org-level check will see): nothing is decided; a stored
//     refusal stays enforced (this replica's gate is closed again from the
//     stored row if it had forgotten it).
//
// None of it changes the key's health.
func (s *Service) probeProjects(ctx context.Context, key *kms.Key, ek store.ExternalKey, opt ProbeOptions) {
	limit, conc := opt.ProjectsPerCheck, opt.ProjectConcurrency
	if limit <= 0 {
		limit = DefaultProjectsPerCheck
	}
	if conc <= 0 {
		conc = DefaultProjectConcurrency
	}
	after, err := s.st.ProjectProbeCursor(ctx, ek.OrgID, ek.ID)
	var batch []store.ProjectSample
	if err == nil {
		batch, err = s.st.ProjectProbeBatch(ctx, ek.OrgID, ek.ID, after, limit)
		if err == nil && len(batch) == 0 && after != "" {
			after = "" // the last check ended the cycle exactly: start over
			batch, err = s.st.ProjectProbeBatch(ctx, ek.OrgID, ek.ID, after, limit)
		}
	}
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("probe: reading the projects to probe failed; the next check retries", "external_key_id", ek.ID, "err", err)
		}
		return
	}
	done := make([]bool, len(batch))
	odd := make([]error, len(batch)) // failures neither an outage nor the project's refusal
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	for i, smp := range batch {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			done[i], odd[i] = s.probeProject(ctx, key, ek, smp)
		})
	}
	wg.Wait()
	if len(batch) == 0 {
		return
	}
	if n, first := countErrs(odd); n > 0 {
		// Not the key's health (its org-level check passed) nor a project's
		// refusal: shown to the operator, decided nothing.
		d, _ := kms.Diagnose(first)
		s.log.Warn("probe: project decrypts failed although the key's org-level check passed; no project denied", "org_id", ek.OrgID,
			"external_key_id", ek.ID, "failed", n, "probed", len(batch), "code", d.Code, "class", d.Class)
	}
	// Past the projects probed in order; those the check's time did not
	// reach are probed first by the next check.
	next := after
	for i, smp := range batch {
		if !done[i] {
			break
		}
		next = smp.Key.ProjectID
	}
	if len(batch) < limit && next == batch[len(batch)-1].Key.ProjectID {
		next = "" // the cycle is complete
	}
	if next == after {
		return
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := s.st.SetProjectProbeCursor(wctx, ek.OrgID, ek.ID, next); err != nil && !isNotFound(err) {
		s.log.Warn("probe: moving the project probe cursor failed; the next check probes the same projects", "external_key_id", ek.ID, "err", err)
	}
}

func countErrs(errs []error) (n int, first error) {
	for _, err := range errs {
		if err != nil {
			if n == 0 {
				first = err
			}
			n++
		}
	}
	return n, first
}

// probeProject decrypts the newest key version of one project and applies
// what it finds to that project only (see probeProjects). It reports
// whether the project was probed (false: the check's time ran out first),
// and a failure that is neither an outage nor the project's refusal (a
// revocation of the whole key or an invalid wrap, though the org-level
// check passed), for the operator's log.
func (s *Service) probeProject(ctx context.Context, key *kms.Key, ek store.ExternalKey, smp store.ProjectSample) (probed bool, odd error) {
	pid := smp.Key.ProjectID
	err := s.decryptSample(ctx, key, "probe_decrypt", smp.Key)
	if err != nil && ctx.Err() != nil {
		return false, nil
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	d, _ := kms.Diagnose(err)
	switch {
	case err == nil:
		// Decided from the stored row (memory may have lost the gate), and
		// from this replica's gate (a refusal seen on a request path whose
		// record failed).
		if smp.Denied != nil || s.kr.ProjectUnavailable(ek.ID, pid) != nil {
			s.projectAllowed(wctx, ek, pid)
		}
	case d.Class == kms.Revoked && d.Scope == kms.ScopeProject:
		u := keyring.NewUnavailable(ek.ID, err)
		u.ProjectID = pid
		s.kr.MarkProjectUnavailable(ek.ID, pid, u)
		s.projectDenied(wctx, ek, pid, u)
	default:
		// Not the project's verdict: an outage never denies a project, and
		// never lifts a refusal.
		if smp.Denied != nil && smp.Denied.ExternalKeyID == ek.ID && s.kr.ProjectUnavailable(ek.ID, pid) == nil {
			s.kr.MarkProjectUnavailable(ek.ID, pid, deniedError(*smp.Denied))
		}
		if d.Class == kms.Revoked || d.Class == kms.Invalid {
			odd = err
		}
	}
	return true, odd
}

func (s *Service) decryptSample(ctx context.Context, key *kms.Key, op string, rec store.ProjectKey) error {
	return key.Do(ctx, op, func(ctx context.Context, p kms.Provider) error {
		pt, err := p.Unwrap(ctx, keyring.Wrapped(rec), keyring.AAD(rec))
		secret.Wipe(pt)
		return err
	})
}

func (s *Service) describeAndEncrypt(ctx context.Context, key *kms.Key, ek store.ExternalKey) (kms.KeyInfo, error) {
	var info kms.KeyInfo
	err := key.Do(ctx, "probe_describe", func(ctx context.Context, p kms.Provider) error {
		var err error
		info, err = p.Describe(ctx)
		return err
	})
	if err != nil {
		return info, err
	}
	err = key.Do(ctx, "probe_encrypt", func(ctx context.Context, p kms.Provider) error {
		k := secret.New()
		defer k.Zero()
		_, err := p.Wrap(ctx, k.Bytes(), kms.AAD{OrgID: ek.OrgID})
		return err
	})
	return info, err
}

// healthy records a successful check that began at began (gate epoch
// epoch): a revocation seen or stored since it began is newer news, and
// stands.
func (s *Service) healthy(ctx context.Context, ek store.ExternalKey, info kms.KeyInfo, epoch uint64, began time.Time) ProbeResult {
	if s.kr.GateEpoch(ek.ID) != epoch && s.kr.Unavailable(ek.ID) != nil {
		// A request saw a revocation while we probed: trust the newer news.
		return ProbeResult{Status: store.StatusUnavailable}
	}
	if closed := s.kr.Unavailable(ek.ID) != nil; closed || ek.Status != store.StatusValid {
		if closed && s.kr.GateEpoch(ek.ID) == epoch {
			// This success is newer than the revocation that closed the
			// gate (nothing closed it since the check began): the change
			// this records must open it (followStored), even when both
			// fall within one millisecond of the stored times.
			s.markOpen(ek.ID)
		}
		stale := false
		// Dated when the check began: a revocation seen during it is later.
		s.setHealthIf(ctx, ek, store.KeyHealth{Status: store.StatusValid, At: began, CurrentKEKVersion: info.CurrentVersion}, audit.TypeExternalKeyRestored,
			func(cur store.ExternalKey) bool {
				stale = revokedSince(cur, began)
				return !stale
			})
		if stale {
			// Another replica recorded a revocation after this check began:
			// the gate follows it, whatever this check found.
			s.followStored(ctx, ek.OrgID, ek.ID)
			return ProbeResult{Status: store.StatusUnavailable}
		}
		if closed && s.kr.MarkAvailableSince(ek.ID, epoch) {
			s.markOpen(ek.ID)
		}
		s.cfg.Metrics.KeyEvent("restored")
	}
	if info.CurrentVersion != "" && info.CurrentVersion != ek.CurrentKEKVersion {
		s.rotated(ctx, ek, info.CurrentVersion, began)
	}
	cur := info.CurrentVersion
	if cur == "" {
		cur = ek.CurrentKEKVersion
	}
	return ProbeResult{Status: store.StatusValid, Current: cur}
}

// requestRevoked is the keyring's revocation handler: an unwrap on a
// request path found access withdrawn (the gate is already closed), for the
// whole key or (projectID != "") for one project.
func (s *Service) requestRevoked(ctx context.Context, ek store.ExternalKey, projectID string, u *keyring.UnavailableError, first bool) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if projectID != "" {
		// Only a stored project of this key has a refusal to record; the
		// keyring closed a gate for whatever id the failed use named (a
		// project being created, not stored yet): reopen it, so that no
		// gate is kept for an id the store does not know.
		p, err := s.st.GetProject(ctx, ek.OrgID, projectID)
		if err != nil || p.ExternalKeyID != ek.ID {
			if err == nil || isNotFound(err) {
				s.kr.MarkProjectAvailable(ek.ID, projectID)
			}
			return
		}
		s.projectDenied(ctx, ek, projectID, u)
		return
	}
	at := s.cfg.Now()
	s.markClosed(ek.ID, at)
	if first {
		s.cfg.Metrics.KeyEvent("unavailable")
		s.log.Warn("external key unavailable: customer withdrew access", "org_id", ek.OrgID, "external_key_id", ek.ID, "code", u.Code)
	}
	s.setHealth(ctx, ek, store.KeyHealth{Status: store.StatusUnavailable, Code: u.Code, Message: u.Message, At: at}, audit.TypeExternalKeyUnavailable)
}

// revoked closes ek's gate (evicting its cached keys) and records the
// revocation, once per transition. The refusal is dated when the check
// began (the KMS may have judged it any time after): a success recorded
// after that — another replica's check that saw access restored while
// this one's answer was on its way — is newer news, and stays; this
// replica's gate then follows it.
func (s *Service) revoked(ctx context.Context, ek store.ExternalKey, u *keyring.UnavailableError, began time.Time) {
	first := s.kr.MarkUnavailable(ek.ID, u)
	s.markClosed(ek.ID, began)
	if first || ek.Status != store.StatusUnavailable {
		stale := false
		changed := s.setHealthIf(ctx, ek, store.KeyHealth{Status: store.StatusUnavailable, Code: u.Code, Message: u.Message, At: began}, audit.TypeExternalKeyUnavailable,
			func(cur store.ExternalKey) bool {
				stale = cur.Status == store.StatusValid && cur.StatusAt.After(began.Truncate(time.Millisecond))
				return !stale
			})
		if stale {
			s.followStored(ctx, ek.OrgID, ek.ID)
			return
		}
		if changed || first {
			s.log.Warn("external key unavailable: customer withdrew access", "org_id", ek.OrgID, "external_key_id", ek.ID, "code", u.Code)
			s.cfg.Metrics.KeyEvent("unavailable")
		}
	}
}

// projectDenied records that the customer's policy refuses one project on
// ek (the gate of that project is closed by the caller): once across
// replicas, with an audit event and a change the other replicas follow.
func (s *Service) projectDenied(ctx context.Context, ek store.ExternalKey, projectID string, u *keyring.UnavailableError) {
	a := store.ProjectAccess{OrgID: ek.OrgID, ProjectID: projectID, ExternalKeyID: ek.ID, Code: u.Code, Message: u.Message, At: s.cfg.Now()}
	changed := false
	err := s.changes.InTx(ctx, func(q store.Queries, pub *cluster.Publisher) error {
		changed = false
		cur, err := q.GetProjectAccess(ctx, ek.OrgID, projectID)
		if err == nil && cur.ExternalKeyID == ek.ID && cur.Code == u.Code {
			return nil
		}
		if err != nil && !isNotFound(err) {
			return err
		}
		if err := q.DenyProject(ctx, a); err != nil {
			return err
		}
		changed = true
		ev := audit.ProjectAccess{Event: audit.TypeProjectKeyDenied, ExternalKeyID: ek.ID, ProjectID: projectID, Code: u.Code, Message: u.Message}
		if err := q.AppendAudit(ctx, audit.Record(audit.Entry{OrgID: ek.OrgID, ProjectID: projectID, At: a.At}, ev)); err != nil {
			return err
		}
		return pub.Publish(ctx, cluster.ProjectAccessDenied, ek.OrgID, projectID)
	})
	if err != nil && ctx.Err() == nil && !errors.Is(err, store.ErrNotFound) {
		s.log.Warn("recording a project's refused key access failed", "external_key_id", ek.ID, "project_id", projectID, "err", err)
	}
	if changed {
		s.log.Warn("customer's key refuses one project", "org_id", ek.OrgID, "external_key_id", ek.ID, "project_id", projectID, "code", u.Code)
		s.cfg.Metrics.KeyEvent("project_unavailable")
	}
}

// projectAllowed opens one project's gate on ek and, if it was recorded as
// refused, records that access is back (once across replicas).
func (s *Service) projectAllowed(ctx context.Context, ek store.ExternalKey, projectID string) {
	s.kr.MarkProjectAvailable(ek.ID, projectID)
	changed := false
	err := s.changes.InTx(ctx, func(q store.Queries, pub *cluster.Publisher) error {
		was, err := q.AllowProject(ctx, ek.OrgID, projectID)
		if err != nil || !was {
			changed = false
			return err
		}
		changed = true
		ev := audit.ProjectAccess{Event: audit.TypeProjectKeyRestored, ExternalKeyID: ek.ID, ProjectID: projectID}
		if err := q.AppendAudit(ctx, audit.Record(audit.Entry{OrgID: ek.OrgID, ProjectID: projectID, At: s.cfg.Now()}, ev)); err != nil {
			return err
		}
		return pub.Publish(ctx, cluster.ProjectAccessRestored, ek.OrgID, projectID)
	})
	if err != nil && ctx.Err() == nil {
		s.log.Warn("recording a project's restored key access failed", "external_key_id", ek.ID, "project_id", projectID, "err", err)
	}
	if changed {
		s.log.Info("customer's key admits the project again", "org_id", ek.OrgID, "external_key_id", ek.ID, "project_id", projectID)
		s.cfg.Metrics.KeyEvent("project_restored")
	}
}

// degraded records an outage-class failure and returns the key's status
// after it: an outage never evicts, never closes the gate, and never
// overwrites a revocation — a key this replica has closed, or whose stored
// status is unavailable, stays so until a success proves access.
func (s *Service) degraded(ctx context.Context, ek store.ExternalKey, err error) string {
	if s.kr.Unavailable(ek.ID) != nil {
		return store.StatusUnavailable
	}
	d, ok := kms.Diagnose(err)
	if !ok {
		d = kms.Diagnosis{Class: kms.Outage, Code: kms.CodeUnreachable, Message: "the customer's key management service could not be reached"}
	}
	// The status the round started with may be stale (another replica):
	// the stored one decides, in the transaction that writes.
	status := store.StatusDegraded
	changed := s.setHealthIf(ctx, ek, store.KeyHealth{Status: store.StatusDegraded, Code: d.Code, Message: d.Message}, audit.TypeExternalKeyDegraded,
		func(cur store.ExternalKey) bool {
			switch cur.Status {
			case store.StatusUnavailable:
				status = store.StatusUnavailable
				return false
			case store.StatusDegraded:
				return false
			}
			return true
		})
	if changed {
		s.log.Warn("external key degraded", "org_id", ek.OrgID, "external_key_id", ek.ID, "code", d.Code, "class", d.Class)
		s.cfg.Metrics.KeyEvent("degraded")
	}
	return status
}

// revokedSince reports whether cur records a revocation made after t (by
// the recording replica's clock; stored times have millisecond precision):
// newer news than a success that began at t.
func revokedSince(cur store.ExternalKey, t time.Time) bool {
	return cur.Status == store.StatusUnavailable && cur.StatusAt.After(t.Truncate(time.Millisecond))
}

// setHealth stores an external key's health and, when its status changes,
// an audit event of type event — once across replicas: only the
// transaction that changes the stored status writes the event.
func (s *Service) setHealth(ctx context.Context, ek store.ExternalKey, h store.KeyHealth, event string) {
	s.setHealthIf(ctx, ek, h, event, nil)
}

// setHealthIf is setHealth, done only if ok (nil: always) accepts the
// stored key as read in the transaction. It reports whether the stored
// status changed.
func (s *Service) setHealthIf(ctx context.Context, ek store.ExternalKey, h store.KeyHealth, event string, ok func(cur store.ExternalKey) bool) bool {
	if h.At.IsZero() {
		h.At = s.cfg.Now()
	}
	ev := audit.KeyHealth{Event: event, ExternalKeyID: ek.ID, Status: h.Status, Code: h.Code, Message: h.Message}
	changed := false
	err := s.changes.InTx(ctx, func(q store.Queries, pub *cluster.Publisher) error {
		changed = false
		cur, err := q.GetExternalKey(ctx, ek.OrgID, ek.ID)
		if err != nil {
			return err
		}
		if ok != nil && !ok(cur) {
			return nil
		}
		if cur.Status == h.Status && cur.StatusCode == h.Code && (h.CurrentKEKVersion == "" || h.CurrentKEKVersion == cur.CurrentKEKVersion) {
			return nil
		}
		if err := q.SetExternalKeyHealth(ctx, ek.OrgID, ek.ID, h); err != nil {
			return err
		}
		if cur.Status == h.Status {
			return nil
		}
		changed = true
		if err := q.AppendAudit(ctx, audit.Record(audit.Entry{OrgID: ek.OrgID, At: h.At}, ev)); err != nil {
			return err
		}
		return publishHealth(ctx, pub, ek, cur.Status, h.Status)
	})
	if err != nil && ctx.Err() == nil && !errors.Is(err, store.ErrNotFound) {
		s.log.Warn("recording external key health failed", "external_key_id", ek.ID, "err", err)
	}
	return changed && err == nil
}

// rotated records a new current KEK version reported by the KMS in a check
// that began at began (a revocation recorded since stays recorded).
func (s *Service) rotated(ctx context.Context, ek store.ExternalKey, current string, began time.Time) {
	ev := audit.ExternalKeyRotated{ExternalKeyID: ek.ID, PreviousVersion: ek.CurrentKEKVersion, CurrentVersion: current}
	err := s.changes.InTx(ctx, func(q store.Queries, pub *cluster.Publisher) error {
		cur, err := q.GetExternalKey(ctx, ek.OrgID, ek.ID)
		if err != nil {
			return err
		}
		if cur.CurrentKEKVersion == current || revokedSince(cur, began) {
			return nil
		}
		if err := q.SetExternalKeyHealth(ctx, ek.OrgID, ek.ID, store.KeyHealth{Status: store.StatusValid, At: s.cfg.Now(), CurrentKEKVersion: current}); err != nil {
			return err
		}
		if cur.CurrentKEKVersion != "" { // else the first observation, not a rotation
			if err := q.AppendAudit(ctx, audit.Record(s.entry(ek.OrgID, "", ""), ev)); err != nil {
				return err
			}
		}
		return publishHealth(ctx, pub, ek, cur.Status, store.StatusValid)
	})
	if err != nil && ctx.Err() == nil {
		s.log.Warn("recording KEK rotation failed", "external_key_id", ek.ID, "err", err)
		return
	}
	s.cfg.Metrics.KeyEvent("rotated")
}

// RewrapRotated rewraps up to limit project key versions of ek still
// wrapped by a KEK version other than current (after the customer rotated
// its key) or with the driver's old algorithm label (made before the
// driver bound associated data as it does now), selected in one query.
// Each rewrap is its own compare-and-set transaction, so a crash at any
// point leaves every record wrapped by some valid version, and the next run
// resumes. It returns how many it rewrapped.
func (s *Service) RewrapRotated(ctx context.Context, ek store.ExternalKey, current string, limit int) int {
	alg := ""
	if spec, enabled, _ := s.cfg.Registry.Spec(ek.Type); enabled {
		alg = spec.Algorithm
	}
	recs, err := s.st.ProjectKeysToRewrap(ctx, ek.OrgID, ek.ID, current, alg, limit)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("listing project keys to rewrap failed", "external_key_id", ek.ID, "err", err)
		}
		return 0
	}
	done := 0
	for _, rec := range recs {
		nr, err := s.rewrapVersion(ctx, rec, &ek)
		if err != nil {
			s.log.Warn("rewrap after KEK rotation failed; will retry", "external_key_id", ek.ID, "project_id", rec.ProjectID, "version", rec.Version, "err", err)
			return done
		}
		if nr.KEKVersion != current {
			return done // the KMS moved on again; the next run catches up
		}
		ev := audit.ExternalKeyRewrapped{ExternalKeyID: ek.ID, ProjectID: rec.ProjectID, Version: rec.Version, From: rec.KEKVersion, To: nr.KEKVersion}
		err = s.st.InTx(ctx, func(q store.Queries) error {
			cur, err := q.GetProjectKey(ctx, ek.OrgID, rec.ProjectID, rec.Version)
			if err != nil {
				return err
			}
			if cur.ExternalKeyID != ek.ID || cur.KEKVersion != rec.KEKVersion || cur.Algorithm != rec.Algorithm {
				return nil // someone else rewrapped or re-keyed meanwhile
			}
			if err := q.PutProjectKey(ctx, nr); err != nil {
				return err
			}
			return q.AppendAudit(ctx, audit.Record(s.entry(ek.OrgID, "", rec.ProjectID), ev))
		})
		if err != nil {
			return done
		}
		done++
	}
	return done
}
