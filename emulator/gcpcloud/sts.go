package gcpcloud

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

const (
	grantTokenExchange   = "urn:ietf:params:oauth:grant-type:token-exchange"
	tokenTypeAccessToken = "urn:ietf:params:oauth:token-type:access_token"
	tokenTypeJWT         = "urn:ietf:params:oauth:token-type:jwt"
	tokenTypeIDToken     = "urn:ietf:params:oauth:token-type:id_token"

	// Google's texts (see docs/emulator-gcp.md for which are recorded and
	// which are best guesses).
	stsBadAudience = `Invalid value for "audience". This value should be the full resource name of the Identity Provider. See https://cloud.google.com/iam/docs/reference/sts/rest/v1/TopLevel/token for the list of possible formats.`
	stsBadTarget   = `The target service indicated by the "audience" parameters is invalid. This might either be because the pool or provider is disabled or deleted or because it doesn't exist.`
	stsCondition   = "The given credential is rejected by the attribute condition."
	stsIssuerFetch = "Error connecting to the given credential's issuer."
)

type stsRequest struct {
	GrantType, Audience, Scope, RequestedTokenType, SubjectToken, SubjectTokenType, Options string
}

// readSTSRequest accepts the form encoding (x/oauth2, cloud.google.com/go/auth)
// and the JSON encoding with camelCase keys (the discovery client).
func readSTSRequest(r *http.Request) (stsRequest, error) {
	var q stsRequest
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return q, err
		}
		var m struct {
			GrantType          string `json:"grantType"`
			Audience           string `json:"audience"`
			Scope              string `json:"scope"`
			RequestedTokenType string `json:"requestedTokenType"`
			SubjectToken       string `json:"subjectToken"`
			SubjectTokenType   string `json:"subjectTokenType"`
			Options            string `json:"options"`
		}
		if err := json.Unmarshal(b, &m); err != nil {
			return q, err
		}
		return stsRequest{m.GrantType, m.Audience, m.Scope, m.RequestedTokenType, m.SubjectToken, m.SubjectTokenType, m.Options}, nil
	}
	if err := r.ParseForm(); err != nil {
		return q, err
	}
	f := r.PostForm
	return stsRequest{f.Get("grant_type"), f.Get("audience"), f.Get("scope"), f.Get("requested_token_type"),
		f.Get("subject_token"), f.Get("subject_token_type"), f.Get("options")}, nil
}

type stsError struct {
	status      int
	code, descr string
}

func (s *stsError) Error() string { return s.code + ": " + s.descr }

func stsErr(code, descr string) *stsError { return &stsError{http.StatusBadRequest, code, descr} }

func (e *Emulator) serveSTS(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/token" || r.Method != http.MethodPost {
		e.begin(w, r, svcSTS, "sts.invalid")
		writeGoogleError(w, http.StatusNotFound, "NOT_FOUND", "The requested URL was not found on this server.")
		return
	}
	if _, ok := e.begin(w, r, svcSTS, "sts.token"); !ok {
		return
	}
	q, err := readSTSRequest(r)
	if err != nil {
		writeOAuthError(w, 400, "invalid_request", "Invalid request body.")
		return
	}
	res, serr := e.exchange(q)
	if serr != nil {
		writeOAuthError(w, serr.status, serr.code, serr.descr)
		return
	}
	if rw, ok := w.(*respWriter); ok {
		rw.principal = res.principal
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, map[string]any{"access_token": res.token, "issued_token_type": tokenTypeAccessToken,
		"token_type": "Bearer", "expires_in": res.expiresIn})
}

type stsResult struct {
	token     string
	expiresIn int64
	principal string
}

func (e *Emulator) exchange(q stsRequest) (*stsResult, *stsError) {
	if q.GrantType != grantTokenExchange {
		return nil, stsErr("unsupported_grant_type", `Invalid value for "grant_type". Only urn:ietf:params:oauth:grant-type:token-exchange is supported.`)
	}
	if q.RequestedTokenType != tokenTypeAccessToken {
		return nil, stsErr("invalid_request", `Invalid value for "requested_token_type". Only urn:ietf:params:oauth:token-type:access_token is supported.`)
	}
	if q.SubjectTokenType != tokenTypeJWT && q.SubjectTokenType != tokenTypeIDToken {
		return nil, stsErr("invalid_request", `Invalid value for "subject_token_type". The emulator supports urn:ietf:params:oauth:token-type:jwt and urn:ietf:params:oauth:token-type:id_token.`)
	}
	aud, ok := parseSTSAudience(q.Audience)
	if !ok {
		return nil, stsErr("invalid_request", stsBadAudience)
	}
	if q.Options != "" {
		return nil, stsErr("invalid_request", `Invalid value for "options": access boundaries and user projects are not supported by the emulator.`)
	}
	if strings.TrimSpace(q.Scope) == "" {
		return nil, stsErr("invalid_request", `Invalid value for "scope". Scope must be provided when exchanging an external credential.`)
	}
	if q.SubjectToken == "" {
		return nil, stsErr("invalid_request", `Invalid value for "subject_token".`)
	}
	now := e.clock.Now()

	// Pool and provider state.
	e.mu.Lock()
	var pr provider
	found := false
	if p := e.projectLocked(aud.Project); p != nil && p.Number == aud.Project {
		if pl := e.poolLocked(p, aud.Pool); pl != nil && !pl.Disabled && pl.Deleted.IsZero() {
			if x := pl.Providers[aud.Provider]; x != nil && !x.Disabled && x.Deleted.IsZero() {
				pr, found = *x, true
			}
		}
	}
	registered, isRegistered := e.st.Issuers[pr.IssuerURI]
	e.mu.Unlock()
	if !found {
		return nil, stsErr("invalid_target", stsBadTarget)
	}

	// The subject token.
	t, err := parseJWT(q.SubjectToken)
	if err != nil {
		return nil, stsErr("invalid_grant", "Unable to parse the ID Token.")
	}
	if t.Header.Kid == "" {
		return nil, stsErr("invalid_grant", "The ID Token header is missing the key ID (kid).")
	}
	if t.Header.Alg != "RS256" && t.Header.Alg != "ES256" {
		return nil, stsErr("invalid_grant", fmt.Sprintf("The ID Token is signed with an unsupported algorithm %q; use RS256 or ES256.", t.Header.Alg))
	}
	iss, _ := claimString(t.Claims, "iss")
	if iss != pr.IssuerURI {
		return nil, stsErr("invalid_grant", fmt.Sprintf("The issuer in ID Token %s does not match the expected ones: %s", iss, pr.IssuerURI))
	}
	var keys []publicKey
	switch {
	case pr.JWKSJSON != "":
		keys, err = parseJWKS([]byte(pr.JWKSJSON), true)
	case pr.IssuerURI == googleIssuer:
		keys = e.googlePublicKeys()
	case isRegistered:
		keys, err = parseJWKS([]byte(registered), false)
	default:
		keys, err = e.fetchIssuerKeys(pr.IssuerURI)
	}
	if err != nil {
		return nil, stsErr("invalid_grant", stsIssuerFetch)
	}
	if err := verifyJWT(t, keys); err != nil {
		return nil, stsErr("invalid_grant", "Invalid ID Token signature.")
	}
	for _, c := range []string{"iat", "exp"} {
		if _, ok := claimTime(t.Claims, c); !ok {
			return nil, stsErr("invalid_grant", "The ID Token is missing the required claim "+c+".")
		}
	}
	for _, c := range []string{"sub", "aud"} {
		if _, ok := t.Claims[c]; !ok {
			return nil, stsErr("invalid_grant", "The ID Token is missing the required claim "+c+".")
		}
	}
	iat, _ := claimTime(t.Claims, "iat")
	exp, _ := claimTime(t.Claims, "exp")
	if exp <= now.Unix() {
		return nil, stsErr("invalid_grant", fmt.Sprintf("ID Token expired at %d.", exp))
	}
	if iat > now.Unix()+60 {
		return nil, stsErr("invalid_grant", fmt.Sprintf("ID Token issued at %d is in the future.", iat))
	}
	if iat < now.Add(-24*time.Hour).Unix() {
		return nil, stsErr("invalid_grant", fmt.Sprintf("ID Token issued at %d is stale to sign-in.", iat))
	}
	auds := claimAudiences(t.Claims)
	allowed := pr.AllowedAudiences
	if len(allowed) == 0 {
		full := "//iam.googleapis.com/" + "projects/" + aud.Project + "/locations/global/workloadIdentityPools/" + aud.Pool + "/providers/" + aud.Provider
		allowed = []string{full, "https:" + full}
	}
	audOK := false
	for _, a := range auds {
		for _, al := range allowed {
			audOK = audOK || a == al
		}
	}
	if !audOK {
		return nil, stsErr("invalid_grant", fmt.Sprintf("The audience in ID Token [%s] does not match the expected audience.", strings.Join(auds, ", ")))
	}

	// Attribute mapping and condition.
	subject, groups, attrs, serr := mapAttributes(pr.AttributeMapping, t.Claims)
	if serr != nil {
		return nil, serr
	}
	if pr.AttributeCondition != "" {
		cond, err := parseCEL(pr.AttributeCondition, "assertion", "google", "attribute")
		if err != nil {
			return nil, stsErr("unauthorized_client", stsCondition)
		}
		g := map[string]any{"subject": subject}
		if groups != nil {
			gl := make([]any, len(groups))
			for i, s := range groups {
				gl[i] = s
			}
			g["groups"] = gl
		}
		am := map[string]any{}
		for k, v := range attrs {
			am[k] = v
		}
		v, err := evalCEL(cond, celEnv{"assertion": t.Claims, "google": g, "attribute": am})
		if b, ok := v.(bool); err != nil || !ok || !b {
			return nil, stsErr("unauthorized_client", stsCondition)
		}
	}

	e.mu.RLock()
	s := e.st.Settings
	e.mu.RUnlock()
	life := int64(s.FederatedTokenLifetimeSeconds)
	if s.CapAtSubjectExpiry && exp-now.Unix() < life {
		life = exp - now.Unix()
	}
	tok := e.mintToken(accessToken{Kind: "fed", Iat: now.Unix(), Exp: now.Unix() + life, Scope: q.Scope,
		Number: aud.Project, Pool: aud.Pool, Provider: aud.Provider, Subject: subject, Groups: groups, Attrs: attrs})
	return &stsResult{token: tok, expiresIn: life, principal: principalMember(aud.Project, aud.Pool, subject)}, nil
}

// mapAttributes evaluates a provider's attribute mapping over the claims.
func mapAttributes(mapping map[string]string, claims map[string]any) (string, []string, map[string]string, *stsError) {
	var subject string
	var groups []string
	attrs := map[string]string{}
	total := 0
	for _, k := range sortedKeys(mapping) {
		n, err := parseCEL(mapping[k], "assertion")
		if err != nil {
			return "", nil, nil, stsErr("invalid_grant", fmt.Sprintf("The attribute mapping for %s could not be evaluated.", k))
		}
		v, err := evalCEL(n, celEnv{"assertion": claims})
		if err != nil {
			if k == "google.subject" {
				return "", nil, nil, stsErr("invalid_grant", fmt.Sprintf("The attribute mapping for %s could not be evaluated: %v.", k, err))
			}
			continue // an optional attribute missing from the assertion is left unmapped
		}
		switch k {
		case "google.subject":
			s, ok := v.(string)
			if !ok || s == "" {
				return "", nil, nil, stsErr("invalid_grant", "The mapped google.subject must be a non-empty string.")
			}
			if len(s) > 127 {
				return "", nil, nil, stsErr("invalid_grant", "The size of mapped attribute exceeds the 127 bytes limit.")
			}
			subject = s
			total += len(s)
		case "google.groups":
			list, ok := v.([]any)
			if !ok {
				return "", nil, nil, stsErr("invalid_grant", "The mapped google.groups must be a list of strings.")
			}
			for _, g := range list {
				s, ok := g.(string)
				if !ok {
					return "", nil, nil, stsErr("invalid_grant", "The mapped google.groups must be a list of strings.")
				}
				groups = append(groups, s)
				total += len(s)
			}
		default:
			s, ok := v.(string)
			if !ok {
				return "", nil, nil, stsErr("invalid_grant", fmt.Sprintf("The mapped %s must be a string.", k))
			}
			attrs[strings.TrimPrefix(k, "attribute.")] = s
			total += len(s)
		}
	}
	if total > 8<<10 {
		return "", nil, nil, stsErr("invalid_grant", "The total size of mapped attributes exceeds the 8KB limit.")
	}
	if len(attrs) == 0 {
		attrs = nil
	}
	return subject, groups, attrs, nil
}

// fetchIssuerKeys gets an external issuer's JWKS through its discovery
// document, as STS does, with Options.IssuerHTTPClient.
func (e *Emulator) fetchIssuerKeys(issuer string) ([]publicKey, error) {
	var disc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := e.getJSON(strings.TrimSuffix(issuer, "/")+"/.well-known/openid-configuration", &disc); err != nil {
		return nil, err
	}
	u, err := url.Parse(disc.JWKSURI)
	if err != nil || u.Scheme != "https" {
		return nil, errors.New("jwks_uri must be https")
	}
	var raw json.RawMessage
	if err := e.getJSON(disc.JWKSURI, &raw); err != nil {
		return nil, err
	}
	return parseJWKS(raw, false)
}

func (e *Emulator) getJSON(u string, v any) error {
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := e.issuerHC.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}
