package adminapi

import (
	"net/http"

	"github.com/ekm-dev/ekm/apierr"
	"github.com/ekm-dev/ekm/lifecycle"
)

// settingsObject is the org's EKM settings (an ekm extension): its default
// external key, whether every project must be under a customer key, and how
// far its projects are.
type settingsObject struct {
	Object               string         `json:"object"`
	OrganizationID       string         `json:"organization_id"`
	Name                 string         `json:"name"`
	DefaultExternalKeyID *string        `json:"default_external_key_id"`
	EKMRequired          bool           `json:"ekm_required"`
	Migration            migrationState `json:"ekm_migration"`
	UpdatedAt            *int64         `json:"updated_at"`
}

// migrationState is the progress of moving the org's projects under its
// default key (status "complete" or "in_progress"; "not_required" when EKM
// is not required).
type migrationState struct {
	Status                string `json:"status"`
	ProjectsTotal         int    `json:"projects_total"`
	ProjectsOnOperatorKey int    `json:"projects_on_operator_key"`
}

func (a *api) settingsObj(r *http.Request, st lifecycle.OrgState) (settingsObject, error) {
	org, err := a.st.GetOrg(r.Context(), caller(r).OrgID)
	if err != nil {
		return settingsObject{}, err
	}
	o := settingsObject{Object: "organization.settings", OrganizationID: org.ID, Name: org.Name, EKMRequired: st.Settings.EKMRequired,
		Migration: migrationState{Status: "not_required", ProjectsTotal: st.ProjectsTotal, ProjectsOnOperatorKey: st.ProjectsOnOperatorKey}}
	if id := st.Settings.DefaultExternalKeyID; id != "" {
		o.DefaultExternalKeyID = &id
	}
	if !st.Settings.UpdatedAt.IsZero() {
		t := unix(st.Settings.UpdatedAt)
		o.UpdatedAt = &t
	}
	switch {
	case st.Migrating():
		o.Migration.Status = "in_progress"
	case st.Settings.EKMRequired:
		o.Migration.Status = "complete"
	}
	return o, nil
}

func (a *api) getSettings(w http.ResponseWriter, r *http.Request) error {
	if err := onlyQuery(r.URL.Query(), nil); err != nil {
		return err
	}
	st, err := a.svc.OrgState(r.Context(), caller(r).OrgID)
	if err != nil {
		return err
	}
	o, err := a.settingsObj(r, st)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, o)
}

func (a *api) updateSettings(w http.ResponseWriter, r *http.Request) error {
	b, err := a.readBody(w, r)
	if err != nil {
		return err
	}
	req, err := decodeSettingsUpdate(b)
	if err != nil {
		return err
	}
	if req.DefaultExternalKeyID != nil && *req.DefaultExternalKeyID != "" {
		if err := bodyKeyIDParam(*req.DefaultExternalKeyID, "default_external_key_id"); err != nil {
			return err
		}
		// A new default key is validated live (lifecycle.UpdateOrg).
		if err := a.limitKMS(r); err != nil {
			return err
		}
	}
	st, err := a.svc.UpdateOrg(r.Context(), caller(r).ID, caller(r).OrgID, lifecycle.OrgUpdate(req))
	if err != nil {
		return serviceErr(err, "organization", "")
	}
	o, err := a.settingsObj(r, st)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, o)
}

type settingsUpdate struct {
	DefaultExternalKeyID *string
	EKMRequired          *bool
}

// decodeSettingsUpdate decodes POST /settings: default_external_key_id (an
// id, or null to clear) and ekm_required; at least one.
func decodeSettingsUpdate(b []byte) (settingsUpdate, error) {
	var req settingsUpdate
	o, err := decodeObject(b)
	if err != nil {
		return req, err
	}
	if err := o.only("default_external_key_id", "ekm_required"); err != nil {
		return req, err
	}
	if raw, ok := o["default_external_key_id"]; ok {
		id := ""
		if !isNull(raw) {
			s, _, err := o.str("default_external_key_id", maxID)
			if err != nil {
				return req, err
			}
			if s == "" {
				return req, apierr.BadRequest("default_external_key_id", "Invalid 'default_external_key_id': an external key id (extkey_…), or null for none.")
			}
			id = s
		}
		req.DefaultExternalKeyID = &id
	}
	if v, ok, err := o.boolean("ekm_required"); err != nil {
		return req, err
	} else if ok {
		req.EKMRequired = &v
	}
	if req.DefaultExternalKeyID == nil && req.EKMRequired == nil {
		return req, apierr.New(http.StatusBadRequest, "invalid_request_error", "missing_required_parameter", "",
			"Provide at least one of 'default_external_key_id' or 'ekm_required'.")
	}
	return req, nil
}
