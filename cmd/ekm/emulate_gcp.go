package main

import (
	"github.com/spf13/cobra"

	"github.com/ekm-dev/ekm/emulator/gcpcloud"
)

// emulateGCPCmd is `ekm emulate gcp`.
func emulateGCPCmd() *cobra.Command {
	var opts gcpcloud.Options
	cmd := &cobra.Command{
		Use:   "gcp",
		Short: "Emulate Google STS, IAM, IAM Credentials, Cloud KMS and Google's OIDC issuer on one TLS port",
		Long: "Serves sts.googleapis.com, iam.googleapis.com, iamcredentials.googleapis.com, cloudkms.googleapis.com,\n" +
			"oauth2.googleapis.com, accounts.google.com and www.googleapis.com over HTTPS with a CA it generates\n" +
			"(written to <state-dir>/ca.pem). Clients keep the production host names and redirect their TCP dials to\n" +
			"--addr. Prints one JSON line with the address, the CA path, the vendor's project, service account and key\n" +
			"file, and how to create a customer project. See docs/emulator-gcp.md.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnvP(cmd.Flags(), emulatorEnvPrefix); err != nil {
				return err
			}
			return gcpcloud.Main(cmd.Context(), opts, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&opts.Addr, "addr", "127.0.0.1:8445", "address to listen on (loopback only)")
	cmd.Flags().StringVar(&opts.StateDir, "state-dir", "", "directory for ca.pem, the vendor's key file and (persisted) state; empty = a temporary directory, state in memory")
	documentEnvP(cmd.Flags(), emulatorEnvPrefix)
	return cmd
}
