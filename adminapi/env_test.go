package adminapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/ekm-dev/ekm/auth"
	"github.com/ekm-dev/ekm/blob"
	"github.com/ekm-dev/ekm/dataplane"
	"github.com/ekm-dev/ekm/keyring"
	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/kms/aws"
	"github.com/ekm-dev/ekm/kms/azure"
	"github.com/ekm-dev/ekm/kms/gcp"
	"github.com/ekm-dev/ekm/kms/local"
	"github.com/ekm-dev/ekm/kms/oci"
	"github.com/ekm-dev/ekm/lifecycle"
	"github.com/ekm-dev/ekm/secret"
	"github.com/ekm-dev/ekm/store"
	"github.com/ekm-dev/ekm/store/sqlstore"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// flakyType is the external key type of flakyDriver.
const flakyType = "flaky"

// flakyDriver serves local keys whose operations fail on demand: hook runs
// before every operation ("wrap", "unwrap", "describe") and its error, if
// any, is returned instead. It is test wiring registered in the test's
// kms.Registry, not a provider.
type flakyDriver struct {
	inner *local.Driver
	mu    sync.Mutex
	hook  func(op string) error
}

func (d *flakyDriver) Type() string { return flakyType }
func (d *flakyDriver) Spec() kms.Spec {
	s := d.inner.Spec()
	s.Type = flakyType
	return s
}
func (d *flakyDriver) Check(org string, p kms.Params) (kms.Params, error) {
	return d.inner.Check(org, p)
}
func (d *flakyDriver) Open(org string, p kms.Params) (kms.Provider, error) {
	inner, err := d.inner.Open(org, p)
	return &flakyProvider{d: d, inner: inner}, err
}

func (d *flakyDriver) setHook(h func(op string) error) {
	d.mu.Lock()
	d.hook = h
	d.mu.Unlock()
}

func (d *flakyDriver) before(op string) error {
	d.mu.Lock()
	h := d.hook
	d.mu.Unlock()
	if h == nil {
		return nil
	}
	return h(op)
}

type flakyProvider struct {
	d     *flakyDriver
	inner kms.Provider
}

func (p *flakyProvider) Wrap(ctx context.Context, pt []byte, aad kms.AAD) (kms.Wrapped, error) {
	if err := p.d.before("wrap"); err != nil {
		return kms.Wrapped{}, err
	}
	return p.inner.Wrap(ctx, pt, aad)
}
func (p *flakyProvider) Unwrap(ctx context.Context, w kms.Wrapped, aad kms.AAD) ([]byte, error) {
	if err := p.d.before("unwrap"); err != nil {
		return nil, err
	}
	return p.inner.Unwrap(ctx, w, aad)
}
func (p *flakyProvider) Describe(ctx context.Context) (kms.KeyInfo, error) {
	if err := p.d.before("describe"); err != nil {
		return kms.KeyInfo{}, err
	}
	return p.inner.Describe(ctx)
}

var (
	errRevoked = &kms.Error{Class: kms.Revoked, Code: "permission_denied", Step: "grant_key_permissions", Message: "ekm may no longer use the key"}
	errOutage  = &kms.Error{Class: kms.Outage, Code: "kms_unavailable", Message: "the KMS answered 503"}
)

type env struct {
	t     *testing.T
	st    store.Store
	svc   *lifecycle.Service
	kr    *keyring.Keyring
	srv   *httptest.Server
	clk   *clock
	flaky *flakyDriver
	// lastUsed records key use for both APIs; tests flush it.
	lastUsed *auth.LastUsed
}

const testMaxBody = 8 << 10

// newEnv builds the Admin API (and the data plane) over a fresh store;
// opts change its Deps (e.g. a KMS rate limit).
func newEnv(t *testing.T, opts ...func(*Deps)) *env {
	t.Helper()
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, filepath.Join(t.TempDir(), "ekm.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	flaky := &flakyDriver{inner: local.NewDriver(secret.New())}
	// Described like a server's: every built-in type, enabled or not.
	reg := kms.NewRegistry(local.NewDriver(secret.New()), flaky).Describe(azure.Spec(), aws.Spec(), gcp.Spec(), oci.Spec())
	svc := lifecycle.New(lifecycle.Config{Store: st, Registry: reg, Now: clk.Now, ValidateTimeout: 10 * time.Second,
		Default: kms.Ref{Type: "local", Params: kms.Params{"local_key_id": "default"}}})
	kr := svc.Keyring()
	lu := auth.NewLastUsed(st, time.Minute, clk.Now, nil)
	mux := http.NewServeMux()
	deps := Deps{Store: st, Service: svc, Now: clk.Now, MaxBodyBytes: testMaxBody, LastUsed: lu}
	for _, o := range opts {
		o(&deps)
	}
	mux.Handle("/v1/organization/", New(deps))
	// The data plane over the same store and keyring, to check what admin
	// changes do to project keys (e.g. a deleted key stops authenticating).
	blobs, err := blob.NewDir(filepath.Join(t.TempDir(), "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	mux.Handle("/v1/", dataplane.New(dataplane.Deps{Store: st, Keyring: kr, Blobs: blobs, Now: clk.Now, LastUsed: lu}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &env{t: t, st: st, svc: svc, kr: kr, srv: srv, clk: clk, flaky: flaky, lastUsed: lu}
}

// org creates an org and returns it, its admin key and an SDK client.
func (e *env) org(name string) (store.Org, string, openai.Client) {
	e.t.Helper()
	o, key, err := CreateOrg(context.Background(), e.st, name, e.clk.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	return o, key, e.client(key)
}

func (e *env) client(key string) openai.Client {
	return openai.NewClient(option.WithBaseURL(e.srv.URL+"/v1/"), option.WithAdminAPIKey(key),
		option.WithMaxRetries(0), option.WithHTTPClient(e.srv.Client()))
}

// resp is a raw HTTP answer.
type resp struct {
	Status int
	Header http.Header
	Body   map[string]any
	Raw    string
}

// errField returns error.<name> of an error answer ("" when absent).
func (r resp) errField(name string) string {
	eo, _ := r.Body["error"].(map[string]any)
	s, _ := eo[name].(string)
	return s
}

// do sends a raw request with an admin key ("" = none).
func (e *env) do(key, method, path, body string) resp {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	out := resp{Status: res.StatusCode, Header: res.Header, Raw: string(raw)}
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &out.Body); err != nil {
			e.t.Fatalf("%s %s: answer is not a JSON object: %q", method, path, raw)
		}
	}
	return out
}

// registerLocal registers a local key with raw JSON (the type is ekm's own,
// not in the SDK's union) and decodes the answer with the SDK's type.
func (e *env) registerLocal(c openai.Client, name string) openai.ExternalKey {
	e.t.Helper()
	var ek openai.ExternalKey
	err := c.Post(context.Background(), "organization/external_keys", map[string]any{"type": "local", "name": name}, &ek)
	if err != nil {
		e.t.Fatalf("register local key: %v", err)
	}
	return ek
}

// apiErr asserts err is an API error with status and returns it.
func apiErr(t *testing.T, err error, status int) *openai.Error {
	t.Helper()
	var ae *openai.Error
	if !errors.As(err, &ae) {
		t.Fatalf("want API error %d, got %v", status, err)
	}
	if ae.StatusCode != status {
		t.Fatalf("want status %d, got %d: %s", status, ae.StatusCode, ae.RawJSON())
	}
	return ae
}

// auditTypes lists an org's event types, oldest first.
func (e *env) auditTypes(orgID string) []string {
	e.t.Helper()
	evs, err := e.st.ListAudit(context.Background(), orgID, store.AuditFilter{Limit: 1000})
	if err != nil {
		e.t.Fatal(err)
	}
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[len(evs)-1-i] = ev.Type
	}
	return out
}
