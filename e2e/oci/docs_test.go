package oci

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oracle/oci-go-sdk/v65/common"
	"github.com/oracle/oci-go-sdk/v65/identity"
	"github.com/oracle/oci-go-sdk/v65/keymanagement"

	"github.com/ekm-dev/ekm/e2e/e2ekit"
	"github.com/ekm-dev/ekm/ekmtest"
	"github.com/ekm-dev/ekm/emulator/ocicloud"
	"github.com/ekm-dev/ekm/internal/ocionboard"
)

// docStatements returns the policy statements docs/oci.md prints: its
// json blocks that are arrays of strings, by a word they contain.
func docStatements(t *testing.T, word string) []string {
	t.Helper()
	b, err := os.ReadFile("../../docs/oci.md")
	e2ekit.Check(t, err)
	var found [][]string
	for _, m := range regexp.MustCompile("(?s)```json\n(.*?)\n```").FindAllStringSubmatch(string(b), -1) {
		var stmts []string
		if json.Unmarshal([]byte(m[1]), &stmts) == nil && len(stmts) > 0 && strings.Contains(stmts[0], word) {
			found = append(found, stmts)
		}
	}
	if len(found) != 1 {
		t.Fatalf("docs/oci.md has %d statement blocks with %q", len(found), word)
	}
	return found[0]
}

// TestDocs applies what docs/oci.md prints, with the SDK calls its oci CLI
// commands make: the operator's Endorse statements are the emulator's
// vendor tenancy's; the customer's steps 1 and 2 (compartment, vault, key
// with its tag, the policy's exact statements with the placeholders
// replaced as the doc's sed command does) let the key be registered with the
// OpenAI SDK and used.
func TestDocs(t *testing.T) {
	endorse := docStatements(t, "Endorse")
	if !slices.Equal(endorse, ocionboard.VendorStatementsTemplate) {
		t.Fatalf("docs/oci.md and ocionboard disagree on the operator's statements:\n%q\n%q", endorse, ocionboard.VendorStatementsTemplate)
	}
	var vendor []string
	for _, s := range endorse {
		vendor = append(vendor, strings.ReplaceAll(s, "<ekm group name>", ocicloud.VendorGroupName))
	}
	slices.Sort(vendor)
	emulated := slices.Sorted(slices.Values(ocicloud.VendorStatements))
	if !slices.Equal(vendor, emulated) {
		t.Fatalf("the emulator's vendor tenancy does not endorse what docs/oci.md says:\n%q\n%q", vendor, emulated)
	}
	admitDoc := docStatements(t, "Define tenancy")
	if !slices.Equal(admitDoc, ocionboard.StatementsTemplate) {
		t.Fatalf("docs/oci.md and ocionboard disagree on the customer's statements:\n%q\n%q", admitDoc, ocionboard.StatementsTemplate)
	}
	// The doc's sed command replaces every placeholder of the statements.
	b, _ := os.ReadFile("../../docs/oci.md")
	seds := map[string]string{}
	for _, m := range regexp.MustCompile(`-e "s\|(<[^>|]+>)\|([^|"]+)\|"`).FindAllStringSubmatch(string(b), -1) {
		seds[m[1]] = m[2]
	}
	for _, ph := range []string{ocionboard.VendorTenancyPlaceholder, ocionboard.VendorGroupPlaceholder, ocionboard.CompartmentPlaceholder,
		ocionboard.VaultPlaceholder, ocionboard.KeyPlaceholder} {
		if seds[ph] == "" {
			t.Fatalf("docs/oci.md's sed does not replace %s", ph)
		}
	}

	env := start(t, ekmtest.Options{ProbeInterval: time.Hour})
	ctx := context.Background()
	cust := env.NewOCICustomer(t, nil)
	tenancy := cust.Admin.TenancyOCID
	v := env.OCI.Vendor()
	// Step 1.
	// oci iam compartment create --compartment-id $TENANCY --name ekm --description "ekm's customer key"
	cp, err := cust.Clients.Identity.CreateCompartment(ctx, identity.CreateCompartmentRequest{CreateCompartmentDetails: identity.CreateCompartmentDetails{
		CompartmentId: &tenancy, Name: common.String("ekm"), Description: common.String("ekm's customer key")}})
	e2ekit.Check(t, err)
	// oci kms management vault create --compartment-id $COMPARTMENT --display-name ekm-vault --vault-type DEFAULT
	vault, err := cust.Clients.Vault.CreateVault(ctx, keymanagement.CreateVaultRequest{CreateVaultDetails: keymanagement.CreateVaultDetails{
		CompartmentId: cp.Id, DisplayName: common.String("ekm-vault"), VaultType: keymanagement.CreateVaultDetailsVaultTypeDefault}})
	e2ekit.Check(t, err)
	// oci kms management vault get --vault-id $VAULT --query 'data."management-endpoint"'
	got, err := cust.Clients.Vault.GetVault(ctx, keymanagement.GetVaultRequest{VaultId: vault.Id})
	e2ekit.Check(t, err)
	mgmt, err := cust.Clients.Management(*got.ManagementEndpoint)
	e2ekit.Check(t, err)
	// oci kms management key create --endpoint $MGMT --compartment-id $COMPARTMENT --display-name ekm-kek
	//   --key-shape '{"algorithm":"AES","length":32}' --protection-mode HSM --freeform-tags "{\"ekm-org\":\"$ORG_ID\"}"
	var shape keymanagement.KeyShape
	e2ekit.Check(t, json.Unmarshal([]byte(`{"algorithm":"AES","length":32}`), &shape))
	key, err := mgmt.CreateKey(ctx, keymanagement.CreateKeyRequest{CreateKeyDetails: keymanagement.CreateKeyDetails{
		CompartmentId: cp.Id, DisplayName: common.String("ekm-kek"), KeyShape: &shape, ProtectionMode: keymanagement.CreateKeyDetailsProtectionModeHsm,
		FreeformTags: map[string]string{"ekm-org": env.OrgID}}})
	e2ekit.Check(t, err)
	// Step 2: sed … ekm-policy.json > ekm-statements.json;
	// oci iam policy create --compartment-id $TENANCY --name ekm-key-access --statements file://ekm-statements.json
	vars := map[string]string{"$EKM_TENANCY": v.TenancyOCID, "$EKM_GROUP": v.GroupOCID, "ekm": "ekm", "$VAULT": *vault.Id, "$KEY": *key.Id}
	fill := strings.NewReplacer(ocionboard.VendorTenancyPlaceholder, vars[seds[ocionboard.VendorTenancyPlaceholder]],
		ocionboard.VendorGroupPlaceholder, vars[seds[ocionboard.VendorGroupPlaceholder]], ocionboard.CompartmentPlaceholder, vars[seds[ocionboard.CompartmentPlaceholder]],
		ocionboard.VaultPlaceholder, vars[seds[ocionboard.VaultPlaceholder]], ocionboard.KeyPlaceholder, vars[seds[ocionboard.KeyPlaceholder]])
	var stmts []string
	for _, s := range admitDoc {
		stmts = append(stmts, fill.Replace(s))
	}
	if strings.Contains(strings.Join(stmts, ""), "<") {
		t.Fatalf("placeholders left: %q", stmts)
	}
	pol, err := cust.Clients.Identity.CreatePolicy(ctx, identity.CreatePolicyRequest{CreatePolicyDetails: identity.CreatePolicyDetails{
		CompartmentId: &tenancy, Name: common.String("ekm-key-access"), Description: common.String("ekm may read the vault and use the key"), Statements: stmts}})
	e2ekit.Check(t, err)
	cust.Result = ocionboard.Result{CompartmentOCID: *cp.Id, VaultOCID: *vault.Id, KeyOCID: *key.Id, KeyVersionOCID: *key.CurrentKeyVersion,
		ManagementEndpoint: *got.ManagementEndpoint, CryptoEndpoint: *got.CryptoEndpoint, PolicyOCID: *pol.Id, Statements: stmts}

	// Register: {"type":"oci","name":"primary","key_ocid":…,"vault_ocid":…,"region":…}.
	f := register(t, env, cust, "primary", "", 1)
	f.MustRead(f.Projects[0], "registered from the docs")
	if k := f.View(); k.Status != "valid" || k.Region != ekmtest.OCIRegion {
		t.Fatalf("%+v", k)
	}
	// EKM_TENANCY and EKM_GROUP are identity.tenancy_ocid and
	// identity.group_ocid of the oci type, as the doc says.
	req, _ := http.NewRequest("GET", env.URL+"/v1/organization/external_key_types", nil)
	req.Header.Set("Authorization", "Bearer "+env.AdminKey)
	resp, err := env.HTTPClient().Do(req)
	e2ekit.Check(t, err)
	defer resp.Body.Close()
	var list struct {
		Data []struct {
			Type     string            `json:"type"`
			Enabled  bool              `json:"enabled"`
			Identity map[string]string `json:"identity"`
		} `json:"data"`
	}
	e2ekit.Check(t, json.NewDecoder(resp.Body).Decode(&list))
	i := slices.IndexFunc(list.Data, func(kt struct {
		Type     string            `json:"type"`
		Enabled  bool              `json:"enabled"`
		Identity map[string]string `json:"identity"`
	}) bool {
		return kt.Type == "oci"
	})
	if i < 0 || !list.Data[i].Enabled || list.Data[i].Identity["tenancy_ocid"] != v.TenancyOCID || list.Data[i].Identity["group_ocid"] != v.GroupOCID {
		t.Fatalf("external key types: %+v", list.Data)
	}
}
