package apispec_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/ekm-dev/ekm/adminapi"
	"github.com/ekm-dev/ekm/app"
	"github.com/ekm-dev/ekm/client"
	"github.com/ekm-dev/ekm/internal/apispec"
)

// startServer runs a whole server with local keys only.
func startServer(t *testing.T) (url, adminKey string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	a, err := app.Open(ctx, app.Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(), ProbeInterval: time.Hour})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	_, key, err := adminapi.CreateOrg(ctx, a.Store, "Spec Co", time.Now())
	if err != nil {
		cancel()
		a.Close()
		t.Fatal(err)
	}
	ready, done := make(chan string, 1), make(chan error, 1)
	go func() { done <- a.Run(ctx, func(addr string) { ready <- addr }) }()
	select {
	case addr := <-ready:
		url = "http://" + addr
	case err := <-done:
		cancel()
		a.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); <-done; a.Close() })
	return url, key
}

// Every operation of the description, driven through the official OpenAI
// SDK, the Go client and raw HTTP, with the checking transport: the server
// answers as documented, and refuses what the description forbids.
func TestServerMatchesDescription(t *testing.T) {
	url, adminKey := startServer(t)
	ctx := context.Background()
	hc := apispec.Client(t, nil)
	sdk := func(key string) openai.Client {
		return openai.NewClient(option.WithBaseURL(url+"/v1/"), option.WithAdminAPIKey(key), option.WithAPIKey(key),
			option.WithMaxRetries(0), option.WithHTTPClient(hc))
	}
	admin := sdk(adminKey)
	raw := func(method, path, key, body string) (int, string) {
		t.Helper()
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, _ := http.NewRequest(method, url+path, rd)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	wantStatus := func(what string, err error, status int) {
		t.Helper()
		var e *openai.Error
		if !errors.As(err, &e) || e.StatusCode != status {
			t.Fatalf("%s: want %d, got %v", what, status, err)
		}
	}

	// External keys: local (raw: the SDK has no local variant), list, get,
	// validate, types.
	st, body := raw("POST", "/v1/organization/external_keys", adminKey, `{"type":"local","name":"dev"}`)
	if st != 200 {
		t.Fatalf("register: %d %s", st, body)
	}
	ekID := jsonString(t, body, "id")
	_, err := admin.Admin.Organization.ExternalKeys.Get(ctx, ekID)
	must("get key", err)
	_, err = admin.Admin.Organization.ExternalKeys.List(ctx, openai.AdminOrganizationExternalKeyListParams{Limit: openai.Int(5), Order: "desc", Purpose: "ekm"})
	must("list keys", err)
	v, err := admin.Admin.Organization.ExternalKeys.Validate(ctx, ekID)
	must("validate", err)
	if v.Status != "valid" {
		t.Fatalf("validate: %s", v.RawJSON())
	}
	if st, body := raw("GET", "/v1/organization/external_key_types", adminKey, ""); st != 200 {
		t.Fatalf("types: %d %s", st, body)
	}
	_, err = admin.Admin.Organization.ExternalKeys.New(ctx, openai.AdminOrganizationExternalKeyNewParams{OfAzure: &openai.AdminOrganizationExternalKeyNewParamsBodyAzure{
		Name: "x", TenantID: "t", VaultURI: "https://v.vault.azure.net/", KeyName: "k"}})
	wantStatus("azure key without the azure driver", err, 400)

	// Organization settings and me.
	if st, body := raw("GET", "/v1/organization/settings", adminKey, ""); st != 200 {
		t.Fatalf("settings: %d %s", st, body)
	}
	if st, body := raw("POST", "/v1/organization/settings", adminKey, `{"default_external_key_id":"`+ekID+`","ekm_required":true}`); st != 200 {
		t.Fatalf("settings update: %d %s", st, body)
	}
	if st, body := raw("POST", "/v1/organization/settings", adminKey, `{}`); st != 400 {
		t.Fatalf("empty settings update: %d %s", st, body)
	}
	if st, body := raw("GET", "/v1/organization/me", adminKey, ""); st != 200 {
		t.Fatalf("me: %d %s", st, body)
	}

	// Projects.
	p, err := admin.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "billing", ExternalKeyID: openai.String(ekID)})
	must("create project", err)
	p2, err := admin.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "on the default key"})
	must("create project on the default key", err)
	_, err = admin.Admin.Organization.Projects.Get(ctx, p.ID)
	must("get project", err)
	_, err = admin.Admin.Organization.Projects.Update(ctx, p.ID, openai.AdminOrganizationProjectUpdateParams{Name: openai.String("billing 2")})
	must("rename project", err)
	if st, body := raw("POST", "/v1/organization/projects/"+p.ID+"/rotate_key", adminKey, ""); st != 200 || !strings.Contains(body, `"current_key_version":2`) {
		t.Fatalf("rotate project key: %d %s", st, body)
	}
	if st, body := raw("POST", "/v1/organization/projects/"+p.ID+"/rotate_key", adminKey, `{"x":1}`); st != 400 {
		t.Fatalf("rotate project key with a field: %d %s", st, body)
	}
	_, err = admin.Admin.Organization.Projects.List(ctx, openai.AdminOrganizationProjectListParams{IncludeArchived: openai.Bool(true), Limit: openai.Int(10)})
	must("list projects", err)
	_, err = admin.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "eu", Geography: openai.String("EU")})
	wantStatus("geography", err, 400)

	// Service accounts and project API keys.
	sa, err := admin.Admin.Organization.Projects.ServiceAccounts.New(ctx, p.ID, openai.AdminOrganizationProjectServiceAccountNewParams{Name: "backend"})
	must("create service account", err)
	_, err = admin.Admin.Organization.Projects.ServiceAccounts.Get(ctx, p.ID, sa.ID)
	must("get service account", err)
	_, err = admin.Admin.Organization.Projects.ServiceAccounts.Update(ctx, p.ID, sa.ID, openai.AdminOrganizationProjectServiceAccountUpdateParams{Name: openai.String("backend 2"), Role: "member"})
	must("rename service account", err)
	_, err = admin.Admin.Organization.Projects.ServiceAccounts.List(ctx, p.ID, openai.AdminOrganizationProjectServiceAccountListParams{Limit: openai.Int(2)})
	must("list service accounts", err)
	keys, err := admin.Admin.Organization.Projects.APIKeys.List(ctx, p.ID, openai.AdminOrganizationProjectAPIKeyListParams{})
	must("list project keys", err)
	if len(keys.Data) != 1 {
		t.Fatalf("project keys: %s", keys.RawJSON())
	}
	_, err = admin.Admin.Organization.Projects.APIKeys.Get(ctx, p.ID, keys.Data[0].ID)
	must("get project key", err)
	if st, body := raw("POST", "/v1/organization/projects/"+p.ID+"/api_keys/"+keys.Data[0].ID, adminKey, `{"scopes":[]}`); st != 200 {
		t.Fatalf("update project key: %d %s", st, body)
	}
	if st, body := raw("GET", "/v1/organization/projects/"+p.ID+"/api_keys?owner_project_access=active&limit=1", adminKey, ""); st != 200 {
		t.Fatalf("list active keys: %d %s", st, body)
	}

	// Files through the SDK, and the Go client.
	proj := sdk(sa.APIKey.Value)
	content := bytes.Repeat([]byte("hello "), 50000)
	f, err := proj.Files.New(ctx, openai.FileNewParams{File: openai.File(bytes.NewReader(content), "hello.txt", "text/plain"), Purpose: openai.FilePurposeAssistants})
	must("upload", err)
	_, err = proj.Files.Get(ctx, f.ID)
	must("get file", err)
	_, err = proj.Files.List(ctx, openai.FileListParams{Limit: openai.Int(5), Order: "asc", Purpose: openai.String("assistants")})
	must("list files", err)
	resp, err := proj.Files.Content(ctx, f.ID)
	must("download", err)
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(got, content) {
		t.Fatal("downloaded content differs")
	}
	c, err := client.New(url, sa.APIKey.Value, client.WithHTTPClient(hc))
	must("client", err)
	up, err := c.UploadFile(ctx, "streamed.bin", bytes.NewReader(content), "user_data")
	must("streamed upload", err)
	_, err = c.ListFiles(ctx, client.ListOptions{Limit: 10})
	must("client list", err)
	must("client delete", c.DeleteFile(ctx, up.ID))
	_, err = proj.Files.Delete(ctx, f.ID)
	must("delete file", err)
	_, err = proj.Files.Get(ctx, f.ID)
	wantStatus("deleted file", err, 404)

	// Crypto API: every endpoint, single and batch, with item errors.
	ct, err := c.Encrypt(ctx, []byte("secret"), []byte("ctx"))
	must("encrypt", err)
	_, err = c.Decrypt(ctx, ct.Ciphertext, []byte("ctx"))
	must("decrypt", err)
	_, err = c.Rewrap(ctx, ct.Ciphertext, []byte("ctx"))
	must("rewrap", err)
	res, err := c.DecryptBatch(ctx, []client.Item{{Data: ct.Ciphertext, Context: []byte("ctx")}, {Data: ct.Ciphertext, Context: []byte("other")}})
	must("decrypt batch", err)
	if res[0].Err != nil || res[1].Err == nil {
		t.Fatalf("batch results: %+v", res)
	}
	_, err = c.EncryptBatch(ctx, []client.Item{{Data: []byte("a")}, {Data: []byte("b")}})
	must("encrypt batch", err)
	_, err = c.RewrapBatch(ctx, []client.Item{{Data: ct.Ciphertext, Context: []byte("ctx")}})
	must("rewrap batch", err)
	_, err = c.DataKey(ctx, []byte("ctx"))
	must("data key", err)
	_, err = c.WrappedDataKey(ctx, nil)
	must("wrapped data key", err)
	if st, body := raw("POST", "/v1/crypto/encrypt", sa.APIKey.Value, `{"batch_input":[{"plaintext":"!!"},{"ciphertext":"AAAA"},{}]}`); st != 200 {
		t.Fatalf("batch with bad items: %d %s", st, body)
	}
	if st, body := raw("POST", "/v1/crypto/decrypt", sa.APIKey.Value, `{"ciphertext":"AAAA"}`); st != 400 {
		t.Fatalf("bad ciphertext: %d %s", st, body)
	}
	if st, body := raw("POST", "/v1/crypto/encrypt", sa.APIKey.Value, `{"plaintext":"aGk=","extra":1}`); st != 400 {
		t.Fatalf("unknown field: %d %s", st, body)
	}

	// Refusals in the error shape: bad keys, unknown routes and methods.
	if st, body := raw("GET", "/v1/organization/projects", "sk-admin-nope", ""); st != 401 {
		t.Fatalf("bad key: %d %s", st, body)
	}
	if st, body := raw("GET", "/v1/files", adminKey, ""); st != 401 {
		t.Fatalf("admin key on the data plane: %d %s", st, body)
	}
	if st, body := raw("GET", "/v1/organization/nothing", adminKey, ""); st != 404 {
		t.Fatalf("unknown route: %d %s", st, body)
	}
	if st, body := raw("PUT", "/v1/files", sa.APIKey.Value, ""); st != 405 {
		t.Fatalf("other method: %d %s", st, body)
	}
	if st, body := raw("GET", "/v1/organization/projects?limit=1000", adminKey, ""); st != 400 {
		t.Fatalf("limit: %d %s", st, body)
	}

	// Audit log with every filter.
	_, err = admin.Admin.Organization.AuditLogs.List(ctx, openai.AdminOrganizationAuditLogListParams{
		EventTypes: []string{"project.created", "kms.call"}, ProjectIDs: []string{p.ID}, Limit: openai.Int(50),
		EffectiveAt: openai.AdminOrganizationAuditLogListParamsEffectiveAt{Gte: openai.Int(0), Lt: openai.Int(time.Now().Add(time.Hour).Unix())}})
	must("filtered audit log", err)
	_, err = admin.Admin.Organization.AuditLogs.List(ctx, openai.AdminOrganizationAuditLogListParams{ActorIDs: []string{"x"}})
	wantStatus("actor_ids", err, 400)

	// Admin keys.
	ak, err := admin.Admin.Organization.AdminAPIKeys.New(ctx, openai.AdminOrganizationAdminAPIKeyNewParams{Name: "ci"})
	must("create admin key", err)
	_, err = admin.Admin.Organization.AdminAPIKeys.Get(ctx, ak.ID)
	must("get admin key", err)
	_, err = admin.Admin.Organization.AdminAPIKeys.List(ctx, openai.AdminOrganizationAdminAPIKeyListParams{Order: "desc"})
	must("list admin keys", err)
	ci := sdk(ak.Value)
	me, err := admin.Admin.Organization.AdminAPIKeys.List(ctx, openai.AdminOrganizationAdminAPIKeyListParams{Limit: openai.Int(1)})
	must("first admin key", err)
	_, err = ci.Admin.Organization.AdminAPIKeys.Delete(ctx, ak.ID)
	wantStatus("deleting the current key", err, 409)
	_, err = admin.Admin.Organization.AdminAPIKeys.Delete(ctx, ak.ID)
	must("delete admin key", err)
	_ = me

	// Tear down: key deleted, service account deleted, projects archived,
	// settings cleared, external key removed.
	_, err = admin.Admin.Organization.Projects.APIKeys.Delete(ctx, p.ID, keys.Data[0].ID)
	must("delete project key", err)
	_, err = admin.Admin.Organization.Projects.ServiceAccounts.Delete(ctx, p.ID, sa.ID)
	must("delete service account", err)
	_, err = admin.Admin.Organization.ExternalKeys.Delete(ctx, ekID)
	wantStatus("deleting a key in use", err, 409)
	for _, id := range []string{p.ID, p2.ID} {
		_, err = admin.Admin.Organization.Projects.Archive(ctx, id)
		must("archive", err)
	}
	if st, body := raw("POST", "/v1/organization/settings", adminKey, `{"default_external_key_id":null}`); st != 409 {
		t.Fatalf("clearing the default while required: %d %s", st, body)
	}
	if st, body := raw("POST", "/v1/organization/settings", adminKey, `{"ekm_required":false,"default_external_key_id":null}`); st != 200 {
		t.Fatalf("settings cleared: %d %s", st, body)
	}
	it := admin.Admin.Organization.AuditLogs.ListAutoPaging(ctx, openai.AdminOrganizationAuditLogListParams{Limit: openai.Int(7)})
	n := 0
	for it.Next() {
		n++
	}
	must("audit log", it.Err())
	if n < 20 {
		t.Fatalf("only %d audit events", n)
	}
	if st, body := raw("GET", "/healthz", "", ""); st != 200 {
		t.Fatalf("healthz: %d %s", st, body)
	}
	if st, body := raw("GET", "/readyz", "", ""); st != 200 {
		t.Fatalf("readyz: %d %s", st, body)
	}
}

func jsonString(t *testing.T, body, field string) string {
	t.Helper()
	i := strings.Index(body, `"`+field+`":"`)
	if i < 0 {
		t.Fatalf("%s has no %s", body, field)
	}
	rest := body[i+len(field)+4:]
	return rest[:strings.IndexByte(rest, '"')]
}
