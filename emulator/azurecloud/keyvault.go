package azurecloud

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// kvAPIVersions are the api-version values accepted by the data plane.
var kvAPIVersions = map[string]bool{"7.4": true, "7.5": true, "7.6": true, "2025-07-01": true}

const kvServiceVersion = "1.9.2564.1"

var curves = map[string]elliptic.Curve{"P-256": elliptic.P256(), "P-384": elliptic.P384(), "P-521": elliptic.P521()}

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
// sends, including the versionless forms "/keys/{n}/" and "/keys/{n}/encrypt".
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
		return kvRoute{op: "kv.list_deleted", action: "Microsoft.KeyVault/vaults/deletedKeys/read"}, true
	case col == "deletedkeys" && len(segs) == 2:
		switch method {
		case http.MethodGet:
			return kvRoute{op: "kv.get_deleted", action: "Microsoft.KeyVault/vaults/deletedKeys/read", name: segs[1]}, true
		case http.MethodDelete:
			return kvRoute{op: "kv.purge", action: "Microsoft.KeyVault/vaults/deletedKeys/delete", name: segs[1]}, true
		}
	case col == "deletedkeys" && len(segs) == 3 && strings.EqualFold(segs[2], "recover") && method == http.MethodPost:
		return kvRoute{op: "kv.recover", action: kvKeys + "recover/action", name: segs[1]}, true
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
		case method == http.MethodPost && cryptoOps[third].action != "":
			return kvRoute{op: "kv." + third, action: cryptoOps[third].action, name: n, crypto: third}, true
		case versionRE.MatchString(segs[2]) && method == http.MethodGet:
			return kvRoute{op: "kv.get", action: read, name: n, version: segs[2]}, true
		case versionRE.MatchString(segs[2]) && method == http.MethodPatch:
			return kvRoute{op: "kv.update", action: kvKeys + "update/action", name: n, version: segs[2]}, true
		}
	case len(segs) == 4 && method == http.MethodPost && versionRE.MatchString(segs[2]):
		op := strings.ToLower(segs[3])
		if c, ok := cryptoOps[op]; ok {
			return kvRoute{op: "kv." + op, action: c.action, name: segs[1], version: segs[2], crypto: op}, true
		}
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
	e.mu.RLock()
	v := e.st.Vaults[name]
	var tid, location string
	if v != nil {
		tid, location = v.TenantID, v.Location
	}
	e.mu.RUnlock()
	kvHeaders(w, r, location)
	if v == nil {
		// In Azure the name would not resolve in DNS at all.
		e.counters.Inc("kv.unknown_vault")
		kvError(w, http.StatusNotFound, "VaultNotFound", fmt.Sprintf(
			"The vault '%s' does not exist in the emulator (in Azure its DNS name would not resolve). Create it through ARM first.", truncate(name, 64)), "")
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
	if !e.begin(w, r, svcVault, host, rt.op) {
		return
	}
	p, msg := e.checkKVToken(raw, tid, resource)
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
	if !e.throttle(w, v, rt) {
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
	default:
		e.kvCrypto(w, r, host, v, rt)
	}
}

// checkKVToken validates signature, lifetime, audience and issuer; on
// failure it returns Key Vault's 401 message.
func (e *Emulator) checkKVToken(raw, vaultTenant, resource string) (*principal, string) {
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
	if aud != normResource(resource) && aud != kvAppID {
		return nil, fmt.Sprintf("AKV10022: Invalid audience. Expected %s, found: %s.", resource, truncate(p.Audience, 256))
	}
	want := "https://sts.windows.net/" + vaultTenant + "/"
	if !strings.EqualFold(p.Issuer, want) && !strings.EqualFold(p.Issuer, "https://login.microsoftonline.com/"+vaultTenant+"/v2.0") {
		return nil, fmt.Sprintf("AKV10032: Invalid issuer. Expected one of https://sts.windows.net/%s/, https://login.microsoftonline.com/%s/v2.0, https://login.windows.net/%s/, found %s.",
			vaultTenant, vaultTenant, vaultTenant, truncate(p.Issuer, 256))
	}
	return p, ""
}

// throttle charges the request against the vault's window.
func (e *Emulator) throttle(w http.ResponseWriter, v *vault, rt kvRoute) bool {
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

// authorizeKV applies the vault's permission model.
func (e *Emulator) authorizeKV(w http.ResponseWriter, v *vault, p *principal, rt kvRoute) bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	t := e.st.Tenants[v.TenantID]
	res := v.resourceID()
	if rt.name != "" { // key-level operations, including listing a key's versions
		res += "/keys/" + rt.name
		if strings.Contains(rt.action, "deletedKeys") {
			res = v.resourceID() + "/deletedkeys/" + rt.name
		}
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

// ---- key bodies ----

type attrsIn struct {
	Enabled    *bool  `json:"enabled"`
	NBF        *int64 `json:"nbf"`
	EXP        *int64 `json:"exp"`
	Exportable *bool  `json:"exportable"`
}

type jwkOut struct {
	Kid    string   `json:"kid"`
	Kty    string   `json:"kty"`
	KeyOps []string `json:"key_ops"`
	N      string   `json:"n,omitempty"`
	E      string   `json:"e,omitempty"`
	Crv    string   `json:"crv,omitempty"`
	X      string   `json:"x,omitempty"`
	Y      string   `json:"y,omitempty"`
}

type attrsOut struct {
	Enabled         bool   `json:"enabled"`
	NBF             *int64 `json:"nbf,omitempty"`
	EXP             *int64 `json:"exp,omitempty"`
	Created         int64  `json:"created"`
	Updated         int64  `json:"updated"`
	RecoveryLevel   string `json:"recoveryLevel"`
	RecoverableDays int    `json:"recoverableDays"`
	Exportable      bool   `json:"exportable"`
}

type bundleOut struct {
	Key        jwkOut            `json:"key"`
	Attributes attrsOut          `json:"attributes"`
	Tags       map[string]string `json:"tags,omitempty"`
	// Deleted-key fields.
	RecoveryID         string `json:"recoveryId,omitempty"`
	DeletedDate        int64  `json:"deletedDate,omitempty"`
	ScheduledPurgeDate int64  `json:"scheduledPurgeDate,omitempty"`
}

type itemOut struct {
	Kid        string            `json:"kid"`
	Attributes attrsOut          `json:"attributes"`
	Tags       map[string]string `json:"tags,omitempty"`
	// Deleted-key fields.
	RecoveryID         string `json:"recoveryId,omitempty"`
	DeletedDate        int64  `json:"deletedDate,omitempty"`
	ScheduledPurgeDate int64  `json:"scheduledPurgeDate,omitempty"`
}

func keyURL(host, name string) string { return "https://" + host + "/keys/" + name }

func (kv *keyVersion) attrs() attrsOut {
	return attrsOut{Enabled: kv.Enabled, NBF: kv.NBF, EXP: kv.EXP, Created: kv.Created, Updated: kv.Updated,
		RecoveryLevel: "Recoverable+Purgeable", RecoverableDays: 90}
}

func (kv *keyVersion) bundle(host, name string) bundleOut {
	j := jwkOut{Kid: keyURL(host, name) + "/" + kv.Version, Kty: kv.Kty, KeyOps: slices.Clone(kv.Ops)}
	switch pub := kv.priv.Public().(type) {
	case *rsa.PublicKey:
		j.N, j.E = rsaJWK(pub)
	case *ecdsa.PublicKey:
		j.Crv = kv.Curve
		size := (pub.Curve.Params().BitSize + 7) / 8
		j.X = b64url.EncodeToString(pub.X.FillBytes(make([]byte, size)))
		j.Y = b64url.EncodeToString(pub.Y.FillBytes(make([]byte, size)))
	}
	if j.KeyOps == nil {
		j.KeyOps = []string{}
	}
	return bundleOut{Key: j, Attributes: kv.attrs(), Tags: kv.Tags}
}

func validateTags(tags map[string]string) error {
	if len(tags) > 15 {
		return errors.New("A maximum of 15 tags are allowed.")
	}
	for k, v := range tags {
		if k == "" || len(k) > 512 || len(v) > 256 {
			return errors.New("Tag names must be 1-512 characters and values at most 256 characters.")
		}
	}
	return nil
}

func validateOps(ops []string) error {
	for _, o := range ops {
		if !slices.Contains(validKeyOps, o) {
			return fmt.Errorf("Invalid key operation: %s.", truncate(o, 32))
		}
	}
	return nil
}

type createReq struct {
	Kty            string            `json:"kty"`
	KeySize        *int              `json:"key_size"`
	PublicExponent *int              `json:"public_exponent"`
	KeyOps         []string          `json:"key_ops"`
	Attributes     *attrsIn          `json:"attributes"`
	Tags           map[string]string `json:"tags"`
	Crv            string            `json:"crv"`
}

// newVersion generates key material per a create request.
func newVersion(req createReq, now time.Time) (*keyVersion, error) {
	kv := &keyVersion{Version: randHex(16), Kty: req.Kty, Enabled: true, Created: now.Unix(), Updated: now.Unix()}
	switch req.Kty {
	case "RSA", "RSA-HSM":
		kv.Size = 2048
		if req.KeySize != nil {
			kv.Size = *req.KeySize
		}
		if kv.Size != 2048 && kv.Size != 3072 && kv.Size != 4096 {
			return nil, fmt.Errorf("The key size %d is not supported. Supported sizes are 2048, 3072 and 4096.", kv.Size)
		}
		if req.PublicExponent != nil && *req.PublicExponent != 65537 {
			return nil, errors.New("Only the public exponent 65537 is supported.")
		}
		k, err := rsa.GenerateKey(rand.Reader, kv.Size)
		if err != nil {
			return nil, err
		}
		kv.priv = k
		kv.Ops = []string{"encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"}
	case "EC", "EC-HSM":
		kv.Curve = req.Crv
		if kv.Curve == "" {
			kv.Curve = "P-256"
		}
		c, ok := curves[kv.Curve]
		if !ok {
			return nil, fmt.Errorf("The curve %s is not supported by the emulator. Supported curves are P-256, P-384 and P-521.", truncate(kv.Curve, 16))
		}
		k, err := ecdsa.GenerateKey(c, rand.Reader)
		if err != nil {
			return nil, err
		}
		kv.priv = k
		kv.Ops = []string{"sign", "verify"}
	case "":
		return nil, errors.New("The property kty is required.")
	default:
		return nil, fmt.Errorf("The key type %s is not supported by this vault. Supported types are RSA, RSA-HSM, EC and EC-HSM.", truncate(req.Kty, 16))
	}
	if req.KeyOps != nil {
		if err := validateOps(req.KeyOps); err != nil {
			return nil, err
		}
		kv.Ops = slices.Clone(req.KeyOps)
	}
	if err := validateTags(req.Tags); err != nil {
		return nil, err
	}
	kv.Tags = req.Tags
	applyAttrs(kv, req.Attributes)
	der, err := x509.MarshalPKCS8PrivateKey(kv.priv)
	if err != nil {
		return nil, err
	}
	kv.PrivDER = der
	return kv, nil
}

func applyAttrs(kv *keyVersion, a *attrsIn) {
	if a == nil {
		return
	}
	if a.Enabled != nil {
		kv.Enabled = *a.Enabled
	}
	if a.NBF != nil {
		kv.NBF = a.NBF
	}
	if a.EXP != nil {
		kv.EXP = a.EXP
	}
}

// maxKeysPerVault and maxVersionsPerKey bound memory use.
const (
	maxKeysPerVault   = 10_000
	maxVersionsPerKey = 500
)

func deletedConflict(w http.ResponseWriter, name string) {
	kvError(w, http.StatusConflict, "Conflict", fmt.Sprintf(
		"Key %s is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the key can only be recovered or purged.", name), "")
}

// addVersion stores a new version and answers with its bundle.
func (e *Emulator) addVersion(w http.ResponseWriter, host string, v *vault, name string, kv *keyVersion) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ln := strings.ToLower(name)
	if v.Deleted[ln] != nil {
		deletedConflict(w, name)
		return
	}
	k := v.Keys[ln]
	if k == nil {
		if len(v.Keys) >= maxKeysPerVault {
			badParam(w, "The emulator's per-vault key limit was reached.")
			return
		}
		k = &key{Name: name}
		v.Keys[ln] = k
	}
	if len(k.Versions) >= maxVersionsPerKey {
		badParam(w, "The emulator's per-key version limit was reached.")
		return
	}
	k.Versions = append(k.Versions, kv)
	if err := e.saveLocked(); err != nil {
		k.Versions = k.Versions[:len(k.Versions)-1]
		if len(k.Versions) == 0 {
			delete(v.Keys, ln)
		}
		kvError(w, http.StatusInternalServerError, "InternalError", "The emulator could not persist its state.", "")
		return
	}
	writeJSON(w, http.StatusOK, kv.bundle(host, k.Name))
}

func (e *Emulator) kvCreate(w http.ResponseWriter, r *http.Request, host string, v *vault, name string) {
	var req createReq
	if err := readJSON(r, &req); err != nil {
		badParam(w, err.Error())
		return
	}
	kv, err := newVersion(req, e.clock.Now())
	if err != nil {
		badParam(w, err.Error())
		return
	}
	e.addVersion(w, host, v, name, kv)
}

type importReq struct {
	Key struct {
		Kty string   `json:"kty"`
		N   string   `json:"n"`
		E   string   `json:"e"`
		D   string   `json:"d"`
		P   string   `json:"p"`
		Q   string   `json:"q"`
		Crv string   `json:"crv"`
		X   string   `json:"x"`
		Y   string   `json:"y"`
		Ops []string `json:"key_ops"`
	} `json:"key"`
	HSM        bool              `json:"hsm"`
	Attributes *attrsIn          `json:"attributes"`
	Tags       map[string]string `json:"tags"`
}

func (e *Emulator) kvImport(w http.ResponseWriter, r *http.Request, host string, v *vault, name string) {
	var req importReq
	if err := readJSON(r, &req); err != nil {
		badParam(w, err.Error())
		return
	}
	now := e.clock.Now()
	kv := &keyVersion{Version: randHex(16), Enabled: true, Created: now.Unix(), Updated: now.Unix()}
	ints := func(ss ...string) ([]*big.Int, bool) {
		var out []*big.Int
		for _, s := range ss {
			b, err := decodeB64URL(s)
			if err != nil || len(b) == 0 || len(b) > 1024 {
				return nil, false
			}
			out = append(out, new(big.Int).SetBytes(b))
		}
		return out, true
	}
	switch strings.TrimSuffix(req.Key.Kty, "-HSM") {
	case "RSA":
		n, ok := ints(req.Key.N, req.Key.E, req.Key.D, req.Key.P, req.Key.Q)
		if !ok || !n[1].IsInt64() || n[1].Int64() > 1<<31 {
			badParam(w, "The RSA key to import must include n, e, d, p and q.")
			return
		}
		k := &rsa.PrivateKey{PublicKey: rsa.PublicKey{N: n[0], E: int(n[1].Int64())}, D: n[2], Primes: []*big.Int{n[3], n[4]}}
		if err := k.Validate(); err != nil {
			badParam(w, "The RSA key to import is not valid.")
			return
		}
		k.Precompute()
		kv.Size = k.N.BitLen()
		if kv.Size != 2048 && kv.Size != 3072 && kv.Size != 4096 {
			badParam(w, "The key size is not supported. Supported sizes are 2048, 3072 and 4096.")
			return
		}
		kv.priv, kv.Kty = k, "RSA"
		kv.Ops = []string{"encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"}
	case "EC":
		c, ok := curves[req.Key.Crv]
		d, ok2 := ints(req.Key.D)
		if !ok || !ok2 || d[0].BitLen() > c.Params().BitSize {
			badParam(w, "The EC key to import must include a supported crv and d.")
			return
		}
		k, err := ecdsa.ParseRawPrivateKey(c, d[0].FillBytes(make([]byte, (c.Params().BitSize+7)/8)))
		if err != nil {
			badParam(w, "The EC key to import is not valid.")
			return
		}
		kv.priv, kv.Kty, kv.Curve = k, "EC", req.Key.Crv
		kv.Ops = []string{"sign", "verify"}
	default:
		badParam(w, "The key type to import is not supported. Supported types are RSA and EC.")
		return
	}
	if req.HSM {
		kv.Kty += "-HSM"
	}
	if req.Key.Ops != nil {
		if err := validateOps(req.Key.Ops); err != nil {
			badParam(w, err.Error())
			return
		}
		kv.Ops = slices.Clone(req.Key.Ops)
	}
	if err := validateTags(req.Tags); err != nil {
		badParam(w, err.Error())
		return
	}
	kv.Tags = req.Tags
	applyAttrs(kv, req.Attributes)
	der, err := x509.MarshalPKCS8PrivateKey(kv.priv)
	if err != nil {
		badParam(w, "The key to import is not valid.")
		return
	}
	kv.PrivDER = der
	e.addVersion(w, host, v, name, kv)
}

// lookup finds a key version (latest when version is ""); callers hold e.mu.
func (v *vault) lookup(name, version string) (*key, *keyVersion) {
	k := v.Keys[strings.ToLower(name)]
	if k == nil {
		return nil, nil
	}
	if version == "" {
		return k, k.current()
	}
	return k, k.version(version)
}

func (e *Emulator) kvGet(w http.ResponseWriter, host string, v *vault, rt kvRoute) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	k, kv := v.lookup(rt.name, rt.version)
	if kv == nil {
		keyNotFound(w, rt.name, rt.version)
		return
	}
	if !kv.Enabled && e.st.Settings.DisabledKeyBlocksGet {
		kvError(w, http.StatusForbidden, "Forbidden", "Operation get is not allowed on a disabled key.", "KeyDisabled")
		return
	}
	writeJSON(w, http.StatusOK, kv.bundle(host, k.Name))
}

// maxResults parses the optional page size (1..25, default 25).
func maxResults(q url.Values) (int, error) {
	s := q.Get("maxresults")
	if s == "" {
		return 25, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 25 {
		return 0, errors.New("The value of maxresults must be between 1 and 25.")
	}
	return n, nil
}

// page slices items per $skiptoken/maxresults and builds the absolute
// nextLink the SDK pager follows.
func page[T any](w http.ResponseWriter, r *http.Request, host string, items []T) {
	q := r.URL.Query()
	n, err := maxResults(q)
	if err != nil {
		badParam(w, err.Error())
		return
	}
	start := 0
	if tok := q.Get("$skiptoken"); tok != "" {
		b, err := decodeB64URL(tok)
		s, err2 := strconv.Atoi(string(b))
		if err != nil || err2 != nil || s < 0 || s > len(items) {
			badParam(w, "The $skiptoken is not valid.")
			return
		}
		start = s
	}
	end := min(start+n, len(items))
	var next *string
	if end < len(items) {
		nq := url.Values{}
		nq.Set("api-version", q.Get("api-version"))
		nq.Set("maxresults", strconv.Itoa(n))
		nq.Set("$skiptoken", b64url.EncodeToString([]byte(strconv.Itoa(end))))
		s := "https://" + host + r.URL.Path + "?" + nq.Encode()
		next = &s
	}
	page := items[start:end]
	if page == nil {
		page = []T{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"value": page, "nextLink": next})
}

func (e *Emulator) kvList(w http.ResponseWriter, r *http.Request, host string, v *vault, name string) {
	e.mu.RLock()
	var items []itemOut
	if name == "" {
		for _, ln := range sortedKeys(v.Keys) {
			k := v.Keys[ln]
			kv := k.current()
			items = append(items, itemOut{Kid: keyURL(host, k.Name), Attributes: kv.attrs(), Tags: kv.Tags})
		}
	} else {
		k := v.Keys[strings.ToLower(name)]
		if k == nil {
			e.mu.RUnlock()
			keyNotFound(w, name, "")
			return
		}
		for _, kv := range k.Versions {
			items = append(items, itemOut{Kid: keyURL(host, k.Name) + "/" + kv.Version, Attributes: kv.attrs(), Tags: kv.Tags})
		}
	}
	e.mu.RUnlock()
	page(w, r, host, items)
}

type updateReq struct {
	KeyOps     []string          `json:"key_ops"`
	Attributes *attrsIn          `json:"attributes"`
	Tags       map[string]string `json:"tags"`
}

func (e *Emulator) kvUpdate(w http.ResponseWriter, r *http.Request, host string, v *vault, rt kvRoute) {
	var req updateReq
	if err := readJSON(r, &req); err != nil && !errors.Is(err, errEmptyBody) {
		badParam(w, err.Error())
		return
	}
	if req.KeyOps != nil {
		if err := validateOps(req.KeyOps); err != nil {
			badParam(w, err.Error())
			return
		}
	}
	if req.Tags != nil {
		if err := validateTags(req.Tags); err != nil {
			badParam(w, err.Error())
			return
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	k, kv := v.lookup(rt.name, rt.version)
	if kv == nil {
		keyNotFound(w, rt.name, rt.version)
		return
	}
	old := *kv
	if req.KeyOps != nil {
		kv.Ops = slices.Clone(req.KeyOps)
	}
	if req.Tags != nil {
		kv.Tags = req.Tags
	}
	applyAttrs(kv, req.Attributes)
	kv.Updated = e.clock.Now().Unix()
	if err := e.saveLocked(); err != nil {
		*kv = old
		kvError(w, http.StatusInternalServerError, "InternalError", "The emulator could not persist its state.", "")
		return
	}
	writeJSON(w, http.StatusOK, kv.bundle(host, k.Name))
}

func (e *Emulator) kvRotate(w http.ResponseWriter, host string, v *vault, name string) {
	e.mu.RLock()
	_, cur := v.lookup(name, "")
	var req createReq
	if cur != nil {
		size := cur.Size
		req = createReq{Kty: cur.Kty, KeySize: &size, Crv: cur.Curve, KeyOps: slices.Clone(cur.Ops), Tags: cur.Tags}
	}
	e.mu.RUnlock()
	if cur == nil {
		keyNotFound(w, name, "")
		return
	}
	if req.Kty == "EC" || req.Kty == "EC-HSM" {
		req.KeySize = nil
	}
	kv, err := newVersion(req, e.clock.Now())
	if err != nil {
		badParam(w, err.Error())
		return
	}
	e.addVersion(w, host, v, name, kv)
}

const purgeAfter = 90 * 24 * time.Hour

func (d *deletedKey) bundle(host string) bundleOut {
	b := d.Key.current().bundle(host, d.Key.Name)
	b.RecoveryID = "https://" + host + "/deletedkeys/" + d.Key.Name
	b.DeletedDate, b.ScheduledPurgeDate = d.DeletedDate, d.ScheduledPurgeDate
	return b
}

func (e *Emulator) kvDelete(w http.ResponseWriter, host string, v *vault, name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ln := strings.ToLower(name)
	k := v.Keys[ln]
	if k == nil {
		keyNotFound(w, name, "")
		return
	}
	now := e.clock.Now()
	d := &deletedKey{Key: k, DeletedDate: now.Unix(), ScheduledPurgeDate: now.Add(purgeAfter).Unix()}
	delete(v.Keys, ln)
	v.Deleted[ln] = d
	if err := e.saveLocked(); err != nil {
		v.Keys[ln] = k
		delete(v.Deleted, ln)
		kvError(w, http.StatusInternalServerError, "InternalError", "The emulator could not persist its state.", "")
		return
	}
	writeJSON(w, http.StatusOK, d.bundle(host))
}

func (e *Emulator) kvListDeleted(w http.ResponseWriter, host string, v *vault) {
	e.mu.RLock()
	items := []itemOut{}
	for _, ln := range sortedKeys(v.Deleted) {
		d := v.Deleted[ln]
		kv := d.Key.current()
		items = append(items, itemOut{Kid: keyURL(host, d.Key.Name), Attributes: kv.attrs(), Tags: kv.Tags,
			RecoveryID: "https://" + host + "/deletedkeys/" + d.Key.Name, DeletedDate: d.DeletedDate, ScheduledPurgeDate: d.ScheduledPurgeDate})
	}
	e.mu.RUnlock()
	writeJSON(w, http.StatusOK, map[string]any{"value": items, "nextLink": nil})
}

func deletedNotFound(w http.ResponseWriter, name string) {
	kvError(w, http.StatusNotFound, "KeyNotFound", fmt.Sprintf("Deleted Key not found: %s", name), "")
}

func (e *Emulator) kvGetDeleted(w http.ResponseWriter, host string, v *vault, name string) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	d := v.Deleted[strings.ToLower(name)]
	if d == nil {
		deletedNotFound(w, name)
		return
	}
	writeJSON(w, http.StatusOK, d.bundle(host))
}

func (e *Emulator) kvPurge(w http.ResponseWriter, v *vault, name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ln := strings.ToLower(name)
	d := v.Deleted[ln]
	if d == nil {
		deletedNotFound(w, name)
		return
	}
	delete(v.Deleted, ln)
	if err := e.saveLocked(); err != nil {
		v.Deleted[ln] = d
		kvError(w, http.StatusInternalServerError, "InternalError", "The emulator could not persist its state.", "")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (e *Emulator) kvRecover(w http.ResponseWriter, host string, v *vault, name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ln := strings.ToLower(name)
	d := v.Deleted[ln]
	if d == nil {
		deletedNotFound(w, name)
		return
	}
	delete(v.Deleted, ln)
	v.Keys[ln] = d.Key
	if err := e.saveLocked(); err != nil {
		v.Deleted[ln] = d
		delete(v.Keys, ln)
		kvError(w, http.StatusInternalServerError, "InternalError", "The emulator could not persist its state.", "")
		return
	}
	writeJSON(w, http.StatusOK, d.Key.current().bundle(host, d.Key.Name))
}

// ---- cryptography ----

type cryptoReq struct {
	Alg    string `json:"alg"`
	Value  string `json:"value"`
	Digest string `json:"digest"`
}

func (e *Emulator) kvCrypto(w http.ResponseWriter, r *http.Request, host string, v *vault, rt kvRoute) {
	var req cryptoReq
	if err := readJSON(r, &req); err != nil {
		badParam(w, err.Error())
		return
	}
	now := e.clock.Now().Unix()
	e.mu.RLock()
	k, kv := v.lookup(rt.name, rt.version)
	var snap keyVersion
	var keyName string
	if kv != nil {
		snap, keyName = *kv, k.Name
		snap.Ops = slices.Clone(kv.Ops)
	}
	e.mu.RUnlock()
	if kv == nil {
		keyNotFound(w, rt.name, rt.version)
		return
	}
	op := cryptoOps[rt.crypto].keyOp
	if !snap.Enabled {
		kvError(w, http.StatusForbidden, "Forbidden", fmt.Sprintf("Operation %s is not allowed on a disabled key.", op), "KeyDisabled")
		return
	}
	if !slices.Contains(snap.Ops, op) {
		kvError(w, http.StatusForbidden, "Forbidden", fmt.Sprintf("Operation %s is not permitted on this key.", op), "KeyOperationForbidden")
		return
	}
	// exp/nbf block encrypt, wrap and sign; decrypt, unwrap and verify stay
	// possible so existing data can still be read.
	if op == "encrypt" || op == "wrapKey" || op == "sign" {
		if snap.EXP != nil && now >= *snap.EXP {
			kvError(w, http.StatusForbidden, "Forbidden", fmt.Sprintf("Operation %s is not allowed on an expired key.", op), "KeyExpired")
			return
		}
		if snap.NBF != nil && now < *snap.NBF {
			kvError(w, http.StatusForbidden, "Forbidden", fmt.Sprintf("Operation %s is not allowed on a key that is not yet valid.", op), "KeyNotYetValid")
			return
		}
	}
	if req.Alg == "" {
		badParam(w, "The property alg is required.")
		return
	}
	val, err := decodeB64URL(req.Value)
	if err != nil || len(val) == 0 {
		badParam(w, "The property value must be non-empty base64url.")
		return
	}
	kid := keyURL(host, keyName) + "/" + snap.Version
	switch rt.crypto {
	case "encrypt", "wrapkey", "decrypt", "unwrapkey":
		priv, ok := snap.priv.(*rsa.PrivateKey)
		if !ok {
			badParam(w, fmt.Sprintf("Algorithm %s is not supported for key type %s.", truncate(req.Alg, 32), snap.Kty))
			return
		}
		var out []byte
		if rt.crypto == "encrypt" || rt.crypto == "wrapkey" {
			out, err = rsaEncrypt(&priv.PublicKey, req.Alg, val)
		} else {
			out, err = rsaDecrypt(priv, req.Alg, val)
		}
		if err != nil {
			badParam(w, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"kid": kid, "value": b64url.EncodeToString(out)})
	case "sign":
		sig, err := signDigest(snap.priv, req.Alg, val)
		if err != nil {
			badParam(w, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"kid": kid, "value": b64url.EncodeToString(sig)})
	case "verify":
		digest, err := decodeB64URL(req.Digest)
		if err != nil || len(digest) == 0 {
			badParam(w, "The property digest must be non-empty base64url.")
			return
		}
		ok, err := verifyDigest(snap.priv.Public(), req.Alg, digest, val)
		if err != nil {
			badParam(w, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, map[string]bool{"value": ok})
	}
}

var errBadAlg = errors.New("Invalid algorithm. Supported RSA encryption algorithms are RSA-OAEP, RSA-OAEP-256 and RSA1_5.")

func rsaEncrypt(pub *rsa.PublicKey, alg string, pt []byte) ([]byte, error) {
	var out []byte
	var err error
	switch alg {
	case "RSA-OAEP":
		out, err = rsa.EncryptOAEP(sha1.New(), rand.Reader, pub, pt, nil)
	case "RSA-OAEP-256":
		out, err = rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, pt, nil)
	case "RSA1_5":
		out, err = rsa.EncryptPKCS1v15(rand.Reader, pub, pt)
	default:
		return nil, errBadAlg
	}
	if err != nil {
		return nil, fmt.Errorf("The value is too long for algorithm %s and this key size.", alg)
	}
	return out, nil
}

func rsaDecrypt(priv *rsa.PrivateKey, alg string, ct []byte) ([]byte, error) {
	var out []byte
	var err error
	switch alg {
	case "RSA-OAEP":
		out, err = rsa.DecryptOAEP(sha1.New(), nil, priv, ct, nil)
	case "RSA-OAEP-256":
		out, err = rsa.DecryptOAEP(sha256.New(), nil, priv, ct, nil)
	case "RSA1_5":
		out, err = rsa.DecryptPKCS1v15(nil, priv, ct) //nolint:staticcheck // Key Vault still offers RSA1_5
	default:
		return nil, errBadAlg
	}
	if err != nil {
		return nil, errors.New("Decryption failed: the ciphertext is not valid for this key and algorithm.")
	}
	return out, nil
}

func sigHash(alg string) (crypto.Hash, bool) {
	if len(alg) != 5 {
		return 0, false
	}
	h, _, ok := hashFor(alg)
	return h, ok
}

func signDigest(priv crypto.Signer, alg string, digest []byte) ([]byte, error) {
	h, ok := sigHash(alg)
	if !ok || len(digest) != h.Size() {
		return nil, errors.New("Invalid algorithm or digest length for sign.")
	}
	switch k := priv.(type) {
	case *rsa.PrivateKey:
		switch alg[:2] {
		case "RS":
			return rsa.SignPKCS1v15(rand.Reader, k, h, digest)
		case "PS":
			return rsa.SignPSS(rand.Reader, k, h, digest, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		}
	case *ecdsa.PrivateKey:
		if alg[:2] == "ES" {
			r, s, err := ecdsa.Sign(rand.Reader, k, digest)
			if err != nil {
				return nil, err
			}
			n := (k.Curve.Params().BitSize + 7) / 8
			return append(r.FillBytes(make([]byte, n)), s.FillBytes(make([]byte, n))...), nil
		}
	}
	return nil, errors.New("The algorithm is not supported for this key type.")
}

func verifyDigest(pub crypto.PublicKey, alg string, digest, sig []byte) (bool, error) {
	h, ok := sigHash(alg)
	if !ok || len(digest) != h.Size() {
		return false, errors.New("Invalid algorithm or digest length for verify.")
	}
	switch k := pub.(type) {
	case *rsa.PublicKey:
		switch alg[:2] {
		case "RS":
			return rsa.VerifyPKCS1v15(k, h, digest, sig) == nil, nil
		case "PS":
			return rsa.VerifyPSS(k, h, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto}) == nil, nil
		}
	case *ecdsa.PublicKey:
		if alg[:2] == "ES" {
			n := len(sig) / 2
			if n == 0 || len(sig)%2 != 0 {
				return false, nil
			}
			return ecdsa.Verify(k, digest, new(big.Int).SetBytes(sig[:n]), new(big.Int).SetBytes(sig[n:])), nil
		}
	}
	return false, errors.New("The algorithm is not supported for this key type.")
}
