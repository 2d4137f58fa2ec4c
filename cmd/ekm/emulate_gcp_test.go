package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEmulateGCPFlagsAndEnv(t *testing.T) {
	checkEmulateFlagsAndEnv(t, "gcp", "127.0.0.1:8445")
}

func TestEmulateGCPRuns(t *testing.T) {
	dir := t.TempDir()
	line, stop := startEmulate(t, "gcp", dir)
	var info struct {
		CAFile string `json:"ca_file"`
		Vendor struct {
			ServiceAccount string `json:"service_account"`
			KeyFile        string `json:"key_file"`
		} `json:"vendor"`
		Create string `json:"create_project"`
	}
	if err := json.Unmarshal([]byte(line), &info); err != nil {
		t.Fatalf("%q: %v", line, err)
	}
	if info.CAFile != filepath.Join(dir, "ca.pem") || !strings.HasSuffix(info.Vendor.ServiceAccount, ".iam.gserviceaccount.com") ||
		!strings.Contains(info.Create, "/_emulator/projects") {
		t.Fatalf("%s", line)
	}
	if fi, err := os.Stat(info.Vendor.KeyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	checkEmulateRefusesNonLoopback(t, "gcp")
}
