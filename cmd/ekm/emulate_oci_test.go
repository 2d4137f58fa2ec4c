package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/ekm-dev/ekm/app"
	"github.com/ekm-dev/ekm/secret"
)

// `ekm emulate oci` prints ekm's identity as flags of ekm serve; given as
// EKM_OCI_* variables (as an operator would), they enable the oci key type.
func TestEmulateOCIThenServeFlags(t *testing.T) {
	line, stop := startEmulate(t, "oci", t.TempDir())
	defer func() { _ = stop() }()
	var info struct {
		Address  string `json:"address"`
		CAFile   string `json:"ca_file"`
		EkmServe string `json:"ekm_serve"`
	}
	if err := json.Unmarshal([]byte(line), &info); err != nil || info.Address == "" || strings.Contains(line, "PRIVATE KEY") {
		t.Fatalf("%v: %s", err, line)
	}
	// ekm serve --oci-tenancy T --oci-user U … as EKM_OCI_* variables.
	f := strings.Fields(info.EkmServe)
	for i := 2; i+1 < len(f); i += 2 {
		t.Setenv(envName(strings.TrimPrefix(f[i], "--")), strings.Trim(f[i+1], "'"))
	}
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	var c app.OCIConfig
	ociFlags(fs, &c)
	if err := applyEnv(fs); err != nil {
		t.Fatal(err)
	}
	if c.TenancyOCID == "" || c.GroupOCID == "" || c.PrivateKeyFile == "" || c.Auth != "api-key" || c.DialOverride == "" || len(c.Realms) != 1 {
		t.Fatalf("%+v", c)
	}
	ds, err := app.Drivers(app.Config{OCI: c}, secret.New())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, d := range ds {
		found = found || d.Type() == "oci"
	}
	if !found {
		t.Fatal("oci driver not enabled")
	}
	// Without a tenancy the type is off; a group alone is a mistake.
	if _, err := app.Drivers(app.Config{OCI: app.OCIConfig{GroupOCID: c.GroupOCID}}, secret.New()); err == nil {
		t.Fatal("a group without a tenancy accepted")
	}
}
