package adminapi

import (
	"bytes"
	"context"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/openai/openai-go/v3"

	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/lifecycle"
	"github.com/ekm-dev/ekm/store"
)

func (e *env) registerFlaky(key string) string {
	e.t.Helper()
	r := e.do(key, "POST", "/v1/organization/external_keys", `{"type":"flaky","name":"flaky"}`)
	if r.Status != http.StatusOK {
		e.t.Fatalf("register flaky key: %d %s", r.Status, r.Raw)
	}
	return r.Body["id"].(string)
}

// failAll makes every flaky operation fail with err (nil: work).
func (e *env) failAll(err error) {
	if err == nil {
		e.flaky.setHook(nil)
		return
	}
	e.flaky.setHook(func(string) error { return err })
}

func TestRegistrationLiveCheckFails(t *testing.T) {
	e := newEnv(t)
	org, key, _ := e.org("acme")
	before := e.snapshot(org.ID, "")
	cases := []struct {
		err        error
		status     int
		code, step string
		retry      string
	}{
		{errRevoked, 400, "permission_denied", "grant_key_permissions", ""},
		{&kms.Error{Class: kms.Invalid, Code: "wrong_key_type", Step: "create_key", Message: "the key must be an RSA key"}, 400, "wrong_key_type", "create_key", ""},
		{errOutage, 503, "kms_unavailable", "", ""},
		{&kms.Error{Class: kms.Operator, Code: "ekm_credential_invalid", Message: "ekm's credential was refused"}, 500, "ekm_credential_invalid", "", "false"},
	}
	for _, tc := range cases {
		e.failAll(tc.err)
		r := e.do(key, "POST", "/v1/organization/external_keys", `{"type":"flaky","name":"k"}`)
		if r.Status != tc.status || r.errField("code") != tc.code || r.errField("step") != tc.step || r.Header.Get("X-Should-Retry") != tc.retry {
			t.Errorf("%v: %d %v %s", tc.err, r.Status, r.Header, r.Raw)
		}
		if tc.status == 503 && r.Header.Get("Retry-After") == "" {
			t.Errorf("503 without Retry-After")
		}
	}
	e.failAll(nil)
	after := e.snapshot(org.ID, "")
	// Only the kms.call events of the attempts were recorded: no key, no
	// external_key.registered.
	if after.keys != before.keys || slices.Contains(e.auditTypes(org.ID), "external_key.registered") {
		t.Fatalf("failed registration stored something: %+v %v", after, e.auditTypes(org.ID))
	}
	for _, typ := range e.auditTypes(org.ID) {
		if typ != "kms.call" && typ != "api_key.created" {
			t.Fatalf("unexpected event %s", typ)
		}
	}
}

func TestProjectCreationKMSFailure(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	org, key, c := e.org("acme")
	fk := e.registerFlaky(key)
	before := e.snapshot(org.ID, "")

	e.failAll(errRevoked)
	_, err := c.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "p", ExternalKeyID: openai.String(fk)})
	if ae := apiErr(t, err, http.StatusBadRequest); ae.Code != "permission_denied" || ae.Param != "external_key_id" {
		t.Fatalf("create on revoked key: %s", ae.RawJSON())
	}
	after := e.snapshot(org.ID, "")
	if after.projects != before.projects || slices.Contains(e.auditTypes(org.ID), "project.created") {
		t.Fatalf("failed creation stored a project: %+v", after)
	}

	// The revocation closed this replica's gate: even with the KMS back,
	// the key is refused until a validation proves it works again.
	e.failAll(nil)
	_, err = c.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "p", ExternalKeyID: openai.String(fk)})
	apiErr(t, err, http.StatusBadRequest)
	v, err := c.Admin.Organization.ExternalKeys.Validate(ctx, fk)
	if err != nil || v.Status != "valid" {
		t.Fatalf("validate: %v %+v", err, v)
	}
	if _, err := c.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "p", ExternalKeyID: openai.String(fk)}); err != nil {
		t.Fatalf("create after validation: %v", err)
	}
}

func TestValidateRecordsHealth(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	org, key, c := e.org("acme")
	fk := e.registerFlaky(key)
	cases := []struct {
		err       error
		status    string
		retryable bool
	}{
		{errRevoked, store.StatusUnavailable, false},
		{errOutage, store.StatusDegraded, true},
		{nil, store.StatusValid, false},
	}
	for _, tc := range cases {
		e.failAll(tc.err)
		r := e.do(key, "POST", "/v1/organization/external_keys/"+fk+"/validate", "")
		if r.Status != 200 {
			t.Fatalf("validate: %d %s", r.Status, r.Raw)
		}
		k, err := c.Admin.Organization.ExternalKeys.Get(ctx, fk)
		if err != nil {
			t.Fatal(err)
		}
		if got := extra(k.RawJSON(), "status"); got != tc.status {
			t.Fatalf("after %v: status %v: %s", tc.err, got, k.RawJSON())
		}
		// The answer names the key's status in the key's own vocabulary.
		if r.Body["key_status"] != tc.status {
			t.Fatalf("after %v: validate answered key_status %v, the key shows %s: %s", tc.err, r.Body["key_status"], tc.status, r.Raw)
		}
		if tc.err == nil {
			if r.Body["status"] != "valid" || r.Body["error"] != nil || extra(k.RawJSON(), "status_detail") != nil {
				t.Fatalf("valid: %s / %s", r.Raw, k.RawJSON())
			}
			continue
		}
		ke := tc.err.(*kms.Error)
		er, _ := r.Body["error"].(map[string]any)
		if r.Body["status"] != "invalid" || er["code"] != ke.Code || er["message"] != ke.Message || er["retryable"] != tc.retryable {
			t.Fatalf("%v: %s", tc.err, r.Raw)
		}
		if ke.Step != "" && er["step"] != ke.Step {
			t.Fatalf("step: %s", r.Raw)
		}
		sd, _ := extra(k.RawJSON(), "status_detail").(map[string]any)
		if sd["code"] != ke.Code {
			t.Fatalf("status_detail: %s", k.RawJSON())
		}
	}
	evs, err := e.st.ListAudit(ctx, org.ID, store.AuditFilter{Types: []string{"external_key.validated"}})
	if err != nil || len(evs) != 3 {
		t.Fatalf("validated events: %v %d", err, len(evs))
	}
}

// TestRekeyKMSFailureLeavesProjectUnchanged: a KMS failure part-way through
// rewrapping stores nothing.
func TestRekeyKMSFailureLeavesProjectUnchanged(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	org, key, c := e.org("acme")
	k1 := e.registerLocal(c, "old")
	p, err := c.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "p", ExternalKeyID: openai.String(k1.ID)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.RotateProjectKey(ctx, "", org.ID, p.ID, lifecycle.RotateOptions{}); err != nil {
		t.Fatal(err)
	}
	fk := e.registerFlaky(key)
	recsBefore, _ := e.st.ListProjectKeys(ctx, org.ID, p.ID)
	projBefore, _ := e.st.GetProject(ctx, org.ID, p.ID)

	// Validation (one wrap) and version 1 succeed; version 2 fails.
	var wraps atomic.Int64
	e.flaky.setHook(func(op string) error {
		if op == "wrap" && wraps.Add(1) == 3 {
			return errOutage
		}
		return nil
	})
	_, err = c.Admin.Organization.Projects.Update(ctx, p.ID, openai.AdminOrganizationProjectUpdateParams{ExternalKeyID: openai.String(fk), Name: openai.String("renamed")})
	if ae := apiErr(t, err, http.StatusServiceUnavailable); ae.Code != "kms_unavailable" || ae.Param != "external_key_id" {
		t.Fatalf("re-key failure: %s", ae.RawJSON())
	}
	if wraps.Load() != 3 {
		t.Fatalf("expected the failure on the 3rd wrap, saw %d wraps", wraps.Load())
	}
	assertUnchanged(t, e, org.ID, projBefore, recsBefore)

	// The current key failing (revoked) also leaves everything as it was,
	// and the error does not blame the requested key.
	e.flaky.setHook(nil)
	p2, err := c.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "p2", ExternalKeyID: openai.String(fk)})
	if err != nil {
		t.Fatal(err)
	}
	recs2, _ := e.st.ListProjectKeys(ctx, org.ID, p2.ID)
	proj2, _ := e.st.GetProject(ctx, org.ID, p2.ID)
	e.kr.EvictProject(p2.ID)
	e.flaky.setHook(func(op string) error {
		if op == "unwrap" {
			return errRevoked
		}
		return nil
	})
	_, err = c.Admin.Organization.Projects.Update(ctx, p2.ID, openai.AdminOrganizationProjectUpdateParams{ExternalKeyID: openai.String(k1.ID)})
	if ae := apiErr(t, err, http.StatusBadRequest); ae.Code != "permission_denied" || ae.Param != "" {
		t.Fatalf("re-key from revoked key: %s", ae.RawJSON())
	}
	assertUnchanged(t, e, org.ID, proj2, recs2)
	if slices.Contains(e.auditTypes(org.ID), "project.updated") {
		t.Fatal("failed re-key was audited as an update")
	}
}

func assertUnchanged(t *testing.T, e *env, org string, p store.Project, recs []store.ProjectKey) {
	t.Helper()
	got, err := e.st.GetProject(context.Background(), org, p.ID)
	if err != nil || got.ExternalKeyID != p.ExternalKeyID || got.Name != p.Name || got.CurrentKeyVersion != p.CurrentKeyVersion {
		t.Fatalf("project changed: %v %+v → %+v", err, p, got)
	}
	now, err := e.st.ListProjectKeys(context.Background(), org, p.ID)
	if err != nil || len(now) != len(recs) {
		t.Fatalf("project keys changed: %v %d → %d", err, len(recs), len(now))
	}
	for i := range recs {
		if now[i].ExternalKeyID != recs[i].ExternalKeyID || now[i].KEKVersion != recs[i].KEKVersion || !bytes.Equal(now[i].Wrapped, recs[i].Wrapped) {
			t.Fatalf("version %d rewrapped", recs[i].Version)
		}
	}
}

// TestRekeyConcurrentChange: if the project's key changes while its
// versions are being rewrapped, the re-key fails with 409 and stores nothing.
func TestRekeyConcurrentChange(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	org, key, c := e.org("acme")
	k1 := e.registerLocal(c, "old")
	p, err := c.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "p", ExternalKeyID: openai.String(k1.ID)})
	if err != nil {
		t.Fatal(err)
	}
	fk := e.registerFlaky(key)
	var wraps atomic.Int64
	e.flaky.setHook(func(op string) error {
		// After validation, while rewrapping: a rotation lands.
		if op == "wrap" && wraps.Add(1) == 2 {
			if _, err := e.svc.RotateProjectKey(ctx, "", org.ID, p.ID, lifecycle.RotateOptions{}); err != nil {
				t.Errorf("rotate: %v", err)
			}
		}
		return nil
	})
	_, err = c.Admin.Organization.Projects.Update(ctx, p.ID, openai.AdminOrganizationProjectUpdateParams{ExternalKeyID: openai.String(fk)})
	if ae := apiErr(t, err, http.StatusConflict); ae.Code != "concurrent_update" {
		t.Fatalf("concurrent re-key: %s", ae.RawJSON())
	}
	got, _ := e.st.GetProject(ctx, org.ID, p.ID)
	recs, _ := e.st.ListProjectKeys(ctx, org.ID, p.ID)
	if got.ExternalKeyID != k1.ID || got.CurrentKeyVersion != 2 || len(recs) != 2 || recs[0].ExternalKeyID != k1.ID || recs[1].ExternalKeyID != k1.ID {
		t.Fatalf("project after refused re-key: %+v %+v", got, recs)
	}
	// Retrying succeeds and moves both versions.
	e.flaky.setHook(nil)
	if _, err := c.Admin.Organization.Projects.Update(ctx, p.ID, openai.AdminOrganizationProjectUpdateParams{ExternalKeyID: openai.String(fk)}); err != nil {
		t.Fatal(err)
	}
	recs, _ = e.st.ListProjectKeys(ctx, org.ID, p.ID)
	if len(recs) != 2 || recs[0].ExternalKeyID != fk || recs[1].ExternalKeyID != fk {
		t.Fatalf("after retry: %+v", recs)
	}
}
