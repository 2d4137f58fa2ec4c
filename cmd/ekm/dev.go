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
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ekm-dev/ekm/adminapi"
	"github.com/ekm-dev/ekm/app"
	"github.com/ekm-dev/ekm/auth"
	"github.com/ekm-dev/ekm/emulator/azurecloud"
	"github.com/ekm-dev/ekm/internal/azonboard"
	"github.com/ekm-dev/ekm/store"
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
	OrgID              string `json:"org_id"`
	AdminKey           string `json:"admin_key"`
	TenantID           string `json:"tenant_id"`
	SubscriptionID     string `json:"subscription_id"`
	ServicePrincipalID string `json:"service_principal_id"`
	RoleDefinitionID   string `json:"role_definition_id"`
	VaultURI           string `json:"vault_uri"`
	KeyName            string `json:"key_name"`
	AssignmentID       string `json:"assignment_id"`
}

func runDev(ctx context.Context, c devConfig, out io.Writer) error {
	// Fail before creating anything if the server's port is taken (e.g. an
	// `ekm serve` from the quickstart is still running).
	ln, err := net.Listen("tcp", c.Addr)
	if err != nil {
		return fmt.Errorf("%w (stop the other server, or pass --addr)", err)
	}
	ln.Close()
	dataDir, err := filepath.Abs(c.DataDir)
	if err != nil {
		return err
	}
	emu, err := azurecloud.New(azurecloud.Options{Addr: c.EmulatorAddr, StateDir: filepath.Join(dataDir, "emulator")})
	if err != nil {
		return err
	}
	if err := emu.Start(); err != nil {
		return fmt.Errorf("starting the Azure emulator: %w (stop the other emulator, or pass --emulator-addr)", err)
	}
	defer emu.Close()
	creds := emu.App()

	cfg := app.Config{Addr: c.Addr, DataDir: dataDir, ProbeInterval: c.ProbeInterval, Azure: app.AzureConfig{
		ClientID: creds.ClientID, ClientSecret: creds.ClientSecret, DialOverride: emu.Addr(), CAFile: emu.CAFile(),
	}}
	a, err := app.Open(ctx, cfg)
	if err != nil {
		return err
	}
	defer a.Close()

	statePath := filepath.Join(dataDir, "demo.json")
	demo, note, err := loadDemo(ctx, statePath, a.Store, emu)
	if err != nil {
		return err
	}
	if demo == nil {
		if demo, err = newDemo(ctx, a.Store, emu, creds.ClientID); err != nil {
			return err
		}
		if err := saveDemo(statePath, demo); err != nil {
			return err
		}
	}
	// Fresh tokens each start: the tenant admin's commands below use them.
	toks, err := emu.AdminTokens(demo.TenantID)
	if err != nil {
		return err
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
	arm := "https://management.azure.com" + demo.AssignmentID + "?api-version=2022-04-01"
	grant, _ := json.Marshal(map[string]any{"properties": map[string]string{
		"roleDefinitionId": demo.RoleDefinitionID, "principalId": demo.ServicePrincipalID, "principalType": "ServicePrincipal"}})
	fmt.Fprintf(out, `ekm dev is running.
  %[14]s
  ekm server:      %[1]s
  data dir:        %[13]s  (demo org and tenant kept in %[15]s)
  Azure emulator:  %[2]s  (CA %[3]s; control API %[4]s)
  demo org:        %[5]s
  admin key:       %[6]s
  customer tenant: %[7]s  (steps 1-4 done: service principal %[8]s, custom role, key %[9]s, assignment at the key)
  health probe:    every %[16]s (--probe-interval)

Register the customer's key, create a project on it, and upload a file:

  export ADMIN=%[6]s
  curl -s %[1]s/v1/organization/external_keys -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
    -d '{"type":"azure","name":"demo","tenant_id":"%[7]s","vault_uri":"%[10]s","key_name":"%[9]s"}'
  export EXTKEY=extkey_...   # the "id" printed above
  curl -s %[1]s/v1/organization/projects -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
    -d "{\"name\":\"demo\",\"external_key_id\":\"$EXTKEY\"}"
  export PROJECT=proj_...    # the "id" printed above
  curl -s %[1]s/v1/organization/projects/$PROJECT/service_accounts -H "Authorization: Bearer $ADMIN" \
    -H 'Content-Type: application/json' -d '{"name":"backend"}'
  export PROJ=sk-proj-...    # api_key.value printed above
  curl -s %[1]s/v1/files -H "Authorization: Bearer $PROJ" -F purpose=assistants -F file=@README.md
  curl -s %[1]s/v1/files -H "Authorization: Bearer $PROJ"

Revoke access as the customer would (delete the role assignment), then watch reads fail within the probe interval:

  curl --cacert %[3]s -X DELETE -H "Authorization: Bearer %[11]s" \
    "%[12]s" --connect-to management.azure.com:443:%[2]s

Restore it (put the role assignment back); reads work again within the probe interval, or at once after
POST /v1/organization/external_keys/$EXTKEY/validate:

  curl --cacert %[3]s -X PUT -H "Authorization: Bearer %[11]s" -H 'Content-Type: application/json' \
    "%[12]s" --connect-to management.azure.com:443:%[2]s \
    -d '%[17]s'

Ctrl-C stops both.
`, base, emu.Addr(), emu.CAFile(), emu.ControlURL(), demo.OrgID, demo.AdminKey, demo.TenantID, demo.ServicePrincipalID, demo.KeyName, demo.VaultURI,
		toks.Management, arm, dataDir, note, statePath, c.ProbeInterval, grant)

	select {
	case err := <-serverErr:
		return err
	case <-ctx.Done():
		return <-serverErr
	}
}

// loadDemo returns the demo of an earlier run if its org and tenant still
// exist (nil otherwise), and a line saying which it is.
func loadDemo(ctx context.Context, path string, st store.Store, emu *azurecloud.Emulator) (*demoState, string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, "Created a new demo org and customer tenant.", nil
	}
	if err != nil {
		return nil, "", err
	}
	var d demoState
	if err := json.Unmarshal(b, &d); err != nil || d.OrgID == "" || d.TenantID == "" {
		return nil, "Created a new demo org and customer tenant (" + path + " was unreadable).", nil
	}
	if _, err := st.GetOrg(ctx, d.OrgID); errors.Is(err, store.ErrNotFound) {
		return nil, "Created a new demo org and customer tenant (the earlier demo org is gone from the store).", nil
	} else if err != nil {
		return nil, "", err
	}
	if _, err := emu.AdminTokens(d.TenantID); err != nil {
		return nil, "Created a new demo org and customer tenant (the earlier tenant is gone from the emulator).", nil
	}
	note := "Reusing the demo org and customer tenant of an earlier run (delete " + path + " to start afresh)."
	if _, err := st.APIKeyByHash(ctx, auth.Hash(d.AdminKey)); errors.Is(err, store.ErrNotFound) {
		// The demo's admin key was deleted through the API: make another.
		_, d.AdminKey, err = adminapi.CreateAdminKey(ctx, st, d.OrgID, "ekm dev", time.Now())
		if err != nil {
			return nil, "", err
		}
		if err := saveDemo(path, &d); err != nil {
			return nil, "", err
		}
		note += " Its admin key was deleted: this is a new one."
	} else if err != nil {
		return nil, "", err
	}
	return &d, note, nil
}

func newDemo(ctx context.Context, st store.Store, emu *azurecloud.Emulator, appID string) (*demoState, error) {
	org, adminKey, err := adminapi.CreateOrg(ctx, st, "Demo Org", time.Now())
	if err != nil {
		return nil, err
	}
	ten, err := emu.CreateTenant()
	if err != nil {
		return nil, err
	}
	cust := &azonboard.Customer{HTTP: emu.HTTPClient(), TenantID: ten.ID, SubscriptionID: ten.SubscriptionID,
		GraphToken: ten.AdminTokens.Graph, ARMToken: ten.AdminTokens.Management, VaultToken: ten.AdminTokens.Vault}
	vault := "demo" + strings.ReplaceAll(ten.ID, "-", "")[:12]
	ob, err := cust.Onboard(ctx, appID, org.ID, vault, "demo")
	if err != nil {
		return nil, fmt.Errorf("onboarding the demo tenant: %w", err)
	}
	return &demoState{OrgID: org.ID, AdminKey: adminKey, TenantID: ten.ID, SubscriptionID: ten.SubscriptionID,
		ServicePrincipalID: ob.ServicePrincipalID, RoleDefinitionID: ob.RoleDefinitionID, VaultURI: ob.VaultURI,
		KeyName: ob.KeyName, AssignmentID: ob.AssignmentID}, nil
}

func saveDemo(path string, d *demoState) error {
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
