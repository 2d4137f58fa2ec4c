package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestEmulateGCPFlagsAndEnv(t *testing.T) {
	t.Setenv("EKM_ADDR", "0.0.0.0:9")
	t.Setenv("EKM_DATA_DIR", "/nonexistent")
	gcp, _, err := emulateCmd().Find([]string{"gcp"})
	if err != nil || gcp.Name() != "gcp" {
		t.Fatalf("emulate gcp not registered: %v", err)
	}
	if err := applyEnvP(gcp.Flags(), emulatorEnvPrefix); err != nil {
		t.Fatal(err)
	}
	if got, _ := gcp.Flags().GetString("addr"); got != "127.0.0.1:8445" {
		t.Fatalf("--addr = %q: the server's EKM_ADDR leaked in", got)
	}
	dir := t.TempDir()
	t.Setenv("EKM_EMULATOR_STATE_DIR", dir)
	if err := applyEnvP(gcp.Flags(), emulatorEnvPrefix); err != nil {
		t.Fatal(err)
	}
	if got, _ := gcp.Flags().GetString("state-dir"); got != dir {
		t.Fatalf("EKM_EMULATOR_STATE_DIR ignored: %q", got)
	}
}

func TestEmulateGCPRuns(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("EKM_EMULATOR_ADDR", "127.0.0.1:0")
	t.Setenv("EKM_EMULATOR_STATE_DIR", dir)
	cmd := emulateCmd()
	cmd.SetArgs([]string{"gcp"})
	r, w := io.Pipe()
	cmd.SetOut(w)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	lines := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(r).ReadString('\n')
		lines <- l
		io.Copy(io.Discard, r)
	}()
	var line string
	select {
	case line = <-lines:
	case <-time.After(30 * time.Second):
		t.Fatal("no output")
	}
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
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Setenv("EKM_EMULATOR_ADDR", "0.0.0.0:0")
	cmd = emulateCmd()
	cmd.SetArgs([]string{"gcp"})
	cmd.SetErr(io.Discard)
	cmd.SetOut(io.Discard)
	if err := cmd.ExecuteContext(context.Background()); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("%v", err)
	}
}
