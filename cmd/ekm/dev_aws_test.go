package main

import (
	"path/filepath"
	"testing"
)

// startDevAWS runs `ekm dev --cloud aws` on dir until t ends (or stop is
// called) and returns what it printed up to "Ctrl-C".
func startDevAWS(t *testing.T, dir string) (string, func()) {
	t.Helper()
	// runDevAWS sets ekm's identity in the process environment, as an
	// operator would; t.Setenv restores it afterwards.
	env := append([]string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
		"AWS_EC2_METADATA_DISABLED", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_KMS", "AWS_ENDPOINT_URL_STS", "AWS_USE_FIPS_ENDPOINT",
		"HTTPS_PROXY", "https_proxy"}, devAWSEnv...)
	return startDevRun(t, "ekm dev --cloud aws", env, runDevAWS, devCloudConfig("aws", dir))
}

// The printed commands work as printed: register, project; the customer's
// revoke and restore commands (run with curl, as printed); a restart keeps
// the demo.
func TestDevAWS(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	text, stop := startDevAWS(t, dir)
	s := newDevSession(t, text)
	register := s.find(`-d '(\{[^']*"type":"aws"[^']*\})'`)
	orgID := s.find(`demo org:\s+(org-\S+)`)
	ek, proj := s.registerKey(register)
	s.revokeAndRestoreWithCurl(ek, "DisableKey", "EnableKey")

	stop()
	text, _ = startDevAWS(t, dir)
	s = s.restarted(text, orgID)
	s.checkKeptProject(proj)
	// The key registered before the restart still works (the emulator kept
	// the account, the key and ekm's credentials in its state dir).
	if v := s.validate(ek); v.Status != "valid" {
		t.Fatalf("after a restart: %+v", v)
	}
}
