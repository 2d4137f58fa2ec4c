package adminapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/ekm-dev/ekm/apierr"
	"github.com/ekm-dev/ekm/audit"
	"github.com/ekm-dev/ekm/cluster"
	"github.com/ekm-dev/ekm/store"
)

const kindProjectKey = "project API key"

// Owner project access of a project key (OpenAI's owner_project_access).
// ekm's service accounts always have access to their project; only an
// archived project, whose data the data plane refuses, makes its keys
// inactive.
const (
	accessActive   = "active"
	accessInactive = "inactive"
)

// projectKeyObject is OpenAI's organization.project.api_key. Keys do not
// expire (expires_at null); last_used_at is to the minute, null if never.
type projectKeyObject struct {
	Object             string          `json:"object"`
	ID                 string          `json:"id"`
	Name               string          `json:"name"`
	RedactedValue      string          `json:"redacted_value"`
	CreatedAt          int64           `json:"created_at"`
	LastUsedAt         *int64          `json:"last_used_at"`
	ExpiresAt          *int64          `json:"expires_at"`
	OwnerProjectAccess string          `json:"owner_project_access"`
	Owner              projectKeyOwner `json:"owner"`
}

type projectKeyOwner struct {
	Type           string               `json:"type"`
	ServiceAccount serviceAccountObject `json:"service_account"`
}

func projectKeyObj(k store.APIKey, sa store.ServiceAccount, p store.Project) projectKeyObject {
	access := accessActive
	if p.ArchivedAt != nil {
		access = accessInactive
	}
	return projectKeyObject{Object: "organization.project.api_key", ID: k.ID, Name: k.Name, RedactedValue: k.RedactedValue,
		CreatedAt: unix(k.CreatedAt), LastUsedAt: lastUsed(k), OwnerProjectAccess: access,
		Owner: projectKeyOwner{Type: "service_account", ServiceAccount: serviceAccountObj(sa)}}
}

// keyOwner loads the service account owning k. Every project key has one
// (deleting the account deletes its keys); should it be missing anyway, the
// owner is rendered with its id alone rather than failing the request.
func keyOwner(ctx context.Context, q store.Queries, k store.APIKey) (store.ServiceAccount, error) {
	sa, err := q.GetServiceAccount(ctx, k.OrgID, k.ProjectID, k.ServiceAccountID)
	if errors.Is(err, store.ErrNotFound) {
		return store.ServiceAccount{ID: k.ServiceAccountID, Role: roleMember}, nil
	}
	return sa, err
}

// scanBatch is how many of an org's project keys one store query reads while
// looking for a project's or an account's keys.
const scanBatch = 100

// projectKeys returns, in id order after `after`, up to limit (0: all) of
// the org's project keys that keep accepts. The store lists an org's keys
// by kind only, so a project's keys are found by filtering that list; the
// cost grows with the org's number of project keys, not the page size.
func projectKeys(ctx context.Context, q store.Queries, org, after string, limit int, keep func(store.APIKey) bool) ([]store.APIKey, error) {
	var out []store.APIKey
	for {
		ks, err := q.ListAPIKeys(ctx, org, store.KindProject, store.Page{After: after, Limit: scanBatch})
		if err != nil {
			return nil, err
		}
		for _, k := range ks {
			if !keep(k) {
				continue
			}
			out = append(out, k)
			if limit > 0 && len(out) == limit {
				return out, nil
			}
		}
		if len(ks) < scanBatch {
			return out, nil
		}
		after = ks[len(ks)-1].ID
	}
}

// accountKeys lists the API keys of service account sa.
func accountKeys(ctx context.Context, q store.Queries, sa store.ServiceAccount) ([]store.APIKey, error) {
	return projectKeys(ctx, q, sa.OrgID, "", 0, func(k store.APIKey) bool {
		return k.ProjectID == sa.ProjectID && k.ServiceAccountID == sa.ID
	})
}

// pathProjectKey loads the {key} API key of the {id} project. Admin keys and
// other projects' keys are not found.
func (a *api) pathProjectKey(r *http.Request) (store.Project, store.APIKey, error) {
	p, err := a.pathProject(r)
	if err != nil {
		return p, store.APIKey{}, err
	}
	id, err := pathID(r, "key", prefixAPIKey, kindProjectKey)
	if err != nil {
		return p, store.APIKey{}, err
	}
	k, err := a.st.GetAPIKey(r.Context(), p.OrgID, id)
	if err == nil && (k.Kind != store.KindProject || k.ProjectID != p.ID) {
		err = store.ErrNotFound
	}
	if err != nil {
		return p, store.APIKey{}, storeErr(err, kindProjectKey, id)
	}
	return p, k, nil
}

func (a *api) getProjectKey(w http.ResponseWriter, r *http.Request) error {
	p, k, err := a.pathProjectKey(r)
	if err != nil {
		return err
	}
	sa, err := keyOwner(r.Context(), a.st, k)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, projectKeyObj(k, sa, p))
}

func (a *api) listProjectKeys(w http.ResponseWriter, r *http.Request) error {
	p, err := a.pathProject(r)
	if err != nil {
		return err
	}
	lq, err := parseList(r.URL.Query(), prefixAPIKey, false, "owner_project_access")
	if err != nil {
		return err
	}
	// All of a project's keys share its access, so the filter keeps all of
	// them or none.
	access := accessActive
	if p.ArchivedAt != nil {
		access = accessInactive
	}
	var keys []store.APIKey
	switch f := lq.Extra.Get("owner_project_access"); f {
	case "", "any", access:
		keys, err = projectKeys(r.Context(), a.st, p.OrgID, lq.Page.After, lq.Page.Limit+1, func(k store.APIKey) bool { return k.ProjectID == p.ID })
		if err != nil {
			return err
		}
	case accessActive, accessInactive:
	default:
		return badAccess()
	}
	keys, more := trim(keys, lq.Page.Limit)
	owners := map[string]store.ServiceAccount{}
	data := make([]projectKeyObject, len(keys))
	for i, k := range keys {
		sa, seen := owners[k.ServiceAccountID]
		if !seen {
			if sa, err = keyOwner(r.Context(), a.st, k); err != nil {
				return err
			}
			owners[k.ServiceAccountID] = sa
		}
		data[i] = projectKeyObj(k, sa, p)
	}
	return writeJSON(w, http.StatusOK, listPage(data, more, func(o projectKeyObject) string { return o.ID }))
}

func badAccess() error {
	return apierr.BadRequest("owner_project_access", "Invalid 'owner_project_access': expected 'active', 'inactive' or 'any'.")
}

// updateProjectKey answers POST …/api_keys/{key_id}. See
// decodeProjectKeyUpdate: the only update ekm can honour changes nothing.
func (a *api) updateProjectKey(w http.ResponseWriter, r *http.Request) error {
	p, k, err := a.pathProjectKey(r)
	if err != nil {
		return err
	}
	b, err := a.readBody(w, r)
	if err != nil {
		return err
	}
	if err := decodeProjectKeyUpdate(b); err != nil {
		return err
	}
	sa, err := keyOwner(r.Context(), a.st, k)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, projectKeyObj(k, sa, p))
}

// deleteProjectKey revokes a project key: the data plane looks keys up on
// every request, so it stops authenticating as soon as this commits. The
// service account stays, as in OpenAI's API. Allowed on archived projects:
// removing access is always safe.
func (a *api) deleteProjectKey(w http.ResponseWriter, r *http.Request) error {
	p, k, err := a.pathProjectKey(r)
	if err != nil {
		return err
	}
	ev := a.record(r, p.ID, audit.APIKeyDeleted{ID: k.ID})
	err = a.svc.Changes().InStoreTx(r.Context(), a.st, func(q store.Queries, pub *cluster.Publisher) error {
		if err := q.DeleteAPIKey(r.Context(), p.OrgID, k.ID); err != nil {
			return storeErr(err, kindProjectKey, k.ID)
		}
		if err := q.AppendAudit(r.Context(), ev); err != nil {
			return err
		}
		return pub.Publish(r.Context(), cluster.APIKeyDeleted, p.OrgID, k.ID) // every replica, before we answer
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, deletedObject{ID: k.ID, Object: "organization.project.api_key.deleted", Deleted: true})
}

// decodeProjectKeyUpdate decodes POST …/api_keys/{key_id}. ekm keys have no
// scopes and do not expire, so the only update it can honour is "scopes":
// [], which in OpenAI's contract means all permissions: what the key already
// has.
func decodeProjectKeyUpdate(b []byte) error {
	o, err := decodeObject(b)
	if err != nil {
		return err
	}
	if err := o.only("scopes", "expires_in_seconds"); err != nil {
		return err
	}
	if err := o.unsupported("expires_in_seconds"); err != nil {
		return err
	}
	raw, ok := o["scopes"]
	if !ok {
		return apierr.New(http.StatusBadRequest, "invalid_request_error", "missing_required_parameter", "scopes", "Provide at least one of 'scopes' or 'expires_in_seconds'.")
	}
	var scopes []string
	if isNull(raw) || json.Unmarshal(raw, &scopes) != nil {
		return apierr.New(http.StatusBadRequest, "invalid_request_error", "invalid_type", "scopes", "Invalid type for 'scopes': expected an array of strings.")
	}
	if len(scopes) > 0 {
		return apierr.New(http.StatusBadRequest, "invalid_request_error", "unsupported_parameter", "scopes", "Restricting a key's 'scopes' is not supported by this server; project keys have all permissions on their project.")
	}
	return nil
}
