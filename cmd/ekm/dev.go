package main

import (
	"context"
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
	"github.com/ekm-dev/ekm/emulator/azurecloud"
	"github.com/ekm-dev/ekm/internal/azonboard"
)

func devCmd() *cobra.Command {
	var addr, emuAddr, dataDir string
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run the Azure emulator and the server wired together, with a demo org and customer tenant",
		Long: "Starts `ekm emulate azure` and `ekm serve` in one process, creates a demo organization and a demo\n" +
			"customer tenant whose admin has done onboarding steps 1-4 (service principal, custom role, RSA key\n" +
			"<org-id>--demo, role assignment at the key), and prints the commands to register the key, create a\n" +
			"project and upload a file. Ctrl-C stops both.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// No environment variables on purpose: ones exported for a
			// production server (EKM_ADDR, EKM_DATA_DIR) must never point the
			// demo at production data.
			return runDev(cmd.Context(), addr, emuAddr, dataDir, os.Stdout)
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:8080", "ekm server address")
	cmd.Flags().StringVar(&emuAddr, "emulator-addr", "127.0.0.1:8443", "Azure emulator address")
	cmd.Flags().StringVar(&dataDir, "data-dir", "ekm-dev-data", "data directory of the server; the emulator keeps its state in <data-dir>/emulator")
	return cmd
}

func runDev(ctx context.Context, addr, emuAddr, dataDir string, out io.Writer) error {
	// Fail before creating anything if the server's port is taken (e.g. an
	// `ekm serve` from the quickstart is still running).
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%w (stop the other server, or pass --addr)", err)
	}
	ln.Close()
	emu, err := azurecloud.New(azurecloud.Options{Addr: emuAddr, StateDir: filepath.Join(dataDir, "emulator")})
	if err != nil {
		return err
	}
	if err := emu.Start(); err != nil {
		return err
	}
	defer emu.Close()
	creds := emu.App()

	cfg := app.Config{Addr: addr, DataDir: dataDir, Azure: app.AzureConfig{
		ClientID: creds.ClientID, ClientSecret: creds.ClientSecret, DialOverride: emu.Addr(), CAFile: emu.CAFile(),
	}}
	a, err := app.Open(ctx, cfg)
	if err != nil {
		return err
	}
	defer a.Close()

	org, adminKey, err := adminapi.CreateOrg(ctx, a.Store, "Demo Org", time.Now())
	if err != nil {
		return err
	}
	ten, err := emu.CreateTenant()
	if err != nil {
		return err
	}
	cust := &azonboard.Customer{HTTP: emu.HTTPClient(), TenantID: ten.ID, SubscriptionID: ten.SubscriptionID,
		GraphToken: ten.AdminTokens.Graph, ARMToken: ten.AdminTokens.Management, VaultToken: ten.AdminTokens.Vault}
	vault := "demo" + strings.ReplaceAll(ten.ID, "-", "")[:12]
	ob, err := cust.Onboard(ctx, creds.ClientID, org.ID, vault, "demo")
	if err != nil {
		return fmt.Errorf("onboarding the demo tenant: %w", err)
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
	fmt.Fprintf(out, `ekm dev is running.
  ekm server:      %[1]s
  Azure emulator:  %[2]s  (CA %[3]s; control API %[4]s)
  demo org:        %[5]s
  admin key:       %[6]s   (shown once)
  customer tenant: %[7]s  (steps 1-4 done: service principal %[8]s, custom role, key %[9]s, assignment at the key)

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
    "https://management.azure.com%[12]s?api-version=2022-04-01" --connect-to management.azure.com:443:%[2]s

Ctrl-C stops both.
`, base, emu.Addr(), emu.CAFile(), emu.ControlURL(), org.ID, adminKey, ten.ID, ob.ServicePrincipalID, ob.KeyName, ob.VaultURI,
		ten.AdminTokens.Management, ob.AssignmentID)

	select {
	case err := <-serverErr:
		return err
	case <-ctx.Done():
		return <-serverErr
	}
}
