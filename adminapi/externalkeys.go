package adminapi

import (
	"context"
	"net/http"
	"regexp"

	"github.com/ekm-dev/ekm/apierr"
	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/lifecycle"
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
	return keyObject(k, projects, counts), nil
}

// keyObject renders k with the projects and KEK version counts given.
func keyObject(k store.ExternalKey, projects []string, counts map[string]int) map[string]any {
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
	return obj
}

func (a *api) createExternalKey(w http.ResponseWriter, r *http.Request) error {
	b, err := a.readBody(w, r)
	if err != nil {
		return err
	}
	req, err := decodeExternalKeyCreate(b, a.svc.Registry())
	if err != nil {
		return err
	}
	if err := a.limitKMS(r); err != nil {
		return err
	}
	ek, err := a.svc.RegisterKey(r.Context(), caller(r).ID, caller(r).OrgID,
		lifecycle.Registration{Type: req.Type, Name: req.Name, Purpose: req.Purpose, Params: req.Params})
	if err != nil {
		return serviceErr(err, kindExternalKey, "")
	}
	// A new key protects nothing yet: no read after the commit can fail.
	return writeJSON(w, http.StatusOK, keyObject(ek, nil, nil))
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
	k, err := a.svc.RemoveKey(r.Context(), caller(r).ID, caller(r).OrgID, id)
	if err != nil {
		return serviceErr(err, kindExternalKey, id)
	}
	// The key protected nothing: no projects and no stored versions remain.
	return writeJSON(w, http.StatusOK, keyObject(k, nil, nil))
}

// validateError is the error part of a failed validation.
type validateError struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	Step      string `json:"step,omitempty"`
	Retryable bool   `json:"retryable"`
}

// validateResponse answers POST …/validate. Status is OpenAI's verdict
// ("valid" or "invalid"); KeyStatus (ekm) is the key's status after the
// validation, in the vocabulary of the key object's status ("valid",
// "degraded" or "unavailable"), so an "invalid" answer says which.
type validateResponse struct {
	Status    string         `json:"status"`
	KeyStatus string         `json:"key_status"`
	Error     *validateError `json:"error,omitempty"`
}

func (a *api) validateExternalKey(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id", prefixExternalKey, kindExternalKey)
	if err != nil {
		return err
	}
	if err := a.limitKMS(r); err != nil {
		return err
	}
	v, err := a.svc.ValidateKey(r.Context(), caller(r).ID, caller(r).OrgID, id)
	if err != nil {
		return serviceErr(err, kindExternalKey, id)
	}
	resp := validateResponse{Status: "valid", KeyStatus: v.Status}
	if !v.Valid {
		d := v.Diagnosis
		resp = validateResponse{Status: "invalid", KeyStatus: v.Status, Error: &validateError{Code: d.Code, Message: d.Message, Step: d.Step, Retryable: d.Retryable()}}
	}
	return writeJSON(w, http.StatusOK, resp)
}

// Purposes of external keys.
const (
	purposeEKM = "ekm"
	purposePSP = "psp_decryption"
)

var (
	typeRE  = regexp.MustCompile(`^[a-z0-9_]{1,64}$`)
	fieldRE = regexp.MustCompile(`^[a-z0-9_]{1,64}$`)
)

// extKeyRequest is a decoded external key registration.
type extKeyRequest struct {
	Type    string
	Name    string
	Purpose string
	Params  kms.Params
}

// decodeExternalKeyCreate decodes POST /external_keys. A type this server
// describes but has no driver for is refused first (unsupported_type, with
// how to enable it). Otherwise it checks shape only, against the fields the
// type's driver describes (kms.Spec); the driver then checks the values
// (lifecycle.Service.RegisterKey).
func decodeExternalKeyCreate(b []byte, reg *kms.Registry) (extKeyRequest, error) {
	var req extKeyRequest
	o, err := decodeObject(b)
	if err != nil {
		return req, err
	}
	if req.Type, err = o.requiredStr("type", maxType); err != nil {
		return req, err
	}
	if !typeRE.MatchString(req.Type) {
		return req, apierr.New(http.StatusBadRequest, "invalid_request_error", "unsupported_type", "type", "Invalid 'type': %q is not a supported external key type.", clip(req.Type))
	}
	if req.Name, err = o.requiredStr("name", maxName); err != nil {
		return req, err
	}
	p, ok, err := o.str("purpose", maxType)
	switch {
	case err != nil:
		return req, err
	case !ok || p == purposeEKM:
		req.Purpose = purposeEKM
	case p == purposePSP:
		// ekm never decrypts payment data for a processor; accepting the
		// purpose would promise a feature that does not exist.
		return req, apierr.New(http.StatusBadRequest, "invalid_request_error", "unsupported_purpose", "purpose", "Invalid 'purpose': 'psp_decryption' is not supported by this server; external keys protect project data (purpose 'ekm').")
	default:
		return req, apierr.BadRequest("purpose", "Invalid 'purpose': expected 'ekm'.")
	}
	req.Params = kms.Params{}
	spec, enabled, known := reg.Spec(req.Type)
	if known && !enabled {
		// Say so before checking fields: the caller cannot fix this by
		// changing them, and the operator needs to know how to enable it.
		msg := "External key type '" + req.Type + "' is not enabled on this server."
		if spec.Enable != "" {
			msg += " To enable it, its operator must " + spec.Enable + "."
		}
		return req, apierr.New(http.StatusBadRequest, "invalid_request_error", kms.CodeUnsupportedType, "type", "%s", msg)
	}
	fields := spec.Fields
	if !known {
		// A type this server does not describe: pass its fields through as
		// strings; the registry refuses it as unsupported.
		for k := range o {
			if k == "type" || k == "name" || k == "purpose" {
				continue
			}
			if !fieldRE.MatchString(k) {
				return req, apierr.New(http.StatusBadRequest, "invalid_request_error", "unknown_parameter", clip(k), "Unrecognized request argument supplied: %s", clip(k))
			}
			v, ok, err := o.str(k, maxLong)
			if err != nil {
				return req, err
			}
			if ok && v != "" {
				req.Params[k] = v
			}
		}
		return req, nil
	}
	allowed := []string{"type", "name", "purpose"}
	for _, f := range fields {
		allowed = append(allowed, f.Name)
	}
	if err := o.only(allowed...); err != nil {
		return req, err
	}
	for _, f := range fields {
		v, ok, err := o.str(f.Name, f.MaxLen)
		if err != nil {
			return req, err
		}
		if !ok || v == "" {
			if f.Required {
				return req, apierr.Missing(f.Name)
			}
			continue
		}
		req.Params[f.Name] = v
	}
	return req, nil
}
