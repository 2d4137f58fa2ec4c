package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startDevGCP runs `ekm dev --cloud gcp` on dir until t ends (or stop is
// called) and returns what it printed up to "Ctrl-C".
func startDevGCP(t *testing.T, dir string) (string, func()) {
	t.Helper()
	for _, v := range []string{"GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_QUOTA_PROJECT", "GOOGLE_AUTH_TRUST_BOUNDARY_ENABLED", "GCE_METADATA_HOST"} {
		t.Setenv(v, "")
	}
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- runDevGCP(ctx, devConfig{Cloud: "gcp", Addr: "127.0.0.1:0", EmulatorAddr: "127.0.0.1:0", EmulatorAddrSet: true,
			DataDir: dir, ProbeInterval: time.Hour}, pw)
		pw.Close()
	}()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil && ctx.Err() == nil {
				t.Error(err)
			}
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
		t.Fatalf("ekm dev --cloud gcp stopped early:\n%s", printed.String())
	}
	return printed.String(), stop
}

// The printed commands work as printed: register, project, file; the
// customer's revoke and restore commands; a restart keeps the demo.
func TestDevGCP(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	text, stop := startDevGCP(t, dir)
	find := func(re string) string { t.Helper(); return findIn(t, text, re) }
	base := find(`ekm server:\s+(http://\S+)`)
	admin := find(`export ADMIN=(\S+)`)
	register := find(`-d '(\{[^']*"type":"gcp"[^']*\})'`)
	orgID := find(`demo org:\s+(org-\S+)`)
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

	ca, err := os.ReadFile(find(`--cacert (\S+)`))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	emuAddr := find(`--connect-to cloudkms\.googleapis\.com:443:(\S+)`)
	google := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, emuAddr)
		}}}
	token := find(`--cacert \S+ -H "Authorization: Bearer (\S+)"`)
	versionURL := find(`-X PATCH "(https://cloudkms\.googleapis\.com/\S+)\?updateMask=state"`)
	patch := func(state string) {
		t.Helper()
		req, _ := http.NewRequest("PATCH", versionURL+"?updateMask=state", bytes.NewReader([]byte(`{"state":"`+state+`"}`)))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		res, err := google.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode/100 != 2 {
			t.Fatalf("PATCH version: %d %s", res.StatusCode, b)
		}
	}
	var v struct {
		Status    string `json:"status"`
		KeyStatus string `json:"key_status"`
	}
	patch("DISABLED")
	call("POST", "/v1/organization/external_keys/"+ek.ID+"/validate", admin, "", nil, &v)
	if v.Status != "invalid" || v.KeyStatus != "unavailable" {
		t.Fatalf("after the revoke command: %+v", v)
	}
	patch("ENABLED")
	call("POST", "/v1/organization/external_keys/"+ek.ID+"/validate", admin, "", nil, &v)
	if v.Status != "valid" || v.KeyStatus != "valid" {
		t.Fatalf("after the restore command: %+v", v)
	}

	stop()
	text, _ = startDevGCP(t, dir)
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

func TestDevUnknownCloud(t *testing.T) {
	root := rootCmd()
	root.SetArgs([]string{"dev", "--cloud", "mars", "--data-dir", filepath.Join(t.TempDir(), "d")})
	root.SetOut(io.Discard)
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "mars") {
		t.Fatalf("dev --cloud mars: %v", err)
	}
}
