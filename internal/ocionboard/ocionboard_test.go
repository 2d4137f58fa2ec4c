package ocionboard

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/oracle/oci-go-sdk/v65/common"
	"github.com/oracle/oci-go-sdk/v65/keymanagement"

	"github.com/ekm-dev/ekm/emulator/ocicloud"
)

// The steps run as the customer's administrator leave a key that ekm's
// vendor identity can use, tagged with the org, and nothing else.
func TestRun(t *testing.T) {
	emu, err := ocicloud.New(ocicloud.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Start(); err != nil {
		t.Fatal(err)
	}
	defer emu.Close()
	admin, err := emu.CreateTenancy("acme", "eu-frankfurt-1")
	if err != nil {
		t.Fatal(err)
	}
	v := emu.Vendor()
	cp := common.NewRawConfigurationProvider(admin.TenancyOCID, admin.UserOCID, admin.Region, admin.Fingerprint, admin.PrivateKeyPEM, nil)
	ctx := context.Background()
	res, err := Run(ctx, Options{HTTPClient: emu.HTTPClient(), Credentials: cp, TenancyOCID: admin.TenancyOCID, Region: admin.Region,
		VendorTenancyOCID: v.TenancyOCID, VendorGroupOCID: v.GroupOCID, OrgID: "org-test", Protection: "SOFTWARE"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(res.KeyOCID, "ocid1.key.oc1.eu-frankfurt-1.") || !strings.HasSuffix(res.CryptoEndpoint, "-crypto.kms.eu-frankfurt-1.oraclecloud.com") ||
		res.PolicyOCID == "" || len(res.Statements) != 4 || !strings.Contains(res.Statements[3], res.KeyOCID) {
		t.Fatalf("%+v", res)
	}
	// The vendor (ekm) can now encrypt with the key.
	vcp := common.NewRawConfigurationProvider(v.TenancyOCID, v.UserOCID, admin.Region, v.Fingerprint, v.PrivateKeyPEM, nil)
	cc, err := keymanagement.NewKmsCryptoClientWithConfigurationProvider(vcp, res.CryptoEndpoint)
	if err != nil {
		t.Fatal(err)
	}
	cc.HTTPClient = emu.HTTPClient()
	pt := base64.StdEncoding.EncodeToString([]byte("x"))
	if _, err := cc.Encrypt(ctx, keymanagement.EncryptRequest{EncryptDataDetails: keymanagement.EncryptDataDetails{KeyId: &res.KeyOCID, Plaintext: &pt}}); err != nil {
		t.Fatal(err)
	}
	c, _ := NewClients(Options{HTTPClient: emu.HTTPClient(), Credentials: cp, TenancyOCID: admin.TenancyOCID, Region: admin.Region})
	mc, _ := c.Management(res.ManagementEndpoint)
	k, err := mc.GetKey(ctx, keymanagement.GetKeyRequest{KeyId: &res.KeyOCID})
	if err != nil || k.FreeformTags[TagOrg] != "org-test" || k.ProtectionMode != keymanagement.KeyProtectionModeSoftware {
		t.Fatalf("%+v %v", k.Key, err)
	}
	// A second run reuses the compartment; the policy name is taken.
	_, err = Run(ctx, Options{HTTPClient: emu.HTTPClient(), Credentials: cp, TenancyOCID: admin.TenancyOCID, Region: admin.Region,
		VendorTenancyOCID: v.TenancyOCID, VendorGroupOCID: v.GroupOCID, OrgID: "org-test"})
	if err == nil || !strings.Contains(err.Error(), "step 2") {
		t.Fatalf("second run: %v", err)
	}
}
