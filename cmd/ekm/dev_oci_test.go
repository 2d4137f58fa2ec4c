package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// startDevOCI runs `ekm dev --cloud oci` on dir until t ends (or stop is
// called) and returns what it printed up to "Ctrl-C".
func startDevOCI(t *testing.T, dir string) (string, func()) {
	t.Helper()
	env := []string{"OCI_CONFIG_FILE", "OCI_SDK_DEFAULT_RETRY_ENABLED", "OCI_REGION_METADATA", "HTTPS_PROXY", "https_proxy"}
	return startDevRun(t, "ekm dev --cloud oci", env, runDevOCI, devCloudConfig("oci", dir))
}

// The printed commands work as printed: register, project; the customer's
// revoke and restore commands (curl to the emulator's call relay); a
// restart keeps the demo.
func TestDevOCI(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	text, stop := startDevOCI(t, dir)
	s := newDevSession(t, text)
	register := s.find(`-d '(\{[^']*"type":"oci"[^']*\})'`)
	orgID := s.find(`demo org:\s+(org-\S+)`)
	if strings.Contains(text, "PRIVATE KEY") {
		t.Fatal("ekm dev printed a private key")
	}
	ek, _ := s.registerKey(register)
	s.revokeAndRestoreWithCurl(ek, "/actions/disable", "/actions/enable")

	stop()
	text, _ = startDevOCI(t, dir)
	s = s.restarted(text, orgID)
	// The key registered before the restart still works (the emulator kept
	// the tenancy, the key and ekm's identity in its state dir).
	if v := s.validate(ek); v.Status != "valid" {
		t.Fatalf("after a restart: %+v", v)
	}
}
