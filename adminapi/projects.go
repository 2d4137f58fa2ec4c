package adminapi

import (
	"bytes"
	"errors"
	"net/http"
	"time"

	"github.com/ekm-dev/ekm/apierr"
	"github.com/ekm-dev/ekm/ids"
	"github.com/ekm-dev/ekm/lifecycle"
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

// rotateMinInterval is the least time between two rotations of one project
// through the API (review finding M4). Each rotation is a wrap by the
// customer's KMS and a stored key version that is never deleted, so a
// leaked admin key or a looping script must not be able to make them
// without bound: at one per minute a project gains at most 1,440 versions a
// day (and its KMS one wrap a minute), far below any cloud KMS's request
// quota, while an admin rotating on purpose (after an incident, or again
// after a re-key) never waits more than a minute. The schedule
// (--project-key-rotation-period, the operator's choice) and the operator's
// `ekm project rotate` are not bound by it.
const rotateMinInterval = time.Minute

// rotateProjectKey serves POST /projects/{id}/rotate_key (an ekm
// extension): a new version of the project's key, under its current
// external key, becomes the one new data is written under; old versions
// keep decrypting. The body must be empty or an empty object. A second
// rotation of one project within rotateMinInterval is refused with 429
// rotation_rate_limited and Retry-After, before any KMS call; before that,
// the call counts against the org's KMS rate limit (limitKMS).
func (a *api) rotateProjectKey(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id", prefixProject, kindProject)
	if err != nil {
		return err
	}
	b, err := a.readBody(w, r)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(b)) > 0 {
		o, err := decodeObject(b)
		if err != nil {
			return err
		}
		if err := o.only(); err != nil {
			return err
		}
	}
	if err := a.limitKMS(r); err != nil {
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
	_, err = a.svc.RotateProjectKey(r.Context(), caller(r).ID, org, id, lifecycle.RotateOptions{Expect: &p, MinInterval: rotateMinInterval})
	if rl := (*lifecycle.RotationRateLimitedError)(nil); errors.As(err, &rl) {
		return rotationRateLimited(w, rl)
	}
	if errors.Is(err, store.ErrConflict) {
		return apierr.Conflict("concurrent_update", "Project %s's key was changed by another request while rotating; retry.", id)
	}
	if err != nil {
		return serviceErr(kmsFailure(err, ""), kindProject, id)
	}
	p, err = a.st.GetProject(r.Context(), org, id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, projectObj(p))
}

// rotationRateLimited is OpenAI's rate limit answer (429, type "requests")
// with ekm's code. The SDKs are told not to retry it by themselves: a
// second rotation within the minute is most often a duplicate (a double
// click, a retried request whose first attempt succeeded), and retrying it
// after Retry-After would make a version nobody asked for.
func rotationRateLimited(w http.ResponseWriter, e *lifecycle.RotationRateLimitedError) error {
	secs := int((e.RetryAfter + time.Second - 1) / time.Second)
	ae := apierr.New(http.StatusTooManyRequests, "requests", "rotation_rate_limited", "",
		"Project %s's key was rotated at %s (version %d); a project's key can be rotated at most once every %d seconds. Try again in %d seconds.",
		e.ProjectID, e.CreatedAt.UTC().Format(time.RFC3339), e.Version, int(e.Interval/time.Second), secs)
	ae.RetryAfter = secs // ≥ 1: RetryAfter > 0
	w.Header().Set("X-Should-Retry", "false")
	return ae
}

func archivedErr(id string) error {
	return apierr.Conflict("project_archived", "Project %s is archived and cannot be changed.", id)
}

// bodyKeyID checks the shape of the request field external_key_id: a
// malformed id cannot exist, so it is a 404 naming the field.
func bodyKeyID(id string) error { return bodyKeyIDParam(id, "external_key_id") }

func bodyKeyIDParam(id, param string) error {
	if id != "" && !ids.Valid(prefixExternalKey, id) {
		return apierr.New(http.StatusNotFound, "invalid_request_error", "not_found", param, "No external key found with id '%s'.", clip(id))
	}
	return nil
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
	if err := bodyKeyID(req.ExternalKeyID); err != nil {
		return err
	}
	if err := a.limitKMS(r); err != nil {
		return err
	}
	p, err := a.svc.CreateProject(r.Context(), caller(r).ID, caller(r).OrgID, req.Name, req.ExternalKeyID)
	if err != nil {
		return serviceErr(err, kindProject, "")
	}
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
	// A re-key unwraps and wraps every version of the project's key; a
	// rename alone calls no KMS, nor does a malformed external_key_id
	// (answered below, after the project is found, so it is not counted).
	if req.ExternalKeyID != nil && bodyKeyID(*req.ExternalKeyID) == nil {
		if err := a.limitKMS(r); err != nil {
			return err
		}
	}
	// A malformed external_key_id is simply not found (404 naming the field),
	// after the project itself is found and not archived.
	p, err := a.svc.UpdateProject(r.Context(), caller(r).ID, caller(r).OrgID, id, lifecycle.ProjectUpdate{Name: req.Name, ExternalKeyID: req.ExternalKeyID})
	if err != nil {
		return serviceErr(err, kindProject, id)
	}
	return writeJSON(w, http.StatusOK, projectObj(p))
}

func (a *api) archiveProject(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id", prefixProject, kindProject)
	if err != nil {
		return err
	}
	p, err := a.svc.ArchiveProject(r.Context(), caller(r).ID, caller(r).OrgID, id)
	if err != nil {
		return serviceErr(err, kindProject, id)
	}
	return writeJSON(w, http.StatusOK, projectObj(p))
}

type projectCreate struct {
	Name          string
	ExternalKeyID string // "" = the operator's default key
}

func decodeProjectCreate(b []byte) (projectCreate, error) {
	var req projectCreate
	o, err := decodeObject(b)
	if err != nil {
		return req, err
	}
	if err := o.only("name", "external_key_id", "geography", "residency"); err != nil {
		return req, err
	}
	if err := o.unsupported("geography", "residency"); err != nil {
		return req, err
	}
	if req.Name, err = o.requiredStr("name", maxName); err != nil {
		return req, err
	}
	req.ExternalKeyID, _, err = o.externalKeyID()
	return req, err
}

// externalKeyID reads external_key_id: absent or null means "not given".
func (o object) externalKeyID() (string, bool, error) {
	id, ok, err := o.str("external_key_id", maxID)
	if err == nil && ok && id == "" {
		err = apierr.BadRequest("external_key_id", "Invalid 'external_key_id': must be an external key id (extkey_…).")
	}
	return id, ok && err == nil, err
}

type projectUpdate struct {
	Name          *string
	ExternalKeyID *string
}

func decodeProjectUpdate(b []byte) (projectUpdate, error) {
	var req projectUpdate
	o, err := decodeObject(b)
	if err != nil {
		return req, err
	}
	if err := o.only("name", "external_key_id", "geography"); err != nil {
		return req, err
	}
	if err := o.unsupported("geography"); err != nil {
		return req, err
	}
	if n, ok, err := o.name("name"); err != nil {
		return req, err
	} else if ok {
		req.Name = &n
	}
	if id, ok, err := o.externalKeyID(); err != nil {
		return req, err
	} else if ok {
		req.ExternalKeyID = &id
	}
	return req, nil
}
