package adminapi

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/ekm-dev/ekm/internal/apispec"
)

// POST /projects/{id}/rotate_key (ekm): a new key version for new data,
// audited as the admin key's act; refused on archived projects; every
// Admin API answer is marked not to be cached.
func TestRotateProjectKeyAPI(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	org, admin, c := e.org("acme")
	k := e.registerLocal(c, "k")
	p, err := c.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "p", ExternalKeyID: openai.String(k.ID)})
	if err != nil {
		t.Fatal(err)
	}
	r := e.do(admin, "POST", "/v1/organization/projects/"+p.ID+"/rotate_key", "")
	if r.Status != http.StatusOK || r.Body["current_key_version"] != float64(2) || r.Header.Get("Cache-Control") != "no-store" || r.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("rotate: %d %s %v", r.Status, r.Raw, r.Header)
	}
	recs, _ := e.st.ListProjectKeys(ctx, org.ID, p.ID)
	if len(recs) != 2 || recs[1].ExternalKeyID != k.ID {
		t.Fatalf("key versions %+v", recs)
	}
	evs := e.audit(org.ID, "project.key_rotated")
	if len(evs) != 1 || evs[0].Actor == "" || evs[0].ProjectID != p.ID {
		t.Fatalf("project.key_rotated %+v", evs)
	}
	if r := e.do(admin, "POST", "/v1/organization/projects/"+p.ID+"/rotate_key", `{"x":1}`); r.Status != http.StatusBadRequest {
		t.Fatalf("unknown field: %d", r.Status)
	}
	if r := e.do(admin, "POST", "/v1/organization/projects/proj_nope/rotate_key", ""); r.Status != http.StatusNotFound {
		t.Fatalf("unknown project: %d", r.Status)
	}
	if _, err := c.Admin.Organization.Projects.Archive(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	if r := e.do(admin, "POST", "/v1/organization/projects/"+p.ID+"/rotate_key", ""); r.Status != http.StatusConflict || r.errField("code") != "project_archived" {
		t.Fatalf("archived: %d %s", r.Status, r.Raw)
	}
	if r := e.do(admin, "GET", "/v1/organization/projects", ""); r.Header.Get("Cache-Control") != "no-store" {
		t.Fatal("list answer cacheable")
	}
}

// A second rotation of one project within a minute (finding M4) is 429
// rotation_rate_limited with Retry-After, decided from the stored version
// before any KMS call, with nothing stored; it is allowed once the minute
// has passed. The first rotation after creation is not held back.
func TestRotateProjectKeyRateLimited(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	org, admin, c := e.org("acme")
	fk := e.registerFlaky(admin)
	p, err := c.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "p", ExternalKeyID: openai.String(fk)})
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	e.flaky.setHook(func(string) error { calls.Add(1); return nil })
	path := "/v1/organization/projects/" + p.ID + "/rotate_key"
	if r := e.do(admin, "POST", path, ""); r.Status != http.StatusOK || r.Body["current_key_version"] != float64(2) {
		t.Fatalf("first rotation: %d %s", r.Status, r.Raw)
	}
	if calls.Load() == 0 {
		t.Fatal("the rotation made no KMS call: the hook counts nothing")
	}

	refused := func(retryAfter string) {
		t.Helper()
		before := calls.Load()
		r := e.do(admin, "POST", path, "{}")
		if r.Status != http.StatusTooManyRequests || r.errField("code") != "rotation_rate_limited" || r.errField("type") != "requests" ||
			r.Header.Get("Retry-After") != retryAfter || r.Header.Get("X-Should-Retry") != "false" || r.Header.Get("Cache-Control") != "no-store" {
			t.Fatalf("rotation within the minute: %d %v %s", r.Status, r.Header, r.Raw)
		}
		if msg := r.errField("message"); !strings.Contains(msg, p.ID) || !strings.Contains(msg, "version 2") {
			t.Fatalf("message %q", msg)
		}
		if n := calls.Load() - before; n != 0 {
			t.Fatalf("%d KMS calls for a refused rotation", n)
		}
		recs, _ := e.st.ListProjectKeys(ctx, org.ID, p.ID)
		got, _ := e.st.GetProject(ctx, org.ID, p.ID)
		if len(recs) != 2 || got.CurrentKeyVersion != 2 || len(e.audit(org.ID, "project.key_rotated")) != 1 {
			t.Fatalf("refused rotation stored something: %d versions, current %d", len(recs), got.CurrentKeyVersion)
		}
	}
	refused("60")
	// The refusal is as docs/openapi.yaml describes it (X-Request-Id is
	// the server's middleware's, which this handler-only env lacks).
	req, _ := http.NewRequest("POST", e.srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+admin)
	checked := &http.Client{Transport: apispec.Transport(t, withRequestID{e.srv.Client().Transport})}
	res, err := checked.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("checked rotation: %d", res.StatusCode)
	}
	e.clk.Advance(59*time.Second + 500*time.Millisecond)
	refused("1")
	e.clk.Advance(500 * time.Millisecond)
	if r := e.do(admin, "POST", path, ""); r.Status != http.StatusOK || r.Body["current_key_version"] != float64(3) {
		t.Fatalf("rotation after the minute: %d %s", r.Status, r.Raw)
	}

	// The bound is per project: another project rotates at once.
	p2, err := c.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "p2", ExternalKeyID: openai.String(fk)})
	if err != nil {
		t.Fatal(err)
	}
	if r := e.do(admin, "POST", "/v1/organization/projects/"+p2.ID+"/rotate_key", ""); r.Status != http.StatusOK {
		t.Fatalf("other project: %d %s", r.Status, r.Raw)
	}
}

// withRequestID adds the X-Request-Id the server's middleware would send.
type withRequestID struct{ base http.RoundTripper }

func (w withRequestID) RoundTrip(r *http.Request) (*http.Response, error) {
	res, err := w.base.RoundTrip(r)
	if err == nil && res.Header.Get("X-Request-Id") == "" {
		res.Header.Set("X-Request-Id", "test")
	}
	return res, err
}
