package gcpcloud

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"strings"
	"time"
)

const googleIssuer = "https://accounts.google.com"

// ---- accounts.google.com / www.googleapis.com ----

func (e *Emulator) serveAccounts(w http.ResponseWriter, r *http.Request, host string) {
	switch {
	case host == "accounts.google.com" && r.URL.Path == "/.well-known/openid-configuration" && r.Method == http.MethodGet:
		if _, ok := e.begin(w, r, svcAccounts, "google.discovery"); !ok {
			return
		}
		writeJSON(w, map[string]any{
			"issuer":                                googleIssuer,
			"authorization_endpoint":                "https://accounts.google.com/o/oauth2/v2/auth",
			"device_authorization_endpoint":         "https://oauth2.googleapis.com/device/code",
			"token_endpoint":                        "https://oauth2.googleapis.com/token",
			"userinfo_endpoint":                     "https://openidconnect.googleapis.com/v1/userinfo",
			"revocation_endpoint":                   "https://oauth2.googleapis.com/revoke",
			"jwks_uri":                              "https://www.googleapis.com/oauth2/v3/certs",
			"response_types_supported":              []string{"code", "token", "id_token", "code token", "code id_token", "token id_token", "code token id_token", "none"},
			"subject_types_supported":               []string{"public"},
			"id_token_signing_alg_values_supported": []string{"RS256"},
			"scopes_supported":                      []string{"openid", "email", "profile"},
			"token_endpoint_auth_methods_supported": []string{"client_secret_post", "client_secret_basic"},
			"claims_supported":                      []string{"aud", "email", "email_verified", "exp", "family_name", "given_name", "iat", "iss", "name", "picture", "sub"},
			"code_challenge_methods_supported":      []string{"plain", "S256"},
			"grant_types_supported": []string{"authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code",
				"urn:ietf:params:oauth:grant-type:jwt-bearer"},
		})
	case host == "www.googleapis.com" && r.URL.Path == "/oauth2/v3/certs" && r.Method == http.MethodGet:
		if _, ok := e.begin(w, r, svcAccounts, "google.jwks"); !ok {
			return
		}
		w.Header().Set("Cache-Control", "public, max-age=21600, must-revalidate, no-transform")
		writeJSON(w, e.googleJWKS())
	case host == "www.googleapis.com" && r.URL.Path == "/oauth2/v4/token":
		e.serveOAuth2(w, r)
	default:
		e.begin(w, r, svcAccounts, "google.invalid")
		writeGoogleError(w, http.StatusNotFound, "NOT_FOUND", "The requested URL was not found on this server.")
	}
}

func (e *Emulator) googleJWKS() jwkSet {
	e.mu.RLock()
	kid := e.st.SignKid
	e.mu.RUnlock()
	return jwkSet{Keys: []jwk{rsaJWK(&e.signKey.PublicKey, kid)}}
}

func (e *Emulator) googlePublicKeys() []publicKey {
	set := e.googleJWKS()
	pk, _ := set.Keys[0].public()
	return []publicKey{{kid: set.Keys[0].Kid, key: pk}}
}

// signGoogleIDToken signs an ID token as accounts.google.com for a
// service account.
func (e *Emulator) signGoogleIDToken(sa *serviceAccount, aud string, includeEmail bool, now time.Time) (string, error) {
	c := map[string]any{"iss": googleIssuer, "aud": aud, "azp": sa.UniqueID, "sub": sa.UniqueID,
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	if includeEmail {
		c["email"], c["email_verified"] = sa.Email, true
	}
	e.mu.RLock()
	kid := e.st.SignKid
	e.mu.RUnlock()
	return signRS256(e.signKey, kid, c)
}

// ---- oauth2.googleapis.com/token: the JWT-bearer grant ----

const grantJWTBearer = "urn:ietf:params:oauth:grant-type:jwt-bearer"

var tokenAudiences = map[string]bool{
	"https://oauth2.googleapis.com/token":        true,
	"https://www.googleapis.com/oauth2/v4/token": true,
	"https://accounts.google.com/o/oauth2/token": true,
}

func (e *Emulator) serveOAuth2(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/token" && r.URL.Path != "/oauth2/v4/token" || r.Method != http.MethodPost {
		e.begin(w, r, svcOAuth2, "oauth2.invalid")
		writeGoogleError(w, http.StatusNotFound, "NOT_FOUND", "The requested URL was not found on this server.")
		return
	}
	if _, ok := e.begin(w, r, svcOAuth2, "oauth2.token"); !ok {
		return
	}
	if err := r.ParseForm(); err != nil {
		writeOAuthError(w, 400, "invalid_request", "Invalid request body.")
		return
	}
	if gt := r.PostForm.Get("grant_type"); gt != grantJWTBearer {
		writeOAuthError(w, 400, "unsupported_grant_type", "Invalid grant_type: "+gt)
		return
	}
	now := e.clock.Now()
	t, err := parseJWT(r.PostForm.Get("assertion"))
	if err != nil {
		writeOAuthError(w, 400, "invalid_grant", "Invalid JWT Signature.")
		return
	}
	iss, _ := claimString(t.Claims, "iss")
	e.mu.RLock()
	sa := e.serviceAccountLocked(iss)
	var keys []publicKey
	if sa != nil && !sa.Disabled {
		keys = saPublicKeys(sa)
	}
	e.mu.RUnlock()
	if len(keys) == 0 {
		writeOAuthError(w, 400, "invalid_grant", "Invalid grant: account not found")
		return
	}
	if t.Header.Kid == "" && len(keys) > 0 {
		t.Header.Kid = keys[0].kid
	}
	if t.Header.Alg != "RS256" || verifyJWT(t, keys) != nil {
		writeOAuthError(w, 400, "invalid_grant", "Invalid JWT Signature.")
		return
	}
	aud := claimAudiences(t.Claims)
	if len(aud) != 1 || !tokenAudiences[aud[0]] {
		writeOAuthError(w, 400, "invalid_grant", "Invalid JWT: Failed audience check. The right audience is https://oauth2.googleapis.com/token")
		return
	}
	iat, ok1 := claimTime(t.Claims, "iat")
	exp, ok2 := claimTime(t.Claims, "exp")
	if !ok1 || !ok2 || exp <= now.Unix() || exp-iat > 3600 || iat > now.Unix()+300 || exp < iat {
		writeOAuthError(w, 400, "invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.")
		return
	}
	if ta, ok := claimString(t.Claims, "target_audience"); ok && ta != "" {
		e.mu.RLock()
		sa = e.serviceAccountLocked(iss)
		e.mu.RUnlock()
		tok, err := e.signGoogleIDToken(sa, ta, true, now)
		if err != nil {
			writeOAuthError(w, 500, "internal_failure", "Internal error.")
			return
		}
		if rw, ok := w.(*respWriter); ok {
			rw.principal = "serviceAccount:" + sa.Email
		}
		w.Header().Set("Cache-Control", "no-store")
		writeJSON(w, map[string]any{"id_token": tok})
		return
	}
	scope, _ := claimString(t.Claims, "scope")
	if strings.TrimSpace(scope) == "" {
		writeOAuthError(w, 400, "invalid_scope", "Invalid OAuth scope or ID token audience provided.")
		return
	}
	if rw, ok := w.(*respWriter); ok {
		rw.principal = "serviceAccount:" + sa.Email
	}
	tok := e.mintToken(accessToken{Kind: "sa", Email: sa.Email, Scope: scope, Iat: now.Unix(), Exp: now.Add(time.Hour).Unix()})
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, map[string]any{"access_token": tok, "expires_in": 3599, "token_type": "Bearer"})
}

// ---- iamcredentials.googleapis.com ----

func (e *Emulator) serveIAMCredentials(w http.ResponseWriter, r *http.Request) {
	path, verb := splitVerb(strings.TrimPrefix(r.URL.Path, "/v1/"))
	parts := strings.Split(path, "/")
	var op, perm string
	switch {
	case r.Method == http.MethodPost && len(parts) == 4 && parts[0] == "projects" && parts[2] == "serviceAccounts" && verb == "generateIdToken":
		op, perm = "iamcredentials.generateidtoken", "iam.serviceAccounts.getOpenIdToken"
	case r.Method == http.MethodPost && len(parts) == 4 && parts[0] == "projects" && parts[2] == "serviceAccounts" && verb == "generateAccessToken":
		op, perm = "iamcredentials.generateaccesstoken", "iam.serviceAccounts.getAccessToken"
	default:
		e.begin(w, r, svcIAMCredentials, "iamcredentials.invalid")
		writeGoogleError(w, http.StatusNotFound, "NOT_FOUND", "The requested URL was not found on this server.")
		return
	}
	if _, ok := e.begin(w, r, svcIAMCredentials, op); !ok {
		return
	}
	c, aerr := e.authenticate(w, r, "https://iamcredentials.googleapis.com/", scopeCloudPlatform, scopeIAM)
	if aerr != nil {
		writeAPIError(w, aerr)
		return
	}
	if parts[1] != "-" {
		writeAPIError(w, invalidArg("The project in a service account name must be '-' (projects/-/serviceAccounts/%s).", parts[3]))
		return
	}
	var body map[string]json.RawMessage
	var err *apiError
	if op == "iamcredentials.generateidtoken" {
		body, err = readBody(r, "audience", "includeEmail", "delegates", "organizationNumberIncluded")
	} else {
		body, err = readBody(r, "scope", "lifetime", "delegates")
	}
	if err != nil {
		writeAPIError(w, err)
		return
	}
	var delegates []string
	field(body, "delegates", &delegates)
	if len(delegates) > 0 {
		writeAPIError(w, invalidArg("Delegation chains are not supported by the emulator."))
		return
	}
	now := e.clock.Now()
	e.mu.RLock()
	sa := e.serviceAccountLocked(parts[3])
	allowed := false
	if sa != nil && !sa.Disabled {
		allowed = e.allowedLocked(c, perm, e.st.Projects[sa.ProjectID].Policy, sa.Policy)
	}
	e.mu.RUnlock()
	if !allowed {
		writeAPIError(w, &apiError{HTTP: 403, Status: "PERMISSION_DENIED",
			Message: "Permission '" + perm + "' denied on resource (or it may not exist).",
			Details: []any{map[string]any{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "IAM_PERMISSION_DENIED",
				"domain": "iam.googleapis.com", "metadata": map[string]string{"permission": perm}}}})
		return
	}
	if op == "iamcredentials.generateidtoken" {
		var aud string
		var includeEmail, orgNum bool
		if _, err := field(body, "audience", &aud); err != nil {
			writeAPIError(w, err)
			return
		}
		if _, err := field(body, "includeEmail", &includeEmail); err != nil {
			writeAPIError(w, err)
			return
		}
		field(body, "organizationNumberIncluded", &orgNum)
		if orgNum {
			writeAPIError(w, invalidArg("organizationNumberIncluded is not supported by the emulator (projects have no organization)."))
			return
		}
		if aud == "" {
			writeAPIError(w, invalidArg("Missing audience."))
			return
		}
		tok, serr := e.signGoogleIDToken(sa, aud, includeEmail, now)
		if serr != nil {
			writeGoogleError(w, 500, "INTERNAL", "Internal error encountered.")
			return
		}
		writeJSON(w, map[string]any{"token": tok})
		return
	}
	var scopes []string
	var lifetime string
	field(body, "scope", &scopes)
	field(body, "lifetime", &lifetime)
	if len(scopes) == 0 {
		writeAPIError(w, invalidArg("Scope is required."))
		return
	}
	d := time.Hour
	if lifetime != "" {
		v, perr := time.ParseDuration(lifetime)
		if perr != nil || !strings.HasSuffix(lifetime, "s") || v <= 0 || v > time.Hour {
			writeAPIError(w, invalidArg("The lifetime must be a duration in seconds of at most 3600s."))
			return
		}
		d = v
	}
	tok := e.mintToken(accessToken{Kind: "sa", Email: sa.Email, Scope: strings.Join(scopes, " "), Iat: now.Unix(), Exp: now.Add(d).Unix()})
	writeJSON(w, map[string]any{"accessToken": tok, "expireTime": now.Add(d).UTC().Format(time.RFC3339)})
}

// parseRSAPrivateKey reads a PKCS #8 RSA key.
func parseRSAPrivateKey(der []byte) (*rsa.PrivateKey, bool) {
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, false
	}
	rk, ok := k.(*rsa.PrivateKey)
	return rk, ok
}
