package adminapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/ekm-dev/ekm/audit"
	"github.com/ekm-dev/ekm/store"
)

// Actor api_key types. OpenAI has "user" and "service_account"; ekm has no
// users, and its admin keys belong to the organization.
const (
	actorAdminKey       = "admin_api_key"
	actorServiceAccount = "service_account"
)

func (a *api) listAudit(w http.ResponseWriter, r *http.Request) error {
	f, err := parseAuditQuery(r.URL.Query())
	if err != nil {
		return err
	}
	org := caller(r).OrgID
	limit := f.Limit
	f.Limit++
	evs, err := a.st.ListAudit(r.Context(), org, f)
	if err != nil {
		return err
	}
	more := len(evs) > limit
	if more {
		if f.Before != "" {
			// Paging backwards: the extra row is the newest, the farthest
			// from the cursor.
			evs = evs[len(evs)-limit:]
		} else {
			evs = evs[:limit]
		}
	}
	rd := auditRenderer{q: a.st, org: org, keys: map[string]*store.APIKey{}, projects: map[string]string{}}
	data := make([]map[string]any, 0, len(evs))
	for _, e := range evs {
		obj, err := rd.render(r.Context(), e)
		if err != nil {
			return err
		}
		data = append(data, obj)
	}
	return writeJSON(w, http.StatusOK, listPage(data, more, func(o map[string]any) string { return o["id"].(string) }))
}

// auditRenderer turns stored events into OpenAI's audit log objects,
// looking up each actor key and project once per page.
type auditRenderer struct {
	q        store.Queries
	org      string
	keys     map[string]*store.APIKey // nil: deleted
	projects map[string]string        // id → name ("" when gone)
}

// reserved are the object's own fields, never overwritten by a payload.
var reserved = map[string]bool{"id": true, "object": true, "type": true, "effective_at": true, "actor": true, "project": true}

func (rd *auditRenderer) render(ctx context.Context, e store.AuditEvent) (map[string]any, error) {
	obj := map[string]any{"id": e.ID, "object": "organization.audit_log", "type": e.Type, "effective_at": unix(e.EffectiveAt)}
	actor, err := rd.actor(ctx, e.Actor)
	if err != nil {
		return nil, err
	}
	obj["actor"] = actor
	if e.ProjectID != "" {
		name, err := rd.project(ctx, e.ProjectID)
		if err != nil {
			return nil, err
		}
		obj["project"] = map[string]string{"id": e.ProjectID, "name": name}
	}
	// The payload is shown under a key named after the event type, as
	// OpenAI does; types ekm adds (kms.call, …) render the same way.
	if !reserved[e.Type] {
		var payload any
		if len(e.Data) > 0 && json.Valid(e.Data) {
			payload = e.Data
		}
		obj[e.Type] = payload
	}
	return obj, nil
}

// actor renders who caused an event: null for ekm itself.
func (rd *auditRenderer) actor(ctx context.Context, keyID string) (any, error) {
	if keyID == "" {
		return nil, nil
	}
	if keyID == audit.ActorOperator {
		// The operator, on the command line (e.g. ekm org set-key).
		return map[string]any{"type": "operator"}, nil
	}
	k, seen := rd.keys[keyID]
	if !seen {
		got, err := rd.q.GetAPIKey(ctx, rd.org, keyID)
		switch {
		case err == nil:
			k = &got
		case !errors.Is(err, store.ErrNotFound):
			return nil, err
		}
		rd.keys[keyID] = k
	}
	apiKey := map[string]any{"id": keyID}
	switch {
	case k == nil:
		// The key was deleted since: only its id is known.
	case k.Kind == store.KindProject:
		apiKey["type"] = actorServiceAccount
		apiKey["service_account"] = map[string]string{"id": k.ServiceAccountID}
	default:
		apiKey["type"] = actorAdminKey
	}
	return map[string]any{"type": "api_key", "api_key": apiKey}, nil
}

func (rd *auditRenderer) project(ctx context.Context, id string) (string, error) {
	if name, ok := rd.projects[id]; ok {
		return name, nil
	}
	p, err := rd.q.GetProject(ctx, rd.org, id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return "", err
	}
	rd.projects[id] = p.Name
	return p.Name, nil
}
