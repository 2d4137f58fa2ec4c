package azurecloud

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// kvAPIVersions are the api-version values accepted by the data plane.
var kvAPIVersions = map[string]bool{"7.4": true, "7.5": true, "7.6": true, "2025-07-01": true}

const kvServiceVersion = "1.9.2564.1"

var (
	keyNameRE = regexp.MustCompile(`^[0-9a-zA-Z-]{1,127}$`)
	versionRE = regexp.MustCompile(`^[0-9a-fA-F]{32}$`)
)

var validKeyOps = []string{"encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey", "import", "export"}

// kvRoute is a parsed data-plane request.
type kvRoute struct {
	op      string // counter name, e.g. "kv.encrypt"
	action  string // RBAC data action
	name    string // key name ("" for collection ops)
	version string // "" = latest
	crypto  string // encrypt, decrypt, wrapkey, unwrapkey, sign, verify
	deleted bool   // a soft-deleted key: the resource is …/deletedkeys/{name}
	scope   string // Managed HSM role management: the scope ("/", "/keys", "/keys/{name}")
	item    string // Managed HSM role management: the assignment or definition name
}

var cryptoOps = map[string]struct{ keyOp, action string }{
	"encrypt":   {"encrypt", kvKeys + "encrypt/action"},
	"decrypt":   {"decrypt", kvKeys + "decrypt/action"},
	"wrapkey":   {"wrapKey", kvKeys + "wrap/action"},
	"unwrapkey": {"unwrapKey", kvKeys + "unwrap/action"},
	"sign":      {"sign", kvKeys + "sign/action"},
	"verify":    {"verify", kvKeys + "verify/action"},
}

// parseKVRoute maps method and path to an operation. Paths are those azkeys
// sends, including the versionless forms "/keys/{n}/" and "/keys/{n}/encrypt",
// and the empty-version form "/keys/{n}//encrypt" that other languages' SDKs
// build from a versionless key id (Key Vault serves the current version).
//
// Every action is a data action of Azure's published list for
// Microsoft.KeyVault (docs/emulator-azure.md, "Authorisation"): reading
// deleted keys is keys/read (Key Vault's "keys/get" and "keys/list"
// permissions), purging is keys/purge/action.
func parseKVRoute(method, path string) (kvRoute, bool) {
	segs := strings.Split(strings.TrimPrefix(path, "/"), "/")
	if len(segs) > 1 && segs[len(segs)-1] == "" && !(len(segs) == 3 && segs[0] == "keys") {
		segs = segs[:len(segs)-1] // tolerate a trailing slash
	}
	col := strings.ToLower(segs[0])
	read := kvKeys + "read"
	switch {
	case col == "keys" && len(segs) == 1 && method == http.MethodGet:
		return kvRoute{op: "kv.list", action: read}, true
	case col == "deletedkeys" && len(segs) == 1 && method == http.MethodGet:
		return kvRoute{op: "kv.list_deleted", action: read}, true
	case col == "deletedkeys" && len(segs) == 2:
		switch method {
		case http.MethodGet:
			return kvRoute{op: "kv.get_deleted", action: read, name: segs[1], deleted: true}, true
		case http.MethodDelete:
			return kvRoute{op: "kv.purge", action: kvKeys + "purge/action", name: segs[1], deleted: true}, true
		}
	case col == "deletedkeys" && len(segs) == 3 && strings.EqualFold(segs[2], "recover") && method == http.MethodPost:
		return kvRoute{op: "kv.recover", action: kvKeys + "recover/action", name: segs[1]}, true
	case col == "rng" && len(segs) == 1 && method == http.MethodPost:
		return kvRoute{op: "kv.rng", action: hsmRNGAction}, true
	case col == "keys" && len(segs) == 2 && strings.EqualFold(segs[1], "restore") && method == http.MethodPost:
		return kvRoute{op: "kv.restore", action: kvKeys + "restore/action"}, true
	case col != "keys":
	case len(segs) == 2 || (len(segs) == 3 && segs[2] == ""):
		n := segs[1]
		switch method {
		case http.MethodGet:
			return kvRoute{op: "kv.get", action: read, name: n}, true
		case http.MethodPatch:
			return kvRoute{op: "kv.update", action: kvKeys + "update/action", name: n}, true
		case http.MethodPut:
			if len(segs) == 2 {
				return kvRoute{op: "kv.import", action: kvKeys + "import/action", name: n}, true
			}
		case http.MethodDelete:
			if len(segs) == 2 {
				return kvRoute{op: "kv.delete", action: kvKeys + "delete", name: n}, true
			}
		}
	case len(segs) == 3:
		n, third := segs[1], strings.ToLower(segs[2])
		switch {
		case third == "create" && method == http.MethodPost:
			return kvRoute{op: "kv.create", action: kvKeys + "create/action", name: n}, true
		case third == "rotate" && method == http.MethodPost:
			return kvRoute{op: "kv.rotate", action: kvKeys + "rotate/action", name: n}, true
		case third == "versions" && method == http.MethodGet:
			return kvRoute{op: "kv.list_versions", action: read, name: n}, true
		case third == "backup" && method == http.MethodPost:
			return kvRoute{op: "kv.backup", action: kvKeys + "backup/action", name: n}, true
		case third == "release" && method == http.MethodPost:
			return kvRoute{op: "kv.release", action: kvKeys + "release/action", name: n}, true
		case third == "rotationpolicy" && method == http.MethodGet:
			return kvRoute{op: "kv.get_rotation_policy", action: kvRotationPolicies + "read", name: n}, true
		case third == "rotationpolicy" && method == http.MethodPut:
			return kvRoute{op: "kv.set_rotation_policy", action: kvRotationPolicies + "write", name: n}, true
		case method == http.MethodPost && cryptoOps[third].action != "":
			return kvRoute{op: "kv." + third, action: cryptoOps[third].action, name: n, crypto: third}, true
		case versionRE.MatchString(segs[2]) && method == http.MethodGet:
			return kvRoute{op: "kv.get", action: read, name: n, version: segs[2]}, true
		case versionRE.MatchString(segs[2]) && method == http.MethodPatch:
			return kvRoute{op: "kv.update", action: kvKeys + "update/action", name: n, version: segs[2]}, true
		}
	case len(segs) == 4 && method == http.MethodPost && (segs[2] == "" || versionRE.MatchString(segs[2])):
		op := strings.ToLower(segs[3])
		if c, ok := cryptoOps[op]; ok {
			return kvRoute{op: "kv." + op, action: c.action, name: segs[1], version: segs[2], crypto: op}, true
		}
		if op == "release" {
			return kvRoute{op: "kv.release", action: kvKeys + "release/action", name: segs[1], version: segs[2]}, true
		}
	case len(segs) == 4 && method == http.MethodGet && versionRE.MatchString(segs[2]) && strings.EqualFold(segs[3], "attestation"):
		return kvRoute{op: "kv.get_attestation", action: read, name: segs[1], version: segs[2]}, true
	}
	return kvRoute{op: "kv.invalid"}, false
}

func kvHeaders(w http.ResponseWriter, r *http.Request, location string) {
	h := w.Header()
	h.Set("x-ms-request-id", newGUID())
	h.Set("x-ms-keyvault-service-version", kvServiceVersion)
	if location != "" {
		h.Set("x-ms-keyvault-region", location)
	}
	h.Set("x-ms-keyvault-network-info", "conn_type=Ipv4;addr=127.0.0.1;act_addr_fam=InterNetwork;")
	h.Set("Cache-Control", "no-cache")
	h.Set("Strict-Transport-Security", "max-age=31536000;includeSubDomains")
	h.Set("X-Content-Type-Options", "nosniff")
	if id := clientRequestID(r); id != "" {
		h.Set("x-ms-client-request-id", id)
	}
}

func kvError(w http.ResponseWriter, status int, code, msg, inner string) {
	body := map[string]any{"code": code, "message": msg}
	if inner != "" {
		body["innererror"] = map[string]string{"code": inner}
	}
	writeJSON(w, status, map[string]any{"error": body})
}

func badParam(w http.ResponseWriter, msg string) {
	kvError(w, http.StatusBadRequest, "BadParameter", msg, "")
}

func keyNotFound(w http.ResponseWriter, name, version string) {
	id := name
	if version != "" {
		id += "/" + version
	}
	kvError(w, http.StatusNotFound, "KeyNotFound", fmt.Sprintf(
		"A key with (name/id) %s was not found in this key vault. If you recently deleted this key you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182", id), "")
}

// kvChallenge is Key Vault's 401: the SDK reads the tenant from the first
// path segment of authorization and the token scope from resource.
func kvChallenge(w http.ResponseWriter, tenantID, resource, msg string) {
	w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer authorization="https://login.microsoftonline.com/%s", resource="%s"`, tenantID, resource))
	kvError(w, http.StatusUnauthorized, "Unauthorized", msg, "")
}

// kvClaimsChallenge is a continuous access evaluation (CAE) challenge: the
// token is well formed and unexpired, but a critical event (here: its
// service principal was deleted) revoked it. A CAE-capable client answers by
// requesting a new token with these claims, which bypasses its token cache;
// Entra then refuses the deleted principal (AADSTS700016).
func kvClaimsChallenge(w http.ResponseWriter, now time.Time) {
	claims := fmt.Sprintf(`{"access_token":{"nbf":{"essential":true,"value":"%d"}}}`, now.Unix())
	w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", error="insufficient_claims", claims="%s"`,
		base64.StdEncoding.EncodeToString([]byte(claims))))
	kvError(w, http.StatusUnauthorized, "Unauthorized",
		"Continuous access evaluation resulted in challenge with result: InteractionRequired and code: PrincipalNotFound. The token's service principal no longer exists in the tenant.", "")
}

// principalExists reports whether an app token's object id is still a
// service principal of the tenant.
func (e *Emulator) principalExists(tenantID, objectID string) bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	t := e.lookupTenant(tenantID)
	return t != nil && t.SPs[strings.ToLower(objectID)] != nil
}

func (e *Emulator) serveVault(w http.ResponseWriter, r *http.Request, host, name, resource string) {
	hsm := strings.HasSuffix(host, hsmSuffix)
	e.mu.RLock()
	v := e.st.Vaults[name]
	if hsm {
		v = e.st.HSMs[name]
	}
	var tid, location string
	if v != nil {
		tid, location = v.TenantID, v.Location
	}
	e.mu.RUnlock()
	kvHeaders(w, r, location)
	if v == nil {
		// In Azure the name would not resolve in DNS at all.
		e.counters.Inc("kv.unknown_vault")
		kind, how := "vault", "Create it through ARM first."
		if hsm {
			kind, how = "Managed HSM", "Create it through ARM (Microsoft.KeyVault/managedHSMs) first."
		}
		kvError(w, http.StatusNotFound, "VaultNotFound", fmt.Sprintf(
			"The %s '%s' does not exist in the emulator (in Azure its DNS name would not resolve). %s", kind, truncate(name, 64), how), "")
		return
	}
	raw, present := bearer(r)
	if !present {
		// The challenge comes before any validation: the SDK's first request
		// for a client is deliberately sent without body or token.
		if e.begin(w, r, svcVault, host, "kv.challenge") {
			kvChallenge(w, tid, resource, "Request is missing a Bearer or PoP token.")
		}
		return
	}
	rt, ok := parseKVRoute(r.Method, r.URL.Path)
	if !ok && hsm {
		if hr, hok := parseHSMAdminRoute(r.Method, r.URL.Path); hok {
			rt, ok = hr, true
		}
	}
	if !e.begin(w, r, svcVault, host, rt.op) {
		return
	}
	p, msg := e.checkKVToken(raw, tid, resource, hsm)
	if p == nil {
		kvChallenge(w, tid, resource, msg)
		return
	}
	if p.CAE && !p.User && !e.principalExists(tid, p.ObjectID) {
		kvClaimsChallenge(w, e.clock.Now())
		return
	}
	apiVersion := r.URL.Query().Get("api-version")
	if apiVersion == "" {
		badParam(w, "The api-version query parameter is missing. Supported versions: 7.4, 7.5, 7.6, 2025-07-01.")
		return
	}
	if !kvAPIVersions[apiVersion] {
		badParam(w, fmt.Sprintf("The specified version (%s) is not recognized. Consider using the latest supported version (2025-07-01).", truncate(apiVersion, 32)))
		return
	}
	if !ok {
		kvError(w, http.StatusNotFound, "NotFound", "The requested path or method is not supported by Key Vault.", "")
		return
	}
	if rt.name != "" && !keyNameRE.MatchString(rt.name) {
		badParam(w, "The request URI contains an invalid name: "+truncate(rt.name, 130))
		return
	}
	if rt.op == "kv.rng" && !hsm {
		badParam(w, "Random bytes (POST /rng) are served by Managed HSM only, not by vaults.")
		return
	}
	if hsm {
		rt.action = hsmAction(rt)
	}
	e.housekeep(v)
	if !hsm && !e.throttle(w, r, v, rt) {
		return
	}
	if !e.authorizeKV(w, v, p, rt) {
		return
	}
	switch rt.op {
	case "kv.create":
		e.kvCreate(w, r, host, v, rt.name)
	case "kv.import":
		e.kvImport(w, r, host, v, rt.name)
	case "kv.get":
		e.kvGet(w, host, v, rt)
	case "kv.list":
		e.kvList(w, r, host, v, "")
	case "kv.list_versions":
		e.kvList(w, r, host, v, rt.name)
	case "kv.update":
		e.kvUpdate(w, r, host, v, rt)
	case "kv.rotate":
		e.kvRotate(w, host, v, rt.name)
	case "kv.delete":
		e.kvDelete(w, host, v, rt.name)
	case "kv.list_deleted":
		e.kvListDeleted(w, host, v)
	case "kv.get_deleted":
		e.kvGetDeleted(w, host, v, rt.name)
	case "kv.purge":
		e.kvPurge(w, v, rt.name)
	case "kv.recover":
		e.kvRecover(w, host, v, rt.name)
	case "kv.backup":
		e.kvBackup(w, v, rt.name)
	case "kv.restore":
		e.kvRestore(w, r, host, v)
	case "kv.get_rotation_policy":
		e.kvGetRotationPolicy(w, host, v, rt.name)
	case "kv.set_rotation_policy":
		e.kvPutRotationPolicy(w, r, host, v, rt.name)
	case "kv.release":
		e.kvRelease(w, r, host, v, rt, apiVersion)
	case "kv.rng":
		e.kvRNG(w, r, v)
	case "kv.get_attestation":
		kvError(w, http.StatusBadRequest, "BadParameter", "Key attestation is not emulated: the emulator's keys are not generated in a physical HSM.", "")
	default:
		if strings.HasPrefix(rt.op, "hsm.") {
			e.serveHSMAdmin(w, r, v, p, rt)
			return
		}
		e.kvCrypto(w, r, host, v, rt)
	}
}

// checkKVToken validates signature, lifetime, audience and issuer; on
// failure it returns Key Vault's 401 message.
func (e *Emulator) checkKVToken(raw, vaultTenant, resource string, hsm bool) (*principal, string) {
	p, prob := e.parseAccessToken(raw)
	switch prob {
	case tokMalformed:
		return nil, "AKV10000: Request is missing a Bearer or PoP token."
	case tokBadSignature:
		return nil, "AKV10031: Token signature validation failed."
	case tokExpired:
		return nil, "AKV10005: Token is expired."
	case tokNotYetValid:
		return nil, "AKV10004: Token is not yet valid."
	}
	aud := normResource(p.Audience)
	if aud != normResource(resource) && (hsm || aud != kvAppID) {
		return nil, fmt.Sprintf("AKV10022: Invalid audience. Expected %s, found: %s.", resource, truncate(p.Audience, 256))
	}
	want := "https://sts.windows.net/" + vaultTenant + "/"
	if !strings.EqualFold(p.Issuer, want) && !strings.EqualFold(p.Issuer, "https://login.microsoftonline.com/"+vaultTenant+"/v2.0") {
		return nil, fmt.Sprintf("AKV10032: Invalid issuer. Expected one of https://sts.windows.net/%s/, https://login.microsoftonline.com/%s/v2.0, https://login.windows.net/%s/, found %s.",
			vaultTenant, vaultTenant, vaultTenant, truncate(p.Issuer, 256))
	}
	return p, ""
}

// throttle charges the request against the vault's window. A create is
// charged at the HSM rate when its body asks for an HSM key.
func (e *Emulator) throttle(w http.ResponseWriter, r *http.Request, v *vault, rt kvRoute) bool {
	e.mu.RLock()
	t := e.st.Settings.Throttle
	kty, size, hsm := "RSA", 2048, false
	if k := v.Keys[strings.ToLower(rt.name)]; k != nil {
		kv := k.current()
		if rt.version != "" {
			if x := k.version(rt.version); x != nil {
				kv = x
			}
		}
		kty, size, hsm = strings.TrimSuffix(kv.Kty, "-HSM"), kv.Size, kv.hsm()
	}
	e.mu.RUnlock()
	if rt.op == "kv.create" || rt.op == "kv.import" {
		hsm = requestsHSMKey(r)
	}
	limit := t.RSA2048
	switch {
	case rt.op == "kv.create" || rt.op == "kv.import" || rt.op == "kv.rotate":
		limit = t.Create
	case kty == "EC":
		limit = t.EC
	case size == 3072:
		limit = t.RSA3072
	case size == 4096:
		limit = t.RSA4096
	}
	if hsm {
		limit = max(limit/2, 1)
	}
	ok, wait := e.limiter.allow(v.Name, e.clock.Now(), t, limit)
	if ok {
		return true
	}
	if t.RetryAfter {
		secs := int((wait + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
	}
	kvError(w, http.StatusTooManyRequests, "Throttled",
		"Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached", "")
	return false
}

// requestsHSMKey peeks at a create or import body (and puts it back) to
// see whether it asks for an HSM-protected key.
func requestsHSMKey(r *http.Request) bool {
	b, err := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(b))
	if err != nil {
		return false
	}
	var req struct {
		Kty string `json:"kty"`
		HSM bool   `json:"hsm"`
		Key struct {
			Kty string `json:"kty"`
		} `json:"key"`
	}
	if json.Unmarshal(b, &req) != nil {
		return false
	}
	return req.HSM || strings.HasSuffix(req.Kty, "-HSM") || strings.HasSuffix(req.Key.Kty, "-HSM")
}

// authorizeKV applies the vault's permission model.
func (e *Emulator) authorizeKV(w http.ResponseWriter, v *vault, p *principal, rt kvRoute) bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	t := e.st.Tenants[v.TenantID]
	res := v.resourceID()
	if rt.name != "" { // key-level operations, including listing a key's versions
		res += "/keys/" + rt.name
		if rt.deleted {
			res = v.resourceID() + "/deletedkeys/" + rt.name
		}
	}
	if v.HSM {
		return e.authorizeHSM(w, v, p, rt)
	}
	if !v.RBAC {
		op := strings.TrimPrefix(rt.op, "kv.")
		kvError(w, http.StatusForbidden, "Forbidden", fmt.Sprintf(
			"The user, group or application '%s' does not have keys %s permission on key vault '%s;location=%s'. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287",
			p.callerString(), op, v.Name, v.Location), "AccessDenied")
		return false
	}
	if t != nil && t.authorized(p.ObjectID, res, rt.action, true) {
		return true
	}
	// The RBAC docs allow public-key operations with read access; off by
	// default (see Settings.ReadAllowsPublicKeyOps).
	if t != nil && e.st.Settings.ReadAllowsPublicKeyOps && (rt.crypto == "encrypt" || rt.crypto == "wrapkey" || rt.crypto == "verify") &&
		t.authorized(p.ObjectID, res, kvKeys+"read", true) {
		return true
	}
	kvError(w, http.StatusForbidden, "Forbidden", fmt.Sprintf(
		"Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: %s\r\nAction: '%s'\r\nResource: '%s'\r\nAssignment: (not found)\r\nDenyAssignmentId: null\r\nDecisionReason: 'DeniedWithNoValidRBAC' \r\nVault: %s;location=%s\r\n",
		p.callerString(), rt.action, strings.ToLower(res), v.Name, v.Location), "ForbiddenByRbac")
	return false
}
