package main

import (
	"github.com/spf13/cobra"

	"github.com/ekm-dev/ekm/emulator/ocicloud"
)

// emulateOCICmd is `ekm emulate oci`.
func emulateOCICmd() *cobra.Command {
	var opts ocicloud.Options
	cmd := &cobra.Command{
		Use:   "oci",
		Short: "Emulate OCI Identity and Vault (KMS) on one TLS port",
		Long: "Serves identity.<region>.oci.oraclecloud.com, kms.<region>.oraclecloud.com and each vault's\n" +
			"<prefix>-management.kms.<region>.oraclecloud.com and <prefix>-crypto.kms.<region>.oraclecloud.com (every\n" +
			"region and realm of the OCI Go SDK) over HTTPS with a CA it generates (written to <state-dir>/ca.pem), verifying\n" +
			"every request's OCI signature and evaluating IAM policies (Define, Endorse, Admit). Clients keep the production\n" +
			"host names and redirect their TCP dials to --addr. Prints one JSON line with the address, the CA path, ekm's\n" +
			"vendor identity (its private key in <state-dir>/vendor-key.pem) and how to create a customer tenancy.\n" +
			"See docs/emulator-oci.md.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnvP(cmd.Flags(), emulatorEnvPrefix); err != nil {
				return err
			}
			return ocicloud.Main(cmd.Context(), opts, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&opts.Addr, "addr", "127.0.0.1:8446", "address to listen on (loopback only)")
	cmd.Flags().StringVar(&opts.StateDir, "state-dir", "", "directory for ca.pem, vendor-key.pem and (persisted) state; empty = a temporary directory, state in memory")
	documentEnvP(cmd.Flags(), emulatorEnvPrefix)
	return cmd
}
