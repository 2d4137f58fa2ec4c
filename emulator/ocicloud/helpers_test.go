package ocicloud

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"net/http"
	"os"
	"testing"

	"github.com/oracle/oci-go-sdk/v65/common"
	"github.com/oracle/oci-go-sdk/v65/identity"
	"github.com/oracle/oci-go-sdk/v65/keymanagement"
)

// One emulator serves the package's tests (each test works in tenancies
// of its own); tests that change settings, the clock or faults restore
// them.
var emu *Emulator

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	// Nothing from a developer's OCI set-up may reach the SDK.
	for _, k := range []string{"OCI_CONFIG_FILE", "OCI_SDK_DEFAULT_RETRY_ENABLED", "OCI_SDK_DEFAULT_CIRCUITBREAKER_ENABLED",
		"OCI_REGION_METADATA", "OCI_DEFAULT_CERTS_PATH", "HTTPS_PROXY", "https_proxy"} {
		os.Unsetenv(k)
	}
	e, err := New(Options{Settings: &Settings{ManagementQuota: 0, DisabledKeyError: "IncorrectState"}})
	if err != nil {
		panic(err)
	}
	if err := e.Start(); err != nil {
		panic(err)
	}
	defer e.Close()
	emu = e
	return m.Run()
}

const testRegion = "us-ashburn-1"

func provider(c Credentials) common.ConfigurationProvider {
	return common.NewRawConfigurationProvider(c.TenancyOCID, c.UserOCID, c.Region, c.Fingerprint, c.PrivateKeyPEM, nil)
}

// prepare gives an SDK client the emulator's transport, no retries and no
// circuit breaker: tests see every answer.
func prepare(bc *common.BaseClient) {
	bc.HTTPClient = emu.HTTPClient()
	bc.Configuration.CircuitBreaker = nil
	p := common.NoRetryPolicy()
	bc.Configuration.RetryPolicy = &p
}

type clients struct {
	creds Credentials
	vc    keymanagement.KmsVaultClient
	ic    identity.IdentityClient
}

func clientsFor(t testing.TB, c Credentials) *clients {
	t.Helper()
	vc, err := keymanagement.NewKmsVaultClientWithConfigurationProvider(provider(c))
	if err != nil {
		t.Fatal(err)
	}
	vc.SetRegion(testRegion)
	prepare(&vc.BaseClient)
	ic, err := identity.NewIdentityClientWithConfigurationProvider(provider(c))
	if err != nil {
		t.Fatal(err)
	}
	ic.SetRegion(testRegion)
	prepare(&ic.BaseClient)
	return &clients{creds: c, vc: vc, ic: ic}
}

func (cl *clients) mgmt(t testing.TB, endpoint string) keymanagement.KmsManagementClient {
	t.Helper()
	mc, err := keymanagement.NewKmsManagementClientWithConfigurationProvider(provider(cl.creds), endpoint)
	if err != nil {
		t.Fatal(err)
	}
	prepare(&mc.BaseClient)
	return mc
}

func (cl *clients) crypto(t testing.TB, endpoint string) keymanagement.KmsCryptoClient {
	t.Helper()
	cc, err := keymanagement.NewKmsCryptoClientWithConfigurationProvider(provider(cl.creds), endpoint)
	if err != nil {
		t.Fatal(err)
	}
	prepare(&cc.BaseClient)
	return cc
}

// customer is a tenancy with a vault and an AES key.
type customer struct {
	*clients
	vault keymanagement.Vault
	key   keymanagement.Key
	m     keymanagement.KmsManagementClient
	c     keymanagement.KmsCryptoClient
}

func newCustomer(t testing.TB) *customer {
	t.Helper()
	creds, err := emu.CreateTenancy("", testRegion)
	if err != nil {
		t.Fatal(err)
	}
	cu := &customer{clients: clientsFor(t, creds)}
	ctx := context.Background()
	v, err := cu.vc.CreateVault(ctx, keymanagement.CreateVaultRequest{CreateVaultDetails: keymanagement.CreateVaultDetails{
		CompartmentId: &creds.TenancyOCID, DisplayName: common.String("v"), VaultType: keymanagement.CreateVaultDetailsVaultTypeDefault}})
	if err != nil {
		t.Fatal(err)
	}
	cu.vault = v.Vault
	cu.m = cu.mgmt(t, *v.ManagementEndpoint)
	cu.c = cu.crypto(t, *v.CryptoEndpoint)
	cu.key = cu.newKey(t, creds.TenancyOCID, "AES", 32)
	return cu
}

func (cu *customer) newKey(t testing.TB, comp, alg string, n int) keymanagement.Key {
	t.Helper()
	k, err := cu.m.CreateKey(context.Background(), keymanagement.CreateKeyRequest{CreateKeyDetails: keymanagement.CreateKeyDetails{
		CompartmentId: &comp, DisplayName: common.String("k"), ProtectionMode: keymanagement.CreateKeyDetailsProtectionModeSoftware,
		KeyShape: &keymanagement.KeyShape{Algorithm: keymanagement.KeyShapeAlgorithmEnum(alg), Length: common.Int(n)}}})
	if err != nil {
		t.Fatal(err)
	}
	return k.Key
}

func (cu *customer) policy(t testing.TB, comp string, stmts ...string) string {
	t.Helper()
	p, err := cu.ic.CreatePolicy(context.Background(), identity.CreatePolicyRequest{CreatePolicyDetails: identity.CreatePolicyDetails{
		CompartmentId: &comp, Name: common.String("p-" + randBase32(6)), Description: common.String("test"), Statements: stmts}})
	if err != nil {
		t.Fatal(err)
	}
	return *p.Id
}

// serviceError returns the status and code of an SDK error ("" if none).
func serviceError(err error) (int, string) {
	if se, ok := common.IsServiceError(err); ok {
		return se.GetHTTPStatusCode(), se.GetCode()
	}
	return 0, ""
}

func wantError(t testing.TB, err error, status int, code string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want %d %s, got success", status, code)
	}
	s, c := serviceError(err)
	if s != status || c != code {
		t.Fatalf("want %d %s, got %v", status, code, err)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

var _ = errors.New
var _ = http.StatusOK

func newRSA(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	must(t, err)
	return k
}
