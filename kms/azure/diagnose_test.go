package azure

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/internal/dialoverride"
	"github.com/ekm-dev/ekm/kms"
)

type wantErr struct {
	class kms.Class
	code  string
	step  string
}

func checkErr(t *testing.T, name string, err error, w wantErr, mustContain ...string) {
	t.Helper()
	var ke *kms.Error
	if !errors.As(err, &ke) {
		t.Errorf("%s: error %v is not a *kms.Error", name, err)
		return
	}
	// A step names what to fix; so does a parameter (tenant_id).
	where := ke.Step
	if where == "" {
		where = ke.Param
	}
	if ke.Class != w.class || ke.Code != w.code || where != w.step {
		t.Errorf("%s: got %s/%s/step %q, want %s/%s/step %q (%s)", name, ke.Class, ke.Code, where, w.class, w.code, w.step, ke.Message)
	}
	if ke.Message == "" || ke.RequestID == "" {
		t.Errorf("%s: message %q, request id %q", name, ke.Message, ke.RequestID)
	}
	for _, s := range mustContain {
		if !strings.Contains(ke.Message, s) {
			t.Errorf("%s: message %q lacks %q", name, ke.Message, s)
		}
	}
	if strings.Contains(ke.Error(), "tok-") || strings.Contains(ke.Error(), "s3cret") {
		t.Errorf("%s: error leaks a token or secret: %s", name, ke.Error())
	}
}

// Entra errors (recorded shapes, see the reference) on the token endpoint.
func TestDiagnoseEntra(t *testing.T) {
	entra := func(status int, body string) func(http.ResponseWriter, *http.Request) bool {
		return func(w http.ResponseWriter, r *http.Request) bool {
			if strings.HasSuffix(r.URL.Path, "/token") {
				writeRaw(w, status, body)
				return true
			}
			return false
		}
	}
	for _, tc := range []struct {
		name  string
		fault func(http.ResponseWriter, *http.Request) bool
		want  wantErr
		has   []string
	}{
		{"no service principal", entra(400, `{"error":"unauthorized_client","error_description":"AADSTS700016: Application with identifier '99999999-8888-7777-6666-555555555555' was not found in the directory '11111111-2222-3333-4444-555555555555'.","error_codes":[700016]}`),
			wantErr{kms.Revoked, CodeServicePrincipalMissing, StepServicePrincipal}, []string{fakeClientID, fakeTenant}},
		{"service principal disabled", entra(400, `{"error":"unauthorized_client","error_description":"AADSTS7000112: Application is disabled.","error_codes":[7000112]}`),
			wantErr{kms.Revoked, CodeServicePrincipalDisabled, StepServicePrincipal}, nil},
		{"tenant not found", func(w http.ResponseWriter, r *http.Request) bool {
			// Entra answers unknown tenants already at OIDC discovery.
			writeRaw(w, 400, `{"error":"invalid_tenant","error_description":"AADSTS90002: Tenant '11111111-2222-3333-4444-555555555555' not found.","error_codes":[90002]}`)
			return true
		}, wantErr{kms.Revoked, CodeTenantNotFound, ParamTenantID}, nil},
		{"bad secret", entra(401, `{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.","error_codes":[7000215]}`),
			wantErr{kms.Operator, CodeAppCredentialRejected, ""}, nil},
		{"bad cert assertion", entra(401, `{"error":"invalid_client","error_description":"AADSTS700027: Client assertion failed signature validation.","error_codes":[700027]}`),
			wantErr{kms.Operator, CodeAppCredentialRejected, ""}, nil},
		{"no federated credential", entra(400, `{"error":"invalid_request","error_description":"AADSTS70021: No matching federated identity record found for presented assertion.","error_codes":[70021]}`),
			wantErr{kms.Operator, CodeAppCredentialRejected, ""}, nil},
		{"federated subject", entra(400, `{"error":"invalid_request","error_description":"AADSTS700213: No matching federated identity record found for presented assertion subject.","error_codes":[700213]}`),
			wantErr{kms.Operator, CodeAppCredentialRejected, ""}, nil},
		{"conditional access", entra(400, `{"error":"access_denied","error_description":"AADSTS53003: Access has been blocked by Conditional Access policies.","error_codes":[53003]}`),
			wantErr{kms.Revoked, CodeConditionalAccess, StepRestrictions}, nil},
		{"entra 503", entra(503, `{"error":"temporarily_unavailable","error_codes":[]}`),
			wantErr{kms.Outage, CodeIdentityUnavailable, ""}, nil},
		{"entra 429", entra(429, `{"error":"temporarily_unavailable"}`),
			wantErr{kms.Outage, CodeIdentityUnavailable, ""}, nil},
		{"entra unknown", entra(400, `{"error":"invalid_request","error_codes":[9999999]}`),
			wantErr{kms.Outage, CodeAuthenticationFailed, ""}, nil},
		{"entra not json", entra(400, `<html>oops</html>`),
			wantErr{kms.Outage, CodeAuthenticationFailed, ""}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAzure(t)
			f.entraFault = tc.fault
			p := f.provider(t, f.driver(t, nil), fakeTenant)
			_, err := p.Wrap(context.Background(), make([]byte, 32), testAAD)
			checkErr(t, tc.name, err, tc.want, tc.has...)
		})
	}
}

func TestDiagnoseTenantNotFoundAtRegistrationIsInvalid(t *testing.T) {
	f := newFakeAzure(t)
	f.entraFault = func(w http.ResponseWriter, r *http.Request) bool {
		writeRaw(w, 400, `{"error":"invalid_tenant","error_description":"AADSTS90002: Tenant not found.","error_codes":[90002]}`)
		return true
	}
	p := f.provider(t, f.driver(t, nil), fakeTenant)
	checkErr(t, "preflight", p.Preflight(context.Background()), wantErr{kms.Invalid, CodeTenantNotFound, ParamTenantID})
}

func TestDiagnoseTenantMismatch(t *testing.T) {
	f := newFakeAzure(t)
	f.tenant = "aaaaaaaa-0000-0000-0000-000000000000" // the vault's real tenant
	p := f.provider(t, f.driver(t, nil), fakeTenant)
	_, err := p.Wrap(context.Background(), make([]byte, 32), testAAD)
	checkErr(t, "wrap", err, wantErr{kms.Revoked, CodeTenantMismatch, ParamTenantID}, f.tenant)
	checkErr(t, "preflight", p.Preflight(context.Background()), wantErr{kms.Invalid, CodeTenantMismatch, ParamTenantID})
	if n := f.tokenCalls.Load(); n != 0 {
		t.Fatalf("requested %d tokens for a tenant that was not registered", n)
	}
}

// Key Vault errors (recorded bodies, see the reference) per operation.
func TestDiagnoseKeyVault(t *testing.T) {
	kv := func(status int, body string, hdr ...string) func(http.ResponseWriter, *http.Request) bool {
		return func(w http.ResponseWriter, r *http.Request) bool {
			for i := 0; i+1 < len(hdr); i += 2 {
				w.Header().Set(hdr[i], hdr[i+1])
			}
			writeRaw(w, status, body)
			return true
		}
	}
	type call func(p *Provider, w kmsWrapped) error
	wrap := func(p *Provider, _ kmsWrapped) error {
		_, err := p.Wrap(context.Background(), make([]byte, 32), testAAD)
		return err
	}
	unwrap := func(p *Provider, w kmsWrapped) error {
		_, err := p.Unwrap(context.Background(), w, testAAD)
		return err
	}
	describe := func(p *Provider, _ kmsWrapped) error { _, err := p.Describe(context.Background()); return err }
	for _, tc := range []struct {
		name  string
		call  call
		fault func(http.ResponseWriter, *http.Request) bool
		want  wantErr
		has   []string
	}{
		{"rbac decrypt", unwrap, kv(403, rbacDenyBody), wantErr{kms.Revoked, CodeForbiddenByRBAC, StepRoleOrAssignment}, []string{"Microsoft.KeyVault/vaults/keys/decrypt/action", "step 2", "step 4"}},
		{"rbac no action in message", wrap, kv(403, `{"error":{"code":"Forbidden","message":"Caller is not authorized.","innererror":{"code":"ForbiddenByRbac"}}}`),
			wantErr{kms.Revoked, CodeForbiddenByRBAC, StepRoleOrAssignment}, []string{"Microsoft.KeyVault/vaults/keys/encrypt/action"}},
		{"rbac injected action", wrap, kv(403, `{"error":{"code":"Forbidden","message":"Action: 'Evil <script>'","innererror":{"code":"ForbiddenByRbac"}}}`),
			wantErr{kms.Revoked, CodeForbiddenByRBAC, StepRoleOrAssignment}, []string{"Microsoft.KeyVault/vaults/keys/encrypt/action"}},
		{"key disabled", unwrap, kv(403, `{"error":{"code":"Forbidden","message":"Operation decrypt is not allowed on a disabled key.","innererror":{"code":"KeyDisabled"}}}`),
			wantErr{kms.Revoked, CodeKeyDisabled, StepKey}, nil},
		{"key op forbidden", unwrap, kv(403, `{"error":{"code":"Forbidden","message":"Operation decrypt is not permitted on this key.","innererror":{"code":"KeyOperationForbidden"}}}`),
			wantErr{kms.Revoked, CodeKeyOperationForbidden, StepKeyOrRestriction}, []string{"decrypt"}},
		{"access policy", describe, kv(403, `{"error":{"code":"Forbidden","message":"The user, group or application 'appid=x' does not have keys get permission on key vault 'ekmtest;location=westeurope'.","innererror":{"code":"AccessDenied"}}}`),
			wantErr{kms.Revoked, CodeAccessPolicyDenied, StepRoleAssignment}, nil},
		{"firewall", wrap, kv(403, `{"error":{"code":"Forbidden","message":"Client address (1.2.3.4) is not authorized and caller is not a trusted service","innererror":{"code":"ForbiddenByFirewall"}}}`),
			wantErr{kms.Revoked, CodeForbiddenByFirewall, StepRestrictions}, nil},
		{"other 403", wrap, kv(403, `{"error":{"code":"Forbidden","message":"no"}}`), wantErr{kms.Revoked, CodeForbidden, StepRoleAssignment}, nil},
		{"key not found", describe, kv(404, `{"error":{"code":"KeyNotFound","message":"A key with (name/id) k was not found in this key vault."}}`),
			wantErr{kms.Revoked, CodeKeyNotFound, StepKey}, nil},
		{"akv10032", wrap, kv(401, `{"error":{"code":"Unauthorized","message":"AKV10032: Invalid issuer. Expected one of https://sts.windows.net/aaaaaaaa-0000-0000-0000-000000000000/, found https://sts.windows.net/11111111-2222-3333-4444-555555555555/."}}`),
			wantErr{kms.Revoked, CodeTenantMismatch, ParamTenantID}, nil},
		{"401 other", wrap, kv(401, `{"error":{"code":"Unauthorized","message":"AKV10022: Invalid audience."}}`), wantErr{kms.Operator, CodeUnauthorized, ""}, nil},
		{"corrupt ciphertext", unwrap, kv(400, `{"error":{"code":"BadParameter","message":"Decryption failed."}}`), wantErr{kms.Invalid, CodeInvalidCiphertext, ""}, nil},
		{"encrypt bad parameter", wrap, kv(400, `{"error":{"code":"BadParameter","message":"Invalid algorithm."}}`), wantErr{kms.Invalid, CodeBadRequest, StepKey}, nil},
		{"throttled", wrap, kv(429, `{"error":{"code":"Throttled","message":"Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached"}}`),
			wantErr{kms.Outage, CodeThrottled, ""}, nil},
		{"500", unwrap, kv(500, `{"error":{"code":"InternalServerError","message":"x"}}`), wantErr{kms.Outage, CodeServiceError, ""}, nil},
		{"503 html", describe, kv(503, `<html>busy</html>`), wantErr{kms.Outage, CodeServiceError, ""}, nil},
		{"409", wrap, kv(409, `{"error":{"code":"Conflict","message":"Key is currently being recovered."}}`), wantErr{kms.Outage, CodeUnexpectedResponse, ""}, nil},
		{"redirect not followed", wrap, kv(302, ``, "Location", "https://evil.com/"), wantErr{kms.Outage, CodeUnexpectedResponse, ""}, nil},
		{"oversized body", describe, kv(500, `{"error":{"code":"x","message":"`+strings.Repeat("a", 2<<20)+`"}}`), wantErr{kms.Outage, CodeUnexpectedResponse, ""}, nil},
		{"bad success body", wrap, kv(200, `{"kid":"https://evil.com/keys/k/0123456789abcdef0123456789abcdef","value":"AAAA"}`), wantErr{kms.Outage, CodeUnexpectedResponse, ""}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAzure(t)
			p := f.provider(t, f.driver(t, nil), fakeTenant)
			w, err := p.Wrap(context.Background(), make([]byte, 32), testAAD)
			if err != nil {
				t.Fatal(err)
			}
			f.kvFault = tc.fault
			checkErr(t, tc.name, tc.call(p, w), tc.want, tc.has...)
		})
	}
}

type kmsWrapped = kms.Wrapped

func TestDiagnoseTimeoutAndConnection(t *testing.T) {
	f := newFakeAzure(t)
	d := f.driver(t, func(c *Config) {
		// TryTimeout must leave room for a token request on a loaded machine
		// (-race, 2 cores); the hanging fault below still makes it fire.
		c.Retry = RetryConfig{MaxRetries: 1, RetryDelay: time.Millisecond, MaxRetryDelay: 10 * time.Millisecond, TryTimeout: time.Second}
	})
	p := f.provider(t, d, fakeTenant)
	if _, err := p.Describe(context.Background()); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	// A defer runs when the test function exits (even on t.Fatal), before any
	// cleanup, so a hung handler never blocks the fake server's Close.
	defer close(release)
	f.kvFault = func(w http.ResponseWriter, r *http.Request) bool {
		select { // hang until the client gives up or the test ends
		case <-r.Context().Done():
		case <-release:
		}
		return true
	}
	_, err := p.Wrap(context.Background(), make([]byte, 32), testAAD)
	checkErr(t, "try timeout", err, wantErr{kms.Outage, CodeTimeout, ""})

	// The caller's own deadline is also an outage, never a revocation.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = p.Wrap(ctx, make([]byte, 32), testAAD)
	checkErr(t, "caller deadline", err, wantErr{kms.Outage, CodeTimeout, ""})

	// Nothing listens on a closed listener's port.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	hc, err := dialoverride.NewClientFromPEM(addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	p = f.provider(t, f.driver(t, func(c *Config) { c.HTTPClient = hc }), fakeTenant)
	_, err = p.Wrap(context.Background(), make([]byte, 32), testAAD)
	checkErr(t, "connection refused", err, wantErr{kms.Outage, CodeConnectionFailed, ""})
}

func TestPreflight(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(f *fakeAzure)
		want *wantErr
	}{
		{"good", func(*fakeAzure) {}, nil},
		{"hsm key", func(f *fakeAzure) { f.kty = "RSA-HSM" }, nil},
		{"ec key", func(f *fakeAzure) { f.kty = "EC" }, &wantErr{kms.Invalid, CodeKeyTypeUnsupported, StepKey}},
		{"oct key", func(f *fakeAzure) { f.kty = "oct-HSM" }, &wantErr{kms.Invalid, CodeKeyTypeUnsupported, StepKey}},
		{"disabled", func(f *fakeAzure) { f.enabled = false }, &wantErr{kms.Revoked, CodeKeyDisabled, StepKey}},
		{"expired", func(f *fakeAzure) { f.expires = 1600000000 }, &wantErr{kms.Revoked, CodeKeyExpired, StepKey}},
		{"no decrypt", func(f *fakeAzure) { f.keyOps = []string{"encrypt", "wrapKey"} }, &wantErr{kms.Revoked, CodeKeyOperationForbidden, StepKeyOrRestriction}},
		{"no encrypt", func(f *fakeAzure) { f.keyOps = []string{"decrypt"} }, &wantErr{kms.Revoked, CodeKeyOperationForbidden, StepKeyOrRestriction}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAzure(t)
			tc.mod(f)
			p := f.provider(t, f.driver(t, nil), fakeTenant)
			err := p.Preflight(context.Background())
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			checkErr(t, tc.name, err, *tc.want)
		})
	}
	// Expiry is judged on the driver's clock.
	f := newFakeAzure(t)
	f.expires = time.Now().Add(time.Hour).Unix()
	later := func() time.Time { return time.Now().Add(2 * time.Hour) }
	p := f.provider(t, f.driver(t, func(c *Config) { c.Now = later }), fakeTenant)
	checkErr(t, "clock", p.Preflight(context.Background()), wantErr{kms.Revoked, CodeKeyExpired, StepKey})
}

func TestFederatedTokenFileGoneIsOperator(t *testing.T) {
	f := newFakeAzure(t)
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte("eyJ.fake.jwt\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := f.driver(t, func(c *Config) { c.ClientSecret = ""; c.FederatedTokenFile = tok })
	p := f.provider(t, d, fakeTenant)
	if err := os.Remove(tok); err != nil {
		t.Fatal(err)
	}
	_, err := p.Wrap(context.Background(), make([]byte, 32), testAAD)
	checkErr(t, "token file gone", err, wantErr{kms.Operator, CodeAppCredentialRejected, ""})
}

func TestFederatedAssertionSent(t *testing.T) {
	f := newFakeAzure(t)
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte("eyJ.fake.jwt\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 4)
	f.entraFault = func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasSuffix(r.URL.Path, "/token") {
			_ = r.ParseForm()
			got <- r.PostForm.Get("client_assertion")
			writeRaw(w, 200, `{"token_type":"Bearer","expires_in":3600,"access_token":"tok-x"}`)
			return true
		}
		return false
	}
	d := f.driver(t, func(c *Config) { c.ClientSecret = ""; c.FederatedTokenFile = tok })
	p := f.provider(t, d, fakeTenant)
	if _, err := p.Describe(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a := <-got; a != "eyJ.fake.jwt" {
		t.Fatalf("client_assertion = %q", a)
	}
}
