package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/ekm-dev/ekm/app"
	"github.com/ekm-dev/ekm/reencrypt"
	"github.com/ekm-dev/ekm/store"
)

func reencryptCmd() *cobra.Command {
	var c app.Config
	var org, proj string
	var all bool
	var rate float64
	cmd := &cobra.Command{
		Use:   "reencrypt --org ORG (--project PROJ | --all-projects)",
		Short: "Re-encrypt stored files under their project's current key version",
		Long: "Rewrite every file of a project still under an older project key version so that it is under the\n" +
			"current one (run after `ekm project rotate-key`, or after scheduled rotation). Safe while `ekm serve`\n" +
			"runs; interrupt it at any time and run it again to resume. Progress and ETA go to stderr; one JSON\n" +
			"summary line per project goes to stdout. Exits 0 when every file is on its project's current version.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd.Flags()); err != nil {
				return err
			}
			if all == (proj != "") {
				return errors.New("give exactly one of --project or --all-projects")
			}
			if err := checkIDs(org, proj, !all); err != nil {
				return err
			}
			if rate < 0 {
				return errors.New("--rate must not be negative")
			}
			ctx := cmd.Context()
			a, err := openTool(ctx, c)
			if err != nil {
				return err
			}
			defer a.Close()
			projects := []string{proj}
			if all {
				if projects, err = allProjects(cmd, a.Store, org); err != nil {
					return err
				}
			}
			d := reencrypt.Deps{Store: a.Store, Keyring: a.Keyring, Blobs: a.Blobs, Logger: a.Logger, Rate: rate}
			tty := isTerminal(os.Stderr)
			var failed int
			for _, p := range projects {
				bar := &reencrypt.Bar{W: os.Stderr, TTY: tty, Label: p}
				res, err := reencrypt.Run(ctx, d, org, p, bar.Update)
				bar.Finish()
				if err != nil && !errors.Is(err, reencrypt.ErrFailedFiles) {
					if ctx.Err() != nil {
						return errors.New("interrupted; run the same command again to resume")
					}
					return fmt.Errorf("project %s: %w", p, notFound(err, org, p))
				}
				failed += len(res.Failed)
				if res.Failed == nil {
					res.Failed = []string{}
				}
				if err := json.NewEncoder(os.Stdout).Encode(map[string]any{"project_id": p, "version": res.Version,
					"reencrypted": res.Reencrypted, "skipped": res.Skipped, "failed": res.Failed}); err != nil {
					return err
				}
			}
			if failed > 0 {
				return fmt.Errorf("%d files failed their integrity check and stay on their old key version (see the log)", failed)
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&org, "org", "", "organization id (org-…)")
	fs.StringVar(&proj, "project", "", "project id (proj_…)")
	fs.BoolVar(&all, "all-projects", false, "every project of the organization, archived ones included")
	fs.Float64Var(&rate, "rate", 0, "at most this many files per second (0 = no limit)")
	envelopeFlag(fs, &c)
	toolFlags(fs, &c)
	documentEnv(fs)
	return cmd
}

// allProjects lists every project of org, archived ones included: their
// data is still stored under their keys.
func allProjects(cmd *cobra.Command, st store.Store, org string) ([]string, error) {
	var out []string
	page := store.Page{Limit: 1000}
	for {
		ps, err := st.ListProjects(cmd.Context(), org, true, page)
		if err != nil {
			return nil, err
		}
		for _, p := range ps {
			out = append(out, p.ID)
		}
		if len(ps) < page.Limit {
			return out, nil
		}
		page.After = ps[len(ps)-1].ID
	}
}

// isTerminal reports whether f is a character device (a terminal), where
// the progress bar redraws in place.
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
