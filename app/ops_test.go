package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"

	"github.com/ekm-dev/ekm/ekmtest"
)

func get(t *testing.T, url string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

func TestOperationsEndpointsAndLogs(t *testing.T) {
	var logs bytes.Buffer
	env := ekmtest.Start(t, ekmtest.Options{Logger: slog.New(slog.NewJSONHandler(&syncWriter{w: &logs}, nil))})

	if res, body := get(t, env.URL+"/healthz", nil); res.StatusCode != 200 || !strings.Contains(body, "ok") {
		t.Fatalf("/healthz: %d %s", res.StatusCode, body)
	}
	if res, body := get(t, env.URL+"/readyz", nil); res.StatusCode != 200 || !strings.Contains(body, "ready") {
		t.Fatalf("/readyz: %d %s", res.StatusCode, body)
	}
	// A request id given by the caller is echoed and logged; a bad one is
	// replaced.
	res, _ := get(t, env.URL+"/v1/organization/projects", map[string]string{"Authorization": "Bearer " + env.AdminKey, "X-Request-Id": "trace-123"})
	if res.StatusCode != 200 || res.Header.Get("X-Request-Id") != "trace-123" {
		t.Fatalf("request id not echoed: %d %q", res.StatusCode, res.Header.Get("X-Request-Id"))
	}
	res, _ = get(t, env.URL+"/v1/organization/projects", map[string]string{"Authorization": "Bearer " + env.AdminKey, "X-Request-Id": "bad id\twith spaces"})
	if id := res.Header.Get("X-Request-Id"); !strings.HasPrefix(id, "req_") {
		t.Fatalf("malformed request id kept: %q", id)
	}
	// A project on the default key costs one (local) KMS wrap.
	admin := env.Admin()
	if _, err := admin.Admin.Organization.Projects.New(context.Background(), openai.AdminOrganizationProjectNewParams{Name: "p"}); err != nil {
		t.Fatal(err)
	}
	res, body := get(t, env.URL+"/metrics", nil)
	if res.StatusCode != 200 {
		t.Fatalf("/metrics: %d", res.StatusCode)
	}
	for _, m := range []string{"ekm_http_request_duration_seconds", "ekm_project_key_cache_hits_total", "ekm_project_key_cache_misses_total", "ekm_kms_call_duration_seconds"} {
		if !strings.Contains(body, m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
	if !strings.Contains(body, `route="GET /healthz"`) {
		t.Error("HTTP metrics are not labelled by route pattern")
	}

	// Logs are JSON lines with the request id, and never carry the admin key.
	found := false
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		if rec["request_id"] == "trace-123" {
			found = true
		}
	}
	if !found {
		t.Error("no log line carries the caller's request id")
	}
	if strings.Contains(logs.String(), env.AdminKey) || strings.Contains(logs.String(), env.AdminKey[len(env.AdminKey)-12:]) {
		t.Error("an API key reached the logs")
	}
}
