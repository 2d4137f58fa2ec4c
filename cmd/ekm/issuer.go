package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/ekm-dev/ekm/app"
	"github.com/ekm-dev/ekm/issuer"
)

// issuerCmd is `ekm issuer`: ekm's own OIDC issuer (--gcp-identity
// issuer). It works on the key file every replica shares; running servers
// follow a changed file within a second.
func issuerCmd() *cobra.Command {
	var c app.Config
	cmd := &cobra.Command{
		Use:   "issuer",
		Short: "ekm's own OIDC issuer (Google workload identity federation): print its JWKS and discovery document, roll its keys over",
		Long: "ekm signs the ID tokens it presents to Google STS with the keys in --gcp-issuer-key-file (default\n" +
			"<data-dir>/gcp-issuer.json: created 0600 by ekm issuer init, or by a server on SQLite on its first start) and publishes them at <issuer>/.well-known/jwks.json.\n" +
			"Customers whose provider cannot fetch that URL upload the JWKS (ekm issuer jwks) as the provider's jwksJson.\n" +
			"Rollover never breaks them: `rotate add` publishes a new key next to the signing one; after the overlap (and\n" +
			"after customers who uploaded the JWKS uploaded the new one), `rotate activate` makes it sign while the old\n" +
			"one stays published; once tokens signed by the old key have expired, `rotate retire` drops it.",
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&c.DataDir, "data-dir", "ekm-data", "the server's data directory (holds gcp-issuer.json by default)")
	pf.StringVar(&c.GCP.IssuerKeyFile, "gcp-issuer-key-file", "", "the issuer's key file (default <data-dir>/gcp-issuer.json)")
	pf.StringVar(&c.GCP.IssuerURL, "gcp-issuer-url", "", "the issuer URL (for discovery)")
	pf.StringVar(&c.GCP.Subject, "gcp-subject", "", "the issuer's subject (default ekm)")
	documentEnv(pf)
	env := func(cmd *cobra.Command, _ []string) error { return applyEnv(cmd.Flags()) }

	// Every command but init works on an existing file: one created here
	// by a wrong --data-dir would be a new issuer customers do not trust.
	keySet := func() (*issuer.KeySet, string, error) {
		file := app.GCPIssuerKeyFile(c)
		ks, err := issuer.ReadKeySet(file)
		if errors.Is(err, os.ErrNotExist) {
			return nil, "", fmt.Errorf("no issuer key file at %s: pass the server's --data-dir or --gcp-issuer-key-file, "+
				"or create one with ekm issuer init", file)
		}
		return ks, file, err
	}
	initCmd := &cobra.Command{
		Use:     "init",
		Short:   "Create the issuer key file with one signing key (once; replicas on PostgreSQL share it and refuse to start without it)",
		Args:    cobra.NoArgs,
		PreRunE: env,
		RunE: func(cmd *cobra.Command, _ []string) error {
			file := app.GCPIssuerKeyFile(c)
			created, err := issuer.EnsureKeyFile(file, time.Now())
			if err != nil {
				return err
			}
			if !created {
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s already exists; left as it is (ekm issuer status lists its keys)\n", file)
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "created %s (mode 0600) with a new signing key; give every replica this file\n", file)
			return err
		},
	}
	jwks := &cobra.Command{
		Use:     "jwks",
		Short:   "Print the published keys (JWKS), as customers upload them to their provider (jwksJson)",
		Args:    cobra.NoArgs,
		PreRunE: env,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ks, _, err := keySet()
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s\n", ks.JWKS())
			return err
		},
	}
	discovery := &cobra.Command{
		Use:     "discovery",
		Short:   "Print the issuer's OpenID discovery document (what ekm serves at <issuer>/.well-known/openid-configuration)",
		Args:    cobra.NoArgs,
		PreRunE: env,
		RunE: func(cmd *cobra.Command, _ []string) error {
			iss, err := app.GCPIssuer(c)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s\n", iss.Discovery())
			return err
		},
	}
	status := &cobra.Command{
		Use:     "status",
		Short:   "List the issuer's keys: id, state (active signs; next and previous are published only) and since when",
		Args:    cobra.NoArgs,
		PreRunE: env,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ks, file, err := keySet()
			if err != nil {
				return err
			}
			type row struct {
				Kid     string    `json:"kid"`
				State   string    `json:"state"`
				Since   time.Time `json:"state_since"`
				Created time.Time `json:"created_at"`
			}
			out := struct {
				File string `json:"file"`
				Keys []row  `json:"keys"`
			}{File: file}
			for _, k := range ks.Keys {
				out.Keys = append(out.Keys, row{k.ID, k.State, k.StateSince, k.Created})
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(out)
		},
	}
	var minOverlap, minAge time.Duration
	rotate := &cobra.Command{
		Use:   "rotate add|activate|retire",
		Short: "Roll the signing key over in three steps: add (publish a new key), activate (it signs), retire (drop the old key)",
		Long: "add       publishes a new key next to the signing one (tokens are still signed by the old key).\n" +
			"activate  makes the new key sign, once published for --min-overlap (default 24h); the old key stays published.\n" +
			"retire    drops the previous key, once it stopped signing at least --min-age ago (default 1h; tokens live 15 min).\n" +
			"Between add and activate, tell customers who uploaded ekm's JWKS to their provider to upload the new one\n" +
			"(ekm issuer jwks). Running servers pick the change up within a second.",
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"add", "activate", "retire"},
		PreRunE:   env,
		RunE: func(cmd *cobra.Command, args []string) error {
			w := cmd.OutOrStdout()
			if _, _, err := keySet(); err != nil {
				return err
			}
			now := time.Now()
			var msg string
			err := issuer.Update(app.GCPIssuerKeyFile(c), func(ks *issuer.KeySet) error {
				switch args[0] {
				case "add":
					k, err := ks.Add(now)
					if err != nil {
						return err
					}
					msg = fmt.Sprintf("added key %s: published, not signing yet.\nNext: customers who uploaded ekm's JWKS upload the new one (ekm issuer jwks);\n"+
						"after at least %s, run: ekm issuer rotate activate", k.ID, minOverlap)
				case "activate":
					old := ks.Active().ID
					k, err := ks.Activate(now, minOverlap)
					if err != nil {
						return err
					}
					msg = fmt.Sprintf("key %s now signs; key %s stays published.\nAfter at least %s, run: ekm issuer rotate retire", k.ID, old, minAge)
				case "retire":
					ids, err := ks.Retire(now, minAge)
					if err != nil {
						return err
					}
					msg = fmt.Sprintf("dropped key(s) %v; the JWKS now holds only the keys in use", ids)
				default:
					return fmt.Errorf("unknown step %q: want add, activate or retire", args[0])
				}
				return nil
			})
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(w, msg)
			return err
		},
	}
	rotate.Flags().DurationVar(&minOverlap, "min-overlap", issuer.DefaultMinOverlap, "activate: how long the new key must have been published")
	rotate.Flags().DurationVar(&minAge, "min-age", time.Hour, "retire: how long ago the previous key must have stopped signing")
	cmd.AddCommand(initCmd, jwks, discovery, status, rotate)
	return cmd
}
