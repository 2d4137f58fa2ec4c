package lifecycle

import (
	"context"
	"errors"
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
}

// Probe checks one external key in use and applies what it finds: a decrypt
// of a stored project key (the exact KEK version data depends on); with
// Deep, a describe and an encrypt. Then:
//   - revocation-class failure: the key is marked unavailable, its gate
//     closes and its cached project keys are evicted;
//   - any other failure: degraded, cached keys keep serving;
//   - success: restored if it was not valid, a new current KEK version is
//     recorded, and project keys on older versions are rewrapped.
func (s *Service) Probe(ctx context.Context, t store.ProbeTarget, opt ProbeOptions) ProbeResult {
	ek := t.Key
	epoch := s.kr.GateEpoch(ek.ID)
	key, err := s.kr.KMS(&ek)
	if spec, _, _ := s.cfg.Registry.Spec(ek.Type); err == nil && spec.ProjectScoped {
		// The customer's policy can refuse single projects: check each.
		err = s.probeProjects(ctx, key, ek)
	} else if err == nil {
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
	}
	var info kms.KeyInfo
	if err == nil && opt.Deep {
		info, err = s.describeAndEncrypt(ctx, key, ek)
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		return ProbeResult{Status: ek.Status} // the prober is stopping
	}
	// A check that ran out of time is an outage, recorded with a fresh
	// bound (the check's own context may be spent).
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	switch kms.ClassOf(err) {
	case "":
		return s.healthy(ctx, ek, info, epoch)
	case kms.Revoked:
		s.revoked(ctx, ek, keyring.NewUnavailable(ek.ID, err))
		return ProbeResult{Status: store.StatusUnavailable}
	default: // Outage, Operator, Invalid: not the customer withdrawing access
		s.degraded(ctx, ek, err)
		return ProbeResult{Status: store.StatusDegraded}
	}
}

// maxProjectSamples bounds the projects of one key a check decrypts for.
const maxProjectSamples = 10000

// probeProjects decrypts the newest key version of every active project of
// ek (for a type whose customer can refuse single projects), opening or
// closing each project's gate on what it finds. It returns the first
// failure that concerns the whole key (nil if none): that one decides the
// key's health as a single decrypt would.
func (s *Service) probeProjects(ctx context.Context, key *kms.Key, ek store.ExternalKey) error {
	samples, err := s.st.ProjectSamples(ctx, ek.OrgID, ek.ID, maxProjectSamples)
	if err != nil {
		return err
	}
	for _, rec := range samples {
		err := s.decryptSample(ctx, key, "probe_decrypt", rec)
		d, _ := kms.Diagnose(err)
		switch {
		case err == nil:
			// Every replica's gates follow the stored record (the change
			// log), so this replica's gate says whether it was refused.
			if s.kr.ProjectUnavailable(ek.ID, rec.ProjectID) != nil {
				s.projectAllowed(ctx, ek, rec.ProjectID)
			}
		case d.Class == kms.Revoked && d.Scope == kms.ScopeProject:
			u := keyring.NewUnavailable(ek.ID, err)
			u.ProjectID = rec.ProjectID
			s.kr.MarkProjectUnavailable(ek.ID, rec.ProjectID, u)
			s.projectDenied(context.WithoutCancel(ctx), ek, rec.ProjectID, u)
		default:
			return err
		}
	}
	return nil
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

func (s *Service) healthy(ctx context.Context, ek store.ExternalKey, info kms.KeyInfo, epoch uint64) ProbeResult {
	if s.kr.GateEpoch(ek.ID) != epoch && s.kr.Unavailable(ek.ID) != nil {
		// A request saw a revocation while we probed: trust the newer news.
		return ProbeResult{Status: store.StatusUnavailable}
	}
	if s.kr.MarkAvailableSince(ek.ID, epoch) || ek.Status != store.StatusValid {
		s.setHealth(ctx, ek, store.KeyHealth{Status: store.StatusValid, CurrentKEKVersion: info.CurrentVersion}, audit.TypeExternalKeyRestored)
		s.cfg.Metrics.KeyEvent("restored")
	}
	if info.CurrentVersion != "" && info.CurrentVersion != ek.CurrentKEKVersion {
		s.rotated(ctx, ek, info.CurrentVersion)
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
		s.projectDenied(ctx, ek, projectID, u)
		return
	}
	if first {
		s.cfg.Metrics.KeyEvent("unavailable")
		s.log.Warn("external key unavailable: customer withdrew access", "org_id", ek.OrgID, "external_key_id", ek.ID, "code", u.Code)
	}
	s.setHealth(ctx, ek, store.KeyHealth{Status: store.StatusUnavailable, Code: u.Code, Message: u.Message}, audit.TypeExternalKeyUnavailable)
}

// revoked closes ek's gate (evicting its cached keys) and records the
// revocation, once per transition.
func (s *Service) revoked(ctx context.Context, ek store.ExternalKey, u *keyring.UnavailableError) {
	first := s.kr.MarkUnavailable(ek.ID, u)
	if first || ek.Status != store.StatusUnavailable {
		s.log.Warn("external key unavailable: customer withdrew access", "org_id", ek.OrgID, "external_key_id", ek.ID, "code", u.Code)
		s.setHealth(ctx, ek, store.KeyHealth{Status: store.StatusUnavailable, Code: u.Code, Message: u.Message}, audit.TypeExternalKeyUnavailable)
		s.cfg.Metrics.KeyEvent("unavailable")
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

func (s *Service) degraded(ctx context.Context, ek store.ExternalKey, err error) {
	// An outage never evicts and never closes the gate; but if this replica
	// had the key marked revoked, it stays so until a success proves access.
	if s.kr.Unavailable(ek.ID) != nil {
		return
	}
	// The status the round started with may be stale (another replica).
	if cur, gerr := s.st.GetExternalKey(ctx, ek.OrgID, ek.ID); gerr == nil {
		ek.Status = cur.Status
	}
	if ek.Status == store.StatusDegraded {
		return
	}
	d, ok := kms.Diagnose(err)
	if !ok {
		d = kms.Diagnosis{Class: kms.Outage, Code: "kms_unreachable", Message: "the customer's key management service could not be reached"}
	}
	s.log.Warn("external key degraded", "org_id", ek.OrgID, "external_key_id", ek.ID, "code", d.Code, "class", d.Class)
	s.setHealth(ctx, ek, store.KeyHealth{Status: store.StatusDegraded, Code: d.Code, Message: d.Message}, audit.TypeExternalKeyDegraded)
	s.cfg.Metrics.KeyEvent("degraded")
}

// setHealth stores an external key's health and, when its status changes,
// an audit event of type event — once across replicas: only the
// transaction that changes the stored status writes the event.
func (s *Service) setHealth(ctx context.Context, ek store.ExternalKey, h store.KeyHealth, event string) {
	if h.At.IsZero() {
		h.At = s.cfg.Now()
	}
	ev := audit.KeyHealth{Event: event, ExternalKeyID: ek.ID, Status: h.Status, Code: h.Code, Message: h.Message}
	err := s.changes.InTx(ctx, func(q store.Queries, pub *cluster.Publisher) error {
		cur, err := q.GetExternalKey(ctx, ek.OrgID, ek.ID)
		if err != nil {
			return err
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
		if err := q.AppendAudit(ctx, audit.Record(audit.Entry{OrgID: ek.OrgID, At: h.At}, ev)); err != nil {
			return err
		}
		return publishHealth(ctx, pub, ek, cur.Status, h.Status)
	})
	if err != nil && ctx.Err() == nil && !errors.Is(err, store.ErrNotFound) {
		s.log.Warn("recording external key health failed", "external_key_id", ek.ID, "err", err)
	}
}

// rotated records a new current KEK version reported by the KMS.
func (s *Service) rotated(ctx context.Context, ek store.ExternalKey, current string) {
	ev := audit.ExternalKeyRotated{ExternalKeyID: ek.ID, PreviousVersion: ek.CurrentKEKVersion, CurrentVersion: current}
	err := s.changes.InTx(ctx, func(q store.Queries, pub *cluster.Publisher) error {
		cur, err := q.GetExternalKey(ctx, ek.OrgID, ek.ID)
		if err != nil {
			return err
		}
		if cur.CurrentKEKVersion == current {
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
