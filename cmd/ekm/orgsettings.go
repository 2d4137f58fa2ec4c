package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/ekm-dev/ekm/app"
	"github.com/ekm-dev/ekm/ids"
	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/lifecycle"
	"github.com/ekm-dev/ekm/reencrypt"
	"github.com/ekm-dev/ekm/store"
)

// orgSetKeyCmd is `ekm org set-key`: the operator's side of organization-wide
// EKM, for customers who hand their key to their vendor contact.
func orgSetKeyCmd() *cobra.Command {
	var c app.Config
	var org, key string
	var require, noWait bool
	cmd := &cobra.Command{
		Use:   "set-key --org ORG --external-key (extkey_… | none) [--require] [--no-wait]",
		Short: "Set an organization's default customer key, and require customer keys for all its projects",
		Long: "Set the organization's default external key (new projects without one use it; \"none\" clears it).\n" +
			"The key must be one the organization registered, and must work now (it is validated live).\n" +
			"With --require, every project of the organization must be under a customer key: projects still on\n" +
			"the operator's key are moved under the default key (their key versions rewrapped; data stays readable\n" +
			"throughout), with a progress bar on stderr. Safe while `ekm serve` runs; interrupt it and run it\n" +
			"again to resume (serving replicas also finish the move in the background unless --no-wait is\n" +
			"given and they are stopped). --require=false turns the requirement off. Audited as the operator.\n" +
			"Prints the organization's settings as JSON.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd.Flags()); err != nil {
				return err
			}
			if err := checkIDs(org, "", false); err != nil {
				return err
			}
			if key != "none" && !ids.Valid("extkey_", key) {
				return errors.New("--external-key must be an external key id (extkey_…) or none")
			}
			if key == "none" {
				key = ""
			}
			ctx := cmd.Context()
			a, err := openTool(ctx, c)
			if err != nil {
				return err
			}
			defer a.Close()
			u := lifecycle.OrgUpdate{DefaultExternalKeyID: &key}
			if cmd.Flags().Changed("require") {
				u.EKMRequired = &require
			}
			st, err := a.Service.UpdateOrg(ctx, lifecycle.ActorOperator, org, u)
			if err != nil {
				return orgErr(err, org)
			}
			if st.Migrating() && !noWait {
				bar := &reencrypt.Bar{W: os.Stderr, TTY: isTerminal(os.Stderr), Label: org}
				_, err := a.Service.MigrateOrg(ctx, org, 0, bar.Update)
				bar.Finish()
				if err != nil {
					if ctx.Err() != nil {
						return errors.New("interrupted; run the same command again to resume")
					}
					return orgErr(err, org)
				}
				if st, err = a.Service.OrgState(ctx, org); err != nil {
					return err
				}
			}
			return printOrgState(st)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&org, "org", "", "organization id (org-…)")
	fs.StringVar(&key, "external-key", "", "the organization's default external key (extkey_…), or none")
	fs.BoolVar(&require, "require", false, "require customer keys for every project (moves projects off the operator's key)")
	fs.BoolVar(&noWait, "no-wait", false, "do not move projects now; serving replicas do it in the background")
	toolFlags(fs, &c)
	_ = cmd.MarkFlagRequired("external-key")
	documentEnv(fs)
	return cmd
}

// orgSettingsCmd is `ekm org settings`: print an organization's EKM state.
func orgSettingsCmd() *cobra.Command {
	var c app.Config
	var org string
	cmd := &cobra.Command{
		Use:   "settings --org ORG",
		Short: "Print an organization's EKM settings and how many projects are still on the operator's key",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd.Flags()); err != nil {
				return err
			}
			if err := checkIDs(org, "", false); err != nil {
				return err
			}
			a, err := openTool(cmd.Context(), c)
			if err != nil {
				return err
			}
			defer a.Close()
			st, err := a.Service.OrgState(cmd.Context(), org)
			if err != nil {
				return orgErr(err, org)
			}
			return printOrgState(st)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&org, "org", "", "organization id (org-…)")
	toolFlags(fs, &c)
	documentEnv(fs)
	return cmd
}

func printOrgState(st lifecycle.OrgState) error {
	var def any
	if st.Settings.DefaultExternalKeyID != "" {
		def = st.Settings.DefaultExternalKeyID
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]any{"org_id": st.Settings.OrgID, "default_external_key_id": def,
		"ekm_required": st.Settings.EKMRequired, "projects_total": st.ProjectsTotal, "projects_on_operator_key": st.ProjectsOnOperatorKey})
}

// orgErr words a refusal for the operator.
func orgErr(err error, org string) error {
	var le *lifecycle.Error
	switch {
	case errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("no organization %s", org)
	case errors.As(err, &le) && le.Kind == lifecycle.KMSFailure:
		if d, ok := kms.Diagnose(le.Err); ok {
			msg := fmt.Sprintf("the key failed its live check (%s): %s", d.Code, d.Message)
			if d.Step != "" {
				msg += " [onboarding step " + d.Step + "]"
			}
			return errors.New(msg)
		}
	case errors.As(err, &le):
		return fmt.Errorf("%s (%s)", le.Message, le.Code)
	}
	return err
}
