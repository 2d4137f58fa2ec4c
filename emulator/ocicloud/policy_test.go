package ocicloud

import (
	"context"
	"strings"
	"testing"

	"github.com/oracle/oci-go-sdk/v65/common"
	"github.com/oracle/oci-go-sdk/v65/identity"
	"github.com/oracle/oci-go-sdk/v65/keymanagement"
)

func TestParseStatement(t *testing.T) {
	for _, s := range []string{
		"Allow group Administrators to manage all-resources in tenancy",
		"ALLOW GROUP 'Key Readers' TO read keys IN compartment apps:prod",
		"Allow group id ocid1.group.oc1..aaaaaaaaxyz to use keys in compartment id ocid1.compartment.oc1..aaaaaaaabc",
		"allow any-user to inspect vaults in tenancy where request.operation = 'ListVaults'",
		"Define tenancy ekm as ocid1.tenancy.oc1..aaaaaaaavendor",
		"Define group ekmkms as 'ocid1.group.oc1..aaaaaaaagroup'",
		"Endorse group ekm-kms to use keys in any-tenancy",
		"Endorse group ekm-kms to read vaults in tenancy Customer1",
		"Admit group ekmkms of tenancy ekm to use keys in compartment apps where target.key.id = 'ocid1.key.oc1.iad.abc.aaaa'",
		"Admit group ekmkms of tenancy ekm to read vaults in tenancy where any {target.vault.id='ocid1.vault.oc1.iad.a.b', target.vault.id != 'x'}",
		"Admit any-user of tenancy ekm to use key-family in tenancy where all {request.operation = 'Encrypt', target.key.id = 'k'}",
	} {
		if _, err := parseStatement(s); err != nil {
			t.Errorf("%q: %v", s, err)
		}
	}
	for _, s := range []string{
		"", "Deny group a to use keys in tenancy", "Allow group a to use keys", "Allow group a to eat keys in tenancy",
		"Allow group a to use keys in tenancy where", "Allow group a to use keys in tenancy where target.key.id",
		"Allow group a to use keys in tenancy where target.key.id = 'x", "Define tenancy a as notanocid",
		"Define group a as ocid1.tenancy.oc1..aaaa", "Admit group a to use keys in tenancy",
		"Endorse group a to use keys in compartment x", "Allow group a to use keys in tenancy extra",
		"Allow group a to use keys in tenancy where any {target.key.id = 'x'", "Allow group a to use 'keys' in tenancy",
		"Allow group a to use keys in tenancy where " + strings.Repeat("any {", 20) + "a.b = 'c'" + strings.Repeat("}", 20),
		"Allow group a to use keys in tenancy where 'a.b' = 'c'", "Allow group a! to use keys in tenancy",
		strings.Repeat("x", maxStatementLen+1),
	} {
		if _, err := parseStatement(s); err == nil {
			t.Errorf("accepted %q", truncate(s, 60))
		}
	}
	c, _ := parseStatement("Allow any-user to use keys in tenancy where any {target.key.id = 'K1', all {target.vault.id = 'v', target.key.id != 'k2'}}")
	for vars, want := range map[string]bool{"k1,-": true, "k3,v": true, "k2,v": false, "k3,w": false, "": false} {
		m := map[string]string{}
		if vars != "" {
			k, v, _ := strings.Cut(vars, ",")
			m["target.key.id"] = k
			if v != "-" {
				m["target.vault.id"] = v
			}
		}
		if got := c.cond.eval(m); got != want {
			t.Errorf("%q: %v", vars, got)
		}
	}
}

// The vendor reaches a customer's key only through an Endorse in its own
// tenancy and a matching Admit in the customer's: compartment, where
// conditions and verbs all count, and every refusal looks like a missing
// resource.
func TestCrossTenancyPolicies(t *testing.T) {
	ctx := context.Background()
	cu := newCustomer(t)
	v := emu.Vendor()
	vendor := clientsFor(t, v.Credentials)
	comp, err := cu.ic.CreateCompartment(ctx, identity.CreateCompartmentRequest{CreateCompartmentDetails: identity.CreateCompartmentDetails{
		CompartmentId: &cu.creds.TenancyOCID, Name: common.String("apps"), Description: common.String("apps")}})
	must(t, err)
	inApps := cu.newKey(t, *comp.Id, "AES", 32)
	inRoot := cu.key
	vc := vendor.crypto(t, *cu.vault.CryptoEndpoint)
	vm := vendor.mgmt(t, *cu.vault.ManagementEndpoint)
	enc := func(k keymanagement.Key) error {
		_, err := vc.Encrypt(ctx, keymanagement.EncryptRequest{EncryptDataDetails: keymanagement.EncryptDataDetails{KeyId: k.Id, Plaintext: b64([]byte("x"))}})
		return err
	}
	getVault := func() error {
		_, err := vendor.vc.GetVault(ctx, keymanagement.GetVaultRequest{VaultId: cu.vault.Id})
		return err
	}
	nf := func(what string, err error) {
		t.Helper()
		if s, c := serviceError(err); s != 404 || c != "NotAuthorizedOrNotFound" {
			t.Fatalf("%s: want 404 NotAuthorizedOrNotFound, got %v", what, err)
		}
	}
	ok := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	nf("encrypt before any Admit", enc(inApps))
	nf("get vault before any Admit", getVault())

	defs := []string{"Define tenancy ekm as " + v.TenancyOCID, "Define group ekmkms as " + v.GroupOCID}
	keysAdmit := "Admit group ekmkms of tenancy ekm to use keys in compartment apps where target.key.id = '" + *inApps.Id + "'"
	vaultAdmit := "Admit group ekmkms of tenancy ekm to read vaults in tenancy where target.vault.id = '" + *cu.vault.Id + "'"
	pid := cu.policy(t, cu.creds.TenancyOCID, append(defs, keysAdmit, vaultAdmit)...)
	ok("encrypt admitted key", enc(inApps))
	ok("get vault", getVault())
	_, err = vm.GetKey(ctx, keymanagement.GetKeyRequest{KeyId: inApps.Id})
	ok("use keys includes read keys", err)
	_, err = vm.DisableKey(ctx, keymanagement.DisableKeyRequest{KeyId: inApps.Id})
	nf("disable needs manage keys", err)
	nf("a key the condition does not name", enc(inRoot))

	update := func(stmts ...string) {
		t.Helper()
		_, err := cu.ic.UpdatePolicy(ctx, identity.UpdatePolicyRequest{PolicyId: &pid, UpdatePolicyDetails: identity.UpdatePolicyDetails{Statements: stmts}})
		ok("update policy", err)
	}
	// Narrowed to another key: the registered one is refused.
	update(append(defs, strings.Replace(keysAdmit, *inApps.Id, *inRoot.Id, 1), vaultAdmit)...)
	nf("narrowed to another key", enc(inApps))
	nf("key outside the admitted compartment", enc(inRoot))
	// The whole compartment tree of the tenancy, no condition.
	update(append(defs, "Admit group ekmkms of tenancy ekm to use key-family in tenancy")...)
	ok("key-family in tenancy", enc(inRoot))
	ok("key-family in tenancy", enc(inApps))
	// An Admit of another tenancy's group, or of our group from another
	// tenancy alias, admits nobody.
	other := newCustomer(t)
	update("Define tenancy ekm as "+other.creds.TenancyOCID, "Define group ekmkms as "+v.GroupOCID,
		"Admit group ekmkms of tenancy ekm to use keys in tenancy")
	nf("Admit naming another tenancy", enc(inRoot))
	update(append(defs, "Admit group ekmkms of tenancy ekm to use keys in tenancy")...)
	ok("restored", enc(inRoot))

	// Without the vendor's Endorse, the customer's Admit is not enough.
	emu.mu.Lock()
	var vp *policy
	for _, p := range emu.st.Policies {
		if p.Tenancy == v.TenancyOCID && p.Name == VendorPolicyName {
			vp = p
		}
	}
	saved := vp.Versions
	vp.Versions = []policyVersion{{At: emu.Now(), Statements: []string{VendorStatements[1]}, Bindings: saved[len(saved)-1].Bindings}}
	emu.mu.Unlock()
	nf("no Endorse", enc(inRoot))
	emu.mu.Lock()
	vp.Versions = saved
	emu.mu.Unlock()
	ok("Endorse back", enc(inRoot))

	// Another tenancy's administrator cannot use the key.
	_, err = other.crypto(t, *cu.vault.CryptoEndpoint).Encrypt(ctx, keymanagement.EncryptRequest{EncryptDataDetails: keymanagement.EncryptDataDetails{KeyId: inRoot.Id, Plaintext: b64([]byte("x"))}})
	nf("other tenancy's admin", err)

	// Deleted policy: refused again.
	_, err = cu.ic.DeletePolicy(ctx, identity.DeletePolicyRequest{PolicyId: &pid})
	ok("delete policy", err)
	nf("policy deleted", enc(inRoot))
	_, err = cu.ic.GetPolicy(ctx, identity.GetPolicyRequest{PolicyId: &pid})
	nf("deleted policy", err)
}

// Policies are checked when saved: aliases Defined in the same policy,
// groups and compartments that exist, cross-tenancy statements at the
// root.
func TestPolicyValidation(t *testing.T) {
	ctx := context.Background()
	cu := newCustomer(t)
	v := emu.Vendor()
	comp, err := cu.ic.CreateCompartment(ctx, identity.CreateCompartmentRequest{CreateCompartmentDetails: identity.CreateCompartmentDetails{
		CompartmentId: &cu.creds.TenancyOCID, Name: common.String("c1"), Description: common.String("c")}})
	must(t, err)
	create := func(comp string, stmts ...string) error {
		_, err := cu.ic.CreatePolicy(ctx, identity.CreatePolicyRequest{CreatePolicyDetails: identity.CreatePolicyDetails{
			CompartmentId: &comp, Name: common.String("p" + randBase32(5)), Description: common.String("d"), Statements: stmts}})
		return err
	}
	root := cu.creds.TenancyOCID
	for name, stmts := range map[string][]string{
		"undefined tenancy alias": {"Define group g as " + v.GroupOCID, "Admit group g of tenancy nope to use keys in tenancy"},
		"undefined group alias":   {"Define tenancy t as " + v.TenancyOCID, "Admit group g of tenancy t to use keys in tenancy"},
		"alias of the wrong kind": {"Define tenancy t as " + v.TenancyOCID, "Admit group t of tenancy t to use keys in tenancy"},
		"unknown group":           {"Allow group nobody to use keys in tenancy"},
		"unknown compartment":     {"Allow group Administrators to use keys in compartment nowhere"},
		"syntax":                  {"Allow everyone"},
		"empty":                   {},
	} {
		err := create(root, stmts...)
		if s, c := serviceError(err); s != 400 || c != "InvalidParameter" {
			t.Errorf("%s: %v", name, err)
		}
	}
	for name, stmts := range map[string][]string{
		"Admit below the root":   {"Define tenancy t as " + v.TenancyOCID, "Define group g as " + v.GroupOCID, "Admit group g of tenancy t to use keys in compartment c1"},
		"tenancy below the root": {"Allow group Administrators to use keys in tenancy"},
	} {
		err := create(*comp.Id, stmts...)
		if s, c := serviceError(err); s != 400 || c != "InvalidParameter" {
			t.Errorf("%s: %v", name, err)
		}
	}
	must(t, create(root, "Allow group Administrators to read keys in compartment c1"))
	must(t, create(*comp.Id, "Allow group Administrators to read keys in compartment id "+*comp.Id))
	// Names are unique in the tenancy.
	_, err = cu.ic.CreatePolicy(ctx, identity.CreatePolicyRequest{CreatePolicyDetails: identity.CreatePolicyDetails{
		CompartmentId: &root, Name: common.String("Tenant Admin Policy"), Description: common.String("d"), Statements: []string{"Allow any-user to inspect keys in tenancy"}}})
	wantError(t, err, 409, "NotAuthorizedOrResourceAlreadyExists")
	list, err := cu.ic.ListPolicies(ctx, identity.ListPoliciesRequest{CompartmentId: &root})
	must(t, err)
	if len(list.Items) != 2 {
		t.Fatalf("%d policies at the root", len(list.Items))
	}
}

// A user of the customer's own tenancy, in a group an Allow names: read
// but not use.
func TestAllowSameTenancy(t *testing.T) {
	ctx := context.Background()
	cu := newCustomer(t)
	root := cu.creds.TenancyOCID
	u, err := cu.ic.CreateUser(ctx, identity.CreateUserRequest{CreateUserDetails: identity.CreateUserDetails{CompartmentId: &root,
		Name: common.String("reader"), Description: common.String("r")}})
	must(t, err)
	g, err := cu.ic.CreateGroup(ctx, identity.CreateGroupRequest{CreateGroupDetails: identity.CreateGroupDetails{CompartmentId: &root,
		Name: common.String("readers"), Description: common.String("r")}})
	must(t, err)
	_, err = cu.ic.AddUserToGroup(ctx, identity.AddUserToGroupRequest{AddUserToGroupDetails: identity.AddUserToGroupDetails{UserId: u.Id, GroupId: g.Id}})
	must(t, err)
	k := newRSA(t)
	ak, err := cu.ic.UploadApiKey(ctx, identity.UploadApiKeyRequest{UserId: u.Id, CreateApiKeyDetails: identity.CreateApiKeyDetails{Key: common.String(publicPEM(&k.PublicKey))}})
	must(t, err)
	reader := clientsFor(t, Credentials{TenancyOCID: root, UserOCID: *u.Id, Fingerprint: *ak.Fingerprint, Region: testRegion, PrivateKeyPEM: privatePEM(k)})
	rm := reader.mgmt(t, *cu.vault.ManagementEndpoint)
	_, err = rm.GetKey(ctx, keymanagement.GetKeyRequest{KeyId: cu.key.Id})
	wantError(t, err, 404, "NotAuthorizedOrNotFound")
	cu.policy(t, root, "Allow group readers to read keys in tenancy")
	_, err = rm.GetKey(ctx, keymanagement.GetKeyRequest{KeyId: cu.key.Id})
	must(t, err)
	_, err = reader.crypto(t, *cu.vault.CryptoEndpoint).Encrypt(ctx, keymanagement.EncryptRequest{EncryptDataDetails: keymanagement.EncryptDataDetails{KeyId: cu.key.Id, Plaintext: b64([]byte("x"))}})
	wantError(t, err, 404, "NotAuthorizedOrNotFound")
	// Its API key deleted, the user cannot sign any more.
	_, err = cu.ic.DeleteApiKey(ctx, identity.DeleteApiKeyRequest{UserId: u.Id, Fingerprint: ak.Fingerprint})
	must(t, err)
	_, err = rm.GetKey(ctx, keymanagement.GetKeyRequest{KeyId: cu.key.Id})
	wantError(t, err, 401, "NotAuthenticated")
}
