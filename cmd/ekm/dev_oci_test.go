package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// startDevOCI runs `ekm dev --cloud oci` on dir until t ends (or stop is
// called) and returns what it printed up to "Ctrl-C".
func startDevOCI(t *testing.T, dir string) (string, func()) {
	t.Helper()
	for _, k := range []string{"OCI_CONFIG_FILE", "OCI_SDK_DEFAULT_RETRY_ENABLED", "OCI_REGION_METADATA", "HTTPS_PROXY", "https_proxy"} {
		t.Setenv(k, "")
	}
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- runDevOCI(ctx, devConfig{Cloud: "oci", Addr: "127.0.0.1:0", EmulatorAddr: "127.0.0.1:0", EmulatorAddrSet: true,
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
		if strings.Contains(sc.Text(), "Ctrl-C stops both") {
			break
		}
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	if !strings.Contains(printed.String(), "Ctrl-C") {
		stop()
		t.Fatalf("ekm dev --cloud oci stopped early:\n%s", printed.String())
	}
	return printed.String(), stop
}

// The printed commands work as printed: register, project; the customer's
// revoke and restore commands (curl to the emulator's call relay); a
// restart keeps the demo.
func TestDevOCI(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	text, stop := startDevOCI(t, dir)
	find := func(re string) string { t.Helper(); return findIn(t, text, re) }
	base := find(`ekm server:\s+(http://\S+)`)
	admin := find(`export ADMIN=(\S+)`)
	register := find(`-d '(\{[^']*"type":"oci"[^']*\})'`)
	orgID := find(`demo org:\s+(org-\S+)`)
	if strings.Contains(text, "PRIVATE KEY") {
		t.Fatal("ekm dev printed a private key")
	}
	ctx := context.Background()
	call := func(method, path, key string, body string, out any) {
		t.Helper()
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, _ := http.NewRequestWithContext(ctx, method, base+path, rd)
		req.Header.Set("Authorization", "Bearer "+key)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
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
	call("POST", "/v1/organization/external_keys", admin, register, &ek)
	call("POST", "/v1/organization/projects", admin, `{"name":"demo","external_key_id":"`+ek.ID+`"}`, &proj)

	var v struct {
		Status    string `json:"status"`
		KeyStatus string `json:"key_status"`
	}
	if _, err := exec.LookPath("curl"); err == nil {
		cmds := regexp.MustCompile(`(?m)^  (curl -s --cacert .*\\\n.*)$`).FindAllStringSubmatch(text, -1)
		if len(cmds) != 2 || !strings.Contains(cmds[0][1], "/actions/disable") || !strings.Contains(cmds[1][1], "/actions/enable") {
			t.Fatalf("revoke and restore commands not found:\n%s", text)
		}
		runCurl := func(cmd string) {
			t.Helper()
			out, err := exec.Command("bash", "-c", cmd+" --fail-with-body").CombinedOutput()
			if err != nil {
				t.Fatalf("%s: %v %s", cmd, err, out)
			}
		}
		runCurl(cmds[0][1])
		call("POST", "/v1/organization/external_keys/"+ek.ID+"/validate", admin, "", &v)
		if v.Status != "invalid" || v.KeyStatus != "unavailable" {
			t.Fatalf("after the revoke command: %+v", v)
		}
		runCurl(cmds[1][1])
		call("POST", "/v1/organization/external_keys/"+ek.ID+"/validate", admin, "", &v)
		if v.Status != "valid" || v.KeyStatus != "valid" {
			t.Fatalf("after the restore command: %+v", v)
		}
	} else {
		t.Log("curl is not installed: the printed customer commands are not run")
	}

	stop()
	text, _ = startDevOCI(t, dir)
	if got := findIn(t, text, `demo org:\s+(org-\S+)`); got != orgID || !strings.Contains(text, "Reusing the demo org") {
		t.Fatalf("restart: org %s (was %s):\n%s", got, orgID, text)
	}
	base = findIn(t, text, `ekm server:\s+(http://\S+)`)
	admin = findIn(t, text, `export ADMIN=(\S+)`)
	// The key registered before the restart still works (the emulator kept
	// the tenancy, the key and ekm's identity in its state dir).
	call("POST", "/v1/organization/external_keys/"+ek.ID+"/validate", admin, "", &v)
	if v.Status != "valid" {
		t.Fatalf("after a restart: %+v", v)
	}
}
