package main

import (
	"bufio"
	"context"
	"io"
	"strings"
	"testing"
	"time"
)

// What the tests of `ekm emulate <cloud>` share.

// checkEmulateFlagsAndEnv checks that `ekm emulate <cloud>` is registered,
// listens on defaultAddr by default whatever the server's EKM_ADDR says,
// and takes its state dir from EKM_EMULATOR_STATE_DIR.
func checkEmulateFlagsAndEnv(t *testing.T, cloud, defaultAddr string) {
	t.Helper()
	t.Setenv("EKM_ADDR", "0.0.0.0:9")
	t.Setenv("EKM_DATA_DIR", "/nonexistent")
	cmd, _, err := emulateCmd().Find([]string{cloud})
	if err != nil || cmd.Name() != cloud {
		t.Fatalf("emulate %s not registered: %v", cloud, err)
	}
	if err := applyEnvP(cmd.Flags(), emulatorEnvPrefix); err != nil {
		t.Fatal(err)
	}
	if got, _ := cmd.Flags().GetString("addr"); got != defaultAddr {
		t.Fatalf("--addr = %q: the server's EKM_ADDR leaked in", got)
	}
	dir := t.TempDir()
	t.Setenv("EKM_EMULATOR_ADDR", "127.0.0.1:0")
	t.Setenv("EKM_EMULATOR_STATE_DIR", dir)
	if err := applyEnvP(cmd.Flags(), emulatorEnvPrefix); err != nil {
		t.Fatal(err)
	}
	if got, _ := cmd.Flags().GetString("state-dir"); got != dir {
		t.Fatalf("EKM_EMULATOR_STATE_DIR ignored: %q", got)
	}
}

// startEmulate runs `ekm emulate <cloud>` on any free port with its state
// in stateDir (EKM_EMULATOR_ADDR, EKM_EMULATOR_STATE_DIR) and returns the
// line it printed first, and stop, which ends it and returns its error.
func startEmulate(t *testing.T, cloud, stateDir string) (line string, stop func() error) {
	t.Helper()
	t.Setenv("EKM_EMULATOR_ADDR", "127.0.0.1:0")
	t.Setenv("EKM_EMULATOR_STATE_DIR", stateDir)
	cmd := emulateCmd()
	cmd.SetArgs([]string{cloud})
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
	select {
	case line = <-lines:
	case <-time.After(30 * time.Second):
		t.Fatal("no output")
	}
	return line, func() error {
		cancel()
		err := <-done
		w.Close()
		return err
	}
}

// checkEmulateRefusesNonLoopback checks that `ekm emulate <cloud>` refuses
// to listen on a non-loopback address.
func checkEmulateRefusesNonLoopback(t *testing.T, cloud string) {
	t.Helper()
	t.Setenv("EKM_EMULATOR_ADDR", "0.0.0.0:0")
	cmd := emulateCmd()
	cmd.SetArgs([]string{cloud})
	cmd.SetErr(io.Discard)
	cmd.SetOut(io.Discard)
	if err := cmd.ExecuteContext(context.Background()); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("%v", err)
	}
}
