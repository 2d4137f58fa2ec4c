package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/oracle/oci-go-sdk/v65/common"

	"github.com/ekm-dev/ekm/adminapi"
	"github.com/ekm-dev/ekm/app"
	"github.com/ekm-dev/ekm/auth"
	"github.com/ekm-dev/ekm/emulator/emukit"
	"github.com/ekm-dev/ekm/emulator/ocicloud"
	"github.com/ekm-dev/ekm/internal/ocionboard"
	"github.com/ekm-dev/ekm/store"
)

func init() { devClouds["oci"] = runDevOCI }

// devOCIRegion is the region of the demo customer's vault.
const devOCIRegion = "us-ashburn-1"

// ociDemo is what `ekm dev --cloud oci` keeps in <data-dir>/oci-demo.json
// to reuse its demo org and customer tenancy on the next start (the
// tenancy administrator's key stays in the emulator's state).
type ociDemo struct {
	OrgID              string `json:"org_id"`
	AdminKey           string `json:"admin_key"`
	TenancyOCID        string `json:"tenancy_ocid"`
	VaultOCID          string `json:"vault_ocid"`
	KeyOCID            string `json:"key_ocid"`
	ManagementEndpoint string `json:"management_endpoint"`
	PolicyOCID         string `json:"policy_ocid"`
}

// runDevOCI runs the OCI emulator and the server wired together: ekm's
// identity is the emulator's vendor user, given as an operator gives it
// (tenancy, user, fingerprint, the path of the private key file, group),
// and a demo customer tenancy has done onboarding steps 1-2 of docs/oci.md
// for the demo org.
func runDevOCI(ctx context.Context, c devConfig, out io.Writer) error {
	ln, err := net.Listen("tcp", c.Addr)
	if err != nil {
		return fmt.Errorf("%w (stop the other server, or pass --addr)", err)
	}
	ln.Close()
	dataDir, err := filepath.Abs(c.DataDir)
	if err != nil {
		return err
	}
	emuAddr := c.EmulatorAddr
	if !c.EmulatorAddrSet {
		emuAddr = "127.0.0.1:8446"
	}
	emu, err := ocicloud.New(ocicloud.Options{Addr: emuAddr, StateDir: filepath.Join(dataDir, "oci-emulator")})
	if err != nil {
		return err
	}
	if err := emu.Start(); err != nil {
		return fmt.Errorf("starting the OCI emulator: %w (stop the other emulator, or pass --emulator-addr)", err)
	}
	defer emu.Close()
	v := emu.Vendor()

	cfg := app.Config{Addr: c.Addr, DataDir: dataDir, ProbeInterval: c.ProbeInterval, OCI: app.OCIConfig{
		TenancyOCID: v.TenancyOCID, GroupOCID: v.GroupOCID, UserOCID: v.UserOCID, Fingerprint: v.Fingerprint, PrivateKeyFile: v.KeyFile,
		DialOverride: emu.Addr(), CAFile: emu.CAFile()}}
	a, err := app.Open(ctx, cfg)
	if err != nil {
		return err
	}
	defer a.Close()

	statePath := filepath.Join(dataDir, "oci-demo.json")
	demo, note, err := loadOCIDemo(ctx, statePath, a.Store, emu)
	if err != nil {
		return err
	}
	if demo == nil {
		if demo, err = newOCIDemo(ctx, a.Store, emu); err != nil {
			return err
		}
		if err := saveOCIDemo(statePath, demo); err != nil {
			return err
		}
	}

	serverErr := make(chan error, 1)
	ready := make(chan string, 1)
	go func() { serverErr <- a.Run(ctx, func(addr string) { ready <- addr }) }()
	var base string
	select {
	case base = <-ready:
	case err := <-serverErr:
		return err
	}
	base = "http://" + base
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

Register the customer's key, create a project on it, and upload a file:

  export ADMIN=%[13]s
  curl -s %[2]s/v1/organization/external_keys -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
    -d '%[19]s'
  export EXTKEY=extkey_...   # the "id" printed above
  curl -s %[2]s/v1/organization/projects -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
    -d "{\"name\":\"demo\",\"external_key_id\":\"$EXTKEY\"}"
  export PROJECT=proj_...    # the "id" printed above
  curl -s %[2]s/v1/organization/projects/$PROJECT/service_accounts -H "Authorization: Bearer $ADMIN" \
    -H 'Content-Type: application/json' -d '{"name":"backend"}'
  export PROJ=sk-proj-...    # api_key.value printed above
  curl -s %[2]s/v1/files -H "Authorization: Bearer $PROJ" -F purpose=assistants -F file=@README.md
  curl -s %[2]s/v1/files -H "Authorization: Bearer $PROJ"

Revoke access as the customer would (oci kms management key disable), then watch reads fail within the probe
interval (the emulator signs the call as the tenancy's administrator):

  %[20]s

Restore it (oci kms management key enable); reads work again within the probe interval, or at once after
POST /v1/organization/external_keys/$EXTKEY/validate:

  %[21]s

The customer's steps and every other way to revoke are in docs/oci.md. Ctrl-C stops both.
`, note, base, dataDir, statePath, emu.Addr(), emu.CAFile(), emu.ControlURL(), v.UserOCID, v.TenancyOCID, v.GroupOCID, v.KeyFile,
		demo.OrgID, demo.AdminKey, demo.TenancyOCID, demo.VaultOCID, demo.KeyOCID, demo.PolicyOCID, c.ProbeInterval, reg,
		keyCall("disable"), keyCall("enable"))

	select {
	case err := <-serverErr:
		return err
	case <-ctx.Done():
		return <-serverErr
	}
}

// loadOCIDemo returns the demo of an earlier run if its org and tenancy
// still exist (nil otherwise), and a line saying which it is.
func loadOCIDemo(ctx context.Context, path string, st store.Store, emu *ocicloud.Emulator) (*ociDemo, string, error) {
	fresh := "Created a new demo org and customer tenancy."
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fresh, nil
	}
	if err != nil {
		return nil, "", err
	}
	var d ociDemo
	if err := json.Unmarshal(b, &d); err != nil || d.OrgID == "" || d.TenancyOCID == "" {
		return nil, fresh + " (" + path + " was unreadable)", nil
	}
	if _, err := st.GetOrg(ctx, d.OrgID); errors.Is(err, store.ErrNotFound) {
		return nil, fresh + " (the earlier demo org is gone from the store)", nil
	} else if err != nil {
		return nil, "", err
	}
	if _, err := emu.TenancyAdmin(d.TenancyOCID); err != nil {
		return nil, fresh + " (the earlier tenancy is gone from the emulator)", nil
	}
	note := "Reusing the demo org and customer tenancy of an earlier run (delete " + path + " to start afresh)."
	if _, err := st.APIKeyByHash(ctx, auth.Hash(d.AdminKey)); errors.Is(err, store.ErrNotFound) {
		_, d.AdminKey, err = adminapi.CreateAdminKey(ctx, st, d.OrgID, "ekm dev", time.Now())
		if err != nil {
			return nil, "", err
		}
		if err := saveOCIDemo(path, &d); err != nil {
			return nil, "", err
		}
		note += " Its admin key was deleted: this is a new one."
	} else if err != nil {
		return nil, "", err
	}
	return &d, note, nil
}

// newOCIDemo creates the demo org and a customer tenancy that has done the
// onboarding of docs/oci.md for it (internal/ocionboard: a compartment, a
// vault, an AES-256 key tagged with the org id, and the policy admitting
// ekm's group).
func newOCIDemo(ctx context.Context, st store.Store, emu *ocicloud.Emulator) (*ociDemo, error) {
	org, adminKey, err := adminapi.CreateOrg(ctx, st, "Demo Org (OCI)", time.Now())
	if err != nil {
		return nil, err
	}
	admin, err := emu.CreateTenancy("demo-customer", devOCIRegion)
	if err != nil {
		return nil, err
	}
	v := emu.Vendor()
	res, err := ocionboard.Run(ctx, ocionboard.Options{HTTPClient: emu.HTTPClient(), TenancyOCID: admin.TenancyOCID, Region: devOCIRegion,
		Credentials:       common.NewRawConfigurationProvider(admin.TenancyOCID, admin.UserOCID, devOCIRegion, admin.Fingerprint, admin.PrivateKeyPEM, nil),
		VendorTenancyOCID: v.TenancyOCID, VendorGroupOCID: v.GroupOCID, OrgID: org.ID, KeyName: "ekm-demo-kek"})
	if err != nil {
		return nil, fmt.Errorf("onboarding the demo tenancy: %w", err)
	}
	return &ociDemo{OrgID: org.ID, AdminKey: adminKey, TenancyOCID: admin.TenancyOCID, VaultOCID: res.VaultOCID, KeyOCID: res.KeyOCID,
		ManagementEndpoint: res.ManagementEndpoint, PolicyOCID: res.PolicyOCID}, nil
}

func saveOCIDemo(path string, d *ociDemo) error {
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
