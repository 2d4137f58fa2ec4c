package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ekm-dev/ekm/app"
	"github.com/ekm-dev/ekm/emulator/azurecloud"
	"github.com/ekm-dev/ekm/internal/azonboard"
)

// devConfig is what `ekm dev` can be told.
type devConfig struct {
	Addr, EmulatorAddr, DataDir string
	ProbeInterval               time.Duration
	// Cloud is the demo customer's cloud: "azure" (runDev) or one of
	// devClouds; EmulatorAddrSet says --emulator-addr was given (each
	// cloud's emulator has its own default address).
	Cloud           string
	EmulatorAddrSet bool
}

// devClouds are the demo flows of the other clouds, each in its own file
// (dev_gcp.go, dev_aws.go, dev_oci.go), registered by name for --cloud.
// Every flow, Azure's included, is a devCloud run by devRun (devkit.go).
var devClouds = map[string]func(ctx context.Context, c devConfig, out io.Writer) error{}

func devCmd() *cobra.Command {
	var c devConfig
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run the Azure emulator and the server wired together, with a demo org and customer tenant",
		Long: "Starts `ekm emulate azure` and `ekm serve` in one process, creates a demo organization and a demo\n" +
			"customer tenant whose admin has done onboarding steps 1-4 (service principal, custom role, RSA key\n" +
			"<org-id>--demo, role assignment at the key), and prints the commands to register the key, create a\n" +
			"project, upload a file, and revoke and restore the customer's grant. The demo org and tenant are kept\n" +
			"in the data dir (demo.json) and reused on the next start. Ctrl-C stops both.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// No environment variables on purpose: ones exported for a
			// production server (EKM_ADDR, EKM_DATA_DIR) must never point the
			// demo at production data.
			c.EmulatorAddrSet = cmd.Flags().Changed("emulator-addr")
			if run, ok := devClouds[c.Cloud]; ok {
				return run(cmd.Context(), c, cmd.OutOrStdout())
			} else if c.Cloud != "azure" {
				return fmt.Errorf("--cloud %q: unknown cloud (see ekm dev --help)", c.Cloud)
			}
			return runDev(cmd.Context(), c, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&c.Addr, "addr", "127.0.0.1:8080", "ekm server address")
	cmd.Flags().StringVar(&c.Cloud, "cloud", "azure", "the demo customer's cloud: azure, gcp (the GCP emulator, default address 127.0.0.1:8445), aws (the AWS emulator, default address 127.0.0.1:8444) or oci (the OCI emulator, default address 127.0.0.1:8446)")
	cmd.Flags().StringVar(&c.EmulatorAddr, "emulator-addr", "127.0.0.1:8443", "Azure emulator address")
	cmd.Flags().StringVar(&c.DataDir, "data-dir", "ekm-dev-data", "data directory of the server; the emulator keeps its state in <data-dir>/emulator")
	cmd.Flags().DurationVar(&c.ProbeInterval, "probe-interval", 30*time.Second, "health probe interval: a revocation is enforced within about this long")
	return cmd
}

// demoState is what `ekm dev` keeps in <data-dir>/demo.json to reuse its
// demo org and customer tenant on the next start. It holds the demo's
// admin key: this is a development sandbox whose data dir is private
// (0700), and printing the key again is the point.
type demoState struct {
	devDemo
	TenantID           string `json:"tenant_id"`
	SubscriptionID     string `json:"subscription_id"`
	ServicePrincipalID string `json:"service_principal_id"`
	RoleDefinitionID   string `json:"role_definition_id"`
	VaultURI           string `json:"vault_uri"`
	KeyName            string `json:"key_name"`
	AssignmentID       string `json:"assignment_id"`
}

func (d *demoState) customer() string { return d.TenantID }

// runDev runs the Azure emulator and the server wired together: ekm's
// identity is the emulator's app (client id and secret), and a demo
// customer tenant has done onboarding steps 1-4 for the demo org.
func runDev(ctx context.Context, c devConfig, out io.Writer) error {
	var (
		emu  *azurecloud.Emulator
		demo demoState
		toks azurecloud.AdminTokens
	)
	return devRun(ctx, c, out, devCloud{
		Name: "Azure", EmulatorDir: "emulator", DemoFile: "demo.json", DemoOrg: "Demo Org",
		Customer: "tenant", FreshNote: "Created a new demo org and customer tenant%s.",
		Demo: &demo,
		NewEmulator: func(addr, stateDir string) (devEmulator, error) {
			var err error
			emu, err = azurecloud.New(azurecloud.Options{Addr: addr, StateDir: stateDir})
			return emu, err
		},
		Identity: func(cfg *app.Config) {
			creds := emu.App()
			cfg.Azure = app.AzureConfig{ClientID: creds.ClientID, ClientSecret: creds.ClientSecret, DialOverride: emu.Addr(), CAFile: emu.CAFile()}
		},
		CustomerExists: func(id string) bool {
			_, err := emu.AdminTokens(id)
			return err == nil
		},
		Onboard: func(ctx context.Context, org devDemo) (err error) {
			demo, err = newDemo(ctx, emu, org)
			return err
		},
		Refresh: func() error {
			// Fresh tokens each start: the tenant admin's commands below use them.
			var err error
			toks, err = emu.AdminTokens(demo.TenantID)
			return err
		},
		NextSteps: func(out io.Writer, r devRunning) {
			arm := "https://management.azure.com" + demo.AssignmentID + "?api-version=2022-04-01"
			grant, _ := json.Marshal(map[string]any{"properties": map[string]string{
				"roleDefinitionId": demo.RoleDefinitionID, "principalId": demo.ServicePrincipalID, "principalType": "ServicePrincipal"}})
			reg := `{"type":"azure","name":"demo","tenant_id":"` + demo.TenantID + `","vault_uri":"` + demo.VaultURI + `","key_name":"` + demo.KeyName + `"}`
			fmt.Fprintf(out, `ekm dev is running.
  %[14]s
  ekm server:      %[1]s
  data dir:        %[13]s  (demo org and tenant kept in %[15]s)
  Azure emulator:  %[2]s  (CA %[3]s; control API %[4]s)
  demo org:        %[5]s
  admin key:       %[6]s
  customer tenant: %[7]s  (steps 1-4 done: service principal %[8]s, custom role, key %[9]s, assignment at the key)
  health probe:    every %[16]s (--probe-interval)

%[10]s
Revoke access as the customer would (delete the role assignment), then watch reads fail within the probe interval:

  curl --cacert %[3]s -X DELETE -H "Authorization: Bearer %[11]s" \
    "%[12]s" --connect-to management.azure.com:443:%[2]s

Restore it (put the role assignment back); reads work again within the probe interval, or at once after
POST /v1/organization/external_keys/$EXTKEY/validate:

  curl --cacert %[3]s -X PUT -H "Authorization: Bearer %[11]s" -H 'Content-Type: application/json' \
    "%[12]s" --connect-to management.azure.com:443:%[2]s \
    -d '%[17]s'

Ctrl-C stops both.
`, r.Base, emu.Addr(), emu.CAFile(), emu.ControlURL(), demo.OrgID, demo.AdminKey, demo.TenantID, demo.ServicePrincipalID, demo.KeyName,
				devRegisterSteps(r.Base, demo.AdminKey, reg), toks.Management, arm, r.DataDir, r.Note, r.StatePath, r.ProbeInterval, grant)
		},
	})
}

// newDemo makes a customer tenant that has done onboarding steps 1-4 of
// docs/azure.md for the demo org (internal/azonboard: service principal of
// ekm's app, custom role, RSA key <org-id>--demo, role assignment at the
// key).
func newDemo(ctx context.Context, emu *azurecloud.Emulator, org devDemo) (demoState, error) {
	ten, err := emu.CreateTenant()
	if err != nil {
		return demoState{}, err
	}
	cust := &azonboard.Customer{HTTP: emu.HTTPClient(), TenantID: ten.ID, SubscriptionID: ten.SubscriptionID,
		GraphToken: ten.AdminTokens.Graph, ARMToken: ten.AdminTokens.Management, VaultToken: ten.AdminTokens.Vault}
	vault := "demo" + strings.ReplaceAll(ten.ID, "-", "")[:12]
	ob, err := cust.Onboard(ctx, emu.App().ClientID, org.OrgID, vault, "demo")
	if err != nil {
		return demoState{}, fmt.Errorf("onboarding the demo tenant: %w", err)
	}
	return demoState{devDemo: org, TenantID: ten.ID, SubscriptionID: ten.SubscriptionID,
		ServicePrincipalID: ob.ServicePrincipalID, RoleDefinitionID: ob.RoleDefinitionID, VaultURI: ob.VaultURI,
		KeyName: ob.KeyName, AssignmentID: ob.AssignmentID}, nil
}
