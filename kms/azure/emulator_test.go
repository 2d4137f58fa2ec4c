package azure

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"

	emu "github.com/ekm-dev/ekm/emulator/azurecloud"
	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/kms/kmstest"
)

// The emulator tests drive the provider through the production code path:
// only Config.HTTPClient differs from real Azure.

var allDataActions = []string{
	"Microsoft.KeyVault/vaults/keys/read",
	"Microsoft.KeyVault/vaults/keys/encrypt/action",
	"Microsoft.KeyVault/vaults/keys/decrypt/action",
}

// clearAzureEnv keeps a developer's Azure environment out of the tests.
func clearAzureEnv(t testing.TB) {
	for _, k := range []string{"AZURE_AUTHORITY_HOST", "AZURE_REGIONAL_AUTHORITY_NAME", "AZURE_IDENTITY_DISABLE_CP1",
		"AZURE_ADDITIONALLY_ALLOWED_TENANTS", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID",
		"AZURE_FEDERATED_TOKEN_FILE", "AZURE_CLIENT_CERTIFICATE_PATH", "SSL_CERT_FILE"} {
		t.Setenv(k, "")
	}
}

func startEmulator(t testing.TB) *emu.Emulator {
	t.Helper()
	clearAzureEnv(t)
	e, err := emu.New(emu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// customer is one onboarded customer tenant in the emulator.
type customer struct {
	t       testing.TB
	e       *emu.Emulator
	tenant  emu.Tenant
	spID    string
	vault   string // name
	keyName string
	roleID  string // full role definition id
	raURL   string // current role assignment URL
	admin   *azkeys.Client
}

type onboarding struct {
	noSP        bool
	dataActions []string
	assignAt    string // key name to scope the assignment to ("" = our key)
	kty         string // "" = RSA
}

func (c *customer) vaultURL() string { return "https://" + c.vault + ".vault.azure.net/" }

func (c *customer) arm() string {
	return "https://management.azure.com/subscriptions/" + c.tenant.SubscriptionID
}

func (c *customer) keyScope(key string) string {
	return c.arm() + "/resourceGroups/customer-rg/providers/Microsoft.KeyVault/vaults/" + c.vault + "/keys/" + key
}

func newGUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// onboard performs the customer's onboarding steps over raw Graph/ARM calls
// with the tenant admin's tokens, and creates the key on the data plane.
func onboard(t testing.TB, e *emu.Emulator, o onboarding) *customer {
	t.Helper()
	tn, err := e.CreateTenant()
	if err != nil {
		t.Fatal(err)
	}
	var rb [6]byte
	_, _ = rand.Read(rb[:])
	c := &customer{t: t, e: e, tenant: tn, vault: "ekm" + hex.EncodeToString(rb[:]), keyName: fakeOrg + "--kek"}
	gt, mt := tn.AdminTokens.Graph, tn.AdminTokens.Management

	// Step 1: service principal for ekm's app.
	if !o.noSP {
		status, sp := c.call(http.MethodPost, "https://graph.microsoft.com/v1.0/servicePrincipals", gt, map[string]string{"appId": e.App().ClientID})
		if status != http.StatusCreated {
			t.Fatalf("create SP: %d %v", status, sp)
		}
		c.spID = sp["id"].(string)
	}
	// The vault (RBAC mode).
	rg := c.arm() + "/resourceGroups/customer-rg"
	if status, m := c.call(http.MethodPut, rg+"?api-version=2021-04-01", mt, map[string]any{"location": "westeurope"}); status/100 != 2 {
		t.Fatalf("resource group: %d %v", status, m)
	}
	if status, m := c.call(http.MethodPut, rg+"/providers/Microsoft.KeyVault/vaults/"+c.vault+"?api-version=2023-07-01", mt, map[string]any{
		"location":   "westeurope",
		"properties": map[string]any{"tenantId": tn.ID, "sku": map[string]string{"family": "A", "name": "standard"}, "enableRbacAuthorization": true},
	}); status/100 != 2 {
		t.Fatalf("vault: %d %v", status, m)
	}
	// Step 2: custom role.
	actions := o.dataActions
	if actions == nil {
		actions = allDataActions
	}
	roleGUID := newGUID()
	c.roleID = "/subscriptions/" + tn.SubscriptionID + "/providers/Microsoft.Authorization/roleDefinitions/" + roleGUID
	if status, m := c.call(http.MethodPut, "https://management.azure.com"+c.roleID+"?api-version=2022-04-01", mt, map[string]any{
		"name": roleGUID, "properties": map[string]any{
			"roleName": "ekm Key Encrypt/Decrypt", "description": "ekm", "type": "CustomRole",
			"permissions":      []map[string]any{{"actions": []string{}, "notActions": []string{}, "dataActions": actions, "notDataActions": []string{}}},
			"assignableScopes": []string{"/subscriptions/" + tn.SubscriptionID},
		}}); status != http.StatusCreated {
		t.Fatalf("role: %d %v", status, m)
	}
	// Step 3: the key, created by the admin on the data plane.
	c.admin, err = azkeys.NewClient(c.vaultURL(), adminToken(tn.AdminTokens.Vault), &azkeys.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: e.HTTPClient()}})
	if err != nil {
		t.Fatal(err)
	}
	kty := azkeys.KeyTypeRSA
	params := azkeys.CreateKeyParameters{Kty: &kty, KeySize: ptr(int32(2048))}
	if o.kty == "EC" {
		kty = azkeys.KeyTypeEC
		params = azkeys.CreateKeyParameters{Kty: &kty, Curve: ptr(azkeys.CurveNameP256)}
	}
	for _, n := range []string{c.keyName, fakeOrg + "--other"} {
		if _, err := c.admin.CreateKey(context.Background(), n, params, nil); err != nil {
			t.Fatal(err)
		}
	}
	// Step 4: assignment at the key's scope.
	if !o.noSP {
		at := o.assignAt
		if at == "" {
			at = c.keyName
		}
		if err := c.assign(at); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func (c *customer) assign(key string) error {
	u := c.keyScope(key) + "/providers/Microsoft.Authorization/roleAssignments/" + newGUID() + "?api-version=2022-04-01"
	status, m := c.call(http.MethodPut, u, c.tenant.AdminTokens.Management, map[string]any{"properties": map[string]any{
		"roleDefinitionId": c.roleID, "principalId": c.spID, "principalType": "ServicePrincipal"}})
	if status != http.StatusCreated {
		return errors.New("role assignment: " + http.StatusText(status) + " " + toJSON(m))
	}
	c.raURL = u
	return nil
}

func (c *customer) unassign() error {
	if status, m := c.call(http.MethodDelete, c.raURL, c.tenant.AdminTokens.Management, nil); status != http.StatusOK {
		return errors.New("delete role assignment: " + http.StatusText(status) + " " + toJSON(m))
	}
	return nil
}

func toJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

func (c *customer) call(method, url, token string, body any) (int, map[string]any) {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.e.HTTPClient().Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return resp.StatusCode, m
}

type adminToken string

func (s adminToken) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: string(s), ExpiresOn: time.Now().Add(time.Hour)}, nil
}

func ptr[T any](v T) *T { return &v }

func emuDriver(t testing.TB, e *emu.Emulator, mod func(*Config)) *Driver {
	t.Helper()
	a := e.App()
	cfg := Config{ClientID: a.ClientID, ClientSecret: a.ClientSecret, HTTPClient: e.HTTPClient(),
		Retry: RetryConfig{MaxRetries: 2, RetryDelay: time.Millisecond, MaxRetryDelay: 20 * time.Millisecond, TryTimeout: 5 * time.Second}}
	if mod != nil {
		mod(&cfg)
	}
	d, err := NewDriver(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (c *customer) params() kms.Params {
	return kms.Params{ParamTenantID: c.tenant.ID, ParamVaultURI: c.vaultURL(), ParamKeyName: c.keyName}
}

func (c *customer) open(t testing.TB, d *Driver) *Provider {
	t.Helper()
	p, err := d.open(fakeOrg, c.params())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConformanceEmulator(t *testing.T) {
	e := startEmulator(t)
	d := emuDriver(t, e, nil) // one driver: credentials and clients are shared across customers
	kmstest.Run(t, func(t *testing.T) kmstest.Harness {
		c := onboard(t, e, onboarding{})
		p := c.open(t, d)
		if err := p.Preflight(context.Background()); err != nil {
			t.Fatalf("Preflight: %v", err)
		}
		var mu sync.Mutex
		return kmstest.Harness{
			Provider: p, Driver: d, OrgID: fakeOrg,
			Rotate: func(ctx context.Context) error {
				_, err := c.admin.RotateKey(ctx, c.keyName, nil)
				return err
			},
			Revoke:  func(context.Context) error { mu.Lock(); defer mu.Unlock(); return c.unassign() },
			Restore: func(context.Context) error { mu.Lock(); defer mu.Unlock(); return c.assign(c.keyName) },
		}
	})
}

func TestEmulatorCertificateCredential(t *testing.T) {
	e := startEmulator(t)
	a := e.App()
	file := filepath.Join(t.TempDir(), "app.pem")
	if err := os.WriteFile(file, append(append([]byte{}, a.CertPEM...), a.KeyPEM...), 0o600); err != nil {
		t.Fatal(err)
	}
	d := emuDriver(t, e, func(c *Config) { c.ClientSecret = ""; c.CertificateFile = file })
	c := onboard(t, e, onboarding{})
	p := c.open(t, d)
	w, err := p.Wrap(context.Background(), make([]byte, 32), testAAD)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Unwrap(context.Background(), w, testAAD); err != nil {
		t.Fatal(err)
	}
}

// TestEmulatorDiagnosis provokes each customer-side misconfiguration in the
// emulator and checks the diagnosis.
func TestEmulatorDiagnosis(t *testing.T) {
	e := startEmulator(t)
	d := emuDriver(t, e, nil)
	ctx := context.Background()
	wrap := func(p *Provider) error { _, err := p.Wrap(ctx, make([]byte, 32), testAAD); return err }

	t.Run("no service principal", func(t *testing.T) {
		c := onboard(t, e, onboarding{noSP: true})
		checkErr(t, "wrap", wrap(c.open(t, d)), wantErr{kms.Revoked, CodeServicePrincipalMissing, StepServicePrincipal}, e.App().ClientID)
	})
	t.Run("role without decrypt", func(t *testing.T) {
		c := onboard(t, e, onboarding{dataActions: allDataActions[:2]})
		p := c.open(t, d)
		if err := p.Preflight(ctx); err != nil {
			t.Fatal(err)
		}
		w, err := p.Wrap(ctx, make([]byte, 32), testAAD)
		if err != nil {
			t.Fatal(err)
		}
		_, err = p.Unwrap(ctx, w, testAAD)
		checkErr(t, "unwrap", err, wantErr{kms.Revoked, CodeForbiddenByRBAC, StepRoleOrAssignment}, "Microsoft.KeyVault/vaults/keys/decrypt/action")
	})
	t.Run("assignment at another key", func(t *testing.T) {
		c := onboard(t, e, onboarding{assignAt: fakeOrg + "--other"})
		p := c.open(t, d)
		checkErr(t, "preflight", p.Preflight(ctx), wantErr{kms.Revoked, CodeForbiddenByRBAC, StepRoleOrAssignment}, "Microsoft.KeyVault/vaults/keys/read")
		checkErr(t, "wrap", wrap(p), wantErr{kms.Revoked, CodeForbiddenByRBAC, StepRoleOrAssignment}, "Microsoft.KeyVault/vaults/keys/encrypt/action")
	})
	t.Run("EC key", func(t *testing.T) {
		c := onboard(t, e, onboarding{kty: "EC"})
		p := c.open(t, d)
		checkErr(t, "preflight", p.Preflight(ctx), wantErr{kms.Invalid, CodeKeyTypeUnsupported, StepKey}, `"EC"`)
		// Key Vault refuses the operation itself (the emulator, like Azure
		// for EC keys, answers KeyOperationForbidden); either way the
		// customer is sent to step 3 and it is never mistaken for an outage.
		var ke *kms.Error
		if err := wrap(p); !errors.As(err, &ke) || ke.Class == kms.Outage || !strings.Contains(ke.Step, StepKey) {
			t.Fatalf("wrap with EC key: %v", err)
		}
	})
	t.Run("disabled key", func(t *testing.T) {
		c := onboard(t, e, onboarding{})
		p := c.open(t, d)
		w, err := p.Wrap(ctx, make([]byte, 32), testAAD)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.admin.UpdateKey(ctx, c.keyName, "", azkeys.UpdateKeyParameters{KeyAttributes: &azkeys.KeyAttributes{Enabled: ptr(false)}}, nil); err != nil {
			t.Fatal(err)
		}
		checkErr(t, "preflight", p.Preflight(ctx), wantErr{kms.Revoked, CodeKeyDisabled, StepKey})
		_, err = p.Unwrap(ctx, w, testAAD)
		checkErr(t, "unwrap", err, wantErr{kms.Revoked, CodeKeyDisabled, StepKey})
	})
	t.Run("key ops without decrypt", func(t *testing.T) {
		c := onboard(t, e, onboarding{})
		p := c.open(t, d)
		w, err := p.Wrap(ctx, make([]byte, 32), testAAD)
		if err != nil {
			t.Fatal(err)
		}
		ops := []*azkeys.KeyOperation{ptr(azkeys.KeyOperationEncrypt)}
		if _, err := c.admin.UpdateKey(ctx, c.keyName, "", azkeys.UpdateKeyParameters{KeyOps: ops}, nil); err != nil {
			t.Fatal(err)
		}
		checkErr(t, "preflight", p.Preflight(ctx), wantErr{kms.Revoked, CodeKeyOperationForbidden, StepKeyOrRestriction}, "decrypt")
		_, err = p.Unwrap(ctx, w, testAAD)
		checkErr(t, "unwrap", err, wantErr{kms.Revoked, CodeKeyOperationForbidden, StepKeyOrRestriction})
	})
	t.Run("deleted key", func(t *testing.T) {
		c := onboard(t, e, onboarding{})
		p := c.open(t, d)
		w, err := p.Wrap(ctx, make([]byte, 32), testAAD)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.admin.DeleteKey(ctx, c.keyName, nil); err != nil {
			t.Fatal(err)
		}
		_, err = p.Unwrap(ctx, w, testAAD)
		checkErr(t, "unwrap", err, wantErr{kms.Revoked, CodeKeyNotFound, StepKey})
	})
	t.Run("unknown tenant", func(t *testing.T) {
		c := onboard(t, e, onboarding{})
		ps := c.params()
		ps[ParamTenantID] = newGUID()
		p, err := d.open(fakeOrg, ps)
		if err != nil {
			t.Fatal(err)
		}
		// The vault's challenge names its real tenant, so no token is ever
		// requested for the wrong one.
		checkErr(t, "preflight", p.Preflight(ctx), wantErr{kms.Invalid, CodeTenantMismatch, ParamTenantID}, c.tenant.ID)
		checkErr(t, "wrap", wrap(p), wantErr{kms.Revoked, CodeTenantMismatch, ParamTenantID})
	})
	t.Run("tenant not found", func(t *testing.T) {
		c := onboard(t, e, onboarding{})
		id, err := e.InjectFault(emu.Fault{Host: "login", Status: 400, AADSTS: 90002, ErrorCode: "invalid_tenant"})
		if err != nil {
			t.Fatal(err)
		}
		defer e.RemoveFault(id)
		p := c.open(t, emuDriver(t, e, nil)) // fresh driver: no cached token
		checkErr(t, "preflight", p.Preflight(ctx), wantErr{kms.Invalid, CodeTenantNotFound, ParamTenantID})
	})
	t.Run("wrong app secret", func(t *testing.T) {
		c := onboard(t, e, onboarding{})
		bad := emuDriver(t, e, func(cfg *Config) { cfg.ClientSecret = "not-the-secret" })
		checkErr(t, "wrap", wrap(c.open(t, bad)), wantErr{kms.Operator, CodeAppCredentialRejected, ""})
	})
	t.Run("key named for another org", func(t *testing.T) {
		c := onboard(t, e, onboarding{})
		// The same vault and key, registered by another org, is refused
		// before any call.
		if _, err := d.Open("org-zzzzzzzzzzzzzzzzzzzzzzzzzz", c.params()); kms.ClassOf(err) != kms.Invalid {
			t.Fatalf("Open by another org: %v", err)
		}
	})
}

// TestEmulatorTransient checks throttling, 5xx and timeouts: always Outage,
// and never more than MaxRetries+1 attempts per call.
func TestEmulatorTransient(t *testing.T) {
	e := startEmulator(t)
	ctx := context.Background()
	const maxRetries = 2
	d := emuDriver(t, e, func(c *Config) {
		c.Retry = RetryConfig{MaxRetries: maxRetries, RetryDelay: time.Millisecond, MaxRetryDelay: 20 * time.Millisecond, TryTimeout: 200 * time.Millisecond}
	})
	c := onboard(t, e, onboarding{})
	p := c.open(t, d)
	if _, err := p.Describe(ctx); err != nil { // warm the token
		t.Fatal(err)
	}
	attempts := func(f func() error) (int, error) {
		e.ResetCounters()
		err := f()
		return e.Counters()["kv.encrypt"], err
	}
	wrap := func() error { _, err := p.Wrap(ctx, make([]byte, 32), testAAD); return err }
	host := c.vault + ".vault.azure.net"

	for _, tc := range []struct {
		name  string
		fault emu.Fault
		want  wantErr
	}{
		{"429", emu.Fault{Host: host, Operation: "kv.encrypt", Status: 429}, wantErr{kms.Outage, CodeThrottled, ""}},
		{"503", emu.Fault{Host: host, Operation: "kv.encrypt", Status: 503}, wantErr{kms.Outage, CodeServiceError, ""}},
		{"500", emu.Fault{Host: host, Operation: "kv.encrypt", Status: 500}, wantErr{kms.Outage, CodeServiceError, ""}},
		{"timeout", emu.Fault{Host: host, Operation: "kv.encrypt", Latency: emu.Duration(5 * time.Second)}, wantErr{kms.Outage, CodeTimeout, ""}},
		{"reset", emu.Fault{Host: host, Operation: "kv.encrypt", Reset: true}, wantErr{kms.Outage, CodeConnectionFailed, ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := e.InjectFault(tc.fault)
			if err != nil {
				t.Fatal(err)
			}
			n, err := attempts(wrap)
			e.RemoveFault(id)
			checkErr(t, tc.name, err, tc.want)
			if n != maxRetries+1 {
				t.Fatalf("%d attempts, want %d", n, maxRetries+1)
			}
		})
	}

	t.Run("recovers within retries", func(t *testing.T) {
		if _, err := e.InjectFault(emu.Fault{Host: host, Operation: "kv.encrypt", Status: 429, Count: maxRetries}); err != nil {
			t.Fatal(err)
		}
		n, err := attempts(wrap)
		if err != nil || n != maxRetries+1 {
			t.Fatalf("err %v after %d attempts", err, n)
		}
	})

	t.Run("vault limiter with long Retry-After gives up at once", func(t *testing.T) {
		s := emu.DefaultSettings()
		s.Throttle.RSA2048 = 2 // two weighted ops per window
		s.Throttle.WindowSeconds = 60
		if err := e.SetSettings(s); err != nil {
			t.Fatal(err)
		}
		defer e.SetSettings(emu.DefaultSettings())
		var err error
		n := 0
		for range 5 {
			var k int
			k, err = attempts(wrap)
			n += k
			if err != nil {
				break
			}
		}
		// Retry-After (seconds to the next window) exceeds MaxRetryDelay, so
		// azcore returns the 429 without waiting or retrying.
		checkErr(t, "limiter", err, wantErr{kms.Outage, CodeThrottled, ""})
		if n > 3 {
			t.Fatalf("%d encrypt attempts for 2 allowed ops: retried a long Retry-After", n)
		}
	})

	t.Run("entra outage", func(t *testing.T) {
		id, err := e.InjectFault(emu.Fault{Host: "login", Status: 503})
		if err != nil {
			t.Fatal(err)
		}
		defer e.RemoveFault(id)
		p := c.open(t, emuDriver(t, e, nil)) // fresh driver: must fetch a token
		checkErr(t, "wrap", func() error { _, err := p.Wrap(ctx, make([]byte, 32), testAAD); return err }(), wantErr{kms.Outage, CodeIdentityUnavailable, ""})
	})
}

// signRS256 makes a compact JWS, as a Kubernetes OIDC issuer would.
func signRS256(t *testing.T, k *rsa.PrivateKey, claims map[string]any) string {
	t.Helper()
	enc := func(v any) string { b, _ := json.Marshal(v); return base64.RawURLEncoding.EncodeToString(b) }
	in := enc(map[string]any{"alg": "RS256", "typ": "JWT", "kid": "k1"}) + "." + enc(claims)
	h := sha256.Sum256([]byte(in))
	sig, err := rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, h[:])
	if err != nil {
		t.Fatal(err)
	}
	return in + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func TestEmulatorWorkloadIdentity(t *testing.T) {
	e := startEmulator(t)
	const iss, sub = "https://oidc.example.test/cluster-1", "system:serviceaccount:ekm:ekm-server"
	k := testRSAKey(1)
	jwks := map[string]any{"keys": []map[string]string{{"kty": "RSA", "kid": "k1",
		"n": base64.RawURLEncoding.EncodeToString(k.N.Bytes()), "e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(k.E)).Bytes())}}}
	b, _ := json.Marshal(jwks)
	if err := e.RegisterIssuer(iss, b); err != nil {
		t.Fatal(err)
	}
	if err := e.AddFederatedCredential("", emu.FederatedCredential{Name: "k8s", Issuer: iss, Subject: sub, Audiences: []string{"api://AzureADTokenExchange"}}); err != nil {
		t.Fatal(err)
	}
	token := func(sub string) []byte {
		now := time.Now()
		return []byte(signRS256(t, k, map[string]any{"iss": iss, "sub": sub, "aud": "api://AzureADTokenExchange",
			"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(), "jti": newGUID()}))
	}
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, token(sub), 0o600); err != nil {
		t.Fatal(err)
	}
	d := emuDriver(t, e, func(c *Config) { c.ClientSecret = ""; c.FederatedTokenFile = file })
	c := onboard(t, e, onboarding{})
	p := c.open(t, d)
	w, err := p.Wrap(context.Background(), make([]byte, 32), testAAD)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Unwrap(context.Background(), w, testAAD); err != nil {
		t.Fatal(err)
	}

	// A projected token for another service account matches no federated
	// credential: ekm's own problem, not the customer's.
	if err := os.WriteFile(file, token("system:serviceaccount:other:sa"), 0o600); err != nil {
		t.Fatal(err)
	}
	c2 := onboard(t, e, onboarding{})
	_, err = c2.open(t, d).Wrap(context.Background(), make([]byte, 32), testAAD)
	checkErr(t, "wrong subject", err, wantErr{kms.Operator, CodeAppCredentialRejected, ""})
}
