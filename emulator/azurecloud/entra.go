package azurecloud

import (
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// clockSkew is the tolerance Entra and the resource providers allow on
// nbf/exp.
const clockSkew = 5 * time.Minute

const jwtBearerType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// Well-known first-party resource ids that may appear as a scope or an
// audience instead of the URI.
const (
	kvAppID    = "cfa8b339-82a2-471a-a3c9-0fc0be7a4093"
	graphAppID = "00000003-0000-0000-c000-000000000000"
	armAppID   = "797f4846-ba00-4fd7-ba43-dac1f8f63013"
	// cliAppID is the Azure CLI's client id, used as appid in admin tokens
	// (a delegated token as `az account get-access-token` would return).
	cliAppID = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
)

var knownResources = map[string]bool{
	"https://vault.azure.net": true, "https://vault.azure.cn": true, "https://vault.usgovcloudapi.net": true,
	"https://managedhsm.azure.net": true, "https://graph.microsoft.com": true,
	"https://management.azure.com": true, "https://management.core.windows.net": true,
	kvAppID: true, graphAppID: true, armAppID: true,
}

func normResource(r string) string { return strings.TrimRight(strings.ToLower(r), "/") }

func (e *Emulator) serveLogin(w http.ResponseWriter, r *http.Request, host string) {
	segs := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	w.Header().Set("Cache-Control", "no-store, no-cache")
	switch {
	case len(segs) == 4 && segs[1] == "v2.0" && segs[2] == ".well-known" && segs[3] == "openid-configuration",
		len(segs) == 3 && segs[1] == ".well-known" && segs[2] == "openid-configuration":
		if !e.begin(w, r, svcLogin, host, "entra.discovery") {
			return
		}
		e.discovery(w, r, host, segs[0], len(segs) == 4)
	case len(segs) == 3 && segs[0] == "common" && segs[1] == "discovery" && segs[2] == "instance":
		if !e.begin(w, r, svcLogin, host, "entra.instance_discovery") {
			return
		}
		e.instanceDiscovery(w, r, host)
	case (len(segs) == 4 && segs[1] == "discovery" && segs[2] == "v2.0" && segs[3] == "keys") ||
		(len(segs) == 3 && segs[1] == "discovery" && segs[2] == "keys"):
		if !e.begin(w, r, svcLogin, host, "entra.jwks") {
			return
		}
		e.serveJWKS(w)
	case len(segs) == 4 && segs[1] == "oauth2" && segs[2] == "v2.0" && segs[3] == "token":
		if !e.begin(w, r, svcLogin, host, "entra.token") {
			return
		}
		e.token(w, r, host, segs[0])
	default:
		e.counters.Inc("entra.other")
		e.entraError(w, http.StatusNotFound, "invalid_request", 900561,
			"The endpoint only accepts POST requests to the token endpoint; this path is not emulated.")
	}
}

// entraError writes Entra's error body shape.
func (e *Emulator) entraError(w http.ResponseWriter, status int, name string, code int, msg string) {
	trace, corr := newGUID(), newGUID()
	ts := e.clock.Now().UTC().Format("2006-01-02 15:04:05Z")
	w.Header().Set("x-ms-request-id", trace)
	writeJSON(w, status, map[string]any{
		"error": name,
		"error_description": fmt.Sprintf("AADSTS%d: %s\r\nTrace ID: %s\r\nCorrelation ID: %s\r\nTimestamp: %s",
			code, msg, trace, corr, ts),
		"error_codes":    []int{code},
		"timestamp":      ts,
		"trace_id":       trace,
		"correlation_id": corr,
		"error_uri":      fmt.Sprintf("https://login.microsoftonline.com/error?code=%d", code),
	})
}

func tenantNotFoundMsg(t string) string {
	return fmt.Sprintf("Tenant '%s' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant.", t)
}

// lookupTenant finds a tenant by GUID (case-insensitive); callers hold e.mu.
func (e *Emulator) lookupTenant(id string) *tenant {
	return e.st.Tenants[strings.ToLower(id)]
}

func (e *Emulator) discovery(w http.ResponseWriter, r *http.Request, host, tid string, v2 bool) {
	e.mu.RLock()
	t := e.lookupTenant(tid)
	e.mu.RUnlock()
	if t == nil {
		e.entraError(w, http.StatusBadRequest, "invalid_tenant", 90002, tenantNotFoundMsg(tid))
		return
	}
	base := "https://" + host + "/" + t.ID
	issuer := base + "/v2.0"
	tokenEP := base + "/oauth2/v2.0/token"
	authEP := base + "/oauth2/v2.0/authorize"
	if !v2 {
		issuer = "https://sts.windows.net/" + t.ID + "/"
		tokenEP = base + "/oauth2/token"
		authEP = base + "/oauth2/authorize"
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"token_endpoint":                        tokenEP,
		"token_endpoint_auth_methods_supported": []string{"client_secret_post", "private_key_jwt", "client_secret_basic"},
		"jwks_uri":                              "https://" + host + "/" + t.ID + "/discovery/v2.0/keys",
		"response_modes_supported":              []string{"query", "fragment", "form_post"},
		"subject_types_supported":               []string{"pairwise"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"response_types_supported":              []string{"code", "id_token", "code id_token", "id_token token"},
		"scopes_supported":                      []string{"openid", "profile", "email", "offline_access"},
		"issuer":                                issuer,
		"request_uri_parameter_supported":       false,
		"authorization_endpoint":                authEP,
		"device_authorization_endpoint":         base + "/oauth2/v2.0/devicecode",
		"end_session_endpoint":                  base + "/oauth2/v2.0/logout",
		"tenant_region_scope":                   "NA",
		"cloud_instance_name":                   "microsoftonline.com",
		"cloud_graph_host_name":                 "graph.windows.net",
		"msgraph_host":                          "graph.microsoft.com",
		"rbac_url":                              "https://pas.windows.net",
	})
}

// instanceDiscovery answers MSAL's instance discovery. MSAL Go skips it to
// resolve a trusted authority's endpoints, but its token cache still asks
// once per client for the host's aliases before the first token request
// (storage.Manager.Read → aadMetadata), unless DisableInstanceDiscovery is
// set; a client that does not trust the authority host uses
// tenant_discovery_endpoint too.
func (e *Emulator) instanceDiscovery(w http.ResponseWriter, r *http.Request, host string) {
	ae := r.URL.Query().Get("authorization_endpoint")
	u, err := url.Parse(ae)
	if err != nil || u.Host == "" {
		e.entraError(w, http.StatusBadRequest, "invalid_instance", 50049, "Unknown or invalid instance.")
		return
	}
	tenantSeg := strings.Split(strings.Trim(u.Path, "/"), "/")[0]
	writeJSON(w, http.StatusOK, map[string]any{
		"tenant_discovery_endpoint": "https://" + u.Host + "/" + tenantSeg + "/v2.0/.well-known/openid-configuration",
		"api-version":               "1.1",
		"metadata": []map[string]any{{
			"preferred_network": "login.microsoftonline.com", "preferred_cache": "login.windows.net",
			"aliases": []string{"login.microsoftonline.com", "login.windows.net", "login.microsoft.com", "sts.windows.net"},
		}},
	})
}

func (e *Emulator) serveJWKS(w http.ResponseWriter) {
	n, ex := rsaJWK(&e.signKey.PublicKey)
	writeJSON(w, http.StatusOK, jwks{Keys: []jwk{{
		Kty: "RSA", Use: "sig", Kid: e.signKid, X5t: e.signKid, N: n, E: ex,
		X5c: []string{base64.StdEncoding.EncodeToString(e.st.SignCertDER)},
	}}})
}

// entraErr is a token-endpoint failure.
type entraErr struct {
	status int
	name   string
	code   int
	msg    string
}

func (e *Emulator) token(w http.ResponseWriter, r *http.Request, host, tenantSeg string) {
	if r.Method != http.MethodPost {
		e.entraError(w, http.StatusBadRequest, "invalid_request", 900561, "The endpoint only accepts POST, OPTIONS requests. Received a "+r.Method+" request.")
		return
	}
	if err := r.ParseForm(); err != nil {
		e.entraError(w, http.StatusBadRequest, "invalid_request", 900144, "The request body must be a valid application/x-www-form-urlencoded form.")
		return
	}
	form := r.PostForm
	// RFC 6749 section 2.3.1: the secret may come in HTTP Basic auth.
	if id, secret, ok := r.BasicAuth(); ok {
		id, err1 := url.QueryUnescape(id)
		secret, err2 := url.QueryUnescape(secret)
		if err1 != nil || err2 != nil || (form.Get("client_id") != "" && form.Get("client_id") != id) {
			e.entraError(w, http.StatusUnauthorized, "invalid_client", 7000218, "The client_id in the Authorization header does not match the request body.")
			return
		}
		form.Set("client_id", id)
		form.Set("client_secret", secret)
	}
	resp, ee := e.issueAppToken(form, host, tenantSeg)
	if ee != nil {
		e.entraError(w, ee.status, ee.name, ee.code, ee.msg)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func missingParam(name string) *entraErr {
	return &entraErr{http.StatusBadRequest, "invalid_request", 900144,
		fmt.Sprintf("The request body must contain the following parameter: '%s'.", name)}
}

func (e *Emulator) issueAppToken(form url.Values, host, tenantSeg string) (map[string]any, *entraErr) {
	now := e.clock.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	t := e.lookupTenant(tenantSeg)
	if t == nil {
		return nil, &entraErr{http.StatusBadRequest, "invalid_request", 90002, tenantNotFoundMsg(tenantSeg)}
	}
	gt := form.Get("grant_type")
	if gt == "" {
		return nil, missingParam("grant_type")
	}
	if gt != "client_credentials" {
		return nil, &entraErr{http.StatusBadRequest, "unsupported_grant_type", 70003,
			fmt.Sprintf("The app requested an unsupported grant type '%s'. The emulator supports client_credentials only.", truncate(gt, 64))}
	}
	clientID := form.Get("client_id")
	if clientID == "" {
		return nil, missingParam("client_id")
	}
	if form.Get("scope") == "" {
		return nil, missingParam("scope")
	}
	resource, ee := parseTokenScope(form.Get("scope"), t.ID)
	if ee != nil {
		return nil, ee
	}
	a := e.st.Apps[strings.ToLower(clientID)]
	var sp *servicePrinc
	if a != nil {
		sp = t.spForApp(a.ClientID)
	}
	if sp == nil {
		return nil, &entraErr{http.StatusBadRequest, "unauthorized_client", 700016, fmt.Sprintf(
			"Application with identifier '%s' was not found in the directory '%s'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
			truncate(clientID, 64), t.DisplayName)}
	}
	secret, assertion := form.Get("client_secret"), form.Get("client_assertion")
	acr := "1"
	switch {
	case secret != "" && assertion != "":
		return nil, &entraErr{http.StatusUnauthorized, "invalid_client", 7000218,
			"The request body must contain only one of the following parameters: 'client_assertion' or 'client_secret'."}
	case secret != "":
		if subtle.ConstantTimeCompare([]byte(secret), []byte(a.Secret)) != 1 {
			return nil, &entraErr{http.StatusUnauthorized, "invalid_client", 7000215, fmt.Sprintf(
				"Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '%s'.", a.ClientID)}
		}
	case assertion != "":
		if form.Get("client_assertion_type") != jwtBearerType {
			return nil, &entraErr{http.StatusBadRequest, "invalid_request", 70002,
				"Error validating credentials. The client_assertion_type must be '" + jwtBearerType + "'."}
		}
		acr = "2"
		if ee := e.checkAssertion(a, assertion, host, t.ID, now); ee != nil {
			return nil, ee
		}
	default:
		return nil, &entraErr{http.StatusUnauthorized, "invalid_client", 7000218,
			"The request body must contain the following parameter: 'client_assertion' or 'client_secret'."}
	}
	exp := now.Add(e.opts.TokenLifetime)
	claims := e.baseClaims(t.ID, resource, now, exp)
	claims["appid"] = a.ClientID
	claims["appidacr"] = acr
	claims["idtyp"] = "app"
	claims["oid"] = sp.ID
	claims["sub"] = sp.ID
	if clientCapableOfCAE(form.Get("claims")) {
		// The client can answer claims challenges, so resources may revoke
		// this token early (continuous access evaluation).
		claims["xms_cc"] = []string{"CP1"}
	}
	tok, err := e.sign(claims)
	if err != nil {
		return nil, &entraErr{http.StatusInternalServerError, "server_error", 90033, "A transient error has occurred. Please try again."}
	}
	secs := int(e.opts.TokenLifetime / time.Second)
	return map[string]any{"token_type": "Bearer", "expires_in": secs, "ext_expires_in": secs, "access_token": tok}, nil
}

// clientCapableOfCAE reports whether a token request's claims parameter
// declares client capability CP1, as MSAL does for azcore's bearer policy
// (unless AZURE_IDENTITY_DISABLE_CP1 is set): {"access_token":{"xms_cc":
// {"values":["CP1"]}}}, merged with any claims challenge being answered.
// The capability name is matched case-insensitively, as Entra does: MSAL
// for other languages sends "cp1" (their client_capabilities settings are
// commonly configured with the lower-case name "cp1").
func clientCapableOfCAE(claims string) bool {
	if claims == "" || len(claims) > 4096 {
		return false
	}
	var c struct {
		AccessToken struct {
			XMSCC struct {
				Values []string `json:"values"`
			} `json:"xms_cc"`
		} `json:"access_token"`
	}
	if json.Unmarshal([]byte(claims), &c) != nil {
		return false
	}
	return slices.ContainsFunc(c.AccessToken.XMSCC.Values, isCP1)
}

func (t *tenant) spForApp(appID string) *servicePrinc {
	for _, sp := range t.SPs {
		if strings.EqualFold(sp.AppID, appID) {
			return sp
		}
	}
	return nil
}

// parseScope enforces the client-credentials rules: the OIDC scopes MSAL
// appends are ignored, and exactly one "<resource>/.default" must remain.
func parseTokenScope(scope, tid string) (string, *entraErr) {
	var res []string
	for _, s := range strings.Fields(scope) {
		switch strings.ToLower(s) {
		case "openid", "offline_access", "profile", "email":
			continue
		}
		res = append(res, s)
	}
	if len(res) != 1 {
		return "", &entraErr{http.StatusBadRequest, "invalid_scope", 70011, fmt.Sprintf(
			"The provided value for the input parameter 'scope' is not valid. The scope %s is not valid.", truncate(scope, 256))}
	}
	resource, ok := strings.CutSuffix(res[0], "/.default")
	if !ok {
		return "", &entraErr{http.StatusBadRequest, "invalid_scope", 1002012, fmt.Sprintf(
			"The provided value for scope %s is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).", truncate(res[0], 256))}
	}
	if !knownResources[normResource(resource)] {
		return "", &entraErr{http.StatusBadRequest, "invalid_resource", 500011, fmt.Sprintf(
			"The resource principal named %s was not found in the tenant named %s. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.",
			truncate(resource, 256), tid)}
	}
	return resource, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func invalidClient(code int, msg string) *entraErr {
	return &entraErr{http.StatusUnauthorized, "invalid_client", code, msg}
}

// checkAssertion validates a certificate or federated client assertion;
// callers hold e.mu (write: the jti cache is updated).
func (e *Emulator) checkAssertion(a *app, assertion, host, tid string, now time.Time) *entraErr {
	tok, err := parseJWT(assertion)
	if err != nil {
		return invalidClient(50027, "JWT token is invalid or malformed.")
	}
	thumb := tok.hstr("x5t#S256")
	legacy := tok.hstr("x5t")
	if thumb != "" || legacy != "" || tok.str("iss") == a.ClientID {
		if ee := e.checkCertAssertion(a, tok, thumb, legacy, host, tid); ee != nil {
			return ee
		}
	} else if ee := e.checkFederatedAssertion(a, tok); ee != nil {
		return ee
	}
	exp, ok := tok.num("exp")
	if !ok {
		return invalidClient(50027, "JWT token is invalid or malformed: the 'exp' claim is missing.")
	}
	nbf, hasNBF := tok.num("nbf")
	if now.After(time.Unix(exp, 0).Add(clockSkew)) || (hasNBF && now.Add(clockSkew).Before(time.Unix(nbf, 0))) {
		return invalidClient(700024, fmt.Sprintf(
			"Client assertion is not within its valid time range. Current time: %s, assertion valid from %s, expiry time of assertion %s. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
			now.UTC().Format(time.RFC3339), time.Unix(nbf, 0).UTC().Format(time.RFC3339), time.Unix(exp, 0).UTC().Format(time.RFC3339)))
	}
	if jti := tok.str("jti"); jti != "" {
		k := a.ClientID + "|" + truncate(jti, 128)
		if len(e.jti) > 1024 { // prune expired ids only when the cache grows
			for id, x := range e.jti {
				if now.Unix() > x+int64(clockSkew/time.Second) {
					delete(e.jti, id)
				}
			}
		}
		if _, seen := e.jti[k]; seen {
			return invalidClient(50027, "The client assertion was already used: its 'jti' claim has been presented before (replay).")
		}
		if len(e.jti) < 100_000 {
			e.jti[k] = exp
		}
	}
	return nil
}

func (e *Emulator) checkCertAssertion(a *app, tok *jwt, thumb, legacy, host, tid string) *entraErr {
	var got, want []byte
	switch {
	case thumb != "":
		got, want = decodeEither(thumb), x5tS256(a.CertDER)
	case legacy != "":
		got, want = decodeEither(legacy), x5tSHA1(a.CertDER)
	}
	if got == nil || subtle.ConstantTimeCompare(got, want) != 1 {
		return invalidClient(700027, fmt.Sprintf(
			"Client assertion failed signature validation. [Reason - The key was not found., Thumbprint of key used by client: '%s', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '%s'.]",
			strings.ToUpper(hex.EncodeToString(got)), a.ClientID))
	}
	cert, err := x509.ParseCertificate(a.CertDER)
	if err != nil {
		return invalidClient(700027, "Client assertion failed signature validation.")
	}
	if alg := tok.hstr("alg"); alg != "PS256" && alg != "RS256" {
		return invalidClient(700027, "Client assertion failed signature validation. [Reason - unsupported algorithm '"+truncate(alg, 16)+"'.]")
	}
	if err := tok.verify(cert.PublicKey); err != nil {
		return invalidClient(700027, "Client assertion failed signature validation.")
	}
	if tok.str("iss") != a.ClientID || tok.str("sub") != a.ClientID {
		return invalidClient(50027, "JWT token is invalid: the 'iss' and 'sub' claims of a client assertion must both be the client_id.")
	}
	okAud := false
	for _, aud := range tok.audiences() {
		for _, want := range []string{
			"https://" + host + "/" + tid + "/oauth2/v2.0/token",
			"https://" + host + "/" + tid + "/oauth2/token",
			"https://" + host + "/" + tid + "/v2.0",
		} {
			if strings.EqualFold(aud, want) {
				okAud = true
			}
		}
	}
	if !okAud {
		return invalidClient(700021, fmt.Sprintf(
			"Client assertion audience claim does not match Realm issuer. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials . Expected 'https://%s/%s/oauth2/v2.0/token'.", host, tid))
	}
	return nil
}

// decodeEither decodes a thumbprint in standard or URL base64 (MSAL Go uses
// standard, the JWS spec says URL), padded or not.
func decodeEither(s string) []byte {
	s = strings.TrimRight(s, "=")
	if b, err := base64.RawURLEncoding.DecodeString(s); err == nil {
		return b
	}
	if b, err := base64.RawStdEncoding.DecodeString(s); err == nil {
		return b
	}
	return nil
}

func (e *Emulator) checkFederatedAssertion(a *app, tok *jwt) *entraErr {
	iss, sub, auds := tok.str("iss"), tok.str("sub"), tok.audiences()
	const help = " Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation"
	var byIss []FederatedCredential
	for _, f := range a.Federated {
		if f.Issuer == iss {
			byIss = append(byIss, f)
		}
	}
	if len(byIss) == 0 {
		return invalidClient(700211, fmt.Sprintf("No matching federated identity record found for presented assertion issuer '%s'.%s", truncate(iss, 256), help))
	}
	var bySub []FederatedCredential
	for _, f := range byIss {
		if f.Subject == sub {
			bySub = append(bySub, f)
		}
	}
	if len(bySub) == 0 {
		return invalidClient(700213, fmt.Sprintf("No matching federated identity record found for presented assertion subject '%s'. Please note that the matching is done using a case-sensitive comparison.%s", truncate(sub, 256), help))
	}
	matched := false
	for _, f := range bySub {
		for _, want := range f.Audiences {
			for _, got := range auds {
				if got == want {
					matched = true
				}
			}
		}
	}
	if !matched {
		return invalidClient(700212, fmt.Sprintf("No matching federated identity record found for presented assertion audience '%s'.%s", truncate(strings.Join(auds, ","), 256), help))
	}
	set := e.st.Issuers[iss]
	if set == nil {
		return &entraErr{http.StatusBadRequest, "invalid_request", 50166,
			"Request to External OIDC endpoint failed: the emulator has no JWKS registered for issuer '" + truncate(iss, 256) + "' (register it with POST /issuers on the control API)."}
	}
	kid := tok.hstr("kid")
	for _, k := range set.Keys {
		if kid != "" && k.Kid != "" && k.Kid != kid {
			continue
		}
		pub, err := k.publicKey()
		if err != nil {
			continue
		}
		if tok.verify(pub) == nil {
			return nil
		}
	}
	return invalidClient(50013, "Assertion failed signature validation. [Reason - The key was not found or the signature did not verify with the issuer's keys.]")
}

// baseClaims are the v1 access-token claims common to app and user tokens.
func (e *Emulator) baseClaims(tid, aud string, now, exp time.Time) map[string]any {
	iss := "https://sts.windows.net/" + tid + "/"
	return map[string]any{
		"aud": aud, "iss": iss, "idp": iss, "tid": tid,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": exp.Unix(),
		"uti": b64url.EncodeToString([]byte(randHex(8))), "ver": "1.0",
		"rh": "0.emulated",
	}
}

func (e *Emulator) sign(claims map[string]any) (string, error) {
	return signRS256(e.signKey, map[string]any{"typ": "JWT", "alg": "RS256", "x5t": e.signKid, "kid": e.signKid}, claims)
}

// principal is a validated caller.
type principal struct {
	TenantID string
	ObjectID string
	AppID    string
	Issuer   string
	Audience string
	User     bool
	UPN      string
	Exp      time.Time
	// CAE: the token says its client answers claims challenges (xms_cc CP1).
	CAE bool
}

type tokenProblem int

const (
	tokOK tokenProblem = iota
	tokMalformed
	tokBadSignature
	tokExpired
	tokNotYetValid
)

// parseAccessToken verifies an access token we issued: signature and time.
// Audience and issuer are the caller's to check, with its own messages.
func (e *Emulator) parseAccessToken(raw string) (*principal, tokenProblem) {
	tok, err := parseJWT(raw)
	if err != nil {
		return nil, tokMalformed
	}
	if tok.hstr("alg") != "RS256" {
		return nil, tokBadSignature
	}
	if err := tok.verify(&e.signKey.PublicKey); err != nil {
		return nil, tokBadSignature
	}
	exp, ok1 := tok.num("exp")
	nbf, ok2 := tok.num("nbf")
	if !ok1 || !ok2 {
		return nil, tokMalformed
	}
	auds := tok.audiences()
	p := &principal{
		TenantID: tok.str("tid"), ObjectID: tok.str("oid"), AppID: tok.str("appid"),
		Issuer: tok.str("iss"), User: tok.str("idtyp") == "user", UPN: tok.str("upn"),
		Exp: time.Unix(exp, 0), CAE: tok.hasCP1(),
	}
	if len(auds) > 0 {
		p.Audience = auds[0]
	}
	now := e.clock.Now()
	if now.After(p.Exp.Add(clockSkew)) {
		return p, tokExpired
	}
	if now.Add(clockSkew).Before(time.Unix(nbf, 0)) {
		return p, tokNotYetValid
	}
	return p, tokOK
}

// callerString is how Key Vault names a caller in its messages.
func (p *principal) callerString() string {
	s := fmt.Sprintf("appid=%s;oid=%s;iss=%s", p.AppID, p.ObjectID, p.Issuer)
	if p.UPN != "" {
		s = "name=" + p.UPN + ";" + s
	}
	return s
}
