package gcpcloud

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func control(t *testing.T, method, path string, body any) (int, map[string]any) {
	t.Helper()
	var b []byte
	if body != nil {
		b, _ = json.Marshal(body)
	}
	req, _ := http.NewRequest(method, emu.ControlURL()+path, bytes.NewReader(b))
	resp, err := emu.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

func TestControlAPI(t *testing.T) {
	st, p := control(t, "POST", "/projects", nil)
	if st != 201 || p["project_number"] == "" || !strings.HasPrefix(p["admin_token"].(string), "ya29.") {
		t.Fatalf("projects: %d %v", st, p)
	}
	if st, v := control(t, "GET", "/vendor", nil); st != 200 || v["key"].(map[string]any)["type"] != "service_account" {
		t.Fatalf("vendor: %d %v", st, v)
	}
	if st, _ := control(t, "POST", "/projects/"+p["project_id"].(string)+"/admin-token", nil); st != 200 {
		t.Fatalf("admin-token: %d", st)
	}
	if st, m := control(t, "POST", "/projects/"+p["project_id"].(string)+"/iam-bindings", map[string]string{"role": "roles/nope", "member": "user:a@b.c"}); st != 400 {
		t.Fatalf("bad binding: %d %v", st, m)
	}
	st, f := control(t, "POST", "/faults", map[string]any{"host": "kms", "operation": "kms.encrypt", "status": 503})
	if st != 201 || f["id"] == "" {
		t.Fatalf("fault: %d %v", st, f)
	}
	if st, m := control(t, "GET", "/faults", nil); st != 200 || len(m["faults"].([]any)) != 1 {
		t.Fatalf("faults: %d %v", st, m)
	}
	if st, _ := control(t, "DELETE", "/faults/"+f["id"].(string), nil); st != 204 {
		t.Fatalf("delete fault: %d", st)
	}
	if st, m := control(t, "POST", "/faults", map[string]any{"corrupt": "everything"}); st != 400 {
		t.Fatalf("bad corrupt: %d %v", st, m)
	}
	if st, m := control(t, "POST", "/clock", map[string]any{"advance": "1h"}); st != 200 || m["now"] == nil {
		t.Fatalf("clock: %d %v", st, m)
	}
	emu.AdvanceClock(-time.Hour)
	st, s := control(t, "GET", "/settings", nil)
	if st != 200 || s["quota"].(map[string]any)["crypto_requests_per_minute"].(float64) != 60000 {
		t.Fatalf("settings: %d %v", st, s)
	}
	if st, _ := control(t, "PUT", "/settings", map[string]any{"iam_propagation_seconds": -1}); st != 400 {
		t.Fatalf("bad settings: %d", st)
	}
	// Counters and the request log (with request ids, without the control API).
	api(t, "GET", "https://accounts.google.com/.well-known/openid-configuration", "", nil)
	if st, m := control(t, "GET", "/counters", nil); st != 200 || m["google.discovery"] == nil {
		t.Fatalf("counters: %d %v", st, m)
	}
	st, rl := control(t, "GET", "/requests", nil)
	reqs := rl["requests"].([]any)
	last := reqs[len(reqs)-1].(map[string]any)
	if st != 200 || last["operation"] != "google.discovery" || last["request_id"] == "" || last["host"] != "accounts.google.com" {
		t.Fatalf("requests: %d %v", st, last)
	}
}

// The control API answers only under a loopback Host: never under a
// Google host name or a foreign address.
func TestControlHostGuard(t *testing.T) {
	for _, host := range []string{"cloudkms.googleapis.com", "sts.googleapis.com", "10.1.2.3", "evil.example"} {
		req, _ := http.NewRequest("POST", emu.ControlURL()+"/projects", nil)
		req.Host = host
		resp, err := emu.HTTPClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == 201 || resp.StatusCode == 200 {
			t.Fatalf("host %s reached the control API: %d", host, resp.StatusCode)
		}
	}
	for _, host := range []string{"localhost", "emulator.local", "[::1]"} {
		req, _ := http.NewRequest("GET", emu.ControlURL()+"/healthz", nil)
		req.Host = host
		resp, err := emu.HTTPClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("host %s: %d", host, resp.StatusCode)
		}
	}
	if err := Main(context.Background(), Options{Addr: "0.0.0.0:0"}, os.Stdout); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("Main on 0.0.0.0: %v", err)
	}
}

// State survives a restart: CA, projects, keys, policies, and the
// tokens issued before (their MAC key is persisted).
func TestPersistence(t *testing.T) {
	dir := t.TempDir()
	now := func() time.Time { return baseTime }
	e1, err := New(Options{StateDir: dir, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if err := e1.Start(); err != nil {
		t.Fatal(err)
	}
	p, _ := e1.CreateProject()
	call := func(e *Emulator, method, u string, body string) (int, map[string]any) {
		req, _ := http.NewRequest(method, u, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+p.AdminToken)
		resp, err := e.HTTPClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	ring := "projects/" + p.ID + "/locations/us-east1/keyRings/r1"
	call(e1, "POST", kmsURL("projects/"+p.ID+"/locations/us-east1/keyRings?keyRingId=r1"), "{}")
	call(e1, "POST", kmsURL(ring+"/cryptoKeys?cryptoKeyId=k1"), `{"purpose":"ENCRYPT_DECRYPT"}`)
	st, enc := call(e1, "POST", kmsURL(ring+"/cryptoKeys/k1:encrypt"), `{"plaintext":"aGk=","additionalAuthenticatedData":"YQ=="}`)
	if st != 200 {
		t.Fatalf("encrypt: %d %v", st, enc)
	}
	ca := e1.CAPEM()
	vendor := e1.Vendor()
	e1.Close()
	if fi, err := os.Stat(filepath.Join(dir, stateFileName)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v", fi, err)
	}

	e2, err := New(Options{StateDir: dir, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if err := e2.Start(); err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	if !bytes.Equal(ca, e2.CAPEM()) || e2.Vendor().UniqueID != vendor.UniqueID {
		t.Fatal("CA or vendor changed across restart")
	}
	st, dec := call(e2, "POST", kmsURL(ring+"/cryptoKeys/k1:decrypt"), `{"ciphertext":"`+enc["ciphertext"].(string)+`","additionalAuthenticatedData":"YQ=="}`)
	if st != 200 || dec["plaintext"] != "aGk=" {
		t.Fatalf("decrypt after restart: %d %v", st, dec)
	}
	if _, err := os.Stat(filepath.Join(dir, vendorKeyFile)); err != nil {
		t.Fatal(err)
	}
}

func TestMainPrintsInfo(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var out bytes.Buffer
	done := make(chan error, 1)
	pr, pw, _ := os.Pipe()
	go func() { done <- Main(ctx, Options{Addr: "127.0.0.1:0"}, pw) }()
	var info map[string]any
	if err := json.NewDecoder(pr).Decode(&info); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	pw.Close()
	_ = out
	if info["ca_file"] == "" || info["vendor"].(map[string]any)["service_account"] == nil || !strings.Contains(info["create_project"].(string), "/_emulator/projects") {
		t.Fatalf("info: %v", info)
	}
}
