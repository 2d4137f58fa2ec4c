package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/ekm-dev/ekm/app"
	"github.com/ekm-dev/ekm/emulator/gcpcloud"
	"github.com/ekm-dev/ekm/internal/gcponboard"
)

func init() { devClouds["gcp"] = runDevGCP }

// gcpDemo is what `ekm dev --cloud gcp` keeps in <data-dir>/gcp-demo.json
// to reuse its demo org and customer project on the next start.
type gcpDemo struct {
	devDemo
	ProjectID     string `json:"project_id"`
	ProjectNumber string `json:"project_number"`
	PoolID        string `json:"pool_id"`
	ProviderID    string `json:"provider_id"`
	Location      string `json:"location"`
	KeyRing       string `json:"key_ring"`
	Key           string `json:"key"`
	Member        string `json:"member"`
}

func (d *gcpDemo) customer() string { return d.ProjectID }

// runDevGCP runs the GCP emulator and the server wired together: ekm's
// identity is the emulator's vendor service account (Application Default
// Credentials from its key file → generateIdToken), and a demo customer
// project has done onboarding steps 1-3 for the demo org.
func runDevGCP(ctx context.Context, c devConfig, out io.Writer) error {
	var (
		emu  *gcpcloud.Emulator
		demo gcpDemo
		proj gcpcloud.Project
	)
	return devRun(ctx, c, out, devCloud{
		Name: "GCP", EmulatorAddr: "127.0.0.1:8445", EmulatorDir: "gcp-emulator", DemoFile: "gcp-demo.json", DemoOrg: "Demo Org (GCP)",
		Customer: "project", FreshNote: "Created a new demo org and customer project.%s",
		Demo: &demo,
		NewEmulator: func(addr, stateDir string) (devEmulator, error) {
			var err error
			emu, err = gcpcloud.New(gcpcloud.Options{Addr: addr, StateDir: stateDir})
			return emu, err
		},
		Identity: func(cfg *app.Config) {
			cfg.GCP = app.GCPConfig{Identity: app.GCPIdentityGoogle, CredentialsFile: emu.Vendor().KeyFile, DialOverride: emu.Addr(), CAFile: emu.CAFile()}
		},
		CustomerExists: func(id string) bool {
			_, err := emu.AdminToken(id)
			return err == nil
		},
		Onboard: func(ctx context.Context, org devDemo) (err error) {
			demo, err = newGCPDemo(ctx, emu, org)
			return err
		},
		Refresh: func() error {
			// A fresh owner token each start: the customer's commands below use it.
			var err error
			proj, err = emu.AdminToken(demo.ProjectID)
			return err
		},
		NextSteps: func(out io.Writer, r devRunning) {
			v := emu.Vendor()
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

%[19]s
Revoke access as the customer would (disable the key's version), then watch reads fail within the probe interval:

  %[20]s -X PATCH "%[21]s?updateMask=state" -d '{"state":"DISABLED"}' --connect-to cloudkms.googleapis.com:443:%[5]s

Restore it (reads work again within the probe interval, or at once after POST .../external_keys/$EXTKEY/validate):

  %[20]s -X PATCH "%[21]s?updateMask=state" -d '{"state":"ENABLED"}' --connect-to cloudkms.googleapis.com:443:%[5]s

Or disable the workload identity provider (and enable it again with "disabled":false):

  %[20]s -X PATCH "%[22]s?updateMask=disabled" -d '{"disabled":true}' --connect-to iam.googleapis.com:443:%[5]s

Ctrl-C stops both.
`, r.Note, r.Base, r.DataDir, r.StatePath, emu.Addr(), emu.CAFile(), emu.ControlURL(), v.ServiceAccountEmail, v.UniqueID,
				demo.OrgID, demo.AdminKey, demo.ProjectID, demo.ProjectNumber, demo.PoolID, demo.ProviderID, demo.Key, demo.Member,
				r.ProbeInterval, devRegisterSteps(r.Base, demo.AdminKey, string(reg)), curl, version, provider)
		},
	})
}

// newGCPDemo makes a customer project that has done the onboarding of
// docs/gcp.md for the demo org: a pool and a provider trusting
// Google-signed tokens of ekm's service account, a key, and the roles.
func newGCPDemo(ctx context.Context, emu *gcpcloud.Emulator, org devDemo) (gcpDemo, error) {
	p, err := emu.CreateProject()
	if err != nil {
		return gcpDemo{}, err
	}
	v := emu.Vendor()
	cfg := gcponboard.Config{HTTP: emu.HTTPClient(), Token: p.AdminToken, ProjectID: p.ID, ProjectNumber: p.Number,
		PoolID: "ekm-pool", ProviderID: "ekm-oidc", Issuer: "https://accounts.google.com", Subject: v.UniqueID, Audience: org.OrgID,
		Location: "us-east1", KeyRing: "ekm", Key: "demo"}
	res, err := gcponboard.Run(ctx, cfg)
	if err != nil {
		return gcpDemo{}, fmt.Errorf("onboarding the demo project: %w", err)
	}
	return gcpDemo{devDemo: org, ProjectID: p.ID, ProjectNumber: p.Number, PoolID: cfg.PoolID,
		ProviderID: cfg.ProviderID, Location: cfg.Location, KeyRing: cfg.KeyRing, Key: cfg.Key, Member: res.Member}, nil
}
