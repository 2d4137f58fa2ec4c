// Command ekm is the Enterprise Key Management server and its operator tools.
// This package only wires flags to the packages that do the work.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/ekm-dev/ekm/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := rootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "ekm:", err)
		os.Exit(1)
	}
}

func rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "ekm",
		Short:         "Enterprise Key Management: customer-held keys for a SaaS platform's data",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       app.Version(),
	}
	root.SetVersionTemplate(app.VersionLine() + "\n")
	root.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "Print ekm's version",
		Args:  cobra.NoArgs,
		Run:   func(cmd *cobra.Command, _ []string) { fmt.Fprintln(cmd.OutOrStdout(), app.VersionLine()) },
	})
	org := orgCmd()
	org.AddCommand(orgSetKeyCmd(), orgSettingsCmd())
	root.AddCommand(serveCmd(), org, emulateCmd(), devCmd())
	root.AddCommand(projectCmd(), reencryptCmd())
	root.AddCommand(issuerCmd())
	return root
}
