package gcp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/emulator/gcpcloud"
	"github.com/ekm-dev/ekm/internal/gcponboard"
	"github.com/ekm-dev/ekm/issuer"
	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/kms/gcp/gcptest"
)

// The emulator tests drive the provider through the production code path:
// only Config.HTTPClient (the emulator's dial override and CA) differs
// from Google.

const testOrg = "org-gcptest0123456789abcdefgh"

var (
	emu *gcpcloud.Emulator
	// ekm's own issuer (identity way b), trusted by the emulator through a
	// registered JWKS (as if uploaded as jwksJson, or fetched).
	testIssuer *issuer.Issuer
	issuerURL  = "https://issuer.ekm.test"
	issuerFile string
)

func TestMain(m *testing.M) {
	for _, v := range []string{"GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_QUOTA_PROJECT", "GOOGLE_AUTH_TRUST_BOUNDARY_ENABLED",
		"GOOGLE_API_USE_CLIENT_CERTIFICATE", "GOOGLE_CLOUD_UNIVERSE_DOMAIN", "GCE_METADATA_HOST", "GOOGLE_SDK_GO_LOGGING_LEVEL"} {
		os.Unsetenv(v)
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "gcp-issuer-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	issuerFile = filepath.Join(dir, "issuer.json")
	if _, err := issuer.EnsureKeyFile(issuerFile, time.Now()); err != nil {
		panic(err)
	}
	if testIssuer, err = issuer.New(issuer.Config{URL: issuerURL, Subject: "ekm-test", KeyFile: issuerFile}); err != nil {
		panic(err)
	}
	emu, err = gcpcloud.New(gcpcloud.Options{})
	if err != nil {
		panic(err)
	}
	if err := emu.Start(); err != nil {
		panic(err)
	}
	defer emu.Close()
	jwks, _ := testIssuer.JWKS()
	if err := emu.RegisterIssuer(issuerURL, jwks); err != nil {
		panic(err)
	}
	return m.Run()
}

func randID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// way is one of ekm's two identities.
type way string

const (
	wayGoogle way = "google" // the vendor service account's Google-signed ID tokens
	wayIssuer way = "issuer" // ekm's own issuer
)

func identityOf(t testing.TB, w way) Identity {
	t.Helper()
	switch w {
	case wayGoogle:
		v := emu.Vendor()
		id, err := NewGoogleIdentity(GoogleIdentityConfig{CredentialsJSON: v.KeyJSON, HTTPClient: emu.HTTPClient()})
		if err != nil {
			t.Fatal(err)
		}
		return id
	default:
		return testIssuer
	}
}

func newDriver(t testing.TB, w way, mod func(*Config)) *Driver {
	t.Helper()
	cfg := Config{Identity: identityOf(t, w), HTTPClient: emu.HTTPClient(), Timeout: 10 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	d, err := NewDriver(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// onboard creates a customer project and runs the onboarding for the
// driver's identity; mod changes the steps.
func onboard(t testing.TB, d *Driver, mod func(*gcponboard.Config)) *gcptest.Customer {
	t.Helper()
	p, err := emu.CreateProject()
	if err != nil {
		t.Fatal(err)
	}
	id := d.identity.Describe()
	cfg := gcponboard.Config{HTTP: emu.HTTPClient(), Token: p.AdminToken, ProjectID: p.ID, ProjectNumber: p.Number,
		PoolID: "ekm-pool", ProviderID: "ekm-oidc", Issuer: id["issuer"], Subject: id["subject"], Audience: testOrg,
		Location: "us-east1", KeyRing: "ekm", Key: "kek"}
	if mod != nil {
		mod(&cfg)
	}
	c, err := gcptest.Onboard(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func open(t testing.TB, d *Driver, c *gcptest.Customer) *Provider {
	t.Helper()
	ps, err := d.Check(testOrg, c.Params())
	if err != nil {
		t.Fatal(err)
	}
	p, err := d.open(ps)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var testAAD = kms.AAD{OrgID: testOrg, ProjectID: "proj_gcptest", Version: 1}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// kmsErr asserts err is a *kms.Error with code (and step), listed in the
// Spec with the same class.
func kmsErr(t testing.TB, err error, code, step string) *kms.Error {
	t.Helper()
	var e *kms.Error
	if !errors.As(err, &e) {
		t.Fatalf("want *kms.Error %s, got %v", code, err)
	}
	if e.Code != code || e.Step != step {
		t.Fatalf("got code %q step %q (%s), want %q step %q", e.Code, e.Step, e.Message, code, step)
	}
	listed := false
	for _, c := range Spec().Codes {
		if c.Code == e.Code {
			listed = true
			if c.Class != e.Class {
				t.Fatalf("code %s has class %s, Spec says %s", e.Code, e.Class, c.Class)
			}
		}
	}
	if !listed {
		t.Fatalf("code %s is not listed in the Spec", e.Code)
	}
	if e.Message == "" || strings.Contains(e.Message, "ya29.") || strings.Contains(e.Message, "eyJ") {
		t.Fatalf("message missing or leaks a token: %q", e.Message)
	}
	return e
}

// validate runs what registration runs: preflight, wrap, unwrap, describe.
func validate(ctx context.Context, p *Provider) error {
	ks := kms.NewKeys(kms.KeysConfig{Registry: kms.NewRegistry(staticDriver{p})})
	k, err := ks.Open(kms.Ref{ID: "extkey_test", OrgID: testOrg, Type: Type})
	if err != nil {
		return err
	}
	_, err = k.Validate(ctx, kms.AAD{OrgID: testOrg})
	return err
}

// staticDriver serves one provider (for the call layer in tests).
type staticDriver struct{ p *Provider }

func (s staticDriver) Type() string { return Type }
func (s staticDriver) Spec() kms.Spec {
	return Spec()
}
func (s staticDriver) Check(string, kms.Params) (kms.Params, error) { return nil, nil }
func (s staticDriver) Open(string, kms.Params) (kms.Provider, error) {
	return s.p, nil
}

func counter(name string) int { return emu.Counters()[name] }

// fault injects f for the rest of the test.
func fault(t testing.TB, f gcpcloud.Fault) {
	t.Helper()
	id, err := emu.InjectFault(f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.RemoveFault(id) })
}

var _ = http.StatusOK
