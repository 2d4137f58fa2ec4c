package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/ekm-dev/ekm/app"
	"github.com/ekm-dev/ekm/ids"
	"github.com/ekm-dev/ekm/lifecycle"
	"github.com/ekm-dev/ekm/store"
)

// toolFlags are what operator commands that use project keys need: the
// server's store and the KMS settings to reach the customers' keys.
func toolFlags(fs *pflag.FlagSet, c *app.Config) {
	storeFlags(fs, c)
	fs.DurationVar(&c.KMSTimeout, "kms-timeout", 0, "timeout of one KMS call (default 30s)")
	azureFlags(fs, &c.Azure)
	awsFlags(fs, &c.AWS)
	gcpFlags(fs, &c.GCP)
	ociFlags(fs, &c.OCI)
}

// openTool opens the server's store, keyring and blobs for an operator
// command. Its logs (warnings and errors only) go to stderr.
func openTool(ctx context.Context, c app.Config) (*app.App, error) {
	c.Logger = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return app.Open(ctx, c)
}

// checkIDs validates --org and --project before touching anything.
func checkIDs(org, project string, needProject bool) error {
	if !ids.Valid("org-", org) {
		return errors.New("--org must be an organization id (org-…)")
	}
	if needProject && !ids.Valid("proj_", project) {
		return errors.New("--project must be a project id (proj_…)")
	}
	return nil
}

func notFound(err error, org, project string) error {
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("no project %s in organization %s", project, org)
	}
	return err
}

func projectCmd() *cobra.Command {
	project := &cobra.Command{Use: "project", Short: "Operator commands for projects"}
	var c app.Config
	var org, proj string
	rotate := &cobra.Command{
		Use:   "rotate-key --org ORG --project PROJ",
		Short: "Add a new version of a project's key and write new data under it",
		Long: "Create a new version of the project's key, wrapped by the project's current external key, and make it\n" +
			"the version new data is written under (safe while `ekm serve` runs). Data already stored stays\n" +
			"readable under its version; `ekm reencrypt` moves it to the new one. Prints\n" +
			`{"org_id":"org-…","project_id":"proj_…","version":N}` + ".",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd.Flags()); err != nil {
				return err
			}
			if err := checkIDs(org, proj, true); err != nil {
				return err
			}
			a, err := openTool(cmd.Context(), c)
			if err != nil {
				return err
			}
			defer a.Close()
			v, err := a.Service.RotateProjectKey(cmd.Context(), "", org, proj, lifecycle.RotateOptions{})
			if errors.Is(err, store.ErrConflict) {
				return errors.New("the project's key changed while rotating (another rotation or re-key); check its current version and retry if needed")
			}
			if err != nil {
				return notFound(err, org, proj)
			}
			return json.NewEncoder(os.Stdout).Encode(map[string]any{"org_id": org, "project_id": proj, "version": v})
		},
	}
	fs := rotate.Flags()
	fs.StringVar(&org, "org", "", "organization id (org-…)")
	fs.StringVar(&proj, "project", "", "project id (proj_…)")
	toolFlags(fs, &c)
	documentEnv(fs)
	project.AddCommand(rotate)
	return project
}
