package main

import (
	"io"
	"path/filepath"
	"strings"
	"testing"
)

// startDevGCP runs `ekm dev --cloud gcp` on dir until t ends (or stop is
// called) and returns what it printed up to "Ctrl-C".
func startDevGCP(t *testing.T, dir string) (string, func()) {
	t.Helper()
	env := []string{"GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_QUOTA_PROJECT", "GOOGLE_AUTH_TRUST_BOUNDARY_ENABLED", "GCE_METADATA_HOST"}
	return startDevRun(t, "ekm dev --cloud gcp", env, runDevGCP, devCloudConfig("gcp", dir))
}

// The printed commands work as printed: register, project, file; the
// customer's revoke and restore commands; a restart keeps the demo.
func TestDevGCP(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	text, stop := startDevGCP(t, dir)
	s := newDevSession(t, text)
	register := s.find(`-d '(\{[^']*"type":"gcp"[^']*\})'`)
	orgID := s.find(`demo org:\s+(org-\S+)`)
	ek, proj := s.registerKey(register)

	google := devCustomerClient(t, s.find(`--cacert (\S+)`), s.find(`--connect-to cloudkms\.googleapis\.com:443:(\S+)`))
	token := s.find(`--cacert \S+ -H "Authorization: Bearer (\S+)"`)
	versionURL := s.find(`-X PATCH "(https://cloudkms\.googleapis\.com/\S+)\?updateMask=state"`)
	patch := func(state string) func() {
		return func() {
			devCustomerCall(t, google, "PATCH", versionURL+"?updateMask=state", token, `{"state":"`+state+`"}`, "PATCH version")
		}
	}
	s.revokeAndRestore(ek, patch("DISABLED"), patch("ENABLED"))

	stop()
	text, _ = startDevGCP(t, dir)
	s = s.restarted(text, orgID)
	s.checkKeptProject(proj)
}

func TestDevUnknownCloud(t *testing.T) {
	root := rootCmd()
	root.SetArgs([]string{"dev", "--cloud", "mars", "--data-dir", filepath.Join(t.TempDir(), "d")})
	root.SetOut(io.Discard)
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "mars") {
		t.Fatalf("dev --cloud mars: %v", err)
	}
}
