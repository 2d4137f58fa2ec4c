package main

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestEmulateAWSFlagsAndEnv(t *testing.T) {
	checkEmulateFlagsAndEnv(t, "aws", "127.0.0.1:8444")
}

func TestEmulateAWSRuns(t *testing.T) {
	dir := t.TempDir()
	line, stop := startEmulate(t, "aws", dir)
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
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// Non-loopback addresses are refused.
	checkEmulateRefusesNonLoopback(t, "aws")
}
