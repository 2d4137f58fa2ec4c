package azurecloud

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/ekm-dev/ekm/emulator/emukit"
)

var vaultScope = policy.TokenRequestOptions{Scopes: []string{"https://vault.azure.net/.default"}}

// authFailure asserts an azidentity failure and returns the Entra body.
func authFailure(t *testing.T, err error) (int, map[string]any) {
	t.Helper()
	var af *azidentity.AuthenticationFailedError
	if !errors.As(err, &af) {
		t.Fatalf("want AuthenticationFailedError, got %T: %v", err, err)
	}
	if af.RawResponse == nil {
		t.Fatalf("no raw response: %v", err)
	}
	b, _ := io.ReadAll(af.RawResponse.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("body %q: %v", b, err)
	}
	for _, f := range []string{"error", "error_description", "error_codes", "timestamp", "trace_id", "correlation_id"} {
		if _, ok := m[f]; !ok {
			t.Errorf("Entra error body lacks %q: %s", f, b)
		}
	}
	return af.RawResponse.StatusCode, m
}

func hasCode(m map[string]any, code float64) bool {
	codes, _ := m["error_codes"].([]any)
	return len(codes) == 1 && codes[0] == code
}

func TestCertificateCredential(t *testing.T) {
	e := startEmu(t, Options{})
	c := onboard(t, e, "certvault", roleKVCryptoUser)
	a := e.App()
	certs, key, err := azidentity.ParseCertificates(append(a.CertPEM, a.KeyPEM...), nil)
	if err != nil {
		t.Fatal(err)
	}
	cred, err := azidentity.NewClientCertificateCredential(c.ID, a.ClientID, certs, key,
		&azidentity.ClientCertificateCredentialOptions{ClientOptions: sdkOpts(e)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cred.GetToken(context.Background(), vaultScope); err != nil {
		t.Fatal(err)
	}
	// With the chain (subject-name/issuer auth) too.
	cred2, err := azidentity.NewClientCertificateCredential(c.ID, a.ClientID, certs, key,
		&azidentity.ClientCertificateCredentialOptions{ClientOptions: sdkOpts(e), SendCertificateChain: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cred2.GetToken(context.Background(), vaultScope); err != nil {
		t.Fatal(err)
	}
	// The files written for CLI users hold the same credential.
	pemFile, err := os.ReadFile(a.CertPath)
	if err != nil || !bytes.Equal(pemFile, a.CertPEM) {
		t.Fatalf("cert file: %v", err)
	}
}

func TestCertificateCredentialWrongCert(t *testing.T) {
	e := startEmu(t, Options{})
	c := onboard(t, e, "certvault2")
	certDER, keyDER, err := newSelfSignedRSA("intruder", time.Now(), 1)
	if err != nil {
		t.Fatal(err)
	}
	certs, key, err := azidentity.ParseCertificates(append(emukit.PEMCert(certDER), emukit.PEMKey(keyDER)...), nil)
	if err != nil {
		t.Fatal(err)
	}
	cred, err := azidentity.NewClientCertificateCredential(c.ID, e.App().ClientID, certs, key,
		&azidentity.ClientCertificateCredentialOptions{ClientOptions: sdkOpts(e)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = cred.GetToken(context.Background(), vaultScope)
	status, m := authFailure(t, err)
	if status != http.StatusUnauthorized || m["error"] != "invalid_client" || !hasCode(m, 700027) {
		t.Fatalf("%d %v", status, m)
	}
}

// federatedIssuer is a test OIDC issuer whose JWKS is registered with the
// emulator.
type federatedIssuer struct {
	iss string
	key *rsa.PrivateKey
}

func newIssuer(t *testing.T, e *Emulator) *federatedIssuer {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	iss := &federatedIssuer{iss: "https://oidc.example.test/cluster-1", key: k}
	n, ex := rsaJWK(&k.PublicKey)
	b, _ := json.Marshal(jwks{Keys: []jwk{{Kty: "RSA", Kid: "k1", N: n, E: ex}}})
	if err := e.RegisterIssuer(iss.iss, b); err != nil {
		t.Fatal(err)
	}
	return iss
}

func (f *federatedIssuer) token(t *testing.T, sub, aud string) string {
	t.Helper()
	now := time.Now()
	s, err := signRS256(f.key, map[string]any{"alg": "RS256", "typ": "JWT", "kid": "k1"}, map[string]any{
		"iss": f.iss, "sub": sub, "aud": aud, "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(), "jti": newGUID(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestWorkloadIdentityCredential(t *testing.T) {
	e := startEmu(t, Options{})
	c := onboard(t, e, "wivault", roleKVCryptoUser)
	iss := newIssuer(t, e)
	sub := "system:serviceaccount:ekm:ekm-server"
	if err := e.AddFederatedCredential("", FederatedCredential{Name: "k8s", Issuer: iss.iss, Subject: sub, Audiences: []string{"api://AzureADTokenExchange"}}); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(iss.token(t, sub, "api://AzureADTokenExchange")), 0o600); err != nil {
		t.Fatal(err)
	}
	cred, err := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
		ClientOptions: sdkOpts(e), ClientID: e.App().ClientID, TenantID: c.ID, TokenFilePath: file,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cred.GetToken(context.Background(), vaultScope); err != nil {
		t.Fatal(err)
	}

	// An assertion for another subject matches no federated credential.
	bad, err := azidentity.NewClientAssertionCredential(c.ID, e.App().ClientID, func(context.Context) (string, error) {
		return iss.token(t, "system:serviceaccount:other:sa", "api://AzureADTokenExchange"), nil
	}, &azidentity.ClientAssertionCredentialOptions{ClientOptions: sdkOpts(e)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = bad.GetToken(context.Background(), vaultScope)
	_, m := authFailure(t, err)
	if !hasCode(m, 700213) || !strings.Contains(m["error_description"].(string), "system:serviceaccount:other:sa") {
		t.Fatalf("%v", m)
	}

	// Right claims, wrong signing key.
	other := &federatedIssuer{iss: iss.iss}
	other.key, _ = rsa.GenerateKey(rand.Reader, 2048)
	forged, _ := azidentity.NewClientAssertionCredential(c.ID, e.App().ClientID, func(context.Context) (string, error) {
		return other.token(t, sub, "api://AzureADTokenExchange"), nil
	}, &azidentity.ClientAssertionCredentialOptions{ClientOptions: sdkOpts(e)})
	_, err = forged.GetToken(context.Background(), vaultScope)
	if _, m := authFailure(t, err); !hasCode(m, 50013) {
		t.Fatalf("%v", m)
	}
}

func TestNoServicePrincipal(t *testing.T) {
	e := startEmu(t, Options{})
	tn, err := e.CreateTenant()
	if err != nil {
		t.Fatal(err)
	}
	_, err = secretCred(t, e, tn.ID).GetToken(context.Background(), vaultScope)
	status, m := authFailure(t, err)
	desc := m["error_description"].(string)
	if status != http.StatusBadRequest || m["error"] != "unauthorized_client" || !hasCode(m, 700016) ||
		!strings.HasPrefix(desc, "AADSTS700016: Application with identifier '"+e.App().ClientID+"' was not found in the directory") ||
		!strings.Contains(desc, "\r\nTrace ID: ") {
		t.Fatalf("%d %v", status, m)
	}
}

func TestUnknownTenant(t *testing.T) {
	e := startEmu(t, Options{})
	_, err := secretCred(t, e, newGUID()).GetToken(context.Background(), vaultScope)
	if err == nil || !strings.Contains(err.Error(), "AADSTS90002") {
		t.Fatalf("want AADSTS90002, got %v", err)
	}
	status, m, _ := call(t, e, http.MethodGet, "https://login.microsoftonline.com/"+newGUID()+"/v2.0/.well-known/openid-configuration", "", nil)
	if status != http.StatusBadRequest || m["error"] != "invalid_tenant" {
		t.Fatalf("%d %v", status, m)
	}
}

func TestWrongSecret(t *testing.T) {
	e := startEmu(t, Options{})
	c := onboard(t, e, "wrongsecret")
	cred, err := azidentity.NewClientSecretCredential(c.ID, e.App().ClientID, "not-the-secret",
		&azidentity.ClientSecretCredentialOptions{ClientOptions: sdkOpts(e)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = cred.GetToken(context.Background(), vaultScope)
	status, m := authFailure(t, err)
	if status != http.StatusUnauthorized || m["error"] != "invalid_client" || !hasCode(m, 7000215) {
		t.Fatalf("%d %v", status, m)
	}
}

// TestTokenEndpointRules covers form validation with raw requests.
func TestTokenEndpointRules(t *testing.T) {
	e := startEmu(t, Options{TokenLifetime: 20 * time.Minute})
	c := onboard(t, e, "rulesvault")
	a := e.App()
	post := func(form string) (int, map[string]any) {
		req, _ := http.NewRequest(http.MethodPost, "https://login.microsoftonline.com/"+c.ID+"/oauth2/v2.0/token", strings.NewReader(form))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
		resp, err := e.HTTPClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	base := "grant_type=client_credentials&client_id=" + a.ClientID + "&client_secret=" + a.ClientSecret
	for _, tc := range []struct {
		form   string
		status int
		code   float64
	}{
		{base + "&scope=https%3A%2F%2Fvault.azure.net%2F.default+openid+offline_access+profile&claims=%7B%7D&client_info=1", 200, 0},
		{base + "&scope=https%3A%2F%2Fmanagement.azure.com%2F%2F.default", 200, 0},
		{base + "&scope=https%3A%2F%2Fvault.azure.net%2F.default+https%3A%2F%2Fgraph.microsoft.com%2F.default", 400, 70011},
		{base + "&scope=https%3A%2F%2Fvault.azure.net%2Fuser_impersonation", 400, 1002012},
		{base + "&scope=https%3A%2F%2Funknown.example%2F.default", 400, 500011},
		{base, 400, 900144},
		{"grant_type=password&client_id=" + a.ClientID + "&scope=x", 400, 70003},
		{"grant_type=client_credentials&client_id=" + a.ClientID + "&scope=https%3A%2F%2Fvault.azure.net%2F.default", 401, 7000218},
		{"grant_type=client_credentials&client_id=" + newGUID() + "&client_secret=x&scope=https%3A%2F%2Fvault.azure.net%2F.default", 400, 700016},
	} {
		status, m := post(tc.form)
		if status != tc.status {
			t.Errorf("%s: status %d %v", tc.form, status, m)
			continue
		}
		if tc.status == 200 {
			if m["token_type"] != "Bearer" || m["expires_in"].(float64) != 1200 || m["ext_expires_in"] == nil || m["access_token"] == "" {
				t.Errorf("token response %v", m)
			}
			tok, err := parseJWT(m["access_token"].(string))
			if err != nil || tok.str("tid") != c.ID || tok.str("oid") != c.spID || tok.str("appid") != a.ClientID ||
				tok.str("ver") != "1.0" || tok.str("iss") != "https://sts.windows.net/"+c.ID+"/" || tok.hstr("alg") != "RS256" {
				t.Errorf("claims %v %v", tok.header, tok.claims)
			}
			continue
		}
		if !hasCode(m, tc.code) {
			t.Errorf("%s: %v", tc.form, m)
		}
	}
}

// refreshing assertion replay: a client assertion may be used once.
func TestAssertionReplayAndAudience(t *testing.T) {
	e := startEmu(t, Options{})
	c := onboard(t, e, "replayvault")
	a := e.App()
	key, err := parseRSAKey(mustPEMBlock(t, a.KeyPEM))
	if err != nil {
		t.Fatal(err)
	}
	der := mustPEMBlock(t, a.CertPEM)
	mk := func(aud string) string {
		now := time.Now()
		s, err := signRS256(key, map[string]any{"alg": "RS256", "typ": "JWT", "x5t": b64url.EncodeToString(x5tSHA1(der))},
			map[string]any{"aud": aud, "iss": a.ClientID, "sub": a.ClientID, "jti": newGUID(), "nbf": now.Unix(), "exp": now.Add(10 * time.Minute).Unix()})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	tokenURL := "https://login.microsoftonline.com/" + c.ID + "/oauth2/v2.0/token"
	cred := func(assertion string) error {
		cr, err := azidentity.NewClientAssertionCredential(c.ID, a.ClientID, func(context.Context) (string, error) { return assertion, nil },
			&azidentity.ClientAssertionCredentialOptions{ClientOptions: sdkOpts(e)})
		if err != nil {
			t.Fatal(err)
		}
		_, err = cr.GetToken(context.Background(), vaultScope)
		return err
	}
	good := mk(tokenURL)
	if err := cred(good); err != nil {
		t.Fatal(err)
	}
	if _, m := authFailure(t, cred(good)); !hasCode(m, 50027) {
		t.Fatalf("replay: %v", m)
	}
	if _, m := authFailure(t, cred(mk("https://login.microsoftonline.com/"+newGUID()+"/oauth2/v2.0/token"))); !hasCode(m, 700021) {
		t.Fatalf("audience: %v", m)
	}
}

func TestWrongTenantTokenAKV10032(t *testing.T) {
	e := startEmu(t, Options{})
	a := onboard(t, e, "vaulta", roleKVCryptoOfficer)
	b := onboard(t, e, "vaultb", roleKVCryptoOfficer)
	// A credential that ignores the challenge's tenant, as a misconfigured
	// client might, presents tenant B's token to tenant A's vault.
	credB := secretCred(t, e, b.ID)
	kc := keysClient(t, e, a.vaultURL, tenantIgnoring{credB})
	_, err := kc.GetKey(context.Background(), "k", "", nil)
	re := respErr(t, err)
	code, _, msg := innerCode(t, re)
	if re.StatusCode != 401 || code != "Unauthorized" || !strings.Contains(msg, "AKV10032: Invalid issuer.") ||
		!strings.Contains(msg, "found https://sts.windows.net/"+b.ID+"/") {
		t.Fatalf("%d %s %s", re.StatusCode, code, msg)
	}
	if !strings.HasPrefix(re.RawResponse.Header.Get("WWW-Authenticate"), `Bearer authorization="https://login.microsoftonline.com/`+a.ID+`"`) {
		t.Fatal("401 without challenge")
	}
}

type tenantIgnoring struct{ azcore.TokenCredential }

func (c tenantIgnoring) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	o.TenantID = ""
	return c.TokenCredential.GetToken(ctx, o)
}

func TestClockMovesTokenExpiry(t *testing.T) {
	e := startEmu(t, Options{})
	c := onboard(t, e, "clockvault", roleKVCryptoOfficer)
	ctx := context.Background()
	cred := secretCred(t, e, c.ID)
	kc := keysClient(t, e, c.vaultURL, cred)
	if _, err := kc.CreateKey(ctx, "k", azkeys.CreateKeyParameters{Kty: ptr(azkeys.KeyTypeRSA)}, nil); err != nil {
		t.Fatal(err)
	}
	e.AdvanceClock(2 * time.Hour)
	// The SDK still holds a token it believes valid; the vault refuses it.
	_, err := kc.GetKey(ctx, "k", "", nil)
	re := respErr(t, err)
	if _, _, msg := innerCode(t, re); re.StatusCode != 401 || !strings.Contains(msg, "expired") {
		t.Fatalf("%d %s", re.StatusCode, msg)
	}
	// A fresh credential gets a token valid on the new clock.
	if _, err := keysClient(t, e, c.vaultURL, secretCred(t, e, c.ID)).GetKey(ctx, "k", "", nil); err != nil {
		t.Fatal(err)
	}
	// Admin tokens expire too (24h) and can be re-minted.
	e.AdvanceClock(25 * time.Hour)
	status, _, _ := call(t, e, http.MethodGet, "https://management.azure.com/subscriptions/"+c.SubscriptionID+"?api-version=2022-12-01", c.AdminTokens.Management, nil)
	if status != 401 {
		t.Fatalf("expired admin token: %d", status)
	}
	toks, err := e.AdminTokens(c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if status, _, _ := call(t, e, http.MethodGet, "https://management.azure.com/subscriptions/"+c.SubscriptionID+"?api-version=2022-12-01", toks.Management, nil); status != 200 {
		t.Fatalf("fresh admin token: %d", status)
	}
}

func TestOptionsValidation(t *testing.T) {
	if _, err := New(Options{TokenLifetime: 5 * time.Minute}); err == nil {
		t.Fatal("short token lifetime accepted")
	}
	s := DefaultSettings()
	s.Throttle.WindowSeconds = 0
	if _, err := New(Options{Settings: &s}); err == nil {
		t.Fatal("bad settings accepted")
	}
}
