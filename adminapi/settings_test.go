package adminapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"

	"github.com/openai/openai-go/v3"

	"github.com/ekm-dev/ekm/lifecycle"
	"github.com/ekm-dev/ekm/store"
)

// Organization-wide EKM through the API: a default key for new projects,
// ekm_required enforced, existing projects moved under the default key
// (archived ones too) with their data readable throughout, every change
// audited, and the default key protected.
func TestOrgSettings(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	org, admin, c := e.org("acme")
	settings := func() map[string]any {
		t.Helper()
		r := e.do(admin, "GET", "/v1/organization/settings", "")
		if r.Status != http.StatusOK {
			t.Fatalf("GET settings: %d %s", r.Status, r.Raw)
		}
		return r.Body
	}
	post := func(body string, status int, code, param string) map[string]any {
		t.Helper()
		r := e.do(admin, "POST", "/v1/organization/settings", body)
		if r.Status != status || (code != "" && (r.errField("code") != code || r.errField("param") != param)) {
			t.Fatalf("POST %s: %d %s, want %d %s %s", body, r.Status, r.Raw, status, code, param)
		}
		return r.Body
	}
	s := settings()
	if s["object"] != "organization.settings" || s["organization_id"] != org.ID || s["default_external_key_id"] != nil || s["ekm_required"] != false {
		t.Fatalf("defaults: %v", s)
	}
	if m := s["ekm_migration"].(map[string]any); m["status"] != "not_required" {
		t.Fatalf("migration: %v", m)
	}

	// Data on the operator's key before EKM is turned on: one active
	// project with a ciphertext, one archived.
	before, err := c.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "before"})
	if err != nil {
		t.Fatal(err)
	}
	sa, err := c.Admin.Organization.Projects.ServiceAccounts.New(ctx, before.ID, openai.AdminOrganizationProjectServiceAccountNewParams{Name: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	enc := e.do(sa.APIKey.Value, "POST", "/v1/crypto/encrypt", `{"plaintext":"aGVsbG8="}`)
	if enc.Status != http.StatusOK {
		t.Fatalf("encrypt: %s", enc.Raw)
	}
	old, err := c.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "old"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Admin.Organization.Projects.Archive(ctx, old.ID); err != nil {
		t.Fatal(err)
	}

	post(`{}`, 400, "missing_required_parameter", "")
	post(`{"ekm_required":"yes"}`, 400, "invalid_type", "ekm_required")
	post(`{"ekm_required":true}`, 400, "default_key_required", "default_external_key_id")
	post(`{"default_external_key_id":"extkey_nope"}`, 404, "not_found", "default_external_key_id")
	post(`{"default_external_key_id":"../x"}`, 404, "not_found", "default_external_key_id")
	_, _, otherClient := e.org("other")
	foreign := e.registerLocal(otherClient, "theirs")
	post(`{"default_external_key_id":"`+foreign.ID+`"}`, 404, "not_found", "default_external_key_id")

	k := e.registerLocal(c, "org key")
	s = post(`{"default_external_key_id":"`+k.ID+`"}`, 200, "", "")
	if s["default_external_key_id"] != k.ID || s["ekm_required"] != false {
		t.Fatalf("after setting the default: %v", s)
	}
	// New projects without a key land on the default key.
	p, err := c.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "new"})
	if err != nil || p.ExternalKeyID != k.ID {
		t.Fatalf("new project: %v %s", err, p.RawJSON())
	}

	s = post(`{"ekm_required":true}`, 200, "", "")
	m := s["ekm_migration"].(map[string]any)
	if m["status"] != "in_progress" || m["projects_on_operator_key"] != float64(2) || m["projects_total"] != float64(3) {
		t.Fatalf("migration after turning EKM on: %v", m)
	}
	// The API refuses what would leave a project outside a customer key.
	post(`{"default_external_key_id":null}`, 409, "ekm_required", "")
	if r := e.do(admin, "DELETE", "/v1/organization/external_keys/"+k.ID, ""); r.Status != http.StatusConflict || r.errField("code") != "external_key_in_use" {
		t.Fatalf("delete default key: %d %s", r.Status, r.Raw)
	}

	moved, err := e.svc.MigrateOrg(ctx, org.ID, 0, nil)
	if err != nil || moved != 2 {
		t.Fatalf("migrate: %d %v", moved, err)
	}
	if m := settings()["ekm_migration"].(map[string]any); m["status"] != "complete" || m["projects_on_operator_key"] != float64(0) {
		t.Fatalf("migration after the run: %v", m)
	}
	for _, id := range []string{before.ID, old.ID} {
		pr, err := e.st.GetProject(ctx, org.ID, id)
		if err != nil || pr.ExternalKeyID != k.ID {
			t.Fatalf("project %s after migration: %+v %v", id, pr, err)
		}
		recs, _ := e.st.ListProjectKeys(ctx, org.ID, id)
		for _, rec := range recs {
			if rec.ExternalKeyID != k.ID {
				t.Fatalf("version %d of %s still wrapped by %q", rec.Version, id, rec.ExternalKeyID)
			}
		}
	}
	if pr, _ := e.st.GetProject(ctx, org.ID, old.ID); pr.ArchivedAt == nil {
		t.Fatal("migration unarchived a project")
	}
	var ct struct{ Ciphertext string }
	_ = json.Unmarshal([]byte(enc.Raw), &ct)
	dec := e.do(sa.APIKey.Value, "POST", "/v1/crypto/decrypt", `{"ciphertext":"`+ct.Ciphertext+`"}`)
	if dec.Status != http.StatusOK || dec.Body["plaintext"] != "aGVsbG8=" {
		t.Fatalf("decrypt after migration: %s", dec.Raw)
	}
	// A second run has nothing left to do.
	if n, err := e.svc.MigrateOrg(ctx, org.ID, 0, nil); err != nil || n != 0 {
		t.Fatalf("second run: %d %v", n, err)
	}

	// Turning the requirement off, then clearing the default.
	post(`{"ekm_required":false}`, 200, "", "")
	s = post(`{"default_external_key_id":null}`, 200, "", "")
	if s["default_external_key_id"] != nil {
		t.Fatalf("cleared: %v", s)
	}
	evs := e.audit(org.ID, "organization.updated")
	if len(evs) != 4 {
		t.Fatalf("%d organization.updated events, want 4", len(evs))
	}
	for _, ev := range evs {
		if ev.Actor == "" || ev.Actor == "operator" {
			t.Fatalf("event actor %q, want the admin key", ev.Actor)
		}
	}
	var first struct {
		ChangesRequested map[string]any `json:"changes_requested"`
		Previous         map[string]any `json:"previous"`
	}
	_ = json.Unmarshal(evs[len(evs)-1].Data, &first)
	if first.ChangesRequested["default_external_key_id"] != k.ID || first.Previous["default_external_key_id"] != nil {
		t.Fatalf("first event: %s", evs[len(evs)-1].Data)
	}
	moves := e.audit(org.ID, "project.updated")
	if len(moves) != 2 {
		t.Fatalf("%d project.updated events for the migration", len(moves))
	}
	if _, err := e.st.GetOrgSettings(ctx, org.ID); err != nil {
		t.Fatal(err)
	}
	_ = store.StatusValid
}

// Re-keying a project to the operator's key is refused where the org
// requires customer keys: the API has no way to ask for it (an empty
// external_key_id is invalid), and the service refuses it too.
func TestEKMRequiredRefusesOperatorKey(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	org, admin, c := e.org("acme")
	k := e.registerLocal(c, "org key")
	if r := e.do(admin, "POST", "/v1/organization/settings", `{"default_external_key_id":"`+k.ID+`","ekm_required":true}`); r.Status != http.StatusOK {
		t.Fatalf("settings: %s", r.Raw)
	}
	p, err := c.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "p"})
	if err != nil || p.ExternalKeyID != k.ID {
		t.Fatalf("project: %v", err)
	}
	if r := e.do(admin, "POST", "/v1/organization/projects/"+p.ID, `{"external_key_id":""}`); r.Status != http.StatusBadRequest {
		t.Fatalf("re-key to an empty id: %d %s", r.Status, r.Raw)
	}
	none := ""
	_, err = e.svc.UpdateProject(ctx, "", org.ID, p.ID, lifecycle.ProjectUpdate{ExternalKeyID: &none})
	var le *lifecycle.Error
	if !errors.As(err, &le) || le.Code != "ekm_required" || le.Param != "external_key_id" {
		t.Fatalf("service re-key to the operator key: %v", err)
	}
}
