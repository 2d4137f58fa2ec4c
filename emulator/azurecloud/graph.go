package azurecloud

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"
)

func graphError(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	rid := newGUID()
	cid := clientRequestID(r)
	if cid == "" {
		cid = rid
	}
	w.Header().Set("request-id", rid)
	w.Header().Set("client-request-id", cid)
	writeJSON(w, status, map[string]any{"error": map[string]any{
		"code": code, "message": msg,
		"innerError": map[string]string{"date": time.Now().UTC().Format("2006-01-02T15:04:05"), "request-id": rid, "client-request-id": cid},
	}})
}

var graphFilterRE = regexp.MustCompile(`(?i)^\s*appId\s+eq\s+'([^']{1,64})'\s*$`)

// graphAuth validates a Graph token and requires the tenant's admin.
func (e *Emulator) graphAuth(w http.ResponseWriter, r *http.Request) (*principal, *tenant, bool) {
	raw, present := bearer(r)
	if !present || raw == "" {
		graphError(w, r, http.StatusUnauthorized, "InvalidAuthenticationToken", "Access token is empty.")
		return nil, nil, false
	}
	p, prob := e.parseAccessToken(raw)
	switch prob {
	case tokMalformed:
		graphError(w, r, http.StatusUnauthorized, "InvalidAuthenticationToken", "IDX14100: JWT is not well formed.")
		return nil, nil, false
	case tokBadSignature:
		graphError(w, r, http.StatusUnauthorized, "InvalidAuthenticationToken", "Access token validation failure. Invalid signature.")
		return nil, nil, false
	case tokExpired, tokNotYetValid:
		graphError(w, r, http.StatusUnauthorized, "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired.")
		return nil, nil, false
	}
	if a := normResource(p.Audience); a != "https://graph.microsoft.com" && a != graphAppID {
		graphError(w, r, http.StatusUnauthorized, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience.")
		return nil, nil, false
	}
	e.mu.RLock()
	t := e.lookupTenant(p.TenantID)
	admin := t != nil && p.User && strings.EqualFold(p.ObjectID, t.AdminObjectID)
	e.mu.RUnlock()
	if !admin {
		graphError(w, r, http.StatusForbidden, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
		return nil, nil, false
	}
	return p, t, true
}

func (e *Emulator) spJSON(t *tenant, sp *servicePrinc, entity bool) map[string]any {
	a := e.st.Apps[strings.ToLower(sp.AppID)]
	name, owner := sp.AppID, ""
	if a != nil {
		name, owner = a.DisplayName, a.HomeTenantID
	}
	m := map[string]any{
		"id": sp.ID, "deletedDateTime": nil, "accountEnabled": true,
		"appDisplayName": name, "appId": sp.AppID, "appOwnerOrganizationId": owner,
		"appRoleAssignmentRequired": false, "createdDateTime": sp.Created.UTC().Format(time.RFC3339),
		"displayName": name, "servicePrincipalNames": []string{sp.AppID},
		"servicePrincipalType": "Application", "signInAudience": "AzureADMultipleOrgs",
		"tags": []string{}, "keyCredentials": []any{}, "passwordCredentials": []any{},
	}
	if entity {
		m["@odata.context"] = "https://graph.microsoft.com/v1.0/$metadata#servicePrincipals/$entity"
	}
	return m
}

func (e *Emulator) serveGraph(w http.ResponseWriter, r *http.Request) {
	segs := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(segs) < 2 || (segs[0] != "v1.0" && segs[0] != "beta") || len(segs) > 3 {
		e.counters.Inc("graph.other")
		graphError(w, r, http.StatusBadRequest, "BadRequest", "Resource not found for the segment '"+truncate(strings.Join(segs, "/"), 64)+"'.")
		return
	}
	res := segs[1]
	var op, id, appID string
	switch {
	case strings.EqualFold(res, "servicePrincipals") && len(segs) == 2:
		switch r.Method {
		case http.MethodPost:
			op = "graph.sp.create"
		case http.MethodGet:
			op = "graph.sp.list"
		}
	case strings.EqualFold(res, "servicePrincipals") && len(segs) == 3:
		id = segs[2]
	case len(res) > len("servicePrincipals(appId='')") && strings.EqualFold(res[:len("servicePrincipals(appId='")], "servicePrincipals(appId='") && strings.HasSuffix(res, "')") && len(segs) == 2:
		appID = res[len("servicePrincipals(appId='") : len(res)-2]
	}
	if op == "" && (id != "" || appID != "") {
		switch r.Method {
		case http.MethodGet:
			op = "graph.sp.get"
		case http.MethodDelete:
			op = "graph.sp.delete"
		case http.MethodPatch:
			op = "graph.sp.upsert"
		}
	}
	if op == "" {
		e.counters.Inc("graph.other")
		graphError(w, r, http.StatusBadRequest, "BadRequest", "The emulator supports only servicePrincipals create/get/list/delete/upsert.")
		return
	}
	if !e.begin(w, r, svcGraph, "graph.microsoft.com", op) {
		return
	}
	_, t, ok := e.graphAuth(w, r)
	if !ok {
		return
	}
	switch op {
	case "graph.sp.create":
		var req struct {
			AppID string `json:"appId"`
		}
		if err := readJSON(r, &req); err != nil {
			graphError(w, r, http.StatusBadRequest, "BadRequest", "Unable to read JSON request payload.")
			return
		}
		e.graphCreateSP(w, r, t, req.AppID, false)
	case "graph.sp.upsert":
		if appID == "" || !strings.Contains(strings.ToLower(r.Header.Get("Prefer")), "create-if-missing") {
			graphError(w, r, http.StatusBadRequest, "Request_BadRequest", "The emulator supports PATCH only as an upsert: servicePrincipals(appId='...') with 'Prefer: create-if-missing'.")
			return
		}
		e.graphCreateSP(w, r, t, appID, true)
	case "graph.sp.list":
		e.mu.RLock()
		defer e.mu.RUnlock()
		filter := r.URL.Query().Get("$filter")
		var want string
		if filter != "" {
			m := graphFilterRE.FindStringSubmatch(filter)
			if m == nil {
				graphError(w, r, http.StatusBadRequest, "Request_UnsupportedQuery", "The emulator supports only $filter=appId eq '...'.")
				return
			}
			want = m[1]
		}
		vals := []map[string]any{}
		for _, oid := range sortedKeys(t.SPs) {
			sp := t.SPs[oid]
			if want == "" || strings.EqualFold(sp.AppID, want) {
				vals = append(vals, e.spJSON(t, sp, false))
			}
		}
		writeJSON(w, http.StatusOK, map[string]any{"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#servicePrincipals", "value": vals})
	case "graph.sp.get", "graph.sp.delete":
		e.mu.Lock()
		defer e.mu.Unlock()
		sp := t.findSP(id, appID)
		if sp == nil {
			graphError(w, r, http.StatusNotFound, "Request_ResourceNotFound", fmt.Sprintf(
				"Resource '%s' does not exist or one of its queried reference-property objects are not present.", truncate(id+appID, 64)))
			return
		}
		if op == "graph.sp.get" {
			writeJSON(w, http.StatusOK, e.spJSON(t, sp, true))
			return
		}
		delete(t.SPs, sp.ID)
		if err := e.saveLocked(); err != nil {
			t.SPs[sp.ID] = sp
			graphError(w, r, http.StatusInternalServerError, "InternalServerError", "The emulator could not persist its state.")
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

func (t *tenant) findSP(id, appID string) *servicePrinc {
	if appID != "" {
		return t.spForApp(appID)
	}
	return t.SPs[strings.ToLower(id)]
}

var errSPExists = errors.New("service principal exists")

// addSP creates the app's service principal in t; callers hold e.mu.
func (e *Emulator) addSP(t *tenant, appID string) (*servicePrinc, error) {
	if t.spForApp(appID) != nil {
		return nil, errSPExists
	}
	sp := &servicePrinc{ID: newGUID(), AppID: strings.ToLower(appID), Created: e.clock.Now()}
	t.SPs[sp.ID] = sp
	return sp, nil
}

func (e *Emulator) graphCreateSP(w http.ResponseWriter, r *http.Request, t *tenant, appID string, upsert bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if appID == "" || e.st.Apps[strings.ToLower(appID)] == nil {
		graphError(w, r, http.StatusBadRequest, "Request_BadRequest", fmt.Sprintf(
			"The appId '%s' of the service principal does not reference a valid application object.", truncate(appID, 64)))
		return
	}
	sp, err := e.addSP(t, appID)
	if errors.Is(err, errSPExists) {
		if upsert {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		graphError(w, r, http.StatusConflict, "Request_MultipleObjectsWithSameKeyValue", fmt.Sprintf(
			"The service principal cannot be created, updated, or restored because the service principal name %s is already in use.", appID))
		return
	}
	if err := e.saveLocked(); err != nil {
		delete(t.SPs, sp.ID)
		graphError(w, r, http.StatusInternalServerError, "InternalServerError", "The emulator could not persist its state.")
		return
	}
	w.Header().Set("Location", "https://graph.microsoft.com/v2/"+t.ID+"/directoryObjects/"+sp.ID+"/Microsoft.DirectoryServices.ServicePrincipal")
	writeJSON(w, http.StatusCreated, e.spJSON(t, sp, true))
}
