package oci

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
	"github.com/ekm-dev/ekm/emulator/ocicloud"
)

// emu is the package's one OCI emulator: each test works in tenancies of
// its own, with a server of its own.
var emu *ocicloud.Emulator

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	e, err := ocicloud.New(ocicloud.Options{})
	if err != nil {
		panic(err)
	}
	if err := e.Start(); err != nil {
		panic(err)
	}
	defer e.Close()
	emu = e
	return m.Run()
}

// start starts a server with the oci key type against the package's
// emulator.
func start(t *testing.T, o ekmtest.Options) *ekmtest.Env {
	t.Helper()
	o.OCI, o.OCIEmulator = true, emu
	return ekmtest.Start(t, o)
}

func check(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Error codes of the data plane (docs/API.md).
const (
	codeRevoked   = "customer_key_unavailable"
	codeTemporary = "customer_key_temporarily_unavailable"
)

// aad is the crypto API context every test ciphertext is bound to.
var aad = []byte("oci-e2e")

// poll is how often tests look at the system while waiting for a state.
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

func ociKey(name string, c *ekmtest.OCICustomer, keyOCID string) openai.AdminOrganizationExternalKeyNewParams {
	if keyOCID == "" {
		keyOCID = c.Result.KeyOCID
	}
	return openai.AdminOrganizationExternalKeyNewParams{OfOci: &openai.AdminOrganizationExternalKeyNewParamsBodyOci{
		Name: name, KeyOcid: keyOCID, VaultOcid: c.Result.VaultOCID, Region: ekmtest.OCIRegion}}
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

// retryUnavailable retries a call answered 503 (retryable by contract), as
// a real client would: on a loaded 2-core machine running -race the short
// KMS timeout is sometimes hit by calls unrelated to the test's fault.
func retryUnavailable(call func() error) error {
	var err error
	for range 5 {
		err = call()
		var e *openai.Error
		if !errors.As(err, &e) || e.StatusCode != http.StatusServiceUnavailable {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
	return err
}

// project is one EKM project with data stored under it.
type project struct {
	id, apiKey string
	fileID     string
	content    []byte
	ct         *client.Ciphertext
	plain      []byte
}

// fixture is one customer account's key registered with ekm, with projects.
type fixture struct {
	t        *testing.T
	env      *ekmtest.Env
	cust     *ekmtest.OCICustomer
	ekID     string
	projects []*project
}

// register registers the customer's key (keyOCID, or its onboarded key) with the
// OpenAI SDK and creates n projects on it, each with a file and a crypto API
// ciphertext.
func register(t *testing.T, env *ekmtest.Env, cust *ekmtest.OCICustomer, name, keyOCID string, n int) *fixture {
	t.Helper()
	var ek *openai.ExternalKey
	admin := env.Admin()
	err := retryUnavailable(func() (err error) {
		ek, err = admin.Admin.Organization.ExternalKeys.New(context.Background(), ociKey(name, cust, keyOCID))
		return err
	})
	if err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	f := &fixture{t: t, env: env, cust: cust, ekID: ek.ID}
	for i := range n {
		f.projects = append(f.projects, f.newProject(fmt.Sprintf("%s-%d", name, i)))
	}
	return f
}

func (f *fixture) newProject(name string) *project {
	f.t.Helper()
	ctx := context.Background()
	admin := f.env.Admin()
	var p *openai.Project
	err := retryUnavailable(func() (err error) {
		p, err = admin.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: name, ExternalKeyID: openai.String(f.ekID)})
		return err
	})
	if err != nil {
		f.t.Fatalf("project %s: %v", name, err)
	}
	sa, err := admin.Admin.Organization.Projects.ServiceAccounts.New(ctx, p.ID, openai.AdminOrganizationProjectServiceAccountNewParams{Name: "backend"})
	if err != nil {
		f.t.Fatal(err)
	}
	pr := &project{id: p.ID, apiKey: sa.APIKey.Value}
	f.write(pr, "v1")
	return pr
}

// write stores a file and a ciphertext under the project's current key.
func (f *fixture) write(p *project, tag string) {
	f.t.Helper()
	ctx := context.Background()
	p.content = bytes.Repeat([]byte("plaintext of "+p.id+" "+tag+"; "), 200)
	data := f.env.Client(p.apiKey)
	file, err := data.Files.New(ctx, openai.FileNewParams{
		File: openai.File(bytes.NewReader(p.content), "report-"+tag+".txt", "text/plain"), Purpose: openai.FilePurposeAssistants})
	if err != nil {
		f.t.Fatalf("upload: %v", err)
	}
	p.fileID = file.ID
	p.plain = []byte("secret " + p.id + " " + tag)
	if p.ct, err = f.crypto(p).Encrypt(ctx, p.plain, aad); err != nil {
		f.t.Fatalf("encrypt: %v", err)
	}
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
// ciphertext (ekm client). Wrong bytes fail the test at once.
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

func (f *fixture) mustRead(p *project, when string) {
	f.t.Helper()
	if r := f.read(p); !r.ok {
		f.t.Fatalf("%s: read of %s refused: %v", when, p.id, r)
	}
}

// mustReadEventually reads until a read succeeds (a transient timeout on a
// loaded machine is not a failure), never accepting a revocation.
func (f *fixture) mustReadEventually(p *project, when string) {
	f.t.Helper()
	var last result
	waitFor(f.t, 15*time.Second, when+": read of "+p.id, func() bool {
		last = f.read(p)
		if !last.ok && last.code == codeRevoked {
			f.t.Fatalf("%s: read of %s refused as revoked: %v", when, p.id, last)
		}
		return last.ok
	})
}

// keyView is the external key object's health.
type keyView struct {
	Status       string `json:"status"`
	StatusDetail *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"status_detail"`
	CurrentKEKVersion string   `json:"current_kek_version"`
	Region            string   `json:"region"`
	APIProjectIDs     []string `json:"api_project_ids"`
}

func keyObject(t *testing.T, env *ekmtest.Env, id string) keyView {
	t.Helper()
	admin := env.Admin()
	ek, err := admin.Admin.Organization.ExternalKeys.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("get external key: %v", err)
	}
	var v keyView
	if err := json.Unmarshal([]byte(ek.RawJSON()), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func (f *fixture) key() keyView { return keyObject(f.t, f.env, f.ekID) }

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

// keyEvents are the audit events of one type about one external key.
func keyEvents(t *testing.T, env *ekmtest.Env, typ, ekID string) []event {
	t.Helper()
	admin := env.Admin()
	it := admin.Admin.Organization.AuditLogs.ListAutoPaging(context.Background(),
		openai.AdminOrganizationAuditLogListParams{EventTypes: []string{typ}, Limit: openai.Int(100)})
	var out []event
	for it.Next() {
		var raw map[string]any
		if err := json.Unmarshal([]byte(it.Current().RawJSON()), &raw); err != nil {
			t.Fatal(err)
		}
		e := event{Type: fmt.Sprint(raw["type"])}
		e.Payload, _ = raw[e.Type].(map[string]any)
		if e.field("external_key_id") == ekID || e.field("id") == ekID {
			out = append(out, e)
		}
	}
	if err := it.Err(); err != nil {
		t.Fatalf("audit log: %v", err)
	}
	return out
}
