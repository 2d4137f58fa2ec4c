// Package ocionboard runs a customer's OCI onboarding steps of docs/oci.md
// with the official OCI Go SDK, as the customer's administrator: a
// compartment, a vault and an AES-256 key tagged with the ekm organization
// (step 1), and the policy in the root compartment that defines ekm's
// tenancy and group and admits the group to read the vault and use the key
// (step 2). ekm dev and the tests use it against the emulator; it works
// against OCI alike.
package ocionboard

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/oracle/oci-go-sdk/v65/common"
	"github.com/oracle/oci-go-sdk/v65/identity"
	"github.com/oracle/oci-go-sdk/v65/keymanagement"
)

// Placeholders of the policy statements (docs/oci.md prints them so).
const (
	VendorTenancyPlaceholder = "<ekm tenancy OCID>"
	VendorGroupPlaceholder   = "<ekm group OCID>"
	CompartmentPlaceholder   = "<compartment>"
	KeyPlaceholder           = "<key OCID>"
	VaultPlaceholder         = "<vault OCID>"
)

// Aliases the statements define.
const (
	TenancyAlias = "ekm"
	GroupAlias   = "ekm_kms"
)

// StatementsTemplate is the customer's policy (step 2), placeholders
// included: docs/oci.md prints exactly these lines.
var StatementsTemplate = []string{
	"Define tenancy " + TenancyAlias + " as " + VendorTenancyPlaceholder,
	"Define group " + GroupAlias + " as " + VendorGroupPlaceholder,
	"Admit group " + GroupAlias + " of tenancy " + TenancyAlias + " to read vaults in compartment " + CompartmentPlaceholder + " where target.vault.id = '" + VaultPlaceholder + "'",
	"Admit group " + GroupAlias + " of tenancy " + TenancyAlias + " to use keys in compartment " + CompartmentPlaceholder + " where target.key.id = '" + KeyPlaceholder + "'",
}

// VendorStatementsTemplate is the vendor's own policy (the operator's
// set-up, once): its group may use keys and read vaults in any tenancy that
// admits it.
var VendorStatementsTemplate = []string{
	"Endorse group <ekm group name> to read vaults in any-tenancy",
	"Endorse group <ekm group name> to use keys in any-tenancy",
}

// Statements fills StatementsTemplate.
func Statements(vendorTenancy, vendorGroup, compartment, vaultOCID, keyOCID string) []string {
	r := strings.NewReplacer(VendorTenancyPlaceholder, vendorTenancy, VendorGroupPlaceholder, vendorGroup,
		CompartmentPlaceholder, compartment, VaultPlaceholder, vaultOCID, KeyPlaceholder, keyOCID)
	out := make([]string, len(StatementsTemplate))
	for i, s := range StatementsTemplate {
		out[i] = r.Replace(s)
	}
	return out
}

// TagOrg is the freeform tag that ties the key to the ekm organization
// (kms/oci.TagOrg).
const TagOrg = "ekm-org"

// Options are the customer's onboarding.
type Options struct {
	// HTTPClient carries every request (the emulator's, or nil for the
	// SDK's default).
	HTTPClient *http.Client
	// Credentials are the customer administrator's.
	Credentials common.ConfigurationProvider
	TenancyOCID string
	Region      string
	// VendorTenancyOCID and VendorGroupOCID are ekm's (the Spec's
	// identity); OrgID the ekm organization the key is tagged with.
	VendorTenancyOCID, VendorGroupOCID string
	OrgID                              string
	// Compartment is the name of the compartment (below the root) for the
	// vault and key, created if absent; default "ekm".
	Compartment string
	// VaultName and KeyName are display names (default "ekm-vault", "ekm-kek");
	// Protection is HSM (default) or SOFTWARE.
	VaultName, KeyName string
	Protection         string
	// PolicyName is the policy's name (default "ekm-key-access").
	PolicyName string
	// Skip leaves steps (or parts) out, to test their diagnosis.
	Skip struct {
		Tag    bool // the key without the ekm-org tag
		Policy bool // step 2
	}
}

// Result is what the customer registers (key_ocid, vault_ocid, region) and
// what it created.
type Result struct {
	CompartmentOCID    string
	VaultOCID          string
	KeyOCID            string
	KeyVersionOCID     string
	ManagementEndpoint string
	CryptoEndpoint     string
	PolicyOCID         string
	Statements         []string
}

// Clients are the customer administrator's SDK clients.
type Clients struct {
	Identity identity.IdentityClient
	Vault    keymanagement.KmsVaultClient
	o        Options
}

// NewClients builds the administrator's clients for o.Region.
func NewClients(o Options) (*Clients, error) {
	if o.Credentials == nil || o.Region == "" || o.TenancyOCID == "" {
		return nil, errors.New("ocionboard: credentials, tenancy and region are required")
	}
	ic, err := identity.NewIdentityClientWithConfigurationProvider(o.Credentials)
	if err != nil {
		return nil, err
	}
	ic.SetRegion(o.Region)
	vc, err := keymanagement.NewKmsVaultClientWithConfigurationProvider(o.Credentials)
	if err != nil {
		return nil, err
	}
	vc.SetRegion(o.Region)
	c := &Clients{Identity: ic, Vault: vc, o: o}
	c.prepare(&c.Identity.BaseClient)
	c.prepare(&c.Vault.BaseClient)
	return c, nil
}

func (c *Clients) prepare(bc *common.BaseClient) {
	if c.o.HTTPClient != nil {
		bc.HTTPClient = c.o.HTTPClient
	}
	// Every answer as it is (no eventual-consistency retries of minutes).
	p := common.NoRetryPolicy()
	bc.Configuration.RetryPolicy = &p
	bc.Configuration.CircuitBreaker = nil
}

// Management returns the client of a vault's management endpoint.
func (c *Clients) Management(endpoint string) (keymanagement.KmsManagementClient, error) {
	mc, err := keymanagement.NewKmsManagementClientWithConfigurationProvider(c.o.Credentials, endpoint)
	if err != nil {
		return mc, err
	}
	c.prepare(&mc.BaseClient)
	return mc, nil
}

// Run runs steps 1 and 2.
func Run(ctx context.Context, o Options) (Result, error) {
	if o.Compartment == "" {
		o.Compartment = "ekm"
	}
	if o.VaultName == "" {
		o.VaultName = "ekm-vault"
	}
	if o.KeyName == "" {
		o.KeyName = "ekm-kek"
	}
	if o.PolicyName == "" {
		o.PolicyName = "ekm-key-access"
	}
	if o.Protection == "" {
		o.Protection = "HSM"
	}
	c, err := NewClients(o)
	if err != nil {
		return Result{}, err
	}
	var res Result
	// Step 1: compartment, vault, key.
	if res.CompartmentOCID, err = c.compartment(ctx, o.Compartment); err != nil {
		return res, fmt.Errorf("step 1, compartment %s: %w", o.Compartment, err)
	}
	v, err := c.Vault.CreateVault(ctx, keymanagement.CreateVaultRequest{CreateVaultDetails: keymanagement.CreateVaultDetails{
		CompartmentId: &res.CompartmentOCID, DisplayName: &o.VaultName, VaultType: keymanagement.CreateVaultDetailsVaultTypeDefault}})
	if err != nil {
		return res, fmt.Errorf("step 1, create vault: %w", err)
	}
	res.VaultOCID = *v.Id
	vault, err := c.waitVault(ctx, res.VaultOCID)
	if err != nil {
		return res, fmt.Errorf("step 1, vault: %w", err)
	}
	res.ManagementEndpoint, res.CryptoEndpoint = *vault.ManagementEndpoint, *vault.CryptoEndpoint
	mc, err := c.Management(res.ManagementEndpoint)
	if err != nil {
		return res, err
	}
	tags := map[string]string{TagOrg: o.OrgID}
	if o.Skip.Tag {
		tags = nil
	}
	k, err := mc.CreateKey(ctx, keymanagement.CreateKeyRequest{CreateKeyDetails: keymanagement.CreateKeyDetails{
		CompartmentId: &res.CompartmentOCID, DisplayName: &o.KeyName, FreeformTags: tags,
		KeyShape:       &keymanagement.KeyShape{Algorithm: keymanagement.KeyShapeAlgorithmAes, Length: common.Int(32)},
		ProtectionMode: keymanagement.CreateKeyDetailsProtectionModeEnum(o.Protection)}})
	if err != nil {
		return res, fmt.Errorf("step 1, create key: %w", err)
	}
	res.KeyOCID = *k.Id
	key, err := waitKey(ctx, mc, res.KeyOCID)
	if err != nil {
		return res, fmt.Errorf("step 1, key: %w", err)
	}
	res.KeyVersionOCID = *key.CurrentKeyVersion
	// Step 2: the policy, in the root compartment.
	res.Statements = Statements(o.VendorTenancyOCID, o.VendorGroupOCID, o.Compartment, res.VaultOCID, res.KeyOCID)
	if o.Skip.Policy {
		return res, nil
	}
	p, err := c.Identity.CreatePolicy(ctx, identity.CreatePolicyRequest{CreatePolicyDetails: identity.CreatePolicyDetails{
		CompartmentId: &o.TenancyOCID, Name: &o.PolicyName, Description: common.String("ekm may read the vault and use the key"), Statements: res.Statements}})
	if err != nil {
		return res, fmt.Errorf("step 2, create policy: %w", err)
	}
	res.PolicyOCID = *p.Id
	return res, nil
}

// compartment returns the OCID of the named compartment below the root,
// creating it if absent.
func (c *Clients) compartment(ctx context.Context, name string) (string, error) {
	l, err := c.Identity.ListCompartments(ctx, identity.ListCompartmentsRequest{CompartmentId: &c.o.TenancyOCID})
	if err != nil {
		return "", err
	}
	for _, cp := range l.Items {
		if cp.Name != nil && *cp.Name == name && cp.LifecycleState == identity.CompartmentLifecycleStateActive {
			return *cp.Id, nil
		}
	}
	cp, err := c.Identity.CreateCompartment(ctx, identity.CreateCompartmentRequest{CreateCompartmentDetails: identity.CreateCompartmentDetails{
		CompartmentId: &c.o.TenancyOCID, Name: &name, Description: common.String("ekm's customer key")}})
	if err != nil {
		return "", err
	}
	return *cp.Id, nil
}

// poll is how often the provisioning of a vault or key is checked.
const poll = 2 * time.Second

func (c *Clients) waitVault(ctx context.Context, id string) (keymanagement.Vault, error) {
	for {
		v, err := c.Vault.GetVault(ctx, keymanagement.GetVaultRequest{VaultId: &id})
		if err != nil {
			return v.Vault, err
		}
		switch v.LifecycleState {
		case keymanagement.VaultLifecycleStateActive:
			return v.Vault, nil
		case keymanagement.VaultLifecycleStateCreating:
		default:
			return v.Vault, fmt.Errorf("vault %s is %s", id, v.LifecycleState)
		}
		if err := sleep(ctx, poll); err != nil {
			return v.Vault, err
		}
	}
}

func waitKey(ctx context.Context, mc keymanagement.KmsManagementClient, id string) (keymanagement.Key, error) {
	for {
		k, err := mc.GetKey(ctx, keymanagement.GetKeyRequest{KeyId: &id})
		if err != nil {
			return k.Key, err
		}
		switch k.LifecycleState {
		case keymanagement.KeyLifecycleStateEnabled:
			return k.Key, nil
		case keymanagement.KeyLifecycleStateCreating, keymanagement.KeyLifecycleStateEnabling:
		default:
			return k.Key, fmt.Errorf("key %s is %s", id, k.LifecycleState)
		}
		if err := sleep(ctx, poll); err != nil {
			return k.Key, err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
