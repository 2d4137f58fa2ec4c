package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/ekm-dev/ekm/adminapi"
	"github.com/ekm-dev/ekm/app"
	"github.com/ekm-dev/ekm/auth"
	"github.com/ekm-dev/ekm/emulator/gcpcloud"
	"github.com/ekm-dev/ekm/internal/gcponboard"
	"github.com/ekm-dev/ekm/store"
)

func init() { devClouds["gcp"] = runDevGCP }

// gcpDemo is what `ekm dev --cloud gcp` keeps in <data-dir>/gcp-demo.json
// to reuse its demo org and customer project on the next start.
type gcpDemo struct {
	OrgID         string `json:"org_id"`
	AdminKey      string `json:"admin_key"`
	ProjectID     string `json:"project_id"`
	ProjectNumber string `json:"project_number"`
	PoolID        string `json:"pool_id"`
	ProviderID    string `json:"provider_id"`
	Location      string `json:"location"`
	KeyRing       string `json:"key_ring"`
	Key           string `json:"key"`
	Member        string `json:"member"`
}

// runDevGCP runs the GCP emulator and the server wired together: ekm's
// identity is the emulator's vendor service account (Application Default
// Credentials from its key file → generateIdToken), and a demo customer
// project has done onboarding steps 1-3 for the demo org.
func runDevGCP(ctx context.Context, c devConfig, out io.Writer) error {
	ln, err := net.Listen("tcp", c.Addr)
	if err != nil {
		return fmt.Errorf("%w (stop the other server, or pass --addr)", err)
	}
	ln.Close()
	dataDir, err := filepath.Abs(c.DataDir)
	if err != nil {
		return err
	}
	emuAddr := c.EmulatorAddr
	if !c.EmulatorAddrSet {
		emuAddr = "127.0.0.1:8445"
	}
	emu, err := gcpcloud.New(gcpcloud.Options{Addr: emuAddr, StateDir: filepath.Join(dataDir, "gcp-emulator")})
	if err != nil {
		return err
	}
	if err := emu.Start(); err != nil {
		return fmt.Errorf("starting the GCP emulator: %w (stop the other emulator, or pass --emulator-addr)", err)
	}
	defer emu.Close()
	v := emu.Vendor()

	cfg := app.Config{Addr: c.Addr, DataDir: dataDir, ProbeInterval: c.ProbeInterval, GCP: app.GCPConfig{
		Identity: app.GCPIdentityGoogle, CredentialsFile: v.KeyFile, DialOverride: emu.Addr(), CAFile: emu.CAFile(),
	}}
	a, err := app.Open(ctx, cfg)
	if err != nil {
		return err
	}
	defer a.Close()

	statePath := filepath.Join(dataDir, "gcp-demo.json")
	demo, note, err := loadGCPDemo(ctx, statePath, a.Store, emu)
	if err != nil {
		return err
	}
	if demo == nil {
		if demo, err = newGCPDemo(ctx, a.Store, emu); err != nil {
			return err
		}
		if err := saveGCPDemo(statePath, demo); err != nil {
			return err
		}
	}
	// A fresh owner token each start: the customer's commands below use it.
	proj, err := emu.AdminToken(demo.ProjectID)
	if err != nil {
		return err
	}

	serverErr := make(chan error, 1)
	ready := make(chan string, 1)
	go func() { serverErr <- a.Run(ctx, func(addr string) { ready <- addr }) }()
	var base string
	select {
	case base = <-ready:
	case err := <-serverErr:
		return err
	}
	base = "http://" + base
	reg, _ := json.Marshal(map[string]string{"type": "gcp", "name": "demo", "audience": demo.OrgID,
		"kms_project_id": demo.ProjectID, "kms_key_location": demo.Location, "kms_key_ring_name": demo.KeyRing, "kms_key_name": demo.Key,
		"workload_identity_pool_id": demo.PoolID, "workload_identity_provider_id": demo.ProviderID, "workload_identity_project_number": demo.ProjectNumber})
	version := gcponboard.KMSBase + gcponboard.KeyRingName(demo.ProjectID, demo.Location, demo.KeyRing) + "/cryptoKeys/" + demo.Key + "/cryptoKeyVersions/1"
	provider := gcponboard.IAMBase + gcponboard.PoolParent(demo.ProjectNumber) + "/" + demo.PoolID + "/providers/" + demo.ProviderID
	curl := "curl --cacert " + emu.CAFile() + " -H \"Authorization: Bearer " + proj.AdminToken + "\" -H 'Content-Type: application/json'"
	fmt.Fprintf(out, `ekm dev is running (Google Cloud).
  %[1]s
  ekm server:       %[2]s
  data dir:         %[3]s  (demo org and project kept in %[4]s)
  GCP emulator:     %[5]s  (CA %[6]s; control API %[7]s)
  ekm's identity:   service account %[8]s (sub %[9]s), ID tokens from IAM Credentials generateIdToken
  demo org:         %[10]s
  admin key:        %[11]s
  customer project: %[12]s (number %[13]s): steps 1-3 done (pool %[14]s, provider %[15]s, key %[16]s, roles for %[17]s)
  health probe:     every %[18]s (--probe-interval)

Register the customer's key, create a project on it, and upload a file:

  export ADMIN=%[11]s
  curl -s %[2]s/v1/organization/external_keys -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
    -d '%[19]s'
  export EXTKEY=extkey_...   # the "id" printed above
  curl -s %[2]s/v1/organization/projects -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
    -d "{\"name\":\"demo\",\"external_key_id\":\"$EXTKEY\"}"
  export PROJECT=proj_...    # the "id" printed above
  curl -s %[2]s/v1/organization/projects/$PROJECT/service_accounts -H "Authorization: Bearer $ADMIN" \
    -H 'Content-Type: application/json' -d '{"name":"backend"}'
  export PROJ=sk-proj-...    # api_key.value printed above
  curl -s %[2]s/v1/files -H "Authorization: Bearer $PROJ" -F purpose=assistants -F file=@README.md
  curl -s %[2]s/v1/files -H "Authorization: Bearer $PROJ"

Revoke access as the customer would (disable the key's version), then watch reads fail within the probe interval:

  %[20]s -X PATCH "%[21]s?updateMask=state" -d '{"state":"DISABLED"}' --connect-to cloudkms.googleapis.com:443:%[5]s

Restore it (reads work again within the probe interval, or at once after POST .../external_keys/$EXTKEY/validate):

  %[20]s -X PATCH "%[21]s?updateMask=state" -d '{"state":"ENABLED"}' --connect-to cloudkms.googleapis.com:443:%[5]s

Or disable the workload identity provider (and enable it again with "disabled":false):

  %[20]s -X PATCH "%[22]s?updateMask=disabled" -d '{"disabled":true}' --connect-to iam.googleapis.com:443:%[5]s

Ctrl-C stops both.
`, note, base, dataDir, statePath, emu.Addr(), emu.CAFile(), emu.ControlURL(), v.ServiceAccountEmail, v.UniqueID,
		demo.OrgID, demo.AdminKey, demo.ProjectID, demo.ProjectNumber, demo.PoolID, demo.ProviderID, demo.Key, demo.Member,
		c.ProbeInterval, reg, curl, version, provider)

	select {
	case err := <-serverErr:
		return err
	case <-ctx.Done():
		return <-serverErr
	}
}

// loadGCPDemo returns the demo of an earlier run if its org and project
// still exist (nil otherwise), and a line saying which it is.
func loadGCPDemo(ctx context.Context, path string, st store.Store, emu *gcpcloud.Emulator) (*gcpDemo, string, error) {
	fresh := "Created a new demo org and customer project."
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fresh, nil
	}
	if err != nil {
		return nil, "", err
	}
	var d gcpDemo
	if err := json.Unmarshal(b, &d); err != nil || d.OrgID == "" || d.ProjectID == "" {
		return nil, fresh + " (" + path + " was unreadable)", nil
	}
	if _, err := st.GetOrg(ctx, d.OrgID); errors.Is(err, store.ErrNotFound) {
		return nil, fresh + " (the earlier demo org is gone from the store)", nil
	} else if err != nil {
		return nil, "", err
	}
	if _, err := emu.AdminToken(d.ProjectID); err != nil {
		return nil, fresh + " (the earlier project is gone from the emulator)", nil
	}
	note := "Reusing the demo org and customer project of an earlier run (delete " + path + " to start afresh)."
	if _, err := st.APIKeyByHash(ctx, auth.Hash(d.AdminKey)); errors.Is(err, store.ErrNotFound) {
		_, d.AdminKey, err = adminapi.CreateAdminKey(ctx, st, d.OrgID, "ekm dev", time.Now())
		if err != nil {
			return nil, "", err
		}
		if err := saveGCPDemo(path, &d); err != nil {
			return nil, "", err
		}
		note += " Its admin key was deleted: this is a new one."
	} else if err != nil {
		return nil, "", err
	}
	return &d, note, nil
}

// newGCPDemo creates the demo org and a customer project that has done
// the onboarding of docs/gcp.md for it: a pool and a provider trusting
// Google-signed tokens of ekm's service account, a key, and the roles.
func newGCPDemo(ctx context.Context, st store.Store, emu *gcpcloud.Emulator) (*gcpDemo, error) {
	org, adminKey, err := adminapi.CreateOrg(ctx, st, "Demo Org (GCP)", time.Now())
	if err != nil {
		return nil, err
	}
	p, err := emu.CreateProject()
	if err != nil {
		return nil, err
	}
	v := emu.Vendor()
	cfg := gcponboard.Config{HTTP: emu.HTTPClient(), Token: p.AdminToken, ProjectID: p.ID, ProjectNumber: p.Number,
		PoolID: "ekm-pool", ProviderID: "ekm-oidc", Issuer: "https://accounts.google.com", Subject: v.UniqueID, Audience: org.ID,
		Location: "us-east1", KeyRing: "ekm", Key: "demo"}
	res, err := gcponboard.Run(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("onboarding the demo project: %w", err)
	}
	return &gcpDemo{OrgID: org.ID, AdminKey: adminKey, ProjectID: p.ID, ProjectNumber: p.Number, PoolID: cfg.PoolID,
		ProviderID: cfg.ProviderID, Location: cfg.Location, KeyRing: cfg.KeyRing, Key: cfg.Key, Member: res.Member}, nil
}

func saveGCPDemo(path string, d *gcpDemo) error {
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
