package app_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/adminapi"
	"github.com/ekm-dev/ekm/app"
	"github.com/ekm-dev/ekm/auth"
)

// server runs app.Run for t on a free port and returns its address, the
// app and a function that stops it and waits.
func server(t *testing.T, cfg app.Config) (string, *app.App, func()) {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a, err := app.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, func(addr string) { ready <- addr }) }()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		a.Close()
	}
	t.Cleanup(stop)
	return addr, a, stop
}

// exchange sends raw bytes on a new connection and reads one answer. It
// reports whether the server closed the connection after it.
func exchange(t *testing.T, addr, raw string) (*http.Response, string, time.Duration, bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer within 10s: %v", err)
	}
	b, _ := io.ReadAll(res.Body)
	took := time.Since(start)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = br.ReadByte()
	return res, string(b), took, err == io.EOF
}

// TestUnauthenticatedBodiesDoNotHoldConnections (raw sockets): a request
// that declares a body and never sends it is answered 401 at once and its
// connection closed, with a bad key or none, on both APIs; 100 of them at
// once leave no goroutines behind. Before, each was held for as long as
// the client liked.
func TestUnauthenticatedBodiesDoNotHoldConnections(t *testing.T) {
	addr, _, _ := server(t, app.Config{})
	for _, c := range []struct{ path, auth string }{
		{"/v1/organization/projects", ""},
		{"/v1/organization/projects", "Authorization: Bearer sk-admin-wrong\r\n"},
		{"/v1/crypto/encrypt", "Authorization: Bearer sk-proj-wrong\r\n"},
		{"/v1/files", ""},
	} {
		res, body, took, closed := exchange(t, addr, "POST "+c.path+" HTTP/1.1\r\nHost: x\r\n"+c.auth+
			"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
		if res.StatusCode != 401 || !strings.Contains(body, "invalid_api_key") || took > 2*time.Second || !closed || !res.Close {
			t.Fatalf("%s %q: %d after %v, closed %v, Connection: close %v", c.path, c.auth, res.StatusCode, took, closed, res.Close)
		}
	}

	before := runtime.NumGoroutine()
	conns := make([]net.Conn, 100)
	for i := range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = io.WriteString(c, "POST /v1/organization/projects HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-admin-x\r\nContent-Length: 262144\r\n\r\n")
		conns[i] = c
	}
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadAll(c); err != nil {
			t.Fatalf("a connection was not closed by the server: %v", err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before+5 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before+5 {
		t.Fatalf("%d goroutines after the connections closed, %d before", n, before)
	}
}

// TestAuthenticatedStalledBodies (raw sockets): with a valid key, a JSON
// body that never comes gets 408 after the body timeout, and a stalled
// upload 408 after the idle timeout; both connections close.
func TestAuthenticatedStalledBodies(t *testing.T) {
	addr, a, _ := server(t, app.Config{BodyTimeout: 300 * time.Millisecond, UploadIdleTimeout: 300 * time.Millisecond})
	ctx := context.Background()
	_, admin, err := adminapi.CreateOrg(ctx, a.Store, "o", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	res, body, took, closed := exchange(t, addr, "POST /v1/organization/projects HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+admin+
		"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"name\":")
	if res.StatusCode != http.StatusRequestTimeout || !strings.Contains(body, "request_timeout") || took > 3*time.Second || !closed {
		t.Fatalf("stalled Admin API body: %d %s after %v, closed %v", res.StatusCode, body, took, closed)
	}
}

// TestConnectionLimit: with MaxConnections 2, a third client waits until
// one of two idle connections goes.
func TestConnectionLimit(t *testing.T) {
	addr, _, _ := server(t, app.Config{MaxConnections: 2})
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	time.Sleep(100 * time.Millisecond)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("a third connection was served while two were open")
	}
	held[0].Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if res, err := http.ReadResponse(br, nil); err != nil || res.StatusCode != 200 {
		t.Fatalf("after one closed: %v %v", res, err)
	}
}

// TestUnknownPathsAnswerJSON: paths no route serves answer the APIs' JSON
// error shape, not the mux's text/plain.
func TestUnknownPathsAnswerJSON(t *testing.T) {
	addr, _, _ := server(t, app.Config{})
	for _, c := range []struct {
		method, path string
		status       int
		code         string
	}{
		{"GET", "/v1", 404, "unknown_url"},
		{"GET", "/v1/unknown", 404, "unknown_url"},
		{"POST", "/v2/files", 404, "unknown_url"},
		{"GET", "/nothing/here", 404, "unknown_url"},
		{"POST", "/healthz", 405, "method_not_allowed"},
	} {
		req, _ := http.NewRequest(c.method, "http://"+addr+c.path, nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		var e struct {
			Error struct{ Code, Message string }
		}
		if res.StatusCode != c.status || !strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") ||
			json.Unmarshal(b, &e) != nil || e.Error.Code != c.code {
			t.Errorf("%s %s: %d %s %s", c.method, c.path, res.StatusCode, res.Header.Get("Content-Type"), b)
		}
		if c.status == 405 && res.Header.Get("Allow") == "" {
			t.Errorf("%s %s: 405 without Allow", c.method, c.path)
		}
	}
	// Known routes are untouched.
	if res, err := http.Get("http://" + addr + "/healthz"); err != nil || res.StatusCode != 200 {
		t.Fatalf("/healthz: %v %v", res, err)
	}
}

// TestDataDirPermissions: a new data dir is 0700 and the database 0600;
// an existing data dir others can read gets a warning naming what to do,
// and the database in it is still 0600.
func TestDataDirPermissions(t *testing.T) {
	ctx := context.Background()
	fresh := filepath.Join(t.TempDir(), "new", "data")
	var logs bytes.Buffer
	a, err := app.Open(ctx, app.Config{DataDir: fresh, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	for path, want := range map[string]os.FileMode{fresh: 0o700, filepath.Join(fresh, "ekm.db"): 0o600, filepath.Join(fresh, "local-root.key"): 0o600} {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v %v, want %#o", path, fi.Mode().Perm(), err, want)
		}
	}
	if strings.Contains(logs.String(), "WARN") {
		t.Fatalf("a private data dir got a warning: %s", logs.String())
	}

	shared := t.TempDir()
	if err := os.Chmod(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	logs.Reset()
	a, err = app.Open(ctx, app.Config{DataDir: shared, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	if !strings.Contains(logs.String(), `"level":"WARN"`) || !strings.Contains(logs.String(), "0755") || !strings.Contains(logs.String(), "chmod -R go-rwx") {
		t.Fatalf("a 0755 data dir without a warning saying what to do: %s", logs.String())
	}
	if fi, err := os.Stat(filepath.Join(shared, "ekm.db")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("database in a shared dir: %v %v", fi.Mode().Perm(), err)
	}
}

// TestStartStopLogsAndLastUse: startup names the version and the enabled
// key types; shutdown says so and that it stopped; a key used just before
// the stop has its last use recorded.
func TestStartStopLogsAndLastUse(t *testing.T) {
	var logs bytes.Buffer
	w := &syncWriter{w: &logs}
	addr, a, stop := server(t, app.Config{Logger: slog.New(slog.NewJSONHandler(w, nil))})
	ctx := context.Background()
	_, admin, err := adminapi.CreateOrg(ctx, a.Store, "o", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", "http://"+addr+"/v1/organization/projects", nil)
	req.Header.Set("Authorization", "bearer "+admin)
	res, err := http.DefaultClient.Do(req)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("%v %v", res, err)
	}
	res.Body.Close()
	st := a.Store
	k, err := st.APIKeyByHash(ctx, auth.Hash(admin))
	if err != nil || !k.LastUsedAt.IsZero() {
		t.Fatalf("last use written on the request path: %+v %v", k, err)
	}
	// The leader's first blob sweep runs beside the requests: wait for its
	// line (a stop before it would cancel it, which logs nothing).
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		w.mu.Lock()
		swept := strings.Contains(logs.String(), `"orphan_blobs"`)
		w.mu.Unlock()
		if swept {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no blob sweep within 10 s of the start")
		}
	}
	// The store stays open past stop for the check: reopen it.
	dir := a.Config.DataDir
	stop()
	st2, err := app.OpenStore(ctx, app.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	k, err = st2.APIKeyByHash(ctx, auth.Hash(admin))
	if err != nil || k.LastUsedAt.IsZero() {
		t.Fatalf("last use not flushed at stop: %+v %v", k, err)
	}

	w.mu.Lock()
	text := logs.String()
	w.mu.Unlock()
	var start map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(text), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %s", line)
		}
		if rec["msg"] == "ekm starting" {
			start = rec
		}
		for k := range rec {
			if k != strings.ToLower(k) || strings.ContainsAny(k, " -") {
				t.Errorf("log field %q is not snake_case: %s", k, line)
			}
		}
	}
	if start == nil || start["version"] == "" || start["version"] == nil || !strings.Contains(text, `"key_types":["local"]`) {
		t.Fatalf("no start line with version and key types:\n%s", text)
	}
	for _, m := range []string{`"msg":"shutting down"`, `"msg":"stopped"`, `"orphan_blobs"`} {
		if !strings.Contains(text, m) {
			t.Errorf("logs lack %s:\n%s", m, text)
		}
	}
}

// TestPortClashSaysWhatToDo: a busy address is reported with what to do.
func TestPortClashSaysWhatToDo(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := app.Open(context.Background(), app.Config{Addr: ln.Addr().String(), DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := a.Run(context.Background(), nil); err == nil || !strings.Contains(err.Error(), "--addr") {
		t.Fatalf("Run on a busy address: %v", err)
	}
}

// TestDisabledTypeSaysHowToEnable: registering a type this server knows
// but has no driver for is refused before its fields are checked, saying
// how the operator enables it.
func TestDisabledTypeSaysHowToEnable(t *testing.T) {
	addr, a, _ := server(t, app.Config{})
	_, admin, err := adminapi.CreateOrg(context.Background(), a.Store, "o", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", "http://"+addr+"/v1/organization/external_keys", strings.NewReader(`{"type":"azure","name":"vault"}`))
	req.Header.Set("Authorization", "Bearer "+admin)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var e struct {
		Error struct{ Code, Param, Message string }
	}
	if err := json.NewDecoder(res.Body).Decode(&e); err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 400 || e.Error.Code != "unsupported_type" || e.Error.Param != "type" ||
		!strings.Contains(e.Error.Message, "--azure-client-id") || !strings.Contains(e.Error.Message, "ekm dev") {
		t.Fatalf("%d %+v", res.StatusCode, e.Error)
	}
}

// TestUnauthenticatedRoutesCloseTheConnection: a route anyone may call
// answers as the last on its connection, so a client with no key cannot
// keep connections (bounded by MaxConnections) open between calls; a keyed
// API call keeps its connection for reuse.
func TestUnauthenticatedRoutesCloseTheConnection(t *testing.T) {
	addr, a, _ := server(t, app.Config{})
	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/console/", "/"} {
		res, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if !res.Close {
			t.Errorf("GET %s: %d, connection kept open", path, res.StatusCode)
		}
	}
	_, key, err := adminapi.CreateOrg(context.Background(), a.Store, "acme", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", "http://"+addr+"/v1/organization/projects", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || res.Close {
		t.Fatalf("keyed call: %d, close %v; want 200 on a kept connection", res.StatusCode, res.Close)
	}
}
