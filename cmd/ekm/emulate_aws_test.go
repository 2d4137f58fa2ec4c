package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"
)

func TestEmulateAWSFlagsAndEnv(t *testing.T) {
	t.Setenv("EKM_ADDR", "0.0.0.0:9")
	t.Setenv("EKM_DATA_DIR", "/nonexistent")
	aws, _, err := emulateCmd().Find([]string{"aws"})
	if err != nil || aws.Name() != "aws" {
		t.Fatalf("emulate aws not registered: %v", err)
	}
	if err := applyEnvP(aws.Flags(), emulatorEnvPrefix); err != nil {
		t.Fatal(err)
	}
	if got, _ := aws.Flags().GetString("addr"); got != "127.0.0.1:8444" {
		t.Fatalf("--addr = %q: the server's EKM_ADDR leaked in", got)
	}
	dir := t.TempDir()
	t.Setenv("EKM_EMULATOR_ADDR", "127.0.0.1:0")
	t.Setenv("EKM_EMULATOR_STATE_DIR", dir)
	if err := applyEnvP(aws.Flags(), emulatorEnvPrefix); err != nil {
		t.Fatal(err)
	}
	if got, _ := aws.Flags().GetString("state-dir"); got != dir {
		t.Fatalf("EKM_EMULATOR_STATE_DIR ignored: %q", got)
	}
}

func TestEmulateAWSRuns(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("EKM_EMULATOR_ADDR", "127.0.0.1:0")
	t.Setenv("EKM_EMULATOR_STATE_DIR", dir)
	cmd := emulateCmd()
	cmd.SetArgs([]string{"aws"})
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
			AccessKeyID string `json:"access_key_id"`
			ARN         string `json:"arn"`
		} `json:"vendor"`
		Create string `json:"create_account"`
	}
	if err := json.Unmarshal([]byte(line), &info); err != nil {
		t.Fatalf("%q: %v", line, err)
	}
	if !strings.HasPrefix(info.CAFile, dir) || info.Vendor.AccessKeyID == "" || !strings.HasSuffix(info.Vendor.ARN, ":user/ekm") || !strings.Contains(info.Create, "/accounts") {
		t.Fatalf("%s", line)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	w.Close()
	// Non-loopback addresses are refused.
	t.Setenv("EKM_EMULATOR_ADDR", "0.0.0.0:0")
	cmd = emulateCmd()
	cmd.SetArgs([]string{"aws"})
	cmd.SetErr(io.Discard)
	cmd.SetOut(io.Discard)
	if err := cmd.ExecuteContext(context.Background()); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("%v", err)
	}
}
