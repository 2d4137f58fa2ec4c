package lifecycle

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/ekm-dev/ekm/app"
	"github.com/ekm-dev/ekm/client"
	"github.com/ekm-dev/ekm/ekmtest"
	"github.com/ekm-dev/ekm/internal/azonboard"
)

// Error codes of the data plane (docs/API.md).
const (
	codeRevoked   = "customer_key_unavailable"
	codeTemporary = "customer_key_temporarily_unavailable"
)

// aad is the crypto API context every test ciphertext is bound to.
var aad = []byte("lifecycle-test")

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

// server runs an app built by ekmtest (NoRun), so that a test can stop it
// and start a fresh process state on the same data directory: nothing
// cached, no Entra token.
type server struct {
	t    *testing.T
	env  *ekmtest.Env
	stop func()
}

func startServer(t *testing.T, o ekmtest.Options) *server {
	t.Helper()
	o.NoRun = true
	s := &server{t: t, env: ekmtest.Start(t, o)}
	s.run(s.env.App)
	t.Cleanup(func() { s.stop() })
	return s
}

func (s *server) run(a *app.App) {
	s.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan string, 1), make(chan error, 1)
	go func() { done <- a.Run(ctx, func(addr string) { ready <- addr }) }()
	select {
	case addr := <-ready:
		s.env.URL = "http://" + addr
	case err := <-done:
		cancel()
		s.t.Fatal(err)
	}
	stopped := false
	s.stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
			a.Close()
		}
	}
}

// restart stops the server and starts a new one with the same config.
func (s *server) restart() {
	s.t.Helper()
	s.stop()
	a, err := app.Open(context.Background(), s.env.App.Config)
	if err != nil {
		s.t.Fatal(err)
	}
	s.env.App = a
	s.run(a)
}

// project is one EKM project with data stored under it.
type project struct {
	id, apiKey string
	fileID     string
	content    []byte
	ct         *client.Ciphertext
	plain      []byte
}

// fixture is one customer key (its own tenant and vault) registered with
// ekm, with projects on it.
type fixture struct {
	t        *testing.T
	env      *ekmtest.Env
	cust     *azonboard.Customer
	ob       azonboard.Onboarding
	ekID     string
	projects []*project
}

func azureKey(name string, c *azonboard.Customer, ob azonboard.Onboarding) openai.AdminOrganizationExternalKeyNewParams {
	return openai.AdminOrganizationExternalKeyNewParams{OfAzure: &openai.AdminOrganizationExternalKeyNewParamsBodyAzure{
		Name: name, TenantID: c.TenantID, VaultURI: ob.VaultURI, KeyName: ob.KeyName}}
}

// newFixture onboards a customer tenant, registers its key with the SDK and
// creates n projects on it, each with a file and a crypto API ciphertext.
func newFixture(t *testing.T, env *ekmtest.Env, suffix string, n int) *fixture {
	t.Helper()
	ctx := context.Background()
	cust, ob := env.Onboard(t, suffix)
	admin := env.Admin()
	var ek *openai.ExternalKey
	err := retryUnavailable(func() (err error) {
		ek, err = admin.Admin.Organization.ExternalKeys.New(ctx, azureKey(suffix, cust, ob))
		return err
	})
	if err != nil {
		t.Fatalf("register %s: %v", suffix, err)
	}
	f := &fixture{t: t, env: env, cust: cust, ob: ob, ekID: ek.ID}
	for i := range n {
		f.projects = append(f.projects, f.newProject(fmt.Sprintf("%s-%d", suffix, i)))
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

// write stores a file and a ciphertext under the project's current key
// version (replacing the project's reference data).
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
	body   string // the error answer as received
}

func (r result) String() string {
	if r.ok {
		return "ok"
	}
	return fmt.Sprintf("%d %s: %s", r.status, r.code, r.body)
}

// read downloads the project's file (OpenAI SDK) and decrypts its
// ciphertext (ekm client). Wrong bytes fail the test at once: a read either
// returns exactly what was written or an error.
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
		f.t.Fatalf("download of %s returned other bytes (%d, want %d)", p.id, len(got), len(p.content))
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

// mustRead asserts that a read returns the same bytes.
// retryUnavailable retries a call answered 503 (retryable by contract: the
// KMS was slow or unreachable), as a real client would. On a loaded 2-core
// machine running -race, the tests' short KMS timeout is sometimes hit by
// calls that have nothing to do with the fault under test.
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

// mustReadEventually reads until the read succeeds (once a fault is gone,
// a transient timeout on a loaded machine is not a failure).
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

func (f *fixture) mustRead(p *project, when string) {
	f.t.Helper()
	if r := f.read(p); !r.ok {
		f.t.Fatalf("%s: read of %s refused: %v", when, p.id, r)
	}
}

// keyView is the external key object's health and usage.
type keyView struct {
	Status       string `json:"status"`
	StatusDetail *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"status_detail"`
	KEKVersions       map[string]int `json:"kek_versions"`
	CurrentKEKVersion string         `json:"current_kek_version"`
	APIProjectIDs     []string       `json:"api_project_ids"`
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

// event is one audit log entry: its type and its payload (the object under
// the key named after the type).
type event struct {
	ID      string
	Type    string
	Project string
	Payload map[string]any
}

// data returns the payload's fields, under "data" when the event has one.
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
		if err := json.Unmarshal([]byte(it.Current().RawJSON()), &raw); err != nil {
			t.Fatal(err)
		}
		e := event{ID: fmt.Sprint(raw["id"]), Type: fmt.Sprint(raw["type"])}
		e.Payload, _ = raw[e.Type].(map[string]any)
		if p, ok := raw["project"].(map[string]any); ok {
			e.Project = fmt.Sprint(p["id"])
		}
		out = append(out, e)
	}
	if err := it.Err(); err != nil {
		t.Fatalf("audit log: %v", err)
	}
	return out
}

// keyEvents are the events of one type about one external key.
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

// vaultHost is the host name of the fixture's vault.
func (f *fixture) vaultHost() string {
	return strings.TrimSuffix(strings.TrimPrefix(f.ob.VaultURI, "https://"), "/")
}
