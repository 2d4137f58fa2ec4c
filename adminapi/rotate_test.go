package adminapi

import (
	"context"
	"net/http"
	"testing"

	"github.com/openai/openai-go/v3"
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
