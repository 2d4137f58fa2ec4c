package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/ekm-dev/ekm/emulator/azurecloud"
)

func emulateCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "emulate", Short: "Run an emulator of a cloud's identity and KMS endpoints"}
	var opts azurecloud.Options
	az := &cobra.Command{
		Use:   "azure",
		Short: "Emulate Microsoft Entra ID, Key Vault, Graph and ARM on one TLS port",
		Long: "Serves login.microsoftonline.com, graph.microsoft.com, management.azure.com and <vault>.vault.azure.net\n" +
			"over HTTPS with a CA it generates (written to <state-dir>/ca.pem). Point ekm at it with\n" +
			"`ekm serve --azure-dial-override ADDR --azure-ca-file DIR/ca.pem`. Prints one JSON line with the address,\n" +
			"the CA path, ekm's app credentials and how to create a customer tenant. See docs/emulator-azure.md.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnvP(cmd.Flags(), emulatorEnvPrefix); err != nil {
				return err
			}
			return azurecloud.Main(cmd.Context(), opts, os.Stdout)
		},
	}
	az.Flags().StringVar(&opts.Addr, "addr", "127.0.0.1:8443", "address to listen on")
	az.Flags().StringVar(&opts.StateDir, "state-dir", "", "directory for ca.pem, the app's certificate and (persisted) state; empty = a temporary directory, state in memory")
	documentEnvP(az.Flags(), emulatorEnvPrefix)
	cmd.AddCommand(az)
	cmd.AddCommand(emulateAWSCmd())
	cmd.AddCommand(emulateGCPCmd())
	cmd.AddCommand(emulateOCICmd())
	return cmd
}
