package gcpcloud

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/internal/gcponboard"
)

func wantSTS(t *testing.T, st int, m map[string]any, code, desc string) {
	t.Helper()
	if st != 400 || m["error"] != code || !strings.Contains(m["error_description"].(string), desc) {
		t.Fatalf("got %d %v, want 400 %s %q", st, m, code, desc)
	}
}

func TestSTSSuccessShape(t *testing.T) {
	c := newCustomer(t, nil)
	st, m := stsRaw(t, c.res.STSAudience, subjectToken(t, c, nil), nil)
	if st != 200 || m["token_type"] != "Bearer" || m["issued_token_type"] != tokenTypeAccessToken || m["expires_in"].(float64) != 3600 {
		t.Fatalf("%d %v", st, m)
	}
	// Capped at the subject token's expiry.
	st, m = stsRaw(t, c.res.STSAudience, subjectToken(t, c, map[string]any{"exp": emu.Now().Add(10 * time.Minute).Unix()}), nil)
	if st != 200 || m["expires_in"].(float64) != 600 {
		t.Fatalf("%d %v", st, m)
	}
	// The discovery client's JSON encoding is accepted too.
	body := map[string]string{"grantType": grantTokenExchange, "audience": c.res.STSAudience, "scope": scopeCloudPlatform,
		"requestedTokenType": tokenTypeAccessToken, "subjectToken": subjectToken(t, c, nil), "subjectTokenType": tokenTypeIDToken}
	st, m = api(t, "POST", "https://sts.googleapis.com/v1/token?alt=json&prettyPrint=false", "", body)
	if st != 200 || m["access_token"] == nil {
		t.Fatalf("json: %d %v", st, m)
	}
}

func TestSTSRefusals(t *testing.T) {
	c := newCustomer(t, nil)
	aud := c.res.STSAudience
	expired := subjectToken(t, c, map[string]any{"iat": emu.Now().Add(-2 * time.Hour).Unix(), "exp": emu.Now().Add(-time.Hour).Unix()})
	cases := []struct {
		name, aud, tok, code, desc string
		mod                        func(url.Values)
	}{
		{"audience not allowed", aud, subjectToken(t, c, map[string]any{"aud": "org-other"}), "invalid_grant",
			"The audience in ID Token [org-other] does not match the expected audience.", nil},
		{"condition false", aud, subjectToken(t, c, map[string]any{"sub": "someone-else"}), "unauthorized_client",
			"The given credential is rejected by the attribute condition.", nil},
		{"wrong issuer", aud, subjectToken(t, c, map[string]any{"iss": "https://evil.example"}), "invalid_grant",
			"The issuer in ID Token https://evil.example does not match the expected ones: " + testIssuer, nil},
		{"bad signature", aud, subjectToken(t, c, map[string]any{"_key": otherKey}), "invalid_grant", "Invalid ID Token signature.", nil},
		{"unknown kid", aud, subjectToken(t, c, map[string]any{"_kid": "nope"}), "invalid_grant", "Invalid ID Token signature.", nil},
		{"expired", aud, expired, "invalid_grant", "ID Token expired", nil},
		{"stale iat", aud, subjectToken(t, c, map[string]any{"iat": emu.Now().Add(-25 * time.Hour).Unix()}), "invalid_grant", "is stale to sign-in.", nil},
		{"missing sub", aud, subjectToken(t, c, map[string]any{"sub": nil}), "invalid_grant", "missing the required claim sub", nil},
		{"not a JWT", aud, "abc", "invalid_grant", "Unable to parse the ID Token.", nil},
		{"project id in audience", strings.Replace(aud, c.proj.Number, c.proj.ID, 1), subjectToken(t, c, nil), "invalid_request", `Invalid value for "audience"`, nil},
		{"malformed audience", "//iam.googleapis.com/projects/1/pools/x", subjectToken(t, c, nil), "invalid_request", `Invalid value for "audience"`, nil},
		{"unknown provider", strings.Replace(aud, "/ekm-oidc", "/nope-oidc", 1), subjectToken(t, c, nil), "invalid_target", "disabled or deleted", nil},
		{"empty scope", aud, subjectToken(t, c, nil), "invalid_request", `Invalid value for "scope"`, func(v url.Values) { v.Set("scope", "") }},
		{"grant type", aud, subjectToken(t, c, nil), "unsupported_grant_type", "grant_type", func(v url.Values) { v.Set("grant_type", "client_credentials") }},
		{"token type", aud, subjectToken(t, c, nil), "invalid_request", "subject_token_type", func(v url.Values) { v.Set("subject_token_type", "urn:ietf:params:oauth:token-type:saml2") }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, m := stsRaw(t, tc.aud, tc.tok, tc.mod)
			wantSTS(t, st, m, tc.code, tc.desc)
		})
	}
}

func patchProvider(t *testing.T, c *customer, mask string, body any) {
	t.Helper()
	u := "https://iam.googleapis.com/v1/" + strings.TrimPrefix(c.res.STSAudience, "//iam.googleapis.com/") + "?updateMask=" + mask
	if st, m := api(t, "PATCH", u, c.proj.AdminToken, body); st != 200 {
		t.Fatalf("patch provider: %d %v", st, m)
	}
}

func poolURL(c *customer) string {
	a := strings.TrimPrefix(c.res.STSAudience, "//iam.googleapis.com/")
	return "https://iam.googleapis.com/v1/" + a[:strings.Index(a, "/providers/")]
}

func encryptRaw(t *testing.T, c *customer, tok string) (int, map[string]any) {
	return api(t, "POST", kmsURL(c.res.KeyName)+":encrypt", tok, map[string]any{"plaintext": "aGVsbG8="})
}

// A disabled provider refuses exchanges but its tokens keep working; a
// deleted (or disabled) pool refuses exchanges and stops its tokens
// until undeleted.
func TestSTSProviderDisabledPoolDeleted(t *testing.T) {
	c := newCustomer(t, nil)
	tok := fedToken(t, c)
	patchProvider(t, c, "disabled", map[string]any{"disabled": true})
	st, m := stsRaw(t, c.res.STSAudience, subjectToken(t, c, nil), nil)
	wantSTS(t, st, m, "invalid_target", "the pool or provider is disabled or deleted")
	if st, m := encryptRaw(t, c, tok); st != 200 {
		t.Fatalf("token of a disabled provider: %d %v", st, m)
	}
	patchProvider(t, c, "disabled", map[string]any{"disabled": false})
	tok = fedToken(t, c)

	if st, m := api(t, "DELETE", poolURL(c), c.proj.AdminToken, nil); st != 200 || m["done"] != true {
		t.Fatalf("delete pool: %d %v", st, m)
	}
	st, m = stsRaw(t, c.res.STSAudience, subjectToken(t, c, nil), nil)
	wantSTS(t, st, m, "invalid_target", "disabled or deleted")
	st, m = encryptRaw(t, c, tok)
	wantErr(t, st, m, 401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
	if st, m := api(t, "POST", poolURL(c)+":undelete", c.proj.AdminToken, "{}"); st != 200 {
		t.Fatalf("undelete: %d %v", st, m)
	}
	if st, m := encryptRaw(t, c, tok); st != 200 {
		t.Fatalf("after undelete: %d %v", st, m)
	}
	// Disabling the pool also stops its tokens.
	if st, m := api(t, "PATCH", poolURL(c)+"?updateMask=disabled", c.proj.AdminToken, map[string]any{"disabled": true}); st != 200 {
		t.Fatalf("disable pool: %d %v", st, m)
	}
	st, m = encryptRaw(t, c, tok)
	wantErr(t, st, m, 401, "UNAUTHENTICATED", "invalid authentication credentials")
}

// jwksJson uploaded on the provider: no fetch, any issuer URL.
func TestSTSUploadedJWKS(t *testing.T) {
	jwks, _ := json.Marshal(jwkSet{Keys: []jwk{rsaJWK(&otherKey.PublicKey, "up-1")}})
	iss := "https://unfetchable.ekm.test"
	c := newCustomer(t, func(cfg *gcponboard.Config) { cfg.Issuer = iss; cfg.SkipGrant = true })
	patchProvider(t, c, "oidc.jwksJson", map[string]any{"oidc": map[string]any{"jwksJson": string(jwks)}})
	tok := subjectToken(t, c, map[string]any{"iss": iss, "_key": otherKey, "_kid": "up-1"})
	if st, m := stsRaw(t, c.res.STSAudience, tok, nil); st != 200 {
		t.Fatalf("%d %v", st, m)
	}
}

// An external issuer (as ekm's own will be) is fetched over https through
// Options.IssuerHTTPClient; an unreachable one is Google's "Error
// connecting" refusal.
func TestSTSFetchesExternalIssuer(t *testing.T) {
	c := newCustomer(t, func(cfg *gcponboard.Config) { cfg.Issuer = issuerSrv.URL })
	tok := subjectToken(t, c, map[string]any{"iss": issuerSrv.URL})
	if st, m := stsRaw(t, c.res.STSAudience, tok, nil); st != 200 {
		t.Fatalf("%d %v", st, m)
	}
	bad := newCustomer(t, func(cfg *gcponboard.Config) { cfg.Issuer = issuerSrv.URL + "/missing" })
	st, m := stsRaw(t, bad.res.STSAudience, subjectToken(t, bad, map[string]any{"iss": issuerSrv.URL + "/missing"}), nil)
	wantSTS(t, st, m, "invalid_grant", "Error connecting to the given credential's issuer.")
}

// Attribute mapping beyond google.subject, a condition over attributes,
// and a principalSet grant.
func TestSTSAttributesAndPrincipalSet(t *testing.T) {
	c := newCustomer(t, func(cfg *gcponboard.Config) { cfg.SkipGrant = true })
	patchProvider(t, c, "attributeMapping,attributeCondition", map[string]any{
		"attributeMapping":   map[string]string{"google.subject": "assertion.sub", "attribute.tier": "assertion.tier", "google.groups": "assertion.groups"},
		"attributeCondition": `attribute.tier in ['gold', 'silver'] && (google.subject.startsWith("ekm-") || 'admins' in google.groups)`,
	})
	ok := subjectToken(t, c, map[string]any{"tier": "gold", "groups": []string{"ekm"}})
	st, m := stsRaw(t, c.res.STSAudience, subjectToken(t, c, map[string]any{"tier": "bronze", "groups": []string{}}), nil)
	wantSTS(t, st, m, "unauthorized_client", "rejected by the attribute condition")
	st, m = stsRaw(t, c.res.STSAudience, ok, nil)
	if st != 200 {
		t.Fatalf("%d %v", st, m)
	}
	tok := m["access_token"].(string)
	set := "principalSet://iam.googleapis.com/projects/" + c.proj.Number + "/locations/global/workloadIdentityPools/ekm-pool/attribute.tier/gold"
	st, m = api(t, "POST", kmsURL(c.res.KeyName)+":setIamPolicy", c.proj.AdminToken,
		map[string]any{"policy": map[string]any{"bindings": []any{map[string]any{"role": gcponboard.RoleEncrypterDecrypter, "members": []string{set}}}}})
	if st != 200 {
		t.Fatalf("%d %v", st, m)
	}
	if st, m := encryptRaw(t, c, tok); st != 200 {
		t.Fatalf("principalSet grant: %d %v", st, m)
	}
}
