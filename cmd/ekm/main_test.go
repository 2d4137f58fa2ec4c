package main

import (
	"bytes"
	"context"
	"io"
	"mime/multipart"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestServeHelpDocumentsEveryFlagAndItsEnv(t *testing.T) {
	var out bytes.Buffer
	root := rootCmd()
	root.SetOut(&out)
	root.SetArgs([]string{"serve", "--help"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	help := out.String()
	for _, flag := range []string{"addr", "data-dir", "database", "local-root-key-file", "cache-ttl", "cache-size", "kms-timeout",
		"probe-interval", "max-file-bytes", "max-connections", "body-timeout", "upload-idle-timeout", "audit-retention", "admin-kms-rate", "admin-kms-burst", "log-level", "azure-client-id", "azure-client-secret",
		"azure-client-certificate", "azure-client-certificate-password", "azure-federated-token-file", "azure-cloud", "azure-dial-override", "azure-ca-file"} {
		if !strings.Contains(help, "--"+flag) || !strings.Contains(help, envName(flag)) {
			t.Errorf("serve --help lacks --%s or %s", flag, envName(flag))
		}
	}
}

func TestFlagWinsOverEnv(t *testing.T) {
	cmd := serveCmd()
	t.Setenv("EKM_ADDR", "127.0.0.1:1")
	t.Setenv("EKM_DATA_DIR", "/from/env")
	if err := cmd.ParseFlags([]string{"--addr", "127.0.0.1:2"}); err != nil {
		t.Fatal(err)
	}
	if err := applyEnv(cmd.Flags()); err != nil {
		t.Fatal(err)
	}
	if got, _ := cmd.Flags().GetString("addr"); got != "127.0.0.1:2" {
		t.Errorf("--addr = %q: the environment overrode the command line", got)
	}
	if got, _ := cmd.Flags().GetString("data-dir"); got != "/from/env" {
		t.Errorf("--data-dir = %q: the environment was ignored", got)
	}
	t.Setenv("EKM_CACHE_TTL", "soon")
	if err := applyEnv(cmd.Flags()); err == nil || !strings.Contains(err.Error(), "EKM_CACHE_TTL") {
		t.Errorf("bad env value: %v, want an error naming EKM_CACHE_TTL", err)
	}
}

// startDev runs `ekm dev` on dir until t ends and returns what it printed
// up to "Ctrl-C".
func startDev(t *testing.T, dir string) string {
	t.Helper()
	env := []string{"AZURE_AUTHORITY_HOST", "AZURE_REGIONAL_AUTHORITY_NAME", "AZURE_CLIENT_ID", "AZURE_TENANT_ID"}
	text, stop := startDevRun(t, "ekm dev", env, runDev, devConfig{Addr: "127.0.0.1:0", EmulatorAddr: "127.0.0.1:0", DataDir: dir, ProbeInterval: time.Hour})
	devStops[dir] = stop
	return text
}

var devStops = map[string]func(){}

func findIn(t *testing.T, text, re string) string {
	t.Helper()
	m := regexp.MustCompile(re).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("ekm dev output lacks %s:\n%s", re, text)
	}
	return m[1]
}

// TestDev runs `ekm dev` and follows the commands it prints, as the README
// tells a new user to: register, create a project, upload; revoke the
// customer's grant and restore it. A second start reuses the demo org and
// tenant.
func TestDev(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	text := startDev(t, dir)
	s := newDevSession(t, text)
	register := s.find(`-d '(\{"type":"azure"[^']*\})'`)
	orgID := s.find(`demo org:\s+(org-\S+)`)
	for _, p := range []string{s.find(`data dir:\s+(\S+)`), s.find(`--cacert (\S+)`)} {
		if !filepath.IsAbs(p) {
			t.Errorf("path %q is not absolute", p)
		}
	}
	if !strings.Contains(text, "Created a new demo org") || !strings.Contains(text, "every 1h0m0s (--probe-interval)") {
		t.Errorf("first start does not say it created the demo, or lacks the probe interval:\n%s", text)
	}

	ek, proj := s.registerKey(register)
	var sa struct {
		APIKey struct {
			Value string `json:"value"`
		} `json:"api_key"`
	}
	s.call("POST", "/v1/organization/projects/"+proj+"/service_accounts", `{"name":"backend"}`, &sa)
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	_ = mw.WriteField("purpose", "assistants")
	fw, _ := mw.CreateFormFile("file", "README.md")
	_, _ = fw.Write([]byte("# hello from ekm dev\n"))
	mw.Close()
	var file struct {
		ID    string `json:"id"`
		Bytes int    `json:"bytes"`
	}
	devCall(t, s.base, "POST", "/v1/files", sa.APIKey.Value, mw.FormDataContentType(), &body, &file)
	if file.ID == "" || file.Bytes != 21 {
		t.Fatalf("upload answered %+v", file)
	}

	// The revoke and restore commands, as curl would run them.
	azure := devCustomerClient(t, s.find(`--cacert (\S+)`), s.find(`--connect-to management\.azure\.com:443:(\S+)`))
	token := s.find(`-X DELETE -H "Authorization: Bearer (\S+)"`)
	armURL := s.find(`"(https://management\.azure\.com/\S+)" --connect-to`)
	grant := s.find(`-d '(\{"properties"[^']*\})'`)
	arm := func(method, body string) func() {
		return func() { devCustomerCall(t, azure, method, armURL, token, body, method+" role assignment") }
	}
	s.revokeAndRestore(ek, arm("DELETE", ""), arm("PUT", grant))

	// A restart keeps the demo org, its admin key and the tenant.
	devStops[dir]()
	s = s.restarted(startDev(t, dir), orgID)
	s.checkKeptProject(proj)
}

func TestEmulatorIgnoresServerEnv(t *testing.T) {
	t.Setenv("EKM_ADDR", "0.0.0.0:9")
	cmd := emulateCmd()
	az, _, err := cmd.Find([]string{"azure"})
	if err != nil {
		t.Fatal(err)
	}
	if err := applyEnvP(az.Flags(), emulatorEnvPrefix); err != nil {
		t.Fatal(err)
	}
	if got, _ := az.Flags().GetString("addr"); got != "127.0.0.1:8443" {
		t.Fatalf("emulator --addr = %q: the server's EKM_ADDR leaked in", got)
	}
	t.Setenv("EKM_EMULATOR_ADDR", "127.0.0.1:9443")
	if err := applyEnvP(az.Flags(), emulatorEnvPrefix); err != nil {
		t.Fatal(err)
	}
	if got, _ := az.Flags().GetString("addr"); got != "127.0.0.1:9443" {
		t.Fatalf("EKM_EMULATOR_ADDR ignored: %q", got)
	}
}

func TestDevRefusesABusyPortBeforeCreatingAnything(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dir := filepath.Join(t.TempDir(), "dev")
	err = runDev(context.Background(), devConfig{Addr: ln.Addr().String(), EmulatorAddr: "127.0.0.1:0", DataDir: dir}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--addr") {
		t.Fatalf("runDev on a busy port = %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatal("runDev created state before failing")
	}
}
