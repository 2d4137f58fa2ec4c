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
	"github.com/ekm-dev/ekm/store"
)

// devCloud is one cloud's part of `ekm dev`: its emulator, ekm's identity
// there, the demo customer's onboarding and the next steps printed. devRun
// does the rest, the same for every cloud.
type devCloud struct {
	// Name is the cloud as in "starting the AWS emulator".
	Name string
	// EmulatorAddr is the emulator's address unless --emulator-addr is
	// given; "" takes --emulator-addr always (Azure: the flag's default is
	// its emulator's address).
	EmulatorAddr string
	// EmulatorDir and DemoFile are the emulator's state directory and the
	// file the demo is kept in, both in the data dir.
	EmulatorDir, DemoFile string
	// DemoOrg is the demo org's name; Customer what the demo customer is
	// ("tenant", "account", "project", "tenancy"), in the notes printed.
	DemoOrg, Customer string
	// FreshNote is the note printed when the demo is new, with %s where
	// the reason (" (…)") goes, if there is one.
	FreshNote string

	// Demo is the cloud's demo state: read from DemoFile, or made by
	// Onboard.
	Demo devState
	// NewEmulator makes the emulator listening on addr and keeping its
	// state in stateDir; devRun starts it.
	NewEmulator func(addr, stateDir string) (devEmulator, error)
	// Identity gives the server ekm's identity at the emulator.
	Identity func(cfg *app.Config)
	// CustomerExists says whether the emulator still has the demo customer
	// of an earlier run.
	CustomerExists func(id string) bool
	// Onboard makes the demo customer and does the onboarding of
	// docs/<cloud>.md for org, into Demo (org included).
	Onboard func(ctx context.Context, org devDemo) error
	// Refresh, if set, runs on each start once Demo is ready, before the
	// server starts: fresh tokens for the customer's commands printed.
	Refresh func() error
	// NextSteps prints what runs where and the commands to try.
	NextSteps func(out io.Writer, r devRunning)
}

// devEmulator is what devRun does with a cloud's emulator.
type devEmulator interface {
	Start() error
	Close() error
}

// devDemo is what every cloud's demo state begins with (embedded, so its
// JSON fields come first).
type devDemo struct {
	OrgID    string `json:"org_id"`
	AdminKey string `json:"admin_key"`
}

func (d *devDemo) demo() *devDemo { return d }

// devState is a cloud's demo state: a struct embedding devDemo, and the
// id of the demo customer in the emulator.
type devState interface {
	demo() *devDemo
	customer() string
}

// devRunning is what NextSteps prints about the running demo besides
// the cloud's own.
type devRunning struct {
	// Note says whether the demo is new or reused (and why).
	Note string
	// Base is the server's URL; DataDir the absolute data dir; StatePath
	// the demo's file in it.
	Base, DataDir, StatePath string
	ProbeInterval            time.Duration
}

// devRun runs cloud's emulator and the server wired together with the
// cloud's demo org and customer, prints the next steps and runs until ctx
// ends (Ctrl-C) or the server fails.
func devRun(ctx context.Context, c devConfig, out io.Writer, cloud devCloud) error {
	// Fail before creating anything if the server's port is taken (e.g. an
	// `ekm serve` from the quickstart is still running).
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
	if cloud.EmulatorAddr != "" && !c.EmulatorAddrSet {
		emuAddr = cloud.EmulatorAddr
	}
	emu, err := cloud.NewEmulator(emuAddr, filepath.Join(dataDir, cloud.EmulatorDir))
	if err != nil {
		return err
	}
	if err := emu.Start(); err != nil {
		return fmt.Errorf("starting the %s emulator: %w (stop the other emulator, or pass --emulator-addr)", cloud.Name, err)
	}
	defer emu.Close()

	cfg := app.Config{Addr: c.Addr, DataDir: dataDir, ProbeInterval: c.ProbeInterval}
	cloud.Identity(&cfg)
	a, err := app.Open(ctx, cfg)
	if err != nil {
		return err
	}
	defer a.Close()

	statePath := filepath.Join(dataDir, cloud.DemoFile)
	reused, note, err := cloud.loadDemo(ctx, statePath, a.Store)
	if err != nil {
		return err
	}
	if !reused {
		org, adminKey, err := adminapi.CreateOrg(ctx, a.Store, cloud.DemoOrg, time.Now())
		if err != nil {
			return err
		}
		if err := cloud.Onboard(ctx, devDemo{OrgID: org.ID, AdminKey: adminKey}); err != nil {
			return err
		}
		if err := saveDevDemo(statePath, cloud.Demo); err != nil {
			return err
		}
	}
	if cloud.Refresh != nil {
		if err := cloud.Refresh(); err != nil {
			return err
		}
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
	cloud.NextSteps(out, devRunning{Note: note, Base: "http://" + base, DataDir: dataDir, StatePath: statePath, ProbeInterval: c.ProbeInterval})

	select {
	case err := <-serverErr:
		return err
	case <-ctx.Done():
		return <-serverErr
	}
}

// loadDemo reads the demo of an earlier run from path into cloud.Demo and
// says whether its org and customer still exist (reused), with a note
// saying which it is.
func (cloud devCloud) loadDemo(ctx context.Context, path string, st store.Store) (reused bool, note string, err error) {
	fresh := func(why string) string {
		if why != "" {
			why = " (" + why + ")"
		}
		return fmt.Sprintf(cloud.FreshNote, why)
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, fresh(""), nil
	}
	if err != nil {
		return false, "", err
	}
	d := cloud.Demo.demo()
	if err := json.Unmarshal(b, cloud.Demo); err != nil || d.OrgID == "" || cloud.Demo.customer() == "" {
		return false, fresh(path + " was unreadable"), nil
	}
	if _, err := st.GetOrg(ctx, d.OrgID); errors.Is(err, store.ErrNotFound) {
		return false, fresh("the earlier demo org is gone from the store"), nil
	} else if err != nil {
		return false, "", err
	}
	if !cloud.CustomerExists(cloud.Demo.customer()) {
		return false, fresh("the earlier " + cloud.Customer + " is gone from the emulator"), nil
	}
	note = "Reusing the demo org and customer " + cloud.Customer + " of an earlier run (delete " + path + " to start afresh)."
	if _, err := st.APIKeyByHash(ctx, auth.Hash(d.AdminKey)); errors.Is(err, store.ErrNotFound) {
		// The demo's admin key was deleted through the API: make another.
		_, d.AdminKey, err = adminapi.CreateAdminKey(ctx, st, d.OrgID, "ekm dev", time.Now())
		if err != nil {
			return false, "", err
		}
		if err := saveDevDemo(path, cloud.Demo); err != nil {
			return false, "", err
		}
		note += " Its admin key was deleted: this is a new one."
	} else if err != nil {
		return false, "", err
	}
	return true, note, nil
}

// saveDevDemo writes a demo state to path (0600: it holds the demo's admin
// key), replacing the file whole.
func saveDevDemo(path string, d devState) error {
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

// devRegisterSteps are the next steps every cloud prints after its
// summary: register the customer's key (the request body reg), create a
// project on it, a service account, and upload a file.
func devRegisterSteps(base, adminKey, reg string) string {
	return fmt.Sprintf(`Register the customer's key, create a project on it, and upload a file:

  export ADMIN=%[2]s
  curl -s %[1]s/v1/organization/external_keys -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
    -d '%[3]s'
  export EXTKEY=extkey_...   # the "id" printed above
  curl -s %[1]s/v1/organization/projects -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
    -d "{\"name\":\"demo\",\"external_key_id\":\"$EXTKEY\"}"
  export PROJECT=proj_...    # the "id" printed above
  curl -s %[1]s/v1/organization/projects/$PROJECT/service_accounts -H "Authorization: Bearer $ADMIN" \
    -H 'Content-Type: application/json' -d '{"name":"backend"}'
  export PROJ=sk-proj-...    # api_key.value printed above
  curl -s %[1]s/v1/files -H "Authorization: Bearer $PROJ" -F purpose=assistants -F file=@README.md
  curl -s %[1]s/v1/files -H "Authorization: Bearer $PROJ"
`, base, adminKey, reg)
}
