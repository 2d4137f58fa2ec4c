package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/ekm-dev/ekm/audit"
	"github.com/ekm-dev/ekm/cluster"
	"github.com/ekm-dev/ekm/ids"
	"github.com/ekm-dev/ekm/keyring"
	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/store"
)

// ExternalKeyIDPrefix is the prefix of external key ids.
const ExternalKeyIDPrefix = "extkey_"

// Registration is an external key to register.
type Registration struct {
	Type    string
	Name    string
	Purpose string
	Params  kms.Params
}

// Check validates registration params of typ for orgID without any network
// call (the driver's rules: syntax, allowed hosts, names tied to the org).
func (s *Service) Check(typ, orgID string, p kms.Params) (kms.Params, error) {
	return s.cfg.Registry.Check(typ, orgID, maps.Clone(p))
}

// RegisterKey checks a registration, proves the key works (permissions, key
// type, a wrap/unwrap round trip) and only then stores it with its audit
// event: a registered key is a usable key. Check failures and live failures
// are *Error of kind KMSFailure naming the parameter at fault when known.
func (s *Service) RegisterKey(ctx context.Context, actor, orgID string, r Registration) (store.ExternalKey, error) {
	params, err := s.Check(r.Type, orgID, r.Params)
	if err != nil {
		return store.ExternalKey{}, kmsFailure(err, "")
	}
	if err := s.checkOrgBound(ctx, r.Type, orgID, params); err != nil {
		return store.ExternalKey{}, err
	}
	now := s.cfg.Now()
	ek := store.ExternalKey{ID: ids.New(ExternalKeyIDPrefix), OrgID: orgID, Type: r.Type, Name: r.Name, Purpose: r.Purpose,
		Params: map[string]string(params), CreatedAt: now}
	kctx, cancel := s.kmsContext(ctx)
	info, err := s.validate(kctx, &ek)
	cancel()
	if err != nil {
		return store.ExternalKey{}, kmsFailure(err, "")
	}
	ek.Status, ek.StatusAt, ek.CurrentKEKVersion = store.StatusValid, now, info.CurrentVersion
	config := map[string]any{"type": ek.Type, "name": ek.Name, "purpose": ek.Purpose}
	for k, v := range ek.Params {
		config[k] = v
	}
	err = s.st.InTx(ctx, func(q store.Queries) error {
		if err := q.CreateExternalKey(ctx, ek); err != nil {
			return err
		}
		return q.AppendAudit(ctx, audit.Record(s.entry(orgID, actor, ""), audit.ExternalKeyRegistered{ID: ek.ID, Data: config}))
	})
	if err != nil {
		return store.ExternalKey{}, err
	}
	return ek, nil
}

// checkOrgBound refuses a registration whose org-bound fields (kms.Spec)
// name neither the calling org nor one of its projects.
func (s *Service) checkOrgBound(ctx context.Context, typ, orgID string, p kms.Params) error {
	spec, _, _ := s.cfg.Registry.Spec(typ)
	for _, name := range spec.OrgBound {
		v := p[name]
		if v == orgID {
			continue
		}
		_, err := s.st.GetProject(ctx, orgID, v)
		if isNotFound(err) {
			return &Error{Kind: Invalid, Code: "org_mismatch", Param: name, Message: fmt.Sprintf(
				"%s must be your organization id (%s) or the id of one of its projects: it is what your KMS trusts ekm with, and it ties that trust to you", name, orgID)}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// validate runs the live check of ek's KEK. It touches neither the gate nor
// the cache.
func (s *Service) validate(ctx context.Context, ek *store.ExternalKey) (kms.KeyInfo, error) {
	key, err := s.kr.KMS(ek)
	if err != nil {
		return kms.KeyInfo{}, err
	}
	return key.Validate(ctx, kms.AAD{OrgID: ek.OrgID})
}

// validateStored decrypts one stored project key of ek, as the health probe
// does: a key that works for new data but not for what it already protects
// (an AWS alias re-pointed to another key, a KEK version disabled) is not
// valid. A refusal of that one project alone (kms.ScopeProject) is the
// project's matter, not the key's.
func (s *Service) validateStored(ctx context.Context, ek *store.ExternalKey) error {
	samples, err := s.st.ProjectSamples(ctx, ek.OrgID, ek.ID, 1)
	if err != nil || len(samples) == 0 {
		return err
	}
	key, err := s.kr.KMS(ek)
	if err != nil {
		return err
	}
	err = s.decryptSample(ctx, key, "validate_decrypt", samples[0])
	if d, _ := kms.Diagnose(err); d.Scope == kms.ScopeProject {
		return nil
	}
	return err
}

// Validation is the outcome of a live validation.
type Validation struct {
	// Valid is true when the key works end to end.
	Valid bool
	// Diagnosis explains a failure.
	Diagnosis kms.Diagnosis
	// Status is the key's health after the validation.
	Status string
}

// ValidateKey proves an external key works now (or explains why not),
// records the key's health and an external_key.validated event, and moves
// the gate of every replica (this one before returning, the others through
// the change log): a key that works again is served again at once, a
// revoked one is refused at once.
func (s *Service) ValidateKey(ctx context.Context, actor, orgID, id string) (Validation, error) {
	k, err := s.st.GetExternalKey(ctx, orgID, id)
	if err != nil {
		return Validation{}, err
	}
	// A success only counts for what happened before it began: a revocation
	// seen or recorded since is newer news (compared on the gate's epoch
	// and on the stored status time).
	epoch, began := s.kr.GateEpoch(id), s.cfg.Now()
	kctx, cancel := s.kmsContext(ctx)
	info, verr := s.validate(kctx, &k)
	if verr == nil {
		verr = s.validateStored(kctx, &k)
	}
	cancel()
	// A success is dated when it began (a revocation seen during it is later).
	h := store.KeyHealth{Status: store.StatusValid, At: began, CurrentKEKVersion: info.CurrentVersion}
	v := Validation{Valid: true, Status: store.StatusValid}
	ev := audit.ExternalKeyValidated{ID: id, Data: audit.ValidationState{Status: "valid"}}
	if verr != nil {
		d, ok := kms.Diagnose(verr)
		if !ok {
			// Not from the KMS: report an unknown outage, never raw text.
			d = kms.Diagnosis{Class: kms.Outage, Code: kms.CodeUnreachable, Message: "The customer's key management service could not be reached."}
			s.log.Warn("external key validation failed", "external_key_id", id, "err", verr)
		}
		v = Validation{Diagnosis: d, Status: StatusOf(d)}
		h = store.KeyHealth{Status: v.Status, Code: d.Code, Message: d.Message, At: s.cfg.Now()}
		ev.Data = audit.ValidationState{Status: "invalid", Code: &d.Code, Step: &d.Step}
	}
	if v.Valid && s.kr.GateEpoch(id) == epoch {
		s.markOpen(id) // newer than what closed the gate (see healthy)
	}
	stale := false
	err = s.changes.InTx(ctx, func(q store.Queries, pub *cluster.Publisher) error {
		stale = false
		if v.Valid {
			cur, err := q.GetExternalKey(ctx, orgID, id)
			if err != nil {
				return err
			}
			stale = revokedSince(cur, began)
		}
		if err := q.AppendAudit(ctx, audit.Record(s.entry(orgID, actor, ""), ev)); err != nil {
			return err
		}
		if stale {
			return nil // revoked after this validation began: that stands
		}
		if err := q.SetExternalKeyHealth(ctx, orgID, id, h); err != nil {
			return err
		}
		// Every replica's gate moves as this one's does below.
		switch {
		case v.Valid:
			return pub.Publish(ctx, cluster.ExternalKeyAvailable, orgID, id)
		case v.Diagnosis.Class == kms.Revoked:
			return pub.Publish(ctx, cluster.ExternalKeyUnavailable, orgID, id)
		}
		return nil
	})
	if err != nil {
		return Validation{}, err
	}
	switch {
	case stale:
		v.Status = store.StatusUnavailable
		s.followStored(ctx, orgID, id)
	case v.Valid:
		if s.kr.MarkAvailableSince(id, epoch) {
			s.markOpen(id)
		} else if s.kr.Unavailable(id) != nil {
			// A request on this replica saw a revocation meanwhile.
			v.Status = store.StatusUnavailable
		}
	case v.Diagnosis.Class == kms.Revoked:
		s.kr.MarkUnavailable(id, &keyring.UnavailableError{ExternalKeyID: id, Class: v.Diagnosis.Class, Code: v.Diagnosis.Code, Message: v.Diagnosis.Message, Err: verr})
		s.markClosed(id, h.At)
	}
	return v, nil
}

// RemoveKey removes an external key that protects no data, with its audit
// event, and forgets it on every replica. It returns the key as it was.
func (s *Service) RemoveKey(ctx context.Context, actor, orgID, id string) (store.ExternalKey, error) {
	var k store.ExternalKey
	err := s.changes.InTx(ctx, func(q store.Queries, pub *cluster.Publisher) error {
		var err error
		if k, err = q.GetExternalKey(ctx, orgID, id); err != nil {
			return err
		}
		if err := inUse(ctx, q, k); err != nil {
			return err
		}
		set, err := q.GetOrgSettings(ctx, orgID)
		if err != nil {
			return err
		}
		if set.DefaultExternalKeyID == id {
			return conflict("external_key_in_use", "External key %s is the organization's default key and cannot be removed: set another default key (or none) first.", id)
		}
		if err := q.DeleteExternalKey(ctx, orgID, id); err != nil {
			if errors.Is(err, store.ErrConflict) {
				// Something still references the key (a race with a project
				// creation, or stored data): the database refused.
				return conflict("external_key_in_use", "External key %s is still referenced by stored project keys and cannot be removed.", id)
			}
			return err
		}
		if err := q.AppendAudit(ctx, audit.Record(s.entry(orgID, actor, ""), audit.ExternalKeyRemoved{ID: id})); err != nil {
			return err
		}
		return pub.Publish(ctx, cluster.ExternalKeyDeleted, orgID, id)
	})
	if err != nil {
		return store.ExternalKey{}, err
	}
	s.forget(id)
	return k, nil
}

// inUse refuses to remove a key that protects any project's data. Archived
// projects count: their stored data is still wrapped by the key, and
// removing it would make that data unrecoverable.
func inUse(ctx context.Context, q store.Queries, k store.ExternalKey) error {
	all, err := q.ProjectIDsByExternalKey(ctx, k.OrgID, k.ID, true)
	if err != nil || len(all) == 0 {
		return err
	}
	active, err := q.ProjectIDsByExternalKey(ctx, k.OrgID, k.ID, false)
	if err != nil {
		return err
	}
	var archived []string
	for _, p := range all {
		if !slices.Contains(active, p) {
			archived = append(archived, p)
		}
	}
	var parts []string
	if len(active) > 0 {
		parts = append(parts, fmt.Sprintf("it protects %d active project(s): %s; move them to another key first (POST /v1/organization/projects/{project_id} with a new external_key_id)", len(active), idList(active)))
	}
	if len(archived) > 0 {
		parts = append(parts, fmt.Sprintf("archived project(s) %s still hold data wrapped by it", idList(archived)))
	}
	return conflict("external_key_in_use", "External key %s cannot be removed: %s.", k.ID, strings.Join(parts, "; "))
}

// idList names up to 10 ids.
func idList(ids []string) string {
	const max = 10
	if len(ids) <= max {
		return strings.Join(ids, ", ")
	}
	return strings.Join(ids[:max], ", ") + fmt.Sprintf(" and %d more", len(ids)-max)
}
