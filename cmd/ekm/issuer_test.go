package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func runCmd(t *testing.T, root *cobra.Command, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

// ekm issuer: the JWKS and discovery document printed, and the three
// rollover steps, with their guards.
func TestIssuerCommands(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("EKM_GCP_ISSUER_URL", "https://ekm.example.com")
	keys := func() []string {
		out, err := runCmd(t, rootCmd(), "issuer", "jwks", "--data-dir", dir)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		var set struct{ Keys []struct{ Kid string } }
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &set); err != nil {
			t.Fatalf("jwks output %q: %v", out, err)
		}
		var ids []string
		for _, k := range set.Keys {
			ids = append(ids, k.Kid)
		}
		return ids
	}
	// No command but init creates the file: a wrong --data-dir would mint a
	// new issuer customers do not trust.
	for _, c := range [][]string{{"jwks"}, {"status"}, {"discovery"}, {"rotate", "add"}} {
		out, err := runCmd(t, rootCmd(), append(append([]string{"issuer"}, c...), "--data-dir", dir)...)
		if err == nil || !strings.Contains(err.Error()+out, "ekm issuer init") {
			t.Fatalf("issuer %v without a key file: %v %s", c, err, out)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "gcp-issuer.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a command other than init created the key file: %v", err)
	}
	if out, err := runCmd(t, rootCmd(), "issuer", "init", "--data-dir", dir); err != nil || !strings.Contains(out, "created") {
		t.Fatalf("init: %v %s", err, out)
	}
	first := keys()
	if out, err := runCmd(t, rootCmd(), "issuer", "init", "--data-dir", dir); err != nil || !strings.Contains(out, "already exists") {
		t.Fatalf("init again: %v %s", err, out)
	}
	if ks := keys(); len(ks) != 1 || ks[0] != first[0] {
		t.Fatalf("init again changed the keys: %v, was %v", ks, first)
	}
	if len(first) != 1 {
		t.Fatalf("keys %v", first)
	}
	out, err := runCmd(t, rootCmd(), "issuer", "discovery", "--data-dir", dir)
	if err != nil || !strings.Contains(out, `"jwks_uri":"https://ekm.example.com/.well-known/jwks.json"`) {
		t.Fatalf("discovery: %v %s", err, out)
	}
	if _, err := runCmd(t, rootCmd(), "issuer", "rotate", "activate", "--data-dir", dir); err == nil {
		t.Fatal("activate without a next key")
	}
	if out, err := runCmd(t, rootCmd(), "issuer", "rotate", "add", "--data-dir", dir); err != nil || !strings.Contains(out, "ekm issuer rotate activate") {
		t.Fatalf("add: %v %s", err, out)
	}
	if ks := keys(); len(ks) != 2 || ks[0] != first[0] {
		t.Fatalf("after add, keys %v (the signing key first)", ks)
	}
	if _, err := runCmd(t, rootCmd(), "issuer", "rotate", "activate", "--data-dir", dir); err == nil {
		t.Fatal("activated before the overlap")
	}
	if out, err := runCmd(t, rootCmd(), "issuer", "rotate", "activate", "--min-overlap", "0", "--data-dir", dir); err != nil || !strings.Contains(out, "now signs") {
		t.Fatalf("activate: %v %s", err, out)
	}
	if ks := keys(); len(ks) != 2 || ks[1] != first[0] {
		t.Fatalf("after activate, keys %v", ks)
	}
	if _, err := runCmd(t, rootCmd(), "issuer", "rotate", "retire", "--data-dir", dir); err == nil {
		t.Fatal("retired at once")
	}
	if _, err := runCmd(t, rootCmd(), "issuer", "rotate", "retire", "--min-age", "0", "--data-dir", dir); err != nil {
		t.Fatal(err)
	}
	if ks := keys(); len(ks) != 1 || ks[0] == first[0] {
		t.Fatalf("after retire, keys %v", ks)
	}
	out, err = runCmd(t, rootCmd(), "issuer", "status", "--gcp-issuer-key-file", filepath.Join(dir, "gcp-issuer.json"))
	if err != nil || !strings.Contains(out, `"state": "active"`) {
		t.Fatalf("status: %v %s", err, out)
	}
}

func TestServeHelpDocumentsGCPFlags(t *testing.T) {
	out, err := runCmd(t, rootCmd(), "serve", "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, flag := range []string{"gcp-identity", "gcp-credentials-file", "gcp-service-account", "gcp-subject", "gcp-issuer-url",
		"gcp-issuer-key-file", "gcp-trust-recheck", "gcp-dial-override", "gcp-ca-file"} {
		if !strings.Contains(out, "--"+flag) || !strings.Contains(out, envName(flag)) {
			t.Errorf("serve --help lacks --%s or %s", flag, envName(flag))
		}
	}
}
