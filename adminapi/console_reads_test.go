package adminapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/auth"
	"github.com/ekm-dev/ekm/store"
	"github.com/ekm-dev/ekm/store/sqlstore"
)

// readsServer mounts NewReads beside New, as app does.
func readsServer(t *testing.T) (*httptest.Server, store.Store) {
	t.Helper()
	st, err := sqlstore.Open(context.Background(), filepath.Join(t.TempDir(), "ekm.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	mux := http.NewServeMux()
	mux.Handle("/v1/organization/", New(Deps{Store: st}))
	reads := NewReads(Deps{Store: st})
	for _, p := range ReadPatterns {
		mux.Handle(p, reads)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, st
}

func getRaw(t *testing.T, srv *httptest.Server, method, path, key string) (int, http.Header, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	res, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var body map[string]any
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatalf("%s %s: not JSON: %q", method, path, raw)
	}
	return res.StatusCode, res.Header, body
}

func TestMeAnswersTheCallersOrgAndKey(t *testing.T) {
	srv, st := readsServer(t)
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	acme, acmeKey, err := CreateOrg(ctx, st, "Acme <b>&</b>", now)
	if err != nil {
		t.Fatal(err)
	}
	other, otherKey, err := CreateOrg(ctx, st, "Other", now)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		key, id, name string
	}{{acmeKey, acme.ID, acme.Name}, {otherKey, other.ID, other.Name}} {
		status, h, body := getRaw(t, srv, "GET", "/v1/organization/me", c.key)
		if status != 200 || body["object"] != "organization" || body["id"] != c.id || body["name"] != c.name || body["created_at"] != float64(now.Unix()) {
			t.Fatalf("me = %d %v", status, body)
		}
		if h.Get("Cache-Control") != "no-store" || !strings.HasPrefix(h.Get("Content-Type"), "application/json") {
			t.Fatalf("headers %v", h)
		}
		k, _ := body["admin_api_key"].(map[string]any)
		red, _ := k["redacted_value"].(string)
		if k["object"] != "organization.admin_api_key" || k["name"] != "Initial admin key" || !strings.HasPrefix(red, "sk-admin-****") ||
			red != redact(c.key) || !strings.HasPrefix(k["id"].(string), prefixAPIKey) {
			t.Fatalf("admin_api_key = %v", k)
		}
		if strings.Contains(strings.Join(mapValues(k), " "), c.key) {
			t.Fatal("me shows the key's value")
		}
	}
}

func TestMeRefusesWithoutAnAdminKeyAndTakesNoParameters(t *testing.T) {
	srv, st := readsServer(t)
	if _, _, err := CreateOrg(context.Background(), st, "Acme", time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"", "sk-admin-nope", "sk-proj-nope"} {
		if status, _, body := getRaw(t, srv, "GET", "/v1/organization/me", key); status != 401 || body["error"] == nil {
			t.Fatalf("key %q: %d %v", key, status, body)
		}
	}
	_, key, err := CreateOrg(context.Background(), st, "Beta", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if status, _, body := getRaw(t, srv, "GET", "/v1/organization/me?x=1", key); status != 400 || body["error"].(map[string]any)["code"] != "unknown_parameter" {
		t.Fatalf("unknown parameter: %d %v", status, body)
	}
	// Read-only: any other method falls through to the Admin API's JSON 404.
	for _, m := range []string{"POST", "DELETE", "PUT"} {
		if status, _, body := getRaw(t, srv, m, "/v1/organization/me", key); status != 404 || body["error"].(map[string]any)["code"] != "unknown_url" {
			t.Fatalf("%s /me: %d %v", m, status, body)
		}
	}
}

func mapValues(m map[string]any) []string {
	var out []string
	for _, v := range m {
		if s, ok := v.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// TestMeRecordsLastUse: a console sign-in (GET /me) is a use of the admin
// key and shows in its last_used_at like any other Admin API call.
func TestMeRecordsLastUse(t *testing.T) {
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, filepath.Join(t.TempDir(), "ekm.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	now := time.Unix(1_800_000_000, 0)
	clk := func() time.Time { return now }
	lu := auth.NewLastUsed(st, time.Minute, clk, nil)
	mux := http.NewServeMux()
	reads := NewReads(Deps{Store: st, Now: clk, LastUsed: lu})
	for _, p := range ReadPatterns {
		mux.Handle(p, reads)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	org, key, err := CreateOrg(ctx, st, "acme", now)
	if err != nil {
		t.Fatal(err)
	}
	if status, _, body := getRaw(t, srv, "GET", "/v1/organization/me", key); status != 200 {
		t.Fatalf("me: %d %v", status, body)
	}
	if err := lu.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	keys, err := st.ListAPIKeys(ctx, org.ID, store.KindAdmin, store.Page{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || !keys[0].LastUsedAt.Equal(now.Truncate(time.Minute)) {
		t.Fatalf("admin key after GET /me: %+v, want last used at %v", keys, now.Truncate(time.Minute))
	}
}
