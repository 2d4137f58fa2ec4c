package adminapi

import (
	"context"
	"errors"
	"net/http"
	"slices"

	"github.com/ekm-dev/ekm/apierr"
	"github.com/ekm-dev/ekm/ids"
	"github.com/ekm-dev/ekm/keyring"
	"github.com/ekm-dev/ekm/store"
)

const kindProject = "project"

// projectObject is OpenAI's organization.project plus current_key_version.
type projectObject struct {
	ID                string  `json:"id"`
	Object            string  `json:"object"`
	Name              string  `json:"name"`
	CreatedAt         int64   `json:"created_at"`
	ArchivedAt        *int64  `json:"archived_at"`
	Status            string  `json:"status"`
	ExternalKeyID     *string `json:"external_key_id"`
	CurrentKeyVersion int     `json:"current_key_version"`
}

func projectObj(p store.Project) projectObject {
	o := projectObject{ID: p.ID, Object: "organization.project", Name: p.Name, CreatedAt: unix(p.CreatedAt), Status: "active", CurrentKeyVersion: p.CurrentKeyVersion}
	if p.ArchivedAt != nil {
		t := unix(*p.ArchivedAt)
		o.ArchivedAt, o.Status = &t, "archived"
	}
	if p.ExternalKeyID != "" {
		id := p.ExternalKeyID
		o.ExternalKeyID = &id
	}
	return o
}

func archivedErr(id string) error {
	return apierr.Conflict("project_archived", "Project %s is archived and cannot be changed.", id)
}

// bodyExternalKey loads the external key named by the request field
// external_key_id; a malformed or unknown id is a 404 naming the field.
func (a *api) bodyExternalKey(ctx context.Context, org, id string) (store.ExternalKey, error) {
	nf := apierr.New(http.StatusNotFound, "invalid_request_error", "not_found", "external_key_id", "No external key found with id '%s'.", clip(id))
	if !ids.Valid(prefixExternalKey, id) {
		return store.ExternalKey{}, nf
	}
	k, err := a.st.GetExternalKey(ctx, org, id)
	if errors.Is(err, store.ErrNotFound) {
		return store.ExternalKey{}, nf
	}
	return k, err
}

func (a *api) createProject(w http.ResponseWriter, r *http.Request) error {
	b, err := a.readBody(w, r)
	if err != nil {
		return err
	}
	req, err := decodeProjectCreate(b)
	if err != nil {
		return err
	}
	org := caller(r).OrgID
	var ek *store.ExternalKey
	param := ""
	if req.ExternalKeyID != "" {
		k, err := a.bodyExternalKey(r.Context(), org, req.ExternalKeyID)
		if err != nil {
			return err
		}
		ek, param = &k, "external_key_id"
	}
	id := ids.New(prefixProject)
	// The first project key is wrapped before the transaction: a key that
	// cannot wrap fails the creation with nothing stored.
	ctx, cancel := a.kmsContext(r)
	rec, pk, err := a.kr.NewVersion(ctx, org, id, 1, ek)
	cancel()
	if err != nil {
		return kmsFailure(err, param)
	}
	defer pk.Zero()
	p := store.Project{ID: id, OrgID: org, Name: req.Name, ExternalKeyID: req.ExternalKeyID, CreatedAt: a.now(), CurrentKeyVersion: 1}
	var ekID any
	if p.ExternalKeyID != "" {
		ekID = p.ExternalKeyID
	}
	ev, err := a.event(r, "project.created", id, map[string]any{"id": id, "data": map[string]any{"name": p.Name, "title": p.Name, "external_key_id": ekID}})
	if err != nil {
		return err
	}
	err = a.st.InTx(r.Context(), func(q store.Queries) error {
		if err := q.CreateProject(r.Context(), p); err != nil {
			if errors.Is(err, store.ErrNotFound) && ek != nil {
				// The key was removed since we loaded it.
				return apierr.New(http.StatusNotFound, "invalid_request_error", "not_found", "external_key_id", "No external key found with id '%s'.", ek.ID)
			}
			return err
		}
		if err := q.PutProjectKey(r.Context(), rec); err != nil {
			return err
		}
		return q.AppendAudit(r.Context(), ev)
	})
	if err != nil {
		return err
	}
	a.kr.Prime(org, id, 1, p.ExternalKeyID, pk)
	return writeJSON(w, http.StatusOK, projectObj(p))
}

func (a *api) getProject(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id", prefixProject, kindProject)
	if err != nil {
		return err
	}
	p, err := a.st.GetProject(r.Context(), caller(r).OrgID, id)
	if err != nil {
		return storeErr(err, kindProject, id)
	}
	return writeJSON(w, http.StatusOK, projectObj(p))
}

func (a *api) listProjects(w http.ResponseWriter, r *http.Request) error {
	lq, err := parseList(r.URL.Query(), prefixProject, false, "include_archived")
	if err != nil {
		return err
	}
	all, err := parseBool("include_archived", lq.Extra.Get("include_archived"))
	if err != nil {
		return err
	}
	p := lq.Page
	p.Limit++
	ps, err := a.st.ListProjects(r.Context(), caller(r).OrgID, all, p)
	if err != nil {
		return err
	}
	ps, more := trim(ps, lq.Page.Limit)
	data := make([]projectObject, len(ps))
	for i, p := range ps {
		data[i] = projectObj(p)
	}
	return writeJSON(w, http.StatusOK, listPage(data, more, func(o projectObject) string { return o.ID }))
}

func (a *api) updateProject(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id", prefixProject, kindProject)
	if err != nil {
		return err
	}
	b, err := a.readBody(w, r)
	if err != nil {
		return err
	}
	req, err := decodeProjectUpdate(b)
	if err != nil {
		return err
	}
	org := caller(r).OrgID
	p, err := a.st.GetProject(r.Context(), org, id)
	if err != nil {
		return storeErr(err, kindProject, id)
	}
	if p.ArchivedAt != nil {
		return archivedErr(id)
	}
	changes, previous := map[string]any{}, map[string]any{}
	if req.Name != nil && *req.Name != p.Name {
		changes["name"], changes["title"], previous["name"] = *req.Name, *req.Name, p.Name
	}
	rekey := req.ExternalKeyID != nil && *req.ExternalKeyID != p.ExternalKeyID
	var recs []store.ProjectKey
	if rekey {
		if recs, err = a.rewrap(r, p, *req.ExternalKeyID); err != nil {
			return err
		}
		changes["external_key_id"] = *req.ExternalKeyID
		previous["external_key_id"] = nullable(p.ExternalKeyID)
	}
	if len(changes) == 0 {
		return writeJSON(w, http.StatusOK, projectObj(p))
	}
	ev, err := a.event(r, "project.updated", id, map[string]any{"id": id, "changes_requested": changes, "previous": previous})
	if err != nil {
		return err
	}
	var out store.Project
	err = a.st.InTx(r.Context(), func(q store.Queries) error {
		cur, err := q.GetProject(r.Context(), org, id)
		if err != nil {
			return storeErr(err, kindProject, id)
		}
		if cur.ArchivedAt != nil {
			return archivedErr(id)
		}
		if rekey {
			// Compare-and-set: the rewrapped versions are only right if the
			// project is still on the key (and versions) we rewrapped from.
			if err := sameKeys(r.Context(), q, p, cur, recs); err != nil {
				return err
			}
			for _, rec := range recs {
				if err := q.PutProjectKey(r.Context(), rec); err != nil {
					return err
				}
			}
			cur.ExternalKeyID = *req.ExternalKeyID
		}
		if req.Name != nil {
			cur.Name = *req.Name
		}
		if err := q.UpdateProject(r.Context(), cur); err != nil {
			return err
		}
		out = cur
		return q.AppendAudit(r.Context(), ev)
	})
	if err != nil {
		return err
	}
	if rekey {
		// Cached plaintext is tied to the old key's revocation gate.
		a.kr.EvictProject(id)
	}
	return writeJSON(w, http.StatusOK, projectObj(out))
}

// rewrap validates the target key and rewraps every version of p's key
// under it. Nothing is stored.
func (a *api) rewrap(r *http.Request, p store.Project, toID string) ([]store.ProjectKey, error) {
	var to *store.ExternalKey
	if toID != "" {
		k, err := a.bodyExternalKey(r.Context(), p.OrgID, toID)
		if err != nil {
			return nil, err
		}
		to = &k
		ctx, cancel := a.kmsContext(r)
		_, err = a.kr.Validate(ctx, to)
		cancel()
		if err != nil {
			return nil, kmsFailure(err, "external_key_id")
		}
	}
	ctx, cancel := a.kmsContext(r)
	defer cancel()
	recs, err := a.kr.Rewrap(ctx, p.OrgID, p.ID, to)
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
	conflict := apierr.Conflict("concurrent_update", "Project %s's key was changed by another request while re-keying; retry the update.", cur.ID)
	if cur.ExternalKeyID != before.ExternalKeyID || cur.CurrentKeyVersion != before.CurrentKeyVersion {
		return conflict
	}
	stored, err := q.ListProjectKeys(ctx, cur.OrgID, cur.ID)
	if err != nil {
		return err
	}
	if len(stored) != len(recs) {
		return conflict
	}
	for _, s := range stored {
		if s.ExternalKeyID != before.ExternalKeyID || !slices.ContainsFunc(recs, func(r store.ProjectKey) bool { return r.Version == s.Version }) {
			return conflict
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

func (a *api) archiveProject(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id", prefixProject, kindProject)
	if err != nil {
		return err
	}
	org := caller(r).OrgID
	ev, err := a.event(r, "project.archived", id, map[string]any{"id": id})
	if err != nil {
		return err
	}
	var out store.Project
	err = a.st.InTx(r.Context(), func(q store.Queries) error {
		p, err := q.GetProject(r.Context(), org, id)
		if err != nil {
			return storeErr(err, kindProject, id)
		}
		out = p
		if p.ArchivedAt != nil {
			return nil // already archived: idempotent, no second event
		}
		now := a.now()
		p.ArchivedAt = &now
		if err := q.UpdateProject(r.Context(), p); err != nil {
			return err
		}
		out = p
		return q.AppendAudit(r.Context(), ev)
	})
	if err != nil {
		return err
	}
	a.kr.EvictProject(id)
	return writeJSON(w, http.StatusOK, projectObj(out))
}
