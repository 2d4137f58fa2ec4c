package ekmtest

import (
	"context"
	"os"
	"testing"

	"github.com/oracle/oci-go-sdk/v65/common"
	"github.com/oracle/oci-go-sdk/v65/identity"
	"github.com/oracle/oci-go-sdk/v65/keymanagement"

	"github.com/ekm-dev/ekm/app"
	"github.com/ekm-dev/ekm/emulator/ocicloud"
	"github.com/ekm-dev/ekm/internal/ocionboard"
)

// OCIRegion is the region of the OCI customers' vaults in tests.
const OCIRegion = "us-ashburn-1"

// ociEnv lists the variables the OCI Go SDK reads that could point a test
// elsewhere or change its behaviour.
var ociEnv = []string{"OCI_CONFIG_FILE", "OCI_SDK_DEFAULT_RETRY_ENABLED", "OCI_SDK_DEFAULT_CIRCUITBREAKER_ENABLED", "OCI_REGION_METADATA",
	"OCI_DEFAULT_REALM", "OCI_DEFAULT_CERTS_PATH", "OCI_CUSTOM_CLIENT_TIMEOUT", "OCI_RESOURCE_PRINCIPAL_VERSION",
	"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "NO_PROXY", "no_proxy"}

// StartOCIEmulator starts an OCI emulator for the rest of the test.
func StartOCIEmulator(t testing.TB) *ocicloud.Emulator {
	t.Helper()
	emu, err := ocicloud.New(ocicloud.Options{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	return emu
}

// startOCI returns the oci configuration of ekm serve against the OCI
// emulator: ekm's identity is the emulator's vendor user, given as an
// operator gives it (tenancy, user, fingerprint, the path of the private
// key file, group), as in `ekm serve --oci-tenancy … --oci-private-key-file
// … --oci-dial-override … --oci-ca-file …`.
func startOCI(t testing.TB, o Options, e *Env) app.OCIConfig {
	t.Helper()
	for _, k := range ociEnv {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	e.OCI = o.OCIEmulator
	if e.OCI == nil {
		e.OCI = StartOCIEmulator(t)
	}
	v := e.OCI.Vendor()
	return app.OCIConfig{TenancyOCID: v.TenancyOCID, GroupOCID: v.GroupOCID, UserOCID: v.UserOCID, Fingerprint: v.Fingerprint,
		PrivateKeyFile: v.KeyFile, DialOverride: e.OCI.Addr(), CAFile: e.OCI.CAFile()}
}

// OCICustomer is one customer tenancy in the OCI emulator, with its
// administrator's clients.
type OCICustomer struct {
	Admin ocicloud.Credentials
	// Options are the onboarding options (ocionboard.Run), Result what the
	// customer registers.
	Options ocionboard.Options
	Result  ocionboard.Result
	Clients *ocionboard.Clients
}

// NewOCICustomer creates a customer tenancy in the OCI emulator whose
// onboarding options name this env's org and ekm's tenancy and group; mod
// may change them (skip steps) before OnboardOCI runs them.
func (e *Env) NewOCICustomer(t testing.TB, mod func(*ocionboard.Options)) *OCICustomer {
	t.Helper()
	admin, err := e.OCI.CreateTenancy("", OCIRegion)
	if err != nil {
		t.Fatal(err)
	}
	v := e.OCI.Vendor()
	c := &OCICustomer{Admin: admin, Options: ocionboard.Options{HTTPClient: e.OCI.HTTPClient(), TenancyOCID: admin.TenancyOCID, Region: OCIRegion,
		Credentials:       common.NewRawConfigurationProvider(admin.TenancyOCID, admin.UserOCID, OCIRegion, admin.Fingerprint, admin.PrivateKeyPEM, nil),
		VendorTenancyOCID: v.TenancyOCID, VendorGroupOCID: v.GroupOCID, OrgID: e.OrgID, Protection: "SOFTWARE"}}
	if mod != nil {
		mod(&c.Options)
	}
	if c.Clients, err = ocionboard.NewClients(c.Options); err != nil {
		t.Fatal(err)
	}
	return c
}

// OnboardOCI creates a customer tenancy and runs its onboarding steps
// (internal/ocionboard: the statements of docs/oci.md).
func (e *Env) OnboardOCI(t testing.TB, mod func(*ocionboard.Options)) *OCICustomer {
	t.Helper()
	c := e.NewOCICustomer(t, mod)
	var err error
	if c.Result, err = ocionboard.Run(context.Background(), c.Options); err != nil {
		t.Fatal(err)
	}
	return c
}

// Management is the client of the customer's vault's management endpoint.
func (c *OCICustomer) Management(t testing.TB) keymanagement.KmsManagementClient {
	t.Helper()
	m, err := c.Clients.Management(c.Result.ManagementEndpoint)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// SetPolicy replaces the statements of the customer's policy (creating it
// if it was deleted or never made); DeletePolicy deletes it.
func (c *OCICustomer) SetPolicy(ctx context.Context, stmts []string) error {
	if c.Result.PolicyOCID == "" {
		p, err := c.Clients.Identity.CreatePolicy(ctx, identity.CreatePolicyRequest{CreatePolicyDetails: identity.CreatePolicyDetails{
			CompartmentId: &c.Admin.TenancyOCID, Name: common.String("ekm-key-access"), Description: common.String("ekm may read the vault and use the key"),
			Statements: stmts}})
		if err == nil {
			c.Result.PolicyOCID = *p.Id
		}
		return err
	}
	_, err := c.Clients.Identity.UpdatePolicy(ctx, identity.UpdatePolicyRequest{PolicyId: &c.Result.PolicyOCID,
		UpdatePolicyDetails: identity.UpdatePolicyDetails{Statements: stmts}})
	return err
}

// DeletePolicy deletes the customer's policy.
func (c *OCICustomer) DeletePolicy(ctx context.Context) error {
	_, err := c.Clients.Identity.DeletePolicy(ctx, identity.DeletePolicyRequest{PolicyId: &c.Result.PolicyOCID})
	if err == nil {
		c.Result.PolicyOCID = ""
	}
	return err
}
