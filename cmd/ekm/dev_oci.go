package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/oracle/oci-go-sdk/v65/common"

	"github.com/ekm-dev/ekm/app"
	"github.com/ekm-dev/ekm/emulator/emukit"
	"github.com/ekm-dev/ekm/emulator/ocicloud"
	"github.com/ekm-dev/ekm/internal/ocionboard"
)

func init() { devClouds["oci"] = runDevOCI }

// devOCIRegion is the region of the demo customer's vault.
const devOCIRegion = "us-ashburn-1"

// ociDemo is what `ekm dev --cloud oci` keeps in <data-dir>/oci-demo.json
// to reuse its demo org and customer tenancy on the next start (the
// tenancy administrator's key stays in the emulator's state).
type ociDemo struct {
	devDemo
	TenancyOCID        string `json:"tenancy_ocid"`
	VaultOCID          string `json:"vault_ocid"`
	KeyOCID            string `json:"key_ocid"`
	ManagementEndpoint string `json:"management_endpoint"`
	PolicyOCID         string `json:"policy_ocid"`
}

func (d *ociDemo) customer() string { return d.TenancyOCID }

// runDevOCI runs the OCI emulator and the server wired together: ekm's
// identity is the emulator's vendor user, given as an operator gives it
// (tenancy, user, fingerprint, the path of the private key file, group),
// and a demo customer tenancy has done onboarding steps 1-2 of docs/oci.md
// for the demo org.
func runDevOCI(ctx context.Context, c devConfig, out io.Writer) error {
	var (
		emu  *ocicloud.Emulator
		demo ociDemo
	)
	return devRun(ctx, c, out, devCloud{
		Name: "OCI", EmulatorAddr: "127.0.0.1:8446", EmulatorDir: "oci-emulator", DemoFile: "oci-demo.json", DemoOrg: "Demo Org (OCI)",
		Customer: "tenancy", FreshNote: "Created a new demo org and customer tenancy.%s",
		Demo: &demo,
		NewEmulator: func(addr, stateDir string) (devEmulator, error) {
			var err error
			emu, err = ocicloud.New(ocicloud.Options{Addr: addr, StateDir: stateDir})
			return emu, err
		},
		Identity: func(cfg *app.Config) {
			v := emu.Vendor()
			cfg.OCI = app.OCIConfig{TenancyOCID: v.TenancyOCID, GroupOCID: v.GroupOCID, UserOCID: v.UserOCID, Fingerprint: v.Fingerprint,
				PrivateKeyFile: v.KeyFile, DialOverride: emu.Addr(), CAFile: emu.CAFile()}
		},
		CustomerExists: func(id string) bool {
			_, err := emu.TenancyAdmin(id)
			return err == nil
		},
		Onboard: func(ctx context.Context, org devDemo) (err error) {
			demo, err = newOCIDemo(ctx, emu, org)
			return err
		},
		NextSteps: func(out io.Writer, r devRunning) {
			v := emu.Vendor()
			reg, _ := json.Marshal(map[string]string{"type": "oci", "name": "demo", "key_ocid": demo.KeyOCID, "vault_ocid": demo.VaultOCID, "region": devOCIRegion})
			// The customer's own calls, signed with its administrator's API key by
			// the emulator's call relay (curl cannot sign OCI requests), to the
			// real host names.
			keyCall := func(action string) string {
				body, _ := json.Marshal(map[string]string{"method": "POST", "url": demo.ManagementEndpoint + "/20180608/keys/" + demo.KeyOCID + "/actions/" + action})
				return fmt.Sprintf("curl -s --cacert %s %s/tenancies/%s/call \\\n    -d '%s'", emukit.ShellQuote(emu.CAFile()), emu.ControlURL(), demo.TenancyOCID, body)
			}
			fmt.Fprintf(out, `ekm dev is running (OCI).
  %[1]s
  ekm server:       %[2]s
  data dir:         %[3]s  (demo org and tenancy kept in %[4]s)
  OCI emulator:     %[5]s  (CA %[6]s; control API %[7]s)
  ekm's identity:   user %[8]s of tenancy %[9]s, group %[10]s
                    (--oci-private-key-file %[11]s)
  demo org:         %[12]s
  admin key:        %[13]s
  customer tenancy: %[14]s, steps 1-2 of docs/oci.md done:
                    vault %[15]s
                    key   %[16]s (tagged ekm-org=%[12]s)
                    policy %[17]s (Define ekm's tenancy and group; Admit them to read the vault and use the key)
  health probe:     every %[18]s (--probe-interval)

%[19]s
Revoke access as the customer would (oci kms management key disable), then watch reads fail within the probe
interval (the emulator signs the call as the tenancy's administrator):

  %[20]s

Restore it (oci kms management key enable); reads work again within the probe interval, or at once after
POST /v1/organization/external_keys/$EXTKEY/validate:

  %[21]s

The customer's steps and every other way to revoke are in docs/oci.md. Ctrl-C stops both.
`, r.Note, r.Base, r.DataDir, r.StatePath, emu.Addr(), emu.CAFile(), emu.ControlURL(), v.UserOCID, v.TenancyOCID, v.GroupOCID, v.KeyFile,
				demo.OrgID, demo.AdminKey, demo.TenancyOCID, demo.VaultOCID, demo.KeyOCID, demo.PolicyOCID, r.ProbeInterval,
				devRegisterSteps(r.Base, demo.AdminKey, string(reg)), keyCall("disable"), keyCall("enable"))
		},
	})
}

// newOCIDemo makes a customer tenancy that has done the onboarding of
// docs/oci.md for the demo org (internal/ocionboard: a compartment, a
// vault, an AES-256 key tagged with the org id, and the policy admitting
// ekm's group).
func newOCIDemo(ctx context.Context, emu *ocicloud.Emulator, org devDemo) (ociDemo, error) {
	admin, err := emu.CreateTenancy("demo-customer", devOCIRegion)
	if err != nil {
		return ociDemo{}, err
	}
	v := emu.Vendor()
	res, err := ocionboard.Run(ctx, ocionboard.Options{HTTPClient: emu.HTTPClient(), TenancyOCID: admin.TenancyOCID, Region: devOCIRegion,
		Credentials:       common.NewRawConfigurationProvider(admin.TenancyOCID, admin.UserOCID, devOCIRegion, admin.Fingerprint, admin.PrivateKeyPEM, nil),
		VendorTenancyOCID: v.TenancyOCID, VendorGroupOCID: v.GroupOCID, OrgID: org.OrgID, KeyName: "ekm-demo-kek"})
	if err != nil {
		return ociDemo{}, fmt.Errorf("onboarding the demo tenancy: %w", err)
	}
	return ociDemo{devDemo: org, TenancyOCID: admin.TenancyOCID, VaultOCID: res.VaultOCID, KeyOCID: res.KeyOCID,
		ManagementEndpoint: res.ManagementEndpoint, PolicyOCID: res.PolicyOCID}, nil
}
