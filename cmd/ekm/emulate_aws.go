package main

import (
	"github.com/spf13/cobra"

	"github.com/ekm-dev/ekm/emulator/awscloud"
)

// emulateAWSCmd is `ekm emulate aws`.
func emulateAWSCmd() *cobra.Command {
	var opts awscloud.Options
	cmd := &cobra.Command{
		Use:   "aws",
		Short: "Emulate AWS STS, IAM and KMS on one TLS port",
		Long: "Serves sts.amazonaws.com, sts.<region>.amazonaws.com, iam.amazonaws.com and kms.<region>.amazonaws.com\n" +
			"(also FIPS, aws-cn and aws-us-gov hosts) over HTTPS with a CA it generates (written to <state-dir>/ca.pem).\n" +
			"Clients keep the production host names and redirect their TCP dials to --addr. Prints one JSON line with\n" +
			"the address, the CA path, ekm's vendor credentials and how to create a customer account.\n" +
			"See docs/emulator-aws.md.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnvP(cmd.Flags(), emulatorEnvPrefix); err != nil {
				return err
			}
			return awscloud.Main(cmd.Context(), opts, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&opts.Addr, "addr", "127.0.0.1:8444", "address to listen on (loopback only)")
	cmd.Flags().StringVar(&opts.StateDir, "state-dir", "", "directory for ca.pem and (persisted) state; empty = a temporary directory, state in memory")
	documentEnvP(cmd.Flags(), emulatorEnvPrefix)
	return cmd
}
