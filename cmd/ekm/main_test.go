package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"mime/multipart"
	"net"
	"net/http"
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
	for _, v := range []string{"AZURE_AUTHORITY_HOST", "AZURE_REGIONAL_AUTHORITY_NAME", "AZURE_CLIENT_ID", "AZURE_TENANT_ID"} {
		t.Setenv(v, "")
	}
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- runDev(ctx, devConfig{Addr: "127.0.0.1:0", EmulatorAddr: "127.0.0.1:0", DataDir: dir, ProbeInterval: time.Hour}, pw)
		pw.Close()
	}()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil && ctx.Err() == nil {
			t.Error(err)
		}
	}
	t.Cleanup(stop)
	var printed strings.Builder
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		printed.WriteString(sc.Text() + "\n")
		if strings.HasPrefix(sc.Text(), "Ctrl-C") {
			break
		}
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	if !strings.Contains(printed.String(), "Ctrl-C") {
		stop()
		t.Fatalf("ekm dev stopped early:\n%s", printed.String())
	}
	devStops[dir] = stop
	return printed.String()
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
	find := func(re string) string { t.Helper(); return findIn(t, text, re) }
	base := find(`ekm server:\s+(http://\S+)`)
	admin := find(`export ADMIN=(\S+)`)
	register := find(`-d '(\{"type":"azure"[^']*\})'`)
	orgID := find(`demo org:\s+(org-\S+)`)
	for _, p := range []string{find(`data dir:\s+(\S+)`), find(`--cacert (\S+)`)} {
		if !filepath.IsAbs(p) {
			t.Errorf("path %q is not absolute", p)
		}
	}
	if !strings.Contains(text, "Created a new demo org") || !strings.Contains(text, "every 1h0m0s (--probe-interval)") {
		t.Errorf("first start does not say it created the demo, or lacks the probe interval:\n%s", text)
	}

	ctx := context.Background()
	call := func(method, path, key, ctype string, body io.Reader, out any) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, method, base+path, body)
		req.Header.Set("Authorization", "Bearer "+key)
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
		}
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatal(err)
		}
	}
	var ek, proj struct {
		ID string `json:"id"`
	}
	call("POST", "/v1/organization/external_keys", admin, "application/json", strings.NewReader(register), &ek)
	call("POST", "/v1/organization/projects", admin, "application/json", strings.NewReader(`{"name":"demo","external_key_id":"`+ek.ID+`"}`), &proj)
	var sa struct {
		APIKey struct {
			Value string `json:"value"`
		} `json:"api_key"`
	}
	call("POST", "/v1/organization/projects/"+proj.ID+"/service_accounts", admin, "application/json", strings.NewReader(`{"name":"backend"}`), &sa)
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
	call("POST", "/v1/files", sa.APIKey.Value, mw.FormDataContentType(), &body, &file)
	if file.ID == "" || file.Bytes != 21 {
		t.Fatalf("upload answered %+v", file)
	}

	// The revoke and restore commands, as curl would run them.
	ca, err := os.ReadFile(find(`--cacert (\S+)`))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	emuAddr := find(`--connect-to management\.azure\.com:443:(\S+)`)
	azure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, emuAddr)
		}}}
	token := find(`-X DELETE -H "Authorization: Bearer (\S+)"`)
	armURL := find(`"(https://management\.azure\.com/\S+)" --connect-to`)
	grant := find(`-d '(\{"properties"[^']*\})'`)
	arm := func(method, body string) {
		t.Helper()
		req, _ := http.NewRequest(method, armURL, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		res, err := azure.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode/100 != 2 {
			t.Fatalf("%s role assignment: %d %s", method, res.StatusCode, b)
		}
	}
	var v struct {
		Status    string `json:"status"`
		KeyStatus string `json:"key_status"`
	}
	arm("DELETE", "")
	call("POST", "/v1/organization/external_keys/"+ek.ID+"/validate", admin, "", nil, &v)
	if v.Status != "invalid" || v.KeyStatus != "unavailable" {
		t.Fatalf("after the revoke command: %+v", v)
	}
	arm("PUT", grant)
	call("POST", "/v1/organization/external_keys/"+ek.ID+"/validate", admin, "", nil, &v)
	if v.Status != "valid" || v.KeyStatus != "valid" {
		t.Fatalf("after the restore command: %+v", v)
	}

	// A restart keeps the demo org, its admin key and the tenant.
	devStops[dir]()
	text = startDev(t, dir)
	if got := findIn(t, text, `demo org:\s+(org-\S+)`); got != orgID || !strings.Contains(text, "Reusing the demo org") {
		t.Fatalf("restart: org %s (was %s):\n%s", got, orgID, text)
	}
	base = findIn(t, text, `ekm server:\s+(http://\S+)`)
	admin = findIn(t, text, `export ADMIN=(\S+)`)
	var list struct {
		Data []struct{ ID string } `json:"data"`
	}
	call("GET", "/v1/organization/projects", admin, "", nil, &list)
	if len(list.Data) != 1 || list.Data[0].ID != proj.ID {
		t.Fatalf("after a restart, projects %+v, want %s", list.Data, proj.ID)
	}
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
