package main

import (
	"encoding/json"
	"errors"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/ekm-dev/ekm/adminapi"
	"github.com/ekm-dev/ekm/app"
)

func orgCmd() *cobra.Command {
	org := &cobra.Command{Use: "org", Short: "Operator commands for organizations"}
	var c app.Config
	var name string
	create := &cobra.Command{
		Use:   "create --name NAME",
		Short: "Create an organization and print its first admin key (shown once)",
		Long: "Create an organization on the same store as `ekm serve` (safe while the server runs) and print\n" +
			`{"org_id":"org-…","admin_key":"sk-admin-…"}` + ". The admin key is stored only as a hash.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd.Flags()); err != nil {
				return err
			}
			if name == "" {
				return errors.New("--name is required")
			}
			st, err := app.OpenStore(cmd.Context(), c)
			if err != nil {
				return err
			}
			defer st.Close()
			o, key, err := adminapi.CreateOrg(cmd.Context(), st, name, time.Now())
			if err != nil {
				return err
			}
			return json.NewEncoder(os.Stdout).Encode(map[string]string{"org_id": o.ID, "admin_key": key})
		},
	}
	create.Flags().StringVar(&name, "name", "", "organization name")
	storeFlags(create.Flags(), &c)
	documentEnv(create.Flags())
	org.AddCommand(create)
	return org
}
