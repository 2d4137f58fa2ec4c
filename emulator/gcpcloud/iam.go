package gcpcloud

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ---- lookups (callers hold e.mu) ----

// projectLocked finds a project by id or number.
func (e *Emulator) projectLocked(idOrNumber string) *project {
	if p := e.st.Projects[idOrNumber]; p != nil {
		return p
	}
	for _, p := range e.st.Projects {
		if p.Number == idOrNumber {
			return p
		}
	}
	return nil
}

// poolLocked returns a pool (active or soft-deleted), purging it once
// its retention has passed. Callers hold e.mu for writing.
func (e *Emulator) poolLocked(p *project, id string) *pool {
	pl := p.Pools[id]
	if pl != nil && !pl.Deleted.IsZero() && !e.clock.Now().Before(pl.Deleted.Add(softDeleteRetention)) {
		delete(p.Pools, id)
		return nil
	}
	if pl != nil {
		for pid, pr := range pl.Providers {
			if !pr.Deleted.IsZero() && !e.clock.Now().Before(pr.Deleted.Add(softDeleteRetention)) {
				delete(pl.Providers, pid)
			}
		}
	}
	return pl
}

// serviceAccountLocked finds a service account by email or unique id.
func (e *Emulator) serviceAccountLocked(key string) *serviceAccount {
	key = strings.ToLower(key)
	for _, p := range e.st.Projects {
		if sa := p.ServiceAccounts[key]; sa != nil {
			return sa
		}
	}
	for _, p := range e.st.Projects {
		for _, sa := range p.ServiceAccounts {
			if sa.UniqueID == key {
				return sa
			}
		}
	}
	return nil
}

// ---- request helpers ----

// readBody decodes a JSON object body into fields, refusing unknown
// names as Google's front end does. An empty body is an empty object.
func readBody(r *http.Request, allowed ...string) (map[string]json.RawMessage, *apiError) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, invalidArg("Request body too large.")
	}
	m := map[string]json.RawMessage{}
	if strings.TrimSpace(string(b)) == "" {
		return m, nil
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, invalidArg("Invalid JSON payload received. %s", jsonErrText(err))
	}
	for k := range m {
		ok := false
		for _, a := range allowed {
			ok = ok || a == k
		}
		if !ok {
			return nil, &apiError{HTTP: 400, Status: "INVALID_ARGUMENT",
				Message: fmt.Sprintf("Invalid JSON payload received. Unknown name %q: Cannot find field.", k),
				Details: []any{map[string]any{"@type": "type.googleapis.com/google.rpc.BadRequest",
					"fieldViolations": []any{map[string]string{"description": fmt.Sprintf("Invalid JSON payload received. Unknown name %q: Cannot find field.", k)}}}}}
		}
	}
	return m, nil
}

func jsonErrText(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return "Unexpected token."
	}
	return "Expected an object."
}

// field decodes one field of a body; a type mismatch is INVALID_ARGUMENT.
func field(m map[string]json.RawMessage, name string, v any) (bool, *apiError) {
	raw, ok := m[name]
	if !ok || string(raw) == "null" {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return true, invalidArg("Invalid value at '%s': %s", name, strings.TrimPrefix(err.Error(), "json: "))
	}
	return true, nil
}

// splitVerb splits "a/b:verb" into ("a/b", "verb").
func splitVerb(path string) (string, string) {
	last := strings.LastIndexByte(path, '/')
	if i := strings.IndexByte(path[last+1:], ':'); i >= 0 {
		return path[:last+1+i], path[last+2+i:]
	}
	return path, ""
}

// ---- long-running operations ----

// opLog keeps the last operations for GET .../operations/{id}. Every
// operation is done when returned (the emulator has no propagation), so
// polling clients get the same answer. Not persisted.
type opLog struct {
	mu    sync.Mutex
	ops   map[string]map[string]any
	order []string
}

func (o *opLog) add(name string, op map[string]any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.ops == nil {
		o.ops = map[string]map[string]any{}
	}
	o.ops[name] = op
	o.order = append(o.order, name)
	if len(o.order) > 1000 {
		delete(o.ops, o.order[0])
		o.order = o.order[1:]
	}
}

func (o *opLog) get(name string) map[string]any {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.ops[name]
}

func (e *Emulator) operation(resourceName, typ string, resource map[string]any) map[string]any {
	name := resourceName + "/operations/" + randHex(16)
	resp := map[string]any{"@type": "type.googleapis.com/" + typ}
	for k, v := range resource {
		resp[k] = v
	}
	op := map[string]any{"name": name, "done": true, "response": resp}
	e.ops.add(name, op)
	return op
}

// ---- IAM API ----

func (e *Emulator) serveIAM(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), "/v1/")
	if !ok {
		e.begin(w, r, svcIAM, "iam.invalid")
		writeGoogleError(w, http.StatusNotFound, "NOT_FOUND", "The requested URL was not found on this server.")
		return
	}
	path, err := url.PathUnescape(rest)
	if err != nil {
		writeAPIError(w, invalidArg("Malformed path."))
		return
	}
	path, verb := splitVerb(path)
	parts := strings.Split(path, "/")
	switch {
	case len(parts) >= 2 && parts[0] == "projects" && len(parts) >= 3 && parts[2] == "serviceAccounts":
		e.serveServiceAccounts(w, r, parts, verb)
	case len(parts) >= 5 && parts[0] == "projects" && parts[2] == "locations" && parts[4] == "workloadIdentityPools":
		e.serveWIP(w, r, path, parts, verb)
	default:
		e.begin(w, r, svcIAM, "iam.invalid")
		writeGoogleError(w, http.StatusNotFound, "NOT_FOUND", "The requested URL was not found on this server.")
	}
}

// iamAuthorize authenticates and checks perm on the project (IAM
// resources inherit only from the project). resource is the name used
// in the denial. It returns the project (nil = deny) with e.mu held for
// writing; the caller unlocks.
func (e *Emulator) iamAuthorize(w http.ResponseWriter, r *http.Request, projectKey, perm, resource string) (*project, *apiError) {
	c, aerr := e.authenticate(w, r, "https://iam.googleapis.com/", scopeCloudPlatform, scopeIAM)
	if aerr != nil {
		return nil, aerr
	}
	e.mu.Lock()
	p := e.projectLocked(projectKey)
	if p == nil || !e.allowedLocked(c, perm, p.Policy) {
		e.mu.Unlock()
		return nil, permissionDenied("iam.googleapis.com", perm, resource)
	}
	return p, nil
}

func (e *Emulator) serveWIP(w http.ResponseWriter, r *http.Request, path string, parts []string, verb string) {
	// projects/P/locations/L/workloadIdentityPools[/POOL[/providers[/PROV]][/operations/ID]]
	var op, perm string
	n := len(parts)
	isOp := n >= 8 && parts[n-2] == "operations"
	if isOp {
		n -= 2
	}
	switch {
	case isOp && (n == 6 || n == 8) && r.Method == http.MethodGet && verb == "":
		op, perm = "iam.operations.get", "iam.workloadIdentityPools.get"
	case n == 5 && verb == "" && r.Method == http.MethodPost:
		op, perm = "iam.pools.create", "iam.workloadIdentityPools.create"
	case n == 5 && verb == "" && r.Method == http.MethodGet:
		op, perm = "iam.pools.list", "iam.workloadIdentityPools.list"
	case n == 6 && verb == "" && r.Method == http.MethodGet:
		op, perm = "iam.pools.get", "iam.workloadIdentityPools.get"
	case n == 6 && verb == "" && r.Method == http.MethodPatch:
		op, perm = "iam.pools.patch", "iam.workloadIdentityPools.update"
	case n == 6 && verb == "" && r.Method == http.MethodDelete:
		op, perm = "iam.pools.delete", "iam.workloadIdentityPools.delete"
	case n == 6 && verb == "undelete" && r.Method == http.MethodPost:
		op, perm = "iam.pools.undelete", "iam.workloadIdentityPools.undelete"
	case n == 7 && parts[6] == "providers" && verb == "" && r.Method == http.MethodPost:
		op, perm = "iam.providers.create", "iam.workloadIdentityPoolProviders.create"
	case n == 7 && parts[6] == "providers" && verb == "" && r.Method == http.MethodGet:
		op, perm = "iam.providers.list", "iam.workloadIdentityPoolProviders.list"
	case n == 8 && parts[6] == "providers" && verb == "" && r.Method == http.MethodGet:
		op, perm = "iam.providers.get", "iam.workloadIdentityPoolProviders.get"
	case n == 8 && parts[6] == "providers" && verb == "" && r.Method == http.MethodPatch:
		op, perm = "iam.providers.patch", "iam.workloadIdentityPoolProviders.update"
	case n == 8 && parts[6] == "providers" && verb == "" && r.Method == http.MethodDelete:
		op, perm = "iam.providers.delete", "iam.workloadIdentityPoolProviders.delete"
	case n == 8 && parts[6] == "providers" && verb == "undelete" && r.Method == http.MethodPost:
		op, perm = "iam.providers.undelete", "iam.workloadIdentityPoolProviders.undelete"
	default:
		e.begin(w, r, svcIAM, "iam.invalid")
		writeGoogleError(w, http.StatusNotFound, "NOT_FOUND", "The requested URL was not found on this server.")
		return
	}
	if _, ok := e.begin(w, r, svcIAM, op); !ok {
		return
	}
	if parts[3] != "global" {
		writeAPIError(w, invalidArg("The location %q is not supported; workload identity pools live in 'global'.", parts[3]))
		return
	}
	if !projectIDRE.MatchString(parts[1]) && !projectNumberRE.MatchString(parts[1]) {
		writeAPIError(w, invalidArg("Invalid project: %s", parts[1]))
		return
	}
	if n >= 6 && !validWIPID(parts[5]) {
		writeAPIError(w, invalidArg("Invalid workload identity pool id %q: it must be 4 to 32 lowercase letters, digits or hyphens and must not start with 'gcp-'.", parts[5]))
		return
	}
	if n == 8 && !validWIPID(parts[7]) {
		writeAPIError(w, invalidArg("Invalid workload identity pool provider id %q: it must be 4 to 32 lowercase letters, digits or hyphens and must not start with 'gcp-'.", parts[7]))
		return
	}
	resource := "//iam.googleapis.com/" + strings.Join(parts[:n], "/")
	if n == 5 || n == 7 {
		resource = "//iam.googleapis.com/" + strings.Join(parts[:4], "/")
		if n == 7 {
			resource = "//iam.googleapis.com/" + strings.Join(parts[:6], "/")
		}
	}
	p, aerr := e.iamAuthorize(w, r, parts[1], perm, resource)
	if aerr != nil {
		writeAPIError(w, aerr)
		return
	}
	defer e.mu.Unlock()
	if isOp {
		if o := e.ops.get(strings.Replace(path, "projects/"+parts[1]+"/", "projects/"+p.Number+"/", 1)); o != nil {
			writeJSON(w, o)
			return
		}
		writeAPIError(w, notFound("Operation %s not found.", path))
		return
	}
	now := e.clock.Now()
	var res any
	var err *apiError
	switch op {
	case "iam.pools.create":
		res, err = e.createPool(r, p, now)
	case "iam.pools.list":
		res, err = e.listPools(r, p)
	case "iam.providers.create":
		res, err = e.createProvider(r, p, parts[5], now)
	case "iam.providers.list":
		res, err = e.listProviders(r, p, parts[5])
	default:
		res, err = e.poolOrProvider(r, op, p, parts[5], n, parts, now)
	}
	if err != nil {
		writeAPIError(w, err)
		return
	}
	if changed := op != "iam.pools.get" && op != "iam.providers.get" && !strings.HasSuffix(op, ".list"); changed {
		if serr := e.saveLocked(); serr != nil {
			writeGoogleError(w, 500, "INTERNAL", "Internal error encountered.")
			return
		}
	}
	writeJSON(w, res)
}

func poolName(p *project, id string) string {
	return "projects/" + p.Number + "/locations/global/workloadIdentityPools/" + id
}

func poolJSON(p *project, pl *pool) map[string]any {
	m := map[string]any{"name": poolName(p, pl.ID), "state": "ACTIVE", "mode": "FEDERATION_ONLY"}
	if pl.DisplayName != "" {
		m["displayName"] = pl.DisplayName
	}
	if pl.Description != "" {
		m["description"] = pl.Description
	}
	if pl.Disabled {
		m["disabled"] = true
	}
	if !pl.Deleted.IsZero() {
		m["state"] = "DELETED"
		m["expireTime"] = timestamp(pl.Deleted.Add(softDeleteRetention))
	}
	return m
}

func providerJSON(p *project, pl *pool, pr *provider) map[string]any {
	m := map[string]any{"name": poolName(p, pl.ID) + "/providers/" + pr.ID, "state": "ACTIVE"}
	if pr.DisplayName != "" {
		m["displayName"] = pr.DisplayName
	}
	if pr.Description != "" {
		m["description"] = pr.Description
	}
	if pr.Disabled {
		m["disabled"] = true
	}
	if len(pr.AttributeMapping) > 0 {
		m["attributeMapping"] = pr.AttributeMapping
	}
	if pr.AttributeCondition != "" {
		m["attributeCondition"] = pr.AttributeCondition
	}
	o := map[string]any{"issuerUri": pr.IssuerURI}
	if len(pr.AllowedAudiences) > 0 {
		o["allowedAudiences"] = pr.AllowedAudiences
	}
	if pr.JWKSJSON != "" {
		o["jwksJson"] = pr.JWKSJSON
	}
	m["oidc"] = o
	if !pr.Deleted.IsZero() {
		m["state"] = "DELETED"
		m["expireTime"] = timestamp(pr.Deleted.Add(softDeleteRetention))
	}
	return m
}

// poolFields validates and applies the pool's writable fields present in
// body (all of them, or those in mask).
func poolFields(pl *pool, body map[string]json.RawMessage, mask map[string]bool) *apiError {
	want := func(f string) bool { return mask == nil || mask[f] }
	var s string
	if want("displayName") {
		pl.DisplayName = ""
		if _, err := field(body, "displayName", &s); err != nil {
			return err
		}
		if len([]rune(s)) > 32 {
			return invalidArg("The display name must be at most 32 characters.")
		}
		pl.DisplayName, s = s, ""
	}
	if want("description") {
		if _, err := field(body, "description", &s); err != nil {
			return err
		}
		if len([]rune(s)) > 256 {
			return invalidArg("The description must be at most 256 characters.")
		}
		pl.Description = s
	}
	if want("disabled") {
		var b bool
		if _, err := field(body, "disabled", &b); err != nil {
			return err
		}
		pl.Disabled = b
	}
	return nil
}

func (e *Emulator) createPool(r *http.Request, p *project, now time.Time) (any, *apiError) {
	id := r.URL.Query().Get("workloadIdentityPoolId")
	if !validWIPID(id) {
		return nil, invalidArg("Invalid workload identity pool id %q: it must be 4 to 32 lowercase letters, digits or hyphens and must not start with 'gcp-'.", id)
	}
	body, err := readBody(r, "name", "displayName", "description", "disabled", "mode", "state", "expireTime")
	if err != nil {
		return nil, err
	}
	var mode string
	if _, err := field(body, "mode", &mode); err != nil {
		return nil, err
	}
	if mode != "" && mode != "FEDERATION_ONLY" {
		return nil, invalidArg("Pool mode %s is not supported by the emulator (only FEDERATION_ONLY).", mode)
	}
	if existing := e.poolLocked(p, id); existing != nil {
		return nil, errf(http.StatusConflict, "ALREADY_EXISTS", "Requested entity already exists")
	}
	if len(p.Pools) >= 100 {
		return nil, errf(http.StatusTooManyRequests, "RESOURCE_EXHAUSTED", "Quota exceeded: a project can have at most 100 workload identity pools.")
	}
	pl := &pool{ID: id, Providers: map[string]*provider{}}
	if err := poolFields(pl, body, nil); err != nil {
		return nil, err
	}
	p.Pools[id] = pl
	return e.operation(poolName(p, id), "google.iam.v1.WorkloadIdentityPool", poolJSON(p, pl)), nil
}

type page struct {
	size, offset int
}

func parsePage(r *http.Request) (page, *apiError) {
	q := r.URL.Query()
	pg := page{size: 50}
	if s := q.Get("pageSize"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return pg, invalidArg("Invalid page size.")
		}
		if n > 0 {
			pg.size = min(n, 1000)
		}
	}
	if t := q.Get("pageToken"); t != "" {
		b, err := b64url.DecodeString(t)
		n, err2 := strconv.Atoi(string(b))
		if err != nil || err2 != nil || n < 0 {
			return pg, invalidArg("Invalid page token.")
		}
		pg.offset = n
	}
	return pg, nil
}

// slice pages items; it returns the page and the next token.
func pageOf[T any](items []T, pg page) ([]T, string) {
	if pg.offset >= len(items) {
		return nil, ""
	}
	end := min(pg.offset+pg.size, len(items))
	next := ""
	if end < len(items) {
		next = b64url.EncodeToString([]byte(strconv.Itoa(end)))
	}
	return items[pg.offset:end], next
}

func (e *Emulator) listPools(r *http.Request, p *project) (any, *apiError) {
	pg, err := parsePage(r)
	if err != nil {
		return nil, err
	}
	showDeleted := r.URL.Query().Get("showDeleted") == "true"
	var out []any
	for _, id := range sortedKeys(p.Pools) {
		pl := e.poolLocked(p, id)
		if pl == nil || !pl.Deleted.IsZero() && !showDeleted {
			continue
		}
		out = append(out, poolJSON(p, pl))
	}
	items, next := pageOf(out, pg)
	res := map[string]any{}
	if len(items) > 0 {
		res["workloadIdentityPools"] = items
	}
	if next != "" {
		res["nextPageToken"] = next
	}
	return res, nil
}

func (e *Emulator) listProviders(r *http.Request, p *project, poolID string) (any, *apiError) {
	pg, err := parsePage(r)
	if err != nil {
		return nil, err
	}
	pl := e.poolLocked(p, poolID)
	if pl == nil {
		return nil, notFound("Requested entity was not found.")
	}
	showDeleted := r.URL.Query().Get("showDeleted") == "true"
	var out []any
	for _, id := range sortedKeys(pl.Providers) {
		pr := pl.Providers[id]
		if !pr.Deleted.IsZero() && !showDeleted {
			continue
		}
		out = append(out, providerJSON(p, pl, pr))
	}
	items, next := pageOf(out, pg)
	res := map[string]any{}
	if len(items) > 0 {
		res["workloadIdentityPoolProviders"] = items
	}
	if next != "" {
		res["nextPageToken"] = next
	}
	return res, nil
}

// parseMask reads updateMask (camelCase or snake_case paths).
func parseMask(r *http.Request, allowed ...string) (map[string]bool, *apiError) {
	raw := r.URL.Query().Get("updateMask")
	if raw == "" {
		return nil, invalidArg("update_mask is required.")
	}
	mask := map[string]bool{}
	for _, f := range strings.Split(raw, ",") {
		f = snakeToCamel(strings.TrimSpace(f))
		ok := false
		for _, a := range allowed {
			ok = ok || a == f
		}
		if !ok {
			return nil, invalidArg("Invalid update_mask path: %s", f)
		}
		mask[f] = true
	}
	return mask, nil
}

func snakeToCamel(s string) string {
	var b strings.Builder
	up := false
	for _, c := range s {
		switch {
		case c == '_':
			up = true
		case up:
			b.WriteString(strings.ToUpper(string(c)))
			up = false
		default:
			b.WriteRune(c)
		}
	}
	return b.String()
}

func (e *Emulator) poolOrProvider(r *http.Request, op string, p *project, poolID string, n int, parts []string, now time.Time) (any, *apiError) {
	pl := e.poolLocked(p, poolID)
	if pl == nil {
		return nil, notFound("Requested entity was not found.")
	}
	if n == 6 {
		switch op {
		case "iam.pools.get":
			return poolJSON(p, pl), nil
		case "iam.pools.patch":
			if !pl.Deleted.IsZero() {
				return nil, preconditionFailed("Cannot update a deleted workload identity pool.", "STATE", poolName(p, pl.ID))
			}
			mask, err := parseMask(r, "displayName", "description", "disabled")
			if err != nil {
				return nil, err
			}
			body, err := readBody(r, "name", "displayName", "description", "disabled", "mode", "state", "expireTime")
			if err != nil {
				return nil, err
			}
			upd := *pl
			if err := poolFields(&upd, body, mask); err != nil {
				return nil, err
			}
			*pl = upd
			return e.operation(poolName(p, pl.ID), "google.iam.v1.WorkloadIdentityPool", poolJSON(p, pl)), nil
		case "iam.pools.delete":
			if !pl.Deleted.IsZero() {
				return nil, notFound("Requested entity was not found.")
			}
			pl.Deleted = now
			return e.operation(poolName(p, pl.ID), "google.iam.v1.WorkloadIdentityPool", poolJSON(p, pl)), nil
		case "iam.pools.undelete":
			if pl.Deleted.IsZero() {
				return nil, preconditionFailed("The workload identity pool is not deleted.", "STATE", poolName(p, pl.ID))
			}
			pl.Deleted = time.Time{}
			return e.operation(poolName(p, pl.ID), "google.iam.v1.WorkloadIdentityPool", poolJSON(p, pl)), nil
		}
	}
	pr := pl.Providers[parts[7]]
	if pr == nil {
		return nil, notFound("Requested entity was not found.")
	}
	name := poolName(p, pl.ID) + "/providers/" + pr.ID
	const typ = "google.iam.v1.WorkloadIdentityPoolProvider"
	switch op {
	case "iam.providers.get":
		return providerJSON(p, pl, pr), nil
	case "iam.providers.patch":
		if !pr.Deleted.IsZero() || !pl.Deleted.IsZero() {
			return nil, preconditionFailed("Cannot update a deleted workload identity pool provider.", "STATE", name)
		}
		mask, err := parseMask(r, "displayName", "description", "disabled", "attributeMapping", "attributeCondition",
			"oidc", "oidc.issuerUri", "oidc.allowedAudiences", "oidc.jwksJson")
		if err != nil {
			return nil, err
		}
		body, err := readBody(r, providerFields...)
		if err != nil {
			return nil, err
		}
		upd := *pr
		if err := providerFieldsApply(&upd, body, mask); err != nil {
			return nil, err
		}
		*pr = upd
		return e.operation(name, typ, providerJSON(p, pl, pr)), nil
	case "iam.providers.delete":
		if !pr.Deleted.IsZero() {
			return nil, notFound("Requested entity was not found.")
		}
		pr.Deleted = now
		return e.operation(name, typ, providerJSON(p, pl, pr)), nil
	case "iam.providers.undelete":
		if pr.Deleted.IsZero() {
			return nil, preconditionFailed("The workload identity pool provider is not deleted.", "STATE", name)
		}
		pr.Deleted = time.Time{}
		return e.operation(name, typ, providerJSON(p, pl, pr)), nil
	}
	return nil, notFound("Requested entity was not found.")
}

var providerFields = []string{"name", "displayName", "description", "disabled", "state", "expireTime",
	"attributeMapping", "attributeCondition", "oidc", "aws", "saml", "x509", "actorProviders"}

func (e *Emulator) createProvider(r *http.Request, p *project, poolID string, now time.Time) (any, *apiError) {
	id := r.URL.Query().Get("workloadIdentityPoolProviderId")
	if !validWIPID(id) {
		return nil, invalidArg("Invalid workload identity pool provider id %q: it must be 4 to 32 lowercase letters, digits or hyphens and must not start with 'gcp-'.", id)
	}
	pl := e.poolLocked(p, poolID)
	if pl == nil {
		return nil, notFound("Requested entity was not found.")
	}
	if !pl.Deleted.IsZero() {
		return nil, preconditionFailed("The workload identity pool is deleted.", "STATE", poolName(p, pl.ID))
	}
	body, err := readBody(r, providerFields...)
	if err != nil {
		return nil, err
	}
	if pl.Providers[id] != nil {
		return nil, errf(http.StatusConflict, "ALREADY_EXISTS", "Requested entity already exists")
	}
	if len(pl.Providers) >= 200 {
		return nil, errf(http.StatusTooManyRequests, "RESOURCE_EXHAUSTED", "Quota exceeded: a pool can have at most 200 providers.")
	}
	pr := &provider{ID: id}
	if err := providerFieldsApply(pr, body, nil); err != nil {
		return nil, err
	}
	pl.Providers[id] = pr
	return e.operation(poolName(p, pl.ID)+"/providers/"+id, "google.iam.v1.WorkloadIdentityPoolProvider", providerJSON(p, pl, pr)), nil
}

// providerFieldsApply validates and applies a provider body (all fields,
// or those in mask).
func providerFieldsApply(pr *provider, body map[string]json.RawMessage, mask map[string]bool) *apiError {
	want := func(f string) bool { return mask == nil || mask[f] }
	for _, f := range []string{"aws", "saml", "x509", "actorProviders"} {
		if raw, ok := body[f]; ok && string(raw) != "null" {
			return invalidArg("Only OIDC providers are supported by the emulator (got %q).", f)
		}
	}
	var pl pool
	pl.DisplayName, pl.Description, pl.Disabled = pr.DisplayName, pr.Description, pr.Disabled
	pmask := mask
	if mask != nil {
		pmask = map[string]bool{"displayName": mask["displayName"], "description": mask["description"], "disabled": mask["disabled"]}
	}
	if err := poolFields(&pl, body, pmask); err != nil {
		return err
	}
	pr.DisplayName, pr.Description, pr.Disabled = pl.DisplayName, pl.Description, pl.Disabled
	if want("attributeMapping") {
		var am map[string]string
		if _, err := field(body, "attributeMapping", &am); err != nil {
			return err
		}
		if err := validateMapping(am); err != nil {
			return err
		}
		pr.AttributeMapping = am
	}
	if want("attributeCondition") {
		var cond string
		if _, err := field(body, "attributeCondition", &cond); err != nil {
			return err
		}
		if err := validateCondition(cond); err != nil {
			return err
		}
		pr.AttributeCondition = cond
	}
	if want("oidc") || want("oidc.issuerUri") || want("oidc.allowedAudiences") || want("oidc.jwksJson") {
		var o struct {
			IssuerURI        *string   `json:"issuerUri"`
			AllowedAudiences *[]string `json:"allowedAudiences"`
			JWKSJSON         *string   `json:"jwksJson"`
			Extra            map[string]json.RawMessage
		}
		raw, present := body["oidc"]
		if mask == nil && (!present || string(raw) == "null") {
			return invalidArg("A provider needs an oidc block (other provider types are not emulated).")
		}
		if present {
			var keys map[string]json.RawMessage
			if err := json.Unmarshal(raw, &keys); err != nil {
				return invalidArg("Invalid value at 'oidc': expected an object.")
			}
			for k := range keys {
				if k != "issuerUri" && k != "allowedAudiences" && k != "jwksJson" {
					return invalidArg("Invalid JSON payload received. Unknown name %q at 'oidc': Cannot find field.", k)
				}
			}
			if err := json.Unmarshal(raw, &o); err != nil {
				return invalidArg("Invalid value at 'oidc': %v", err)
			}
		}
		whole := mask == nil || mask["oidc"]
		if whole || mask["oidc.issuerUri"] {
			iss := ""
			if o.IssuerURI != nil {
				iss = *o.IssuerURI
			}
			u, err := url.Parse(iss)
			if iss == "" || err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || len(iss) > 2000 {
				return invalidArg("The issuer URI must be a valid https URL.")
			}
			pr.IssuerURI = iss
		}
		if whole || mask["oidc.allowedAudiences"] {
			var auds []string
			if o.AllowedAudiences != nil {
				auds = *o.AllowedAudiences
			}
			if len(auds) > 10 {
				return invalidArg("At most 10 allowed audiences can be specified.")
			}
			for _, a := range auds {
				if a == "" || len(a) > 256 {
					return invalidArg("Each allowed audience must be 1 to 256 characters.")
				}
			}
			pr.AllowedAudiences = auds
		}
		if whole || mask["oidc.jwksJson"] {
			js := ""
			if o.JWKSJSON != nil {
				js = *o.JWKSJSON
			}
			if js != "" {
				if _, err := parseJWKS([]byte(js), true); err != nil {
					return invalidArg("Input JWK is not in a valid json format.")
				}
			}
			pr.JWKSJSON = js
		}
	}
	if pr.AttributeMapping["google.subject"] == "" {
		return invalidArg("The attribute mapping must contain a mapping for 'google.subject'.")
	}
	return nil
}

func validateMapping(am map[string]string) *apiError {
	if len(am) == 0 {
		return invalidArg("The attribute mapping must contain a mapping for 'google.subject'.")
	}
	custom, total := 0, 0
	for k, v := range am {
		switch {
		case k == "google.subject" || k == "google.groups":
		case strings.HasPrefix(k, "attribute."):
			if !attrNameRE.MatchString(strings.TrimPrefix(k, "attribute.")) {
				return invalidArg("Invalid attribute mapping key %q: custom attribute names must be 1 to 100 characters of [a-z0-9_].", k)
			}
			custom++
		default:
			return invalidArg("Invalid attribute mapping key %q: use google.subject, google.groups or attribute.NAME.", k)
		}
		if len(v) == 0 || len(v) > 2048 {
			return invalidArg("The attribute mapping expression for %q must be 1 to 2048 characters.", k)
		}
		if _, err := parseCEL(v, "assertion"); err != nil {
			return invalidArg("Invalid attribute mapping expression for %q: %v", k, err)
		}
		total += len(k) + len(v)
	}
	if custom > 50 {
		return invalidArg("At most 50 custom attributes can be mapped.")
	}
	return nil
}

func validateCondition(cond string) *apiError {
	if cond == "" {
		return nil
	}
	if len(cond) > 4096 {
		return invalidArg("The attribute condition must be at most 4096 characters.")
	}
	if strings.TrimSpace(cond) == "true" {
		return invalidArg("The attribute condition must not be the constant 'true'.")
	}
	if _, err := parseCEL(cond, "assertion", "google", "attribute"); err != nil {
		return invalidArg("Invalid attribute condition: %v", err)
	}
	return nil
}

// ---- service accounts ----

func saJSON(sa *serviceAccount, p *project) map[string]any {
	m := map[string]any{"name": "projects/" + sa.ProjectID + "/serviceAccounts/" + sa.Email, "projectId": sa.ProjectID,
		"uniqueId": sa.UniqueID, "email": sa.Email, "etag": sa.Etag, "oauth2ClientId": sa.UniqueID}
	if sa.DisplayName != "" {
		m["displayName"] = sa.DisplayName
	}
	if sa.Description != "" {
		m["description"] = sa.Description
	}
	if sa.Disabled {
		m["disabled"] = true
	}
	return m
}

func saKeyJSON(sa *serviceAccount, k *saKey) map[string]any {
	return map[string]any{"name": "projects/" + sa.ProjectID + "/serviceAccounts/" + sa.Email + "/keys/" + k.ID,
		"validAfterTime": timestamp(k.Created), "validBeforeTime": "9999-12-31T23:59:59Z",
		"keyAlgorithm": "KEY_ALG_RSA_2048", "keyOrigin": "GOOGLE_PROVIDED", "keyType": "USER_MANAGED"}
}

func (e *Emulator) serveServiceAccounts(w http.ResponseWriter, r *http.Request, parts []string, verb string) {
	n := len(parts)
	var op, perm string
	switch {
	case n == 3 && verb == "" && r.Method == http.MethodPost:
		op, perm = "iam.serviceaccounts.create", "iam.serviceAccounts.create"
	case n == 3 && verb == "" && r.Method == http.MethodGet:
		op, perm = "iam.serviceaccounts.list", "iam.serviceAccounts.list"
	case n == 4 && verb == "" && r.Method == http.MethodGet:
		op, perm = "iam.serviceaccounts.get", "iam.serviceAccounts.get"
	case n == 4 && verb == "getIamPolicy" && r.Method == http.MethodPost:
		op, perm = "iam.serviceaccounts.getiampolicy", "iam.serviceAccounts.getIamPolicy"
	case n == 4 && verb == "setIamPolicy" && r.Method == http.MethodPost:
		op, perm = "iam.serviceaccounts.setiampolicy", "iam.serviceAccounts.setIamPolicy"
	case n == 5 && parts[4] == "keys" && verb == "" && r.Method == http.MethodPost:
		op, perm = "iam.serviceaccountkeys.create", "iam.serviceAccountKeys.create"
	case n == 5 && parts[4] == "keys" && verb == "" && r.Method == http.MethodGet:
		op, perm = "iam.serviceaccountkeys.list", "iam.serviceAccountKeys.list"
	default:
		e.begin(w, r, svcIAM, "iam.invalid")
		writeGoogleError(w, http.StatusNotFound, "NOT_FOUND", "The requested URL was not found on this server.")
		return
	}
	if _, ok := e.begin(w, r, svcIAM, op); !ok {
		return
	}
	c, aerr := e.authenticate(w, r, "https://iam.googleapis.com/", scopeCloudPlatform, scopeIAM)
	if aerr != nil {
		writeAPIError(w, aerr)
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.clock.Now()
	resName := strings.Join(parts[:min(n, 4)], "/")
	var p *project
	var sa *serviceAccount
	if n >= 4 {
		sa = e.serviceAccountLocked(parts[3])
		if sa != nil && parts[1] != "-" && e.projectLocked(parts[1]) != e.st.Projects[sa.ProjectID] {
			sa = nil
		}
		if sa != nil {
			p = e.st.Projects[sa.ProjectID]
		}
	} else {
		p = e.projectLocked(parts[1])
	}
	policies := []*policy{}
	if p != nil {
		policies = append(policies, p.Policy)
	}
	if sa != nil {
		policies = append(policies, sa.Policy)
	}
	if (p == nil && n == 3) || !e.allowedLocked(c, perm, policies...) {
		writeAPIError(w, permissionDenied("iam.googleapis.com", perm, resName))
		return
	}
	if n >= 4 && sa == nil {
		writeAPIError(w, notFound("Unknown service account"))
		return
	}
	switch op {
	case "iam.serviceaccounts.create":
		body, err := readBody(r, "accountId", "serviceAccount")
		if err != nil {
			writeAPIError(w, err)
			return
		}
		var id string
		var meta struct {
			DisplayName string `json:"displayName"`
			Description string `json:"description"`
		}
		field(body, "accountId", &id)
		if _, err := field(body, "serviceAccount", &meta); err != nil {
			writeAPIError(w, err)
			return
		}
		if !saAccountIDRE.MatchString(id) {
			writeAPIError(w, invalidArg("Invalid account ID %q: it must be 6 to 30 lowercase letters, digits or hyphens, start with a letter and not end with a hyphen.", id))
			return
		}
		if p.ServiceAccounts[id+"@"+p.ID+".iam.gserviceaccount.com"] != nil {
			writeAPIError(w, errf(http.StatusConflict, "ALREADY_EXISTS", "Service account %s already exists within project projects/%s.", id, p.ID))
			return
		}
		if len(meta.DisplayName) > 100 || len(meta.Description) > 256 {
			writeAPIError(w, invalidArg("The display name must be at most 100 and the description at most 256 characters."))
			return
		}
		sa, _ := newServiceAccount(p, id, meta.DisplayName, now)
		sa.Description = meta.Description
		writeJSON(w, saJSON(sa, p))
	case "iam.serviceaccounts.list":
		var out []any
		for _, email := range sortedKeys(p.ServiceAccounts) {
			out = append(out, saJSON(p.ServiceAccounts[email], p))
		}
		res := map[string]any{}
		if len(out) > 0 {
			res["accounts"] = out
		}
		writeJSON(w, res)
		return
	case "iam.serviceaccounts.get":
		writeJSON(w, saJSON(sa, p))
		return
	case "iam.serviceaccounts.getiampolicy":
		writeJSON(w, policyJSON(sa.Policy))
		return
	case "iam.serviceaccounts.setiampolicy":
		var in struct {
			Policy     policyIn `json:"policy"`
			UpdateMask string   `json:"updateMask"`
		}
		body, err := readBody(r, "policy", "updateMask")
		if err != nil {
			writeAPIError(w, err)
			return
		}
		if _, err := field(body, "policy", &in.Policy); err != nil {
			writeAPIError(w, err)
			return
		}
		if err := setPolicy(sa.Policy, "serviceAccount", &in.Policy, now); err != nil {
			writeAPIError(w, err)
			return
		}
		writeJSON(w, policyJSON(sa.Policy))
	case "iam.serviceaccountkeys.create":
		body, err := readBody(r, "privateKeyType", "keyAlgorithm")
		if err != nil {
			writeAPIError(w, err)
			return
		}
		var typ, alg string
		field(body, "privateKeyType", &typ)
		field(body, "keyAlgorithm", &alg)
		if typ != "" && typ != "TYPE_GOOGLE_CREDENTIALS_FILE" || alg != "" && alg != "KEY_ALG_RSA_2048" {
			writeAPIError(w, invalidArg("Only privateKeyType TYPE_GOOGLE_CREDENTIALS_FILE and keyAlgorithm KEY_ALG_RSA_2048 are supported by the emulator."))
			return
		}
		if len(sa.Keys) >= 10 {
			writeAPIError(w, preconditionFailed("Precondition check failed.", "KEY_LIMIT", "projects/"+sa.ProjectID+"/serviceAccounts/"+sa.Email))
			return
		}
		k, kerr := sa.addKey(now)
		if kerr != nil {
			writeGoogleError(w, 500, "INTERNAL", "Internal error encountered.")
			return
		}
		m := saKeyJSON(sa, k)
		m["privateKeyType"] = "TYPE_GOOGLE_CREDENTIALS_FILE"
		m["privateKeyData"] = b64std.EncodeToString(sa.keyFileJSON(k))
		if err := e.saveLocked(); err != nil {
			writeGoogleError(w, 500, "INTERNAL", "Internal error encountered.")
			return
		}
		writeJSON(w, m)
		return
	case "iam.serviceaccountkeys.list":
		var out []any
		for _, k := range sa.Keys {
			out = append(out, saKeyJSON(sa, k))
		}
		writeJSON(w, map[string]any{"keys": out})
		return
	}
	if err := e.saveLocked(); err != nil {
		e.log.Error("gcp emulator: save state", "err", err)
	}
}

// sortStrings is sort.Strings returning its argument.
func sortStrings(s []string) []string { sort.Strings(s); return s }
