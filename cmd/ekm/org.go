package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/ekm-dev/ekm/adminapi"
	"github.com/ekm-dev/ekm/app"
	"github.com/ekm-dev/ekm/store"
)

func orgCmd() *cobra.Command {
	org := &cobra.Command{Use: "org", Short: "Operator commands for organizations"}
	org.AddCommand(orgCreateCmd(), orgListCmd(), orgAdminKeyCmd())
	return org
}

// openOperatorStore opens the store an operator command works on and says
// on stderr which one it is, warning when it has just been created empty:
// run from another directory, the default ./ekm-data is not the running
// server's store, and a key printed from it would be unknown to the server.
func openOperatorStore(ctx context.Context, c app.Config, stderr io.Writer) (store.Store, error) {
	st, info, err := app.OpenStoreInfo(ctx, c)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(stderr, "ekm: using %s\n", info.Describe())
	if info.Warning != "" {
		fmt.Fprintf(stderr, "ekm: warning: %s\n", info.Warning)
	}
	if info.Created {
		fmt.Fprintf(stderr, "ekm: warning: %s did not exist and was created empty; if a server is running, "+
			"pass its --data-dir (or --database) so that it knows what this command creates\n", info.Path)
	}
	return st, nil
}

func orgCreateCmd() *cobra.Command {
	var c app.Config
	var name string
	create := &cobra.Command{
		Use:   "create --name NAME",
		Short: "Create an organization and print its first admin key (shown once)",
		Long: "Create an organization on the same store as `ekm serve` (safe while the server runs) and print\n" +
			`{"org_id":"org-…","admin_key":"sk-admin-…"}` + ". The admin key is stored only as a hash.\n" +
			"The store used is printed on stderr.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd.Flags()); err != nil {
				return err
			}
			if name == "" {
				return errors.New("--name is required")
			}
			st, err := openOperatorStore(cmd.Context(), c, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer st.Close()
			o, key, err := adminapi.CreateOrg(cmd.Context(), st, name, time.Now())
			if err != nil {
				return err
			}
			return json.NewEncoder(cmd.OutOrStdout()).Encode(map[string]string{"org_id": o.ID, "admin_key": key})
		},
	}
	create.Flags().StringVar(&name, "name", "", "organization name")
	storeFlags(create.Flags(), &c)
	documentEnv(create.Flags())
	return create
}

// orgListCmd prints every org with its number of admin keys, so that an
// operator can find an org that has none left.
func orgListCmd() *cobra.Command {
	var c app.Config
	list := &cobra.Command{
		Use:   "list",
		Short: "List organizations (one JSON line each, with their number of admin keys)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd.Flags()); err != nil {
				return err
			}
			st, err := openOperatorStore(cmd.Context(), c, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer st.Close()
			ctx := cmd.Context()
			enc := json.NewEncoder(cmd.OutOrStdout())
			for after := ""; ; {
				orgs, err := st.ListOrgs(ctx, store.Page{After: after, Limit: 100})
				if err != nil {
					return err
				}
				for _, o := range orgs {
					n, err := countAdminKeys(ctx, st, o.ID)
					if err != nil {
						return err
					}
					if err := enc.Encode(struct {
						OrgID     string `json:"org_id"`
						Name      string `json:"name"`
						CreatedAt int64  `json:"created_at"`
						AdminKeys int    `json:"admin_keys"`
					}{o.ID, o.Name, o.CreatedAt.Unix(), n}); err != nil {
						return err
					}
				}
				if len(orgs) < 100 {
					return nil
				}
				after = orgs[len(orgs)-1].ID
			}
		},
	}
	storeFlags(list.Flags(), &c)
	documentEnv(list.Flags())
	return list
}

func countAdminKeys(ctx context.Context, st store.Store, orgID string) (int, error) {
	n := 0
	for after := ""; ; {
		ks, err := st.ListAPIKeys(ctx, orgID, store.KindAdmin, store.Page{After: after, Limit: 100})
		if err != nil {
			return 0, err
		}
		n += len(ks)
		if len(ks) < 100 {
			return n, nil
		}
		after = ks[len(ks)-1].ID
	}
}

// orgAdminKeyCmd is the operator's recovery path: a new admin key for an
// existing org, e.g. one whose admin keys were all deleted or lost.
func orgAdminKeyCmd() *cobra.Command {
	ak := &cobra.Command{Use: "admin-key", Short: "Operator commands for an organization's admin keys"}
	var c app.Config
	var orgID, name string
	create := &cobra.Command{
		Use:   "create --org ORG [--name NAME]",
		Short: "Add an admin key to an organization and print it (shown once); audited as api_key.created",
		Long: "Add an admin key to an existing organization (safe while the server runs) and print\n" +
			`{"org_id":"org-…","id":"key_…","admin_key":"sk-admin-…"}` + ". This is the way back into an organization\n" +
			"that has lost its admin keys. The key is stored only as a hash; the api_key.created audit event has\n" +
			"no actor (the operator).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd.Flags()); err != nil {
				return err
			}
			if orgID == "" {
				return errors.New("--org is required (ekm org list shows the organizations)")
			}
			st, err := openOperatorStore(cmd.Context(), c, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer st.Close()
			k, value, err := adminapi.CreateAdminKey(cmd.Context(), st, orgID, name, time.Now())
			if errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("no organization %q in this store (ekm org list shows the organizations)", orgID)
			}
			if err != nil {
				return err
			}
			return json.NewEncoder(cmd.OutOrStdout()).Encode(map[string]string{"org_id": orgID, "id": k.ID, "admin_key": value})
		},
	}
	create.Flags().StringVar(&orgID, "org", "", "organization id (org-…)")
	create.Flags().StringVar(&name, "name", "Operator recovery key", "name of the new key")
	storeFlags(create.Flags(), &c)
	documentEnv(create.Flags())
	ak.AddCommand(create)
	return ak
}
