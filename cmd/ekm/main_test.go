package main

import (
	"bufio"
	"bytes"
	"context"
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
		"probe-interval", "max-file-bytes", "audit-retention", "log-level", "azure-client-id", "azure-client-secret",
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

// TestDev runs `ekm dev` and follows the commands it prints, as the README
// tells a new user to.
func TestDev(t *testing.T) {
	for _, v := range []string{"AZURE_AUTHORITY_HOST", "AZURE_REGIONAL_AUTHORITY_NAME", "AZURE_CLIENT_ID", "AZURE_TENANT_ID"} {
		t.Setenv(v, "")
	}
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- runDev(ctx, "127.0.0.1:0", "127.0.0.1:0", t.TempDir(), pw); pw.Close() }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && ctx.Err() == nil {
			t.Error(err)
		}
	})
	var printed strings.Builder
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		printed.WriteString(sc.Text() + "\n")
		if strings.HasPrefix(sc.Text(), "Ctrl-C") {
			break
		}
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	text := printed.String()
	find := func(re string) string {
		m := regexp.MustCompile(re).FindStringSubmatch(text)
		if m == nil {
			t.Fatalf("ekm dev output lacks %s:\n%s", re, text)
		}
		return m[1]
	}
	base := find(`ekm server:\s+(http://\S+)`)
	admin := find(`export ADMIN=(\S+)`)
	register := find(`-d '(\{"type":"azure"[^']*\})'`)

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
	err = runDev(context.Background(), ln.Addr().String(), "127.0.0.1:0", dir, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--addr") {
		t.Fatalf("runDev on a busy port = %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatal("runDev created state before failing")
	}
}
