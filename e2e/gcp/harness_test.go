package gcp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/ekm-dev/ekm/client"
	"github.com/ekm-dev/ekm/ekmtest"
	"github.com/ekm-dev/ekm/emulator/azurecloud"
	"github.com/ekm-dev/ekm/emulator/gcpcloud"
	"github.com/ekm-dev/ekm/kms/gcp/gcptest"
)

// One GCP emulator (and one Azure emulator, which every ekmtest server
// has) per package run.
var (
	emu   *gcpcloud.Emulator
	azemu *azurecloud.Emulator
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var err error
	if emu, err = ekmtest.NewGCPEmulator(); err != nil {
		panic(err)
	}
	defer emu.Close()
	if azemu, err = azurecloud.New(azurecloud.Options{Addr: "127.0.0.1:0"}); err != nil {
		panic(err)
	}
	if err := azemu.Start(); err != nil {
		panic(err)
	}
	defer azemu.Close()
	return m.Run()
}

// start runs an ekm server with the gcp type enabled with identity.
func start(t *testing.T, identity string, o ekmtest.Options) *ekmtest.Env {
	t.Helper()
	o.GCP, o.GCPEmulator, o.Emulator = identity, emu, azemu
	return ekmtest.Start(t, o)
}

// Error codes of the data plane (docs/API.md).
const (
	codeRevoked = "customer_key_unavailable"
)

// aad is the crypto API context every test ciphertext is bound to.
var aad = []byte("gcp-e2e")

const poll = 50 * time.Millisecond

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
	return time.Since(start)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// gcpKey is the SDK's registration of a customer's key; set overrides
// fields (by their API names).
func gcpKey(name string, c *gcptest.Customer, set map[string]string) openai.AdminOrganizationExternalKeyNewParams {
	p := c.Params()
	for k, v := range set {
		p[k] = v
	}
	return openai.AdminOrganizationExternalKeyNewParams{OfGcp: &openai.AdminOrganizationExternalKeyNewParamsBodyGcp{
		Name: name, Audience: p["audience"], KmsProjectID: p["kms_project_id"], KmsKeyLocation: p["kms_key_location"],
		KmsKeyRingName: p["kms_key_ring_name"], KmsKeyName: p["kms_key_name"], WorkloadIdentityPoolID: p["workload_identity_pool_id"],
		WorkloadIdentityProviderID: p["workload_identity_provider_id"], WorkloadIdentityProjectNumber: p["workload_identity_project_number"]}}
}

// apiErr returns the OpenAI-shaped error of an SDK call.
func apiErr(t *testing.T, err error) *openai.Error {
	t.Helper()
	var e *openai.Error
	if !errors.As(err, &e) {
		t.Fatalf("want an API error, got %v", err)
	}
	return e
}

// project is one EKM project with a file and a crypto API ciphertext.
type project struct {
	id, apiKey string
	fileID     string
	content    []byte
	ct         *client.Ciphertext
	plain      []byte
}

// fixture is one customer key registered with ekm, with a project on it.
type fixture struct {
	t    *testing.T
	env  *ekmtest.Env
	cust *gcptest.Customer
	ekID string
	p    *project
}

func newFixture(t *testing.T, env *ekmtest.Env, name string) *fixture {
	t.Helper()
	ctx := context.Background()
	cust := env.GCPCustomer(t, nil)
	admin := env.Admin()
	ek, err := admin.Admin.Organization.ExternalKeys.New(ctx, gcpKey(name, cust, nil))
	if err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	f := &fixture{t: t, env: env, cust: cust, ekID: ek.ID}
	f.p = f.newProject(name)
	return f
}

func (f *fixture) newProject(name string) *project {
	f.t.Helper()
	ctx := context.Background()
	admin := f.env.Admin()
	p, err := admin.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: name, ExternalKeyID: openai.String(f.ekID)})
	if err != nil {
		f.t.Fatalf("project %s: %v", name, err)
	}
	sa, err := admin.Admin.Organization.Projects.ServiceAccounts.New(ctx, p.ID, openai.AdminOrganizationProjectServiceAccountNewParams{Name: "backend"})
	if err != nil {
		f.t.Fatal(err)
	}
	pr := &project{id: p.ID, apiKey: sa.APIKey.Value}
	pr.content = bytes.Repeat([]byte("plaintext of "+p.ID+"; "), 200)
	data := f.env.Client(pr.apiKey)
	file, err := data.Files.New(ctx, openai.FileNewParams{
		File: openai.File(bytes.NewReader(pr.content), "report.txt", "text/plain"), Purpose: openai.FilePurposeAssistants})
	if err != nil {
		f.t.Fatalf("upload: %v", err)
	}
	pr.fileID = file.ID
	pr.plain = []byte("secret " + p.ID)
	if pr.ct, err = f.crypto(pr).Encrypt(ctx, pr.plain, aad); err != nil {
		f.t.Fatalf("encrypt: %v", err)
	}
	return pr
}

func (f *fixture) crypto(p *project) *client.Client {
	f.t.Helper()
	c, err := client.New(f.env.URL, p.apiKey, client.WithHTTPClient(f.env.HTTPClient()))
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

// result of a read: ok, or the refusal the server answered.
type result struct {
	ok     bool
	status int
	code   string
	body   string
}

func (r result) String() string {
	if r.ok {
		return "ok"
	}
	return fmt.Sprintf("%d %s: %s", r.status, r.code, r.body)
}

// read downloads the project's file (OpenAI SDK) and decrypts its
// ciphertext (ekm client). Other bytes fail the test at once.
func (f *fixture) read(p *project) result {
	f.t.Helper()
	ctx := context.Background()
	data := f.env.Client(p.apiKey)
	resp, err := data.Files.Content(ctx, p.fileID)
	if err != nil {
		var oe *openai.Error
		if !errors.As(err, &oe) {
			f.t.Fatalf("download: %v", err)
		}
		return result{status: oe.StatusCode, code: oe.Code, body: oe.RawJSON()}
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		f.t.Fatalf("download body: %v", err)
	}
	if !bytes.Equal(got, p.content) {
		f.t.Fatalf("download of %s returned other bytes", p.id)
	}
	pt, err := f.crypto(p).Decrypt(ctx, p.ct.Ciphertext, aad)
	if err != nil {
		var ae *client.APIError
		if !errors.As(err, &ae) {
			f.t.Fatalf("decrypt: %v", err)
		}
		return result{status: ae.Status, code: ae.Code, body: ae.Message}
	}
	if !bytes.Equal(pt, p.plain) {
		f.t.Fatalf("decrypt of %s returned other bytes", p.id)
	}
	return result{ok: true}
}

func (f *fixture) mustRead(when string) {
	f.t.Helper()
	if r := f.read(f.p); !r.ok {
		f.t.Fatalf("%s: read refused: %v", when, r)
	}
}

// keyView is the external key object's health.
type keyView struct {
	Status       string `json:"status"`
	StatusDetail *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"status_detail"`
}

func (f *fixture) key() keyView {
	f.t.Helper()
	admin := f.env.Admin()
	ek, err := admin.Admin.Organization.ExternalKeys.Get(context.Background(), f.ekID)
	if err != nil {
		f.t.Fatalf("get external key: %v", err)
	}
	var v keyView
	must(f.t, json.Unmarshal([]byte(ek.RawJSON()), &v))
	return v
}

func (f *fixture) waitStatus(status string, timeout time.Duration) keyView {
	f.t.Helper()
	var v keyView
	waitFor(f.t, timeout, "external key "+f.ekID+" to be "+status, func() bool {
		v = f.key()
		return v.Status == status
	})
	return v
}

// event is one audit log entry.
type event struct {
	Type    string
	Payload map[string]any
}

func (e event) field(name string) string {
	if d, ok := e.Payload["data"].(map[string]any); ok {
		if v, ok := d[name]; ok {
			return fmt.Sprint(v)
		}
	}
	if v, ok := e.Payload[name]; ok {
		return fmt.Sprint(v)
	}
	return ""
}

// auditEvents lists the org's audit events of these types, newest first.
func auditEvents(t *testing.T, env *ekmtest.Env, types ...string) []event {
	t.Helper()
	admin := env.Admin()
	it := admin.Admin.Organization.AuditLogs.ListAutoPaging(context.Background(),
		openai.AdminOrganizationAuditLogListParams{EventTypes: types, Limit: openai.Int(100)})
	var out []event
	for it.Next() {
		var raw map[string]any
		must(t, json.Unmarshal([]byte(it.Current().RawJSON()), &raw))
		e := event{Type: fmt.Sprint(raw["type"])}
		e.Payload, _ = raw[e.Type].(map[string]any)
		out = append(out, e)
	}
	must(t, it.Err())
	return out
}

func keyEvents(t *testing.T, env *ekmtest.Env, typ, ekID string) []event {
	t.Helper()
	var out []event
	for _, e := range auditEvents(t, env, typ) {
		if e.field("external_key_id") == ekID || e.field("id") == ekID {
			out = append(out, e)
		}
	}
	return out
}

var _ = http.StatusOK
