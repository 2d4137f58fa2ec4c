package adminapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/ekm-dev/ekm/apierr"
	"github.com/ekm-dev/ekm/ids"
	"github.com/ekm-dev/ekm/keyring"
	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/store"
)

const kindExternalKey = "external key"

// localNote marks local keys on the API object: they are not customer-held.
const localNote = "local keys are software keys held by this ekm server, for development and tests: they do not put data under a key the customer controls"

// statusDetail explains a key that is not valid.
type statusDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	At      int64  `json:"at"`
}

// externalKeyObject renders a key as OpenAI's organization.external_key,
// with the provider fields at the top level and ekm's health and usage
// extras.
func externalKeyObject(ctx context.Context, q store.Queries, k store.ExternalKey) (map[string]any, error) {
	projects, err := q.ProjectIDsByExternalKey(ctx, k.OrgID, k.ID, true)
	if err != nil {
		return nil, err
	}
	counts, err := q.CountProjectKeysByKEKVersion(ctx, k.OrgID, k.ID)
	if err != nil {
		return nil, err
	}
	if projects == nil {
		projects = []string{}
	}
	if counts == nil {
		counts = map[string]int{}
	}
	obj := make(map[string]any, len(k.Params)+12)
	for name, v := range k.Params {
		obj[name] = v
	}
	obj["id"] = k.ID
	obj["object"] = "organization.external_key"
	obj["type"] = k.Type
	obj["name"] = k.Name
	obj["purpose"] = k.Purpose
	obj["created_at"] = unix(k.CreatedAt)
	obj["workspace_id"] = k.OrgID
	obj["api_project_ids"] = projects
	obj["status"] = k.Status
	obj["kek_versions"] = counts
	obj["current_kek_version"] = k.CurrentKEKVersion
	if k.Status != store.StatusValid {
		obj["status_detail"] = statusDetail{Code: k.StatusCode, Message: k.StatusMessage, At: unix(k.StatusAt)}
	}
	if k.Type == "local" {
		obj["note"] = localNote
	}
	return obj, nil
}

func (a *api) createExternalKey(w http.ResponseWriter, r *http.Request) error {
	b, err := a.readBody(w, r)
	if err != nil {
		return err
	}
	req, err := decodeExternalKeyCreate(b)
	if err != nil {
		return err
	}
	org := caller(r).OrgID
	params, err := a.kr.Check(req.Type, org, req.Params)
	if err != nil {
		return checkFailure(err, req.Type)
	}
	now := a.now()
	ek := store.ExternalKey{ID: ids.New(prefixExternalKey), OrgID: org, Type: req.Type, Name: req.Name, Purpose: req.Purpose,
		Params: map[string]string(params), CreatedAt: now}
	// Prove the key works (permissions, key type, a wrap/unwrap round trip)
	// before storing anything: a registered key is a usable key.
	ctx, cancel := a.kmsContext(r)
	info, err := a.kr.Validate(ctx, &ek)
	cancel()
	if err != nil {
		return kmsFailure(err, stepParam(err, req.Type))
	}
	ek.Status, ek.StatusAt, ek.CurrentKEKVersion = store.StatusValid, now, info.CurrentVersion
	config := map[string]any{"type": ek.Type, "name": ek.Name, "purpose": ek.Purpose}
	for k, v := range ek.Params {
		config[k] = v
	}
	ev, err := a.event(r, "external_key.registered", "", map[string]any{"id": ek.ID, "data": config})
	if err != nil {
		return err
	}
	var obj map[string]any
	err = a.st.InTx(r.Context(), func(q store.Queries) error {
		if err := q.CreateExternalKey(r.Context(), ek); err != nil {
			return err
		}
		if err := q.AppendAudit(r.Context(), ev); err != nil {
			return err
		}
		obj, err = externalKeyObject(r.Context(), q, ek)
		return err
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, obj)
}

func (a *api) getExternalKey(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id", prefixExternalKey, kindExternalKey)
	if err != nil {
		return err
	}
	k, err := a.st.GetExternalKey(r.Context(), caller(r).OrgID, id)
	if err != nil {
		return storeErr(err, kindExternalKey, id)
	}
	obj, err := externalKeyObject(r.Context(), a.st, k)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, obj)
}

func (a *api) listExternalKeys(w http.ResponseWriter, r *http.Request) error {
	lq, err := parseList(r.URL.Query(), prefixExternalKey, true, "purpose")
	if err != nil {
		return err
	}
	purpose := lq.Extra.Get("purpose")
	if purpose != "" && purpose != purposeEKM && purpose != purposePSP {
		return apierr.BadRequest("purpose", "Invalid 'purpose': expected 'ekm' or 'psp_decryption'.")
	}
	p := lq.Page
	p.Limit++
	keys, err := a.st.ListExternalKeys(r.Context(), caller(r).OrgID, purpose, p)
	if err != nil {
		return err
	}
	keys, more := trim(keys, lq.Page.Limit)
	data := make([]map[string]any, 0, len(keys))
	for _, k := range keys {
		obj, err := externalKeyObject(r.Context(), a.st, k)
		if err != nil {
			return err
		}
		data = append(data, obj)
	}
	return writeJSON(w, http.StatusOK, listPage(data, more, func(o map[string]any) string { return o["id"].(string) }))
}

func (a *api) deleteExternalKey(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id", prefixExternalKey, kindExternalKey)
	if err != nil {
		return err
	}
	org := caller(r).OrgID
	ev, err := a.event(r, "external_key.removed", "", map[string]any{"id": id})
	if err != nil {
		return err
	}
	var obj map[string]any
	err = a.st.InTx(r.Context(), func(q store.Queries) error {
		k, err := q.GetExternalKey(r.Context(), org, id)
		if err != nil {
			return storeErr(err, kindExternalKey, id)
		}
		if err := inUse(r.Context(), q, k); err != nil {
			return err
		}
		if obj, err = externalKeyObject(r.Context(), q, k); err != nil {
			return err
		}
		if err := q.DeleteExternalKey(r.Context(), org, id); err != nil {
			if errors.Is(err, store.ErrConflict) {
				// Something still references the key (a race with a project
				// creation, or stored data): the database refused.
				return apierr.Conflict("external_key_in_use", "External key %s is still referenced by stored project keys and cannot be removed.", id)
			}
			return err
		}
		return q.AppendAudit(r.Context(), ev)
	})
	if err != nil {
		return err
	}
	a.kr.Forget(id)
	return writeJSON(w, http.StatusOK, obj)
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
	return apierr.Conflict("external_key_in_use", "External key %s cannot be removed: %s.", k.ID, strings.Join(parts, "; "))
}

// idList names up to 10 ids.
func idList(ids []string) string {
	const max = 10
	if len(ids) <= max {
		return strings.Join(ids, ", ")
	}
	return strings.Join(ids[:max], ", ") + fmt.Sprintf(" and %d more", len(ids)-max)
}

// validateError is the error part of a failed validation.
type validateError struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	Step      string `json:"step,omitempty"`
	Retryable bool   `json:"retryable"`
}

type validateResponse struct {
	Status string         `json:"status"` // "valid" or "invalid"
	Error  *validateError `json:"error,omitempty"`
}

func (a *api) validateExternalKey(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id", prefixExternalKey, kindExternalKey)
	if err != nil {
		return err
	}
	org := caller(r).OrgID
	k, err := a.st.GetExternalKey(r.Context(), org, id)
	if err != nil {
		return storeErr(err, kindExternalKey, id)
	}
	ctx, cancel := a.kmsContext(r)
	info, verr := a.kr.Validate(ctx, &k)
	cancel()
	h := store.KeyHealth{Status: store.StatusValid, At: a.now(), CurrentKEKVersion: info.CurrentVersion}
	resp := validateResponse{Status: "valid"}
	var d diagnosis
	if verr != nil {
		var ok bool
		if d, ok = diagnose(verr); !ok {
			// Not from the KMS: report an unknown outage, never raw text.
			d = diagnosis{Class: kms.Outage, Code: "kms_error", Message: "The customer's key management service could not be reached."}
			a.log.Warn("external key validation failed", "external_key_id", id, "err", verr)
		}
		// Outages (and ekm's own misconfiguration) do not show the key is
		// bad: cached keys keep serving, hence "degraded".
		h.Status = store.StatusDegraded
		if d.Class == kms.Revoked || d.Class == kms.Invalid {
			h.Status = store.StatusUnavailable
		}
		h.Code, h.Message, h.CurrentKEKVersion = d.Code, d.Message, ""
		resp = validateResponse{Status: "invalid", Error: &validateError{Code: d.Code, Message: d.Message, Step: d.Step, Retryable: d.Class == kms.Outage}}
	}
	data := map[string]any{"status": resp.Status}
	if resp.Error != nil {
		data["code"], data["step"] = d.Code, d.Step
	}
	ev, err := a.event(r, "external_key.validated", "", map[string]any{"id": id, "data": data})
	if err != nil {
		return err
	}
	err = a.st.InTx(r.Context(), func(q store.Queries) error {
		if err := q.SetExternalKeyHealth(r.Context(), org, id, h); err != nil {
			return storeErr(err, kindExternalKey, id)
		}
		return q.AppendAudit(r.Context(), ev)
	})
	if err != nil {
		return err
	}
	// This replica's gate follows the proof just made: a key that works again
	// is served again at once, a revoked one is refused at once (other
	// replicas learn either from their health probe).
	switch {
	case verr == nil:
		a.kr.MarkAvailable(id)
	case d.Class == kms.Revoked:
		a.kr.MarkUnavailable(id, &keyring.UnavailableError{ExternalKeyID: id, Class: d.Class, Code: d.Code, Message: d.Message, Err: verr})
	}
	return writeJSON(w, http.StatusOK, resp)
}
