package azurecloud

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
)

// clearAzureEnv neutralises environment variables the SDK reads, so tests
// never depend on (or reach) a developer's real Azure setup.
func clearAzureEnv(t *testing.T) {
	for _, k := range []string{
		"AZURE_AUTHORITY_HOST", "AZURE_REGIONAL_AUTHORITY_NAME", "AZURE_IDENTITY_DISABLE_CP1",
		"AZURE_ADDITIONALLY_ALLOWED_TENANTS", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID",
		"AZURE_FEDERATED_TOKEN_FILE", "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_CLIENT_CERTIFICATE_PASSWORD",
		"AZURE_CLIENT_SEND_CERTIFICATE_CHAIN", "AZURE_USERNAME", "AZURE_PASSWORD", "SSL_CERT_FILE",
	} {
		t.Setenv(k, "")
	}
}

func startEmu(t *testing.T, opts Options) *Emulator {
	t.Helper()
	clearAzureEnv(t)
	e, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// sdkOpts are client options that send everything to the emulator, with
// fast retries so failure paths stay quick.
func sdkOpts(e *Emulator) azcore.ClientOptions {
	return azcore.ClientOptions{
		Transport: e.HTTPClient(),
		Retry:     policy.RetryOptions{MaxRetries: 2, RetryDelay: 5 * time.Millisecond, MaxRetryDelay: 20 * time.Millisecond},
	}
}

// customer is an onboarded customer tenant: the app has a service
// principal, and a vault exists.
type customer struct {
	Tenant
	spID     string
	vaultURL string
}

func onboard(t *testing.T, e *Emulator, vaultName string, roles ...string) customer {
	t.Helper()
	tn, err := e.CreateTenant()
	if err != nil {
		t.Fatal(err)
	}
	sp, err := e.CreateServicePrincipal(tn.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	u, err := e.CreateVault(tn.ID, "rg1", vaultName)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range roles {
		scope := "/subscriptions/" + tn.SubscriptionID + "/resourceGroups/rg1/providers/Microsoft.KeyVault/vaults/" + vaultName
		if _, err := e.AssignRole(tn.ID, scope, r, sp); err != nil {
			t.Fatal(err)
		}
	}
	return customer{Tenant: tn, spID: sp, vaultURL: u}
}

func secretCred(t *testing.T, e *Emulator, tenantID string) *azidentity.ClientSecretCredential {
	t.Helper()
	a := e.App()
	c, err := azidentity.NewClientSecretCredential(tenantID, a.ClientID, a.ClientSecret,
		&azidentity.ClientSecretCredentialOptions{ClientOptions: sdkOpts(e)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func keysClient(t *testing.T, e *Emulator, vaultURL string, cred azcore.TokenCredential) *azkeys.Client {
	t.Helper()
	c, err := azkeys.NewClient(vaultURL, cred, &azkeys.ClientOptions{ClientOptions: sdkOpts(e)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// adminKeysClient uses the tenant admin's static vault token.
func adminKeysClient(t *testing.T, e *Emulator, c customer) *azkeys.Client {
	return keysClient(t, e, c.vaultURL, staticToken(c.AdminTokens.Vault))
}

type staticToken string

func (s staticToken) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: string(s), ExpiresOn: time.Now().Add(time.Hour)}, nil
}

func respErr(t *testing.T, err error) *azcore.ResponseError {
	t.Helper()
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		t.Fatalf("want *azcore.ResponseError, got %T: %v", err, err)
	}
	return re
}

// innerCode extracts error.innererror.code, which the SDK does not surface.
func innerCode(t *testing.T, re *azcore.ResponseError) (code, inner, msg string) {
	t.Helper()
	var body struct {
		Error struct {
			Code       string `json:"code"`
			Message    string `json:"message"`
			InnerError struct {
				Code string `json:"code"`
			} `json:"innererror"`
		} `json:"error"`
	}
	b, err := io.ReadAll(re.RawResponse.Body)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &body); err != nil {
		t.Fatalf("error body %q: %v", b, err)
	}
	return body.Error.Code, body.Error.InnerError.Code, body.Error.Message
}

// call does a raw HTTPS request through the emulator's client.
func call(t *testing.T, e *Emulator, method, url, token string, body any) (int, map[string]any, http.Header) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if len(bytes.TrimSpace(b)) > 0 && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s %s: body %q: %v", method, url, b, err)
		}
	}
	return resp.StatusCode, m, resp.Header
}

func ptr[T any](v T) *T { return &v }

func mustPEMBlock(t *testing.T, b []byte) []byte {
	t.Helper()
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("no PEM block")
	}
	return blk.Bytes
}

var mgmtScope = policy.TokenRequestOptions{Scopes: []string{"https://management.azure.com/.default"}}

func errorsAs(err error, target any) bool { return errors.As(err, target) }

func newSecretCredForBench(e *Emulator, tenantID string, a AppCredentials) (*azidentity.ClientSecretCredential, error) {
	return azidentity.NewClientSecretCredential(tenantID, a.ClientID, a.ClientSecret,
		&azidentity.ClientSecretCredentialOptions{ClientOptions: sdkOpts(e)})
}

// syncWriter serialises writes from server goroutines for the log test.
type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.String()
}
