package adminapi

import (
	"errors"
	"net/http"

	"github.com/ekm-dev/ekm/apierr"
	"github.com/ekm-dev/ekm/audit"
	"github.com/ekm-dev/ekm/cluster"
	"github.com/ekm-dev/ekm/ids"
	"github.com/ekm-dev/ekm/store"
)

const (
	kindAdminKey       = "admin API key"
	kindServiceAccount = "service account"
)

// ownerObject is the owner of an admin key. ekm has no users: admin keys
// belong to the organization itself.
type ownerObject struct {
	Type      string `json:"type"`
	Object    string `json:"object"`
	ID        string `json:"id"`
	Name      string `json:"name"`
	CreatedAt int64  `json:"created_at"`
	Role      string `json:"role"`
}

// adminKeyObject is OpenAI's organization.admin_api_key. Value is set only
// in the creation response.
type adminKeyObject struct {
	Object        string      `json:"object"`
	ID            string      `json:"id"`
	Name          string      `json:"name"`
	RedactedValue string      `json:"redacted_value"`
	Value         string      `json:"value,omitempty"`
	CreatedAt     int64       `json:"created_at"`
	ExpiresAt     *int64      `json:"expires_at"`
	LastUsedAt    *int64      `json:"last_used_at"`
	Owner         ownerObject `json:"owner"`
}

func adminKeyObj(k store.APIKey, org store.Org) adminKeyObject {
	return adminKeyObject{Object: "organization.admin_api_key", ID: k.ID, Name: k.Name, RedactedValue: k.RedactedValue, CreatedAt: unix(k.CreatedAt),
		LastUsedAt: lastUsed(k),
		Owner:      ownerObject{Type: "organization", Object: "organization", ID: org.ID, Name: org.Name, CreatedAt: unix(org.CreatedAt), Role: "owner"}}
}

// lastUsed is a key's last_used_at: unix seconds, to the minute, or null.
func lastUsed(k store.APIKey) *int64 {
	if k.LastUsedAt.IsZero() {
		return nil
	}
	t := unix(k.LastUsedAt)
	return &t
}

// noStore marks an answer that reveals a key's value: no cache (a proxy's
// or the client's disk cache) may keep it.
func noStore(w http.ResponseWriter) { w.Header().Set("Cache-Control", "no-store") }

func (a *api) createAdminKey(w http.ResponseWriter, r *http.Request) error {
	b, err := a.readBody(w, r)
	if err != nil {
		return err
	}
	name, err := decodeAdminKeyCreate(b)
	if err != nil {
		return err
	}
	orgID := caller(r).OrgID
	org, err := a.st.GetOrg(r.Context(), orgID)
	if err != nil {
		return err
	}
	value, hash, redacted := newKeyValue(store.KindAdmin)
	k := store.APIKey{ID: ids.New(prefixAPIKey), OrgID: orgID, Kind: store.KindAdmin, Name: name, Hash: hash, RedactedValue: redacted, CreatedAt: a.now()}
	ev := a.record(r, "", audit.NewAPIKeyCreated(k))
	err = a.st.InTx(r.Context(), func(q store.Queries) error {
		if err := q.CreateAPIKey(r.Context(), k); err != nil {
			return err
		}
		return q.AppendAudit(r.Context(), ev)
	})
	if err != nil {
		return err
	}
	obj := adminKeyObj(k, org)
	obj.Value = value
	noStore(w)
	return writeJSON(w, http.StatusOK, obj)
}

// apiKeyCreated is the api_key.created payload. It never holds the value.

func (a *api) getAdminKey(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id", prefixAPIKey, kindAdminKey)
	if err != nil {
		return err
	}
	orgID := caller(r).OrgID
	k, err := a.st.GetAPIKey(r.Context(), orgID, id)
	if err == nil && k.Kind != store.KindAdmin {
		err = store.ErrNotFound
	}
	if err != nil {
		return storeErr(err, kindAdminKey, id)
	}
	org, err := a.st.GetOrg(r.Context(), orgID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, adminKeyObj(k, org))
}

func (a *api) listAdminKeys(w http.ResponseWriter, r *http.Request) error {
	lq, err := parseList(r.URL.Query(), prefixAPIKey, true)
	if err != nil {
		return err
	}
	orgID := caller(r).OrgID
	org, err := a.st.GetOrg(r.Context(), orgID)
	if err != nil {
		return err
	}
	p := lq.Page
	p.Limit++
	keys, err := a.st.ListAPIKeys(r.Context(), orgID, store.KindAdmin, p)
	if err != nil {
		return err
	}
	keys, more := trim(keys, lq.Page.Limit)
	data := make([]adminKeyObject, len(keys))
	for i, k := range keys {
		data[i] = adminKeyObj(k, org)
	}
	return writeJSON(w, http.StatusOK, listPage(data, more, func(o adminKeyObject) string { return o.ID }))
}

type deletedObject struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Deleted bool   `json:"deleted"`
}

func (a *api) deleteAdminKey(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r, "id", prefixAPIKey, kindAdminKey)
	if err != nil {
		return err
	}
	me := caller(r)
	ev := a.record(r, "", audit.APIKeyDeleted{ID: id})
	err = a.svc.Changes().InStoreTx(r.Context(), a.st, func(q store.Queries, pub *cluster.Publisher) error {
		// The caller's key must still exist when the deletion commits: two
		// admin keys deleting each other concurrently both authenticated
		// before either deleted, and without this re-read both deletions
		// would succeed and leave the org with no admin key. The read is in
		// the transaction, so the two serialise (SQLite: the write lock;
		// PostgreSQL: SERIALIZABLE aborts one and InTx retries it, which
		// then finds its key gone).
		if _, err := q.GetAPIKey(r.Context(), me.OrgID, me.ID); errors.Is(err, store.ErrNotFound) {
			return apierr.Unauthorized("The admin key of this request was deleted while the request ran.")
		} else if err != nil {
			return err
		}
		k, err := q.GetAPIKey(r.Context(), me.OrgID, id)
		if err == nil && k.Kind != store.KindAdmin {
			err = store.ErrNotFound
		}
		if err != nil {
			return storeErr(err, kindAdminKey, id)
		}
		// Deleting the key in use is refused: it is how an org would lock
		// itself out (the last admin key can only be deleted with itself).
		if k.ID == me.ID {
			return apierr.Conflict("cannot_delete_current_key", "An admin key cannot delete itself; use another admin key of the organization.")
		}
		if err := q.DeleteAPIKey(r.Context(), me.OrgID, id); err != nil {
			return storeErr(err, kindAdminKey, id)
		}
		// Belt and braces: whatever the path, an org keeps an admin key.
		left, err := q.ListAPIKeys(r.Context(), me.OrgID, store.KindAdmin, store.Page{Limit: 1})
		if err != nil {
			return err
		}
		if len(left) == 0 {
			return apierr.Conflict("last_admin_key", "The last admin key of an organization cannot be deleted.")
		}
		if err := q.AppendAudit(r.Context(), ev); err != nil {
			return err
		}
		return pub.Publish(r.Context(), cluster.APIKeyDeleted, me.OrgID, id) // every replica, before we answer
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, deletedObject{ID: id, Object: "organization.admin_api_key.deleted", Deleted: true})
}

// --- service accounts ---

type serviceAccountObject struct {
	Object    string                `json:"object"`
	ID        string                `json:"id"`
	Name      string                `json:"name"`
	Role      string                `json:"role"`
	CreatedAt int64                 `json:"created_at"`
	APIKey    *serviceAccountKeyObj `json:"api_key,omitempty"`
}

type serviceAccountKeyObj struct {
	Object    string `json:"object"`
	ID        string `json:"id"`
	Name      string `json:"name"`
	Value     string `json:"value"`
	CreatedAt int64  `json:"created_at"`
	ExpiresAt *int64 `json:"expires_at"`
}

func serviceAccountObj(s store.ServiceAccount) serviceAccountObject {
	return serviceAccountObject{Object: "organization.project.service_account", ID: s.ID, Name: s.Name, Role: s.Role, CreatedAt: unix(s.CreatedAt)}
}

// pathProject loads the {id} project of the caller's org.
func (a *api) pathProject(r *http.Request) (store.Project, error) {
	id, err := pathID(r, "id", prefixProject, kindProject)
	if err != nil {
		return store.Project{}, err
	}
	p, err := a.st.GetProject(r.Context(), caller(r).OrgID, id)
	if err != nil {
		return store.Project{}, storeErr(err, kindProject, id)
	}
	return p, nil
}

func (a *api) createServiceAccount(w http.ResponseWriter, r *http.Request) error {
	p, err := a.pathProject(r)
	if err != nil {
		return err
	}
	b, err := a.readBody(w, r)
	if err != nil {
		return err
	}
	name, err := decodeServiceAccountCreate(b)
	if err != nil {
		return err
	}
	if p.ArchivedAt != nil {
		return archivedErr(p.ID)
	}
	now := a.now()
	sa := store.ServiceAccount{ID: ids.New(prefixServiceAccount), OrgID: p.OrgID, ProjectID: p.ID, Name: name, Role: "member", CreatedAt: now}
	value, hash, redacted := newKeyValue(store.KindProject)
	k := store.APIKey{ID: ids.New(prefixAPIKey), OrgID: p.OrgID, Kind: store.KindProject, ProjectID: p.ID, ServiceAccountID: sa.ID,
		Name: name, Hash: hash, RedactedValue: redacted, CreatedAt: now}
	saEv := a.record(r, p.ID, audit.ServiceAccountCreated{ID: sa.ID, Data: audit.ServiceAccountDetails{Role: sa.Role, Name: sa.Name}})
	keyEv := a.record(r, p.ID, audit.NewAPIKeyCreated(k))
	err = a.st.InTx(r.Context(), func(q store.Queries) error {
		// Re-read: the project may have been archived meanwhile.
		cur, err := q.GetProject(r.Context(), p.OrgID, p.ID)
		if err != nil {
			return storeErr(err, kindProject, p.ID)
		}
		if cur.ArchivedAt != nil {
			return archivedErr(p.ID)
		}
		if err := q.CreateServiceAccount(r.Context(), sa); err != nil {
			return err
		}
		if err := q.CreateAPIKey(r.Context(), k); err != nil {
			return err
		}
		if err := q.AppendAudit(r.Context(), saEv); err != nil {
			return err
		}
		return q.AppendAudit(r.Context(), keyEv)
	})
	if err != nil {
		return err
	}
	obj := serviceAccountObj(sa)
	obj.APIKey = &serviceAccountKeyObj{Object: "organization.project.service_account.api_key", ID: k.ID, Name: k.Name, Value: value, CreatedAt: unix(now)}
	noStore(w)
	return writeJSON(w, http.StatusOK, obj)
}

func (a *api) pathServiceAccount(r *http.Request) (store.ServiceAccount, error) {
	p, err := a.pathProject(r)
	if err != nil {
		return store.ServiceAccount{}, err
	}
	id, err := pathID(r, "sa", prefixServiceAccount, kindServiceAccount)
	if err != nil {
		return store.ServiceAccount{}, err
	}
	s, err := a.st.GetServiceAccount(r.Context(), p.OrgID, p.ID, id)
	if err != nil {
		return store.ServiceAccount{}, storeErr(err, kindServiceAccount, id)
	}
	return s, nil
}

func (a *api) getServiceAccount(w http.ResponseWriter, r *http.Request) error {
	s, err := a.pathServiceAccount(r)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, serviceAccountObj(s))
}

func (a *api) listServiceAccounts(w http.ResponseWriter, r *http.Request) error {
	p, err := a.pathProject(r)
	if err != nil {
		return err
	}
	lq, err := parseList(r.URL.Query(), prefixServiceAccount, false)
	if err != nil {
		return err
	}
	pg := lq.Page
	pg.Limit++
	ss, err := a.st.ListServiceAccounts(r.Context(), p.OrgID, p.ID, pg)
	if err != nil {
		return err
	}
	ss, more := trim(ss, lq.Page.Limit)
	data := make([]serviceAccountObject, len(ss))
	for i, s := range ss {
		data[i] = serviceAccountObj(s)
	}
	return writeJSON(w, http.StatusOK, listPage(data, more, func(o serviceAccountObject) string { return o.ID }))
}

func (a *api) deleteServiceAccount(w http.ResponseWriter, r *http.Request) error {
	s, err := a.pathServiceAccount(r)
	if err != nil {
		return err
	}
	err = a.svc.Changes().InStoreTx(r.Context(), a.st, func(q store.Queries, pub *cluster.Publisher) error {
		// Deleting the account revokes its API keys with it; each revoked
		// key gets its api_key.deleted event, as if deleted on its own.
		keys, err := accountKeys(r.Context(), q, s)
		if err != nil {
			return err
		}
		var evs []store.AuditEvent
		for _, k := range keys {
			evs = append(evs, a.record(r, s.ProjectID, audit.APIKeyDeleted{ID: k.ID}))
		}
		evs = append(evs, a.record(r, s.ProjectID, audit.ServiceAccountDeleted{ID: s.ID}))
		if err := q.DeleteServiceAccount(r.Context(), s.OrgID, s.ProjectID, s.ID); err != nil {
			return storeErr(err, kindServiceAccount, s.ID)
		}
		for _, ev := range evs {
			if err := q.AppendAudit(r.Context(), ev); err != nil {
				return err
			}
		}
		for _, k := range keys { // every replica, before we answer
			if err := pub.Publish(r.Context(), cluster.APIKeyDeleted, s.OrgID, k.ID); err != nil {
				return err
			}
		}
		return pub.Publish(r.Context(), cluster.ServiceAccountDeleted, s.OrgID, s.ID)
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, deletedObject{ID: s.ID, Object: "organization.project.service_account.deleted", Deleted: true})
}

func (a *api) updateServiceAccount(w http.ResponseWriter, r *http.Request) error {
	s, err := a.pathServiceAccount(r)
	if err != nil {
		return err
	}
	b, err := a.readBody(w, r)
	if err != nil {
		return err
	}
	req, err := decodeServiceAccountUpdate(b)
	if err != nil {
		return err
	}
	// Role can only be "member", which every account already is: only a
	// new name is a change.
	if req.Name == nil || *req.Name == s.Name {
		return writeJSON(w, http.StatusOK, serviceAccountObj(s))
	}
	ev := a.record(r, s.ProjectID, audit.ServiceAccountUpdated{ID: s.ID,
		ChangesRequested: map[string]any{"name": *req.Name}, Previous: map[string]any{"name": s.Name}})
	var out store.ServiceAccount
	err = a.st.InTx(r.Context(), func(q store.Queries) error {
		p, err := q.GetProject(r.Context(), s.OrgID, s.ProjectID)
		if err != nil {
			return storeErr(err, kindProject, s.ProjectID)
		}
		if p.ArchivedAt != nil {
			return archivedErr(p.ID)
		}
		cur, err := q.GetServiceAccount(r.Context(), s.OrgID, s.ProjectID, s.ID)
		if err != nil {
			return storeErr(err, kindServiceAccount, s.ID)
		}
		cur.Name = *req.Name
		if err := q.UpdateServiceAccount(r.Context(), cur); err != nil {
			return err
		}
		out = cur
		return q.AppendAudit(r.Context(), ev)
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, serviceAccountObj(out))
}

func decodeAdminKeyCreate(b []byte) (string, error) {
	o, err := decodeObject(b)
	if err != nil {
		return "", err
	}
	if err := o.only("name", "expires_in_seconds"); err != nil {
		return "", err
	}
	if err := o.unsupported("expires_in_seconds"); err != nil {
		return "", err
	}
	return o.requiredStr("name", maxName)
}

func decodeServiceAccountCreate(b []byte) (string, error) {
	o, err := decodeObject(b)
	if err != nil {
		return "", err
	}
	if err := o.only("name", "create_service_account_only", "expires_in_seconds"); err != nil {
		return "", err
	}
	if err := o.unsupported("expires_in_seconds"); err != nil {
		return "", err
	}
	// A service account exists here only to own a project key.
	if only, _, err := o.boolean("create_service_account_only"); err != nil {
		return "", err
	} else if only {
		return "", apierr.New(http.StatusBadRequest, "invalid_request_error", "unsupported_parameter", "create_service_account_only", "'create_service_account_only' is not supported by this server: a service account is created with its API key.")
	}
	return o.requiredStr("name", maxName)
}

// saUpdate is a decoded service account update; nil fields are unchanged.
type saUpdate struct {
	Name *string
	Role *string
}

// Service account roles. ekm's service accounts are all members: a project
// key can use its project's data plane and nothing else, and no role of
// ekm's would let it do more.
const roleMember = "member"

func decodeServiceAccountUpdate(b []byte) (saUpdate, error) {
	var req saUpdate
	o, err := decodeObject(b)
	if err != nil {
		return req, err
	}
	if err := o.only("name", "role"); err != nil {
		return req, err
	}
	if n, ok, err := o.name("name"); err != nil {
		return req, err
	} else if ok {
		req.Name = &n
	}
	role, ok, err := o.str("role", maxType)
	switch {
	case err != nil:
		return req, err
	case !ok:
	case role == roleMember:
		req.Role = &role
	case role == "owner":
		return req, apierr.New(http.StatusBadRequest, "invalid_request_error", "unsupported_role", "role", "Invalid 'role': 'owner' is not supported by this server; service accounts are members of their project.")
	default:
		return req, apierr.BadRequest("role", "Invalid 'role': expected 'member' or 'owner'.")
	}
	return req, nil
}
