package e2ekit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/ekm-dev/ekm/client"
	"github.com/ekm-dev/ekm/ekmtest"
)

// Suite is what one suite's fixtures have in common.
type Suite struct {
	// AAD is the crypto API context every test ciphertext is bound to.
	AAD []byte
	// Retry makes registration and project creation retry a 503
	// (RetryUnavailable); without it a 503 fails the test.
	Retry bool
}

func (s Suite) call(f func() error) error {
	if s.Retry {
		return RetryUnavailable(f)
	}
	return f()
}

// Project is one EKM project with data stored under it: a file and a
// crypto API ciphertext, and what each must read back as.
type Project struct {
	ID, APIKey string
	FileID     string
	Content    []byte
	CT         *client.Ciphertext
	Plain      []byte
}

// ExternalKey is one customer key registered with ekm through the OpenAI
// SDK, with projects on it. A suite's fixture embeds it beside the
// customer's side of its cloud.
type ExternalKey struct {
	T     *testing.T
	Env   *ekmtest.Env
	Suite Suite
	// ID is the external key's id.
	ID       string
	Projects []*Project
}

// Register registers a customer's key (params) with the OpenAI SDK and
// creates n projects on it named <name>-<i>, each with a file and a crypto
// API ciphertext.
func (s Suite) Register(t *testing.T, env *ekmtest.Env, name string, params openai.AdminOrganizationExternalKeyNewParams, n int) *ExternalKey {
	t.Helper()
	var ek *openai.ExternalKey
	admin := env.Admin()
	err := s.call(func() (err error) {
		ek, err = admin.Admin.Organization.ExternalKeys.New(context.Background(), params)
		return err
	})
	if err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	k := &ExternalKey{T: t, Env: env, Suite: s, ID: ek.ID}
	for i := range n {
		k.Projects = append(k.Projects, k.NewProject(fmt.Sprintf("%s-%d", name, i)))
	}
	return k
}

// NewProject creates a project on the key with a service account, and
// stores its data (Write, tag "v1").
func (k *ExternalKey) NewProject(name string) *Project {
	k.T.Helper()
	admin := k.Env.Admin()
	var p *openai.Project
	err := k.Suite.call(func() (err error) {
		p, err = admin.Admin.Organization.Projects.New(context.Background(), openai.AdminOrganizationProjectNewParams{Name: name, ExternalKeyID: openai.String(k.ID)})
		return err
	})
	if err != nil {
		k.T.Fatalf("project %s: %v", name, err)
	}
	pr := &Project{ID: p.ID, APIKey: ServiceAccountKey(k.T, k.Env, p.ID)}
	k.Write(pr, "v1")
	return pr
}

// ServiceAccountKey creates a service account "backend" in a project and
// returns its API key.
func ServiceAccountKey(t testing.TB, env *ekmtest.Env, projectID string) string {
	t.Helper()
	admin := env.Admin()
	sa, err := admin.Admin.Organization.Projects.ServiceAccounts.New(context.Background(), projectID, openai.AdminOrganizationProjectServiceAccountNewParams{Name: "backend"})
	if err != nil {
		t.Fatal(err)
	}
	return sa.APIKey.Value
}

// Write stores a file and a ciphertext under the project's current key
// version (replacing the project's reference data).
func (k *ExternalKey) Write(p *Project, tag string) {
	k.T.Helper()
	ctx := context.Background()
	p.Content = bytes.Repeat([]byte("plaintext of "+p.ID+" "+tag+"; "), 200)
	data := k.Env.Client(p.APIKey)
	file, err := data.Files.New(ctx, openai.FileNewParams{
		File: openai.File(bytes.NewReader(p.Content), "report-"+tag+".txt", "text/plain"), Purpose: openai.FilePurposeAssistants})
	if err != nil {
		k.T.Fatalf("upload: %v", err)
	}
	p.FileID = file.ID
	p.Plain = []byte("secret " + p.ID + " " + tag)
	if p.CT, err = k.Crypto(p).Encrypt(ctx, p.Plain, k.Suite.AAD); err != nil {
		k.T.Fatalf("encrypt: %v", err)
	}
}

// Crypto is ekm's Go client (crypto API) for the project.
func (k *ExternalKey) Crypto(p *Project) *client.Client {
	k.T.Helper()
	return Crypto(k.T, k.Env, p.APIKey)
}

// Crypto is ekm's Go client of env's server for an API key, its traffic
// checked against docs/openapi.yaml.
func Crypto(t testing.TB, env *ekmtest.Env, apiKey string) *client.Client {
	t.Helper()
	c, err := client.New(env.URL, apiKey, client.WithHTTPClient(env.HTTPClient()))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Result of a read: ok, or the refusal the server answered.
type Result struct {
	OK     bool
	Status int
	Code   string
	Body   string // the error answer as received
}

func (r Result) String() string {
	if r.OK {
		return "ok"
	}
	return fmt.Sprintf("%d %s: %s", r.Status, r.Code, r.Body)
}

// Read downloads the project's file (OpenAI SDK) and decrypts its
// ciphertext (ekm client). Wrong bytes fail the test at once: a read either
// returns exactly what was written or an error.
func (k *ExternalKey) Read(p *Project) Result {
	k.T.Helper()
	ctx := context.Background()
	data := k.Env.Client(p.APIKey)
	resp, err := data.Files.Content(ctx, p.FileID)
	if err != nil {
		var oe *openai.Error
		if !errors.As(err, &oe) {
			k.T.Fatalf("download: %v", err)
		}
		return Result{Status: oe.StatusCode, Code: oe.Code, Body: oe.RawJSON()}
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		k.T.Fatalf("download body: %v", err)
	}
	if !bytes.Equal(got, p.Content) {
		k.T.Fatalf("download of %s returned other bytes (%d, want %d)", p.ID, len(got), len(p.Content))
	}
	pt, err := k.Crypto(p).Decrypt(ctx, p.CT.Ciphertext, k.Suite.AAD)
	if err != nil {
		var ae *client.APIError
		if !errors.As(err, &ae) {
			k.T.Fatalf("decrypt: %v", err)
		}
		return Result{Status: ae.Status, Code: ae.Code, Body: ae.Message}
	}
	if !bytes.Equal(pt, p.Plain) {
		k.T.Fatalf("decrypt of %s returned other bytes", p.ID)
	}
	return Result{OK: true}
}

// MustRead asserts that a read returns the same bytes.
func (k *ExternalKey) MustRead(p *Project, when string) {
	k.T.Helper()
	if r := k.Read(p); !r.OK {
		k.T.Fatalf("%s: read of %s refused: %v", when, p.ID, r)
	}
}

// MustReadEventually reads until a read succeeds (once a fault is gone, a
// transient timeout on a loaded machine is not a failure), never accepting
// a revocation.
func (k *ExternalKey) MustReadEventually(p *Project, when string) {
	k.T.Helper()
	var last Result
	WaitFor(k.T, 15*time.Second, when+": read of "+p.ID, func() bool {
		last = k.Read(p)
		if !last.OK && last.Code == CodeRevoked {
			k.T.Fatalf("%s: read of %s refused as revoked: %v", when, p.ID, last)
		}
		return last.OK
	})
}

// KeyView is the external key object's health and usage.
type KeyView struct {
	Status       string `json:"status"`
	StatusDetail *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"status_detail"`
	KEKVersions       map[string]int `json:"kek_versions"`
	CurrentKEKVersion string         `json:"current_kek_version"`
	Region            string         `json:"region"`
	APIProjectIDs     []string       `json:"api_project_ids"`
}

// KeyObject reads an external key object through the SDK.
func KeyObject(t testing.TB, env *ekmtest.Env, id string) KeyView {
	t.Helper()
	admin := env.Admin()
	ek, err := admin.Admin.Organization.ExternalKeys.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("get external key: %v", err)
	}
	var v KeyView
	if err := json.Unmarshal([]byte(ek.RawJSON()), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// View is the key's object.
func (k *ExternalKey) View() KeyView { return KeyObject(k.T, k.Env, k.ID) }

// WaitStatus waits until the key's object shows status.
func (k *ExternalKey) WaitStatus(status string, timeout time.Duration) KeyView {
	k.T.Helper()
	var v KeyView
	WaitFor(k.T, timeout, "external key "+k.ID+" to be "+status, func() bool {
		v = k.View()
		return v.Status == status
	})
	return v
}

// WaitStatusNeverUnavailable waits for status and fails if the key is ever
// seen unavailable on the way: an outage is not a revocation.
func (k *ExternalKey) WaitStatusNeverUnavailable(status string, timeout time.Duration) {
	k.T.Helper()
	WaitFor(k.T, timeout, "external key "+k.ID+" to be "+status, func() bool {
		v := k.View()
		if v.Status == "unavailable" {
			k.T.Fatalf("an outage marked the key unavailable: %+v", v.StatusDetail)
		}
		return v.Status == status
	})
}

// NeverRevoked asserts that nothing recorded a revocation of the key.
func (k *ExternalKey) NeverRevoked() {
	k.T.Helper()
	if u := k.Env.App.Keyring.Unavailable(k.ID); u != nil {
		k.T.Fatalf("keyring gate closed by an outage: %v", u)
	}
	if evs := KeyEvents(k.T, k.Env, "external_key.unavailable", k.ID); len(evs) != 0 {
		k.T.Fatalf("external_key.unavailable recorded for an outage: %+v", evs)
	}
}

// Event is one audit log entry: its type and its payload (the object under
// the key named after the type).
type Event struct {
	ID      string
	Type    string
	Project string
	Payload map[string]any
}

// Field returns a payload field, under "data" when the event has one.
func (e Event) Field(name string) string {
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

// AuditEvents lists the org's audit events of these types, newest first.
func AuditEvents(t testing.TB, env *ekmtest.Env, types ...string) []Event {
	t.Helper()
	admin := env.Admin()
	it := admin.Admin.Organization.AuditLogs.ListAutoPaging(context.Background(),
		openai.AdminOrganizationAuditLogListParams{EventTypes: types, Limit: openai.Int(100)})
	var out []Event
	for it.Next() {
		var raw map[string]any
		if err := json.Unmarshal([]byte(it.Current().RawJSON()), &raw); err != nil {
			t.Fatal(err)
		}
		e := Event{ID: fmt.Sprint(raw["id"]), Type: fmt.Sprint(raw["type"])}
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

// KeyEvents are the audit events of one type about one external key.
func KeyEvents(t testing.TB, env *ekmtest.Env, typ, ekID string) []Event {
	t.Helper()
	var out []Event
	for _, e := range AuditEvents(t, env, typ) {
		if e.Field("external_key_id") == ekID || e.Field("id") == ekID {
			out = append(out, e)
		}
	}
	return out
}

// CountExternalKeys is how many external keys the org has (up to 100).
func CountExternalKeys(t testing.TB, env *ekmtest.Env) int {
	t.Helper()
	admin := env.Admin()
	page, err := admin.Admin.Organization.ExternalKeys.List(context.Background(), openai.AdminOrganizationExternalKeyListParams{Limit: openai.Int(100)})
	if err != nil {
		t.Fatal(err)
	}
	return len(page.Data)
}
