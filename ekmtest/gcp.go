package ekmtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/app"
	"github.com/ekm-dev/ekm/emulator/gcpcloud"
	"github.com/ekm-dev/ekm/internal/gcponboard"
	"github.com/ekm-dev/ekm/kms/gcp"
	"github.com/ekm-dev/ekm/kms/gcp/gcptest"
)

// Identities of Options.GCP.
const (
	// GCPGoogle: ekm presents Google-signed ID tokens of the emulator's
	// vendor service account (its key file as Application Default
	// Credentials, then IAM Credentials generateIdToken).
	GCPGoogle = app.GCPIdentityGoogle
	// GCPIssuer: ekm is its own OIDC issuer; the emulator fetches the
	// issuer's discovery document and JWKS from the ekm server under test.
	GCPIssuer = app.GCPIdentityIssuer
)

// gcpEnv lists the variables Google's Go libraries read that could point a
// test elsewhere.
var gcpEnv = []string{"GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_QUOTA_PROJECT", "GOOGLE_AUTH_TRUST_BOUNDARY_ENABLED",
	"GOOGLE_API_USE_CLIENT_CERTIFICATE", "GOOGLE_CLOUD_UNIVERSE_DOMAIN", "GCE_METADATA_HOST", "GOOGLE_SDK_GO_LOGGING_LEVEL"}

// issuerRelay is the emulator's way to the ekm servers under test: Google
// fetches an issuer's discovery document and JWKS from its https URL; in
// tests each Env's issuer has its own host name, relayed here to that
// server's plain-HTTP listener.
var issuerRelay = struct {
	sync.Mutex
	servers map[string]string // issuer host → server base URL
	fetches map[string]int    // issuer host → requests relayed
}{servers: map[string]string{}, fetches: map[string]int{}}

type relayTransport struct{}

func (relayTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	issuerRelay.Lock()
	base, ok := issuerRelay.servers[r.URL.Host]
	if ok {
		issuerRelay.fetches[r.URL.Host]++
	}
	issuerRelay.Unlock()
	if !ok {
		return nil, fmt.Errorf("no ekm server for issuer host %s", r.URL.Host)
	}
	u, err := url.Parse(base)
	if err != nil {
		return nil, err
	}
	r2 := r.Clone(r.Context())
	r2.URL.Scheme, r2.URL.Host, r2.Host = u.Scheme, u.Host, ""
	return http.DefaultTransport.RoundTrip(r2)
}

// NewGCPEmulator starts a GCP emulator that can reach the issuers of Envs
// started with it (Options.GCPEmulator); the caller closes it. For a
// package's TestMain: one emulator for every test. It unsets the Google
// variables of the environment (gcpEnv).
func NewGCPEmulator() (*gcpcloud.Emulator, error) {
	for _, k := range gcpEnv {
		os.Unsetenv(k)
	}
	emu, err := gcpcloud.New(gcpcloud.Options{Addr: "127.0.0.1:0", IssuerHTTPClient: &http.Client{Transport: relayTransport{}, Timeout: 10 * time.Second}})
	if err != nil {
		return nil, err
	}
	if err := emu.Start(); err != nil {
		return nil, err
	}
	return emu, nil
}

// StartGCPEmulator is NewGCPEmulator, closed when t ends.
func StartGCPEmulator(t testing.TB) *gcpcloud.Emulator {
	t.Helper()
	clearGCPEnv(t)
	emu, err := NewGCPEmulator()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	return emu
}

func clearGCPEnv(t testing.TB) {
	for _, k := range gcpEnv {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
}

// startGCP returns the GCP emulator and the server's GCP configuration
// for o, as `ekm serve --gcp-identity … --gcp-dial-override … --gcp-ca-file …`.
func startGCP(t testing.TB, o Options, e *Env) app.GCPConfig {
	t.Helper()
	clearGCPEnv(t)
	e.GCP = o.GCPEmulator
	if e.GCP == nil {
		e.GCP = StartGCPEmulator(t)
	}
	c := app.GCPConfig{Identity: o.GCP, TrustRecheck: o.GCPTrustRecheck, DialOverride: e.GCP.Addr(), CAFile: e.GCP.CAFile()}
	switch o.GCP {
	case GCPGoogle:
		c.CredentialsFile = e.GCP.Vendor().KeyFile
	case GCPIssuer:
		var b [6]byte
		_, _ = rand.Read(b[:])
		e.GCPIssuerURL = "https://ekm-" + hex.EncodeToString(b[:]) + ".issuer.test"
		c.IssuerURL = e.GCPIssuerURL
	default:
		t.Fatalf("ekmtest: Options.GCP %q: want %q or %q", o.GCP, GCPGoogle, GCPIssuer)
	}
	return c
}

// relayIssuer lets the emulator reach this Env's issuer at e.URL.
func (e *Env) relayIssuer(t testing.TB) {
	if e.GCPIssuerURL == "" {
		return
	}
	u, _ := url.Parse(e.GCPIssuerURL)
	issuerRelay.Lock()
	issuerRelay.servers[u.Host] = e.URL
	issuerRelay.Unlock()
	t.Cleanup(func() {
		issuerRelay.Lock()
		delete(issuerRelay.servers, u.Host)
		issuerRelay.Unlock()
	})
}

// GCPIssuerFetches counts the requests the emulator (as Google STS) sent
// to this Env's issuer: its discovery document and JWKS.
func (e *Env) GCPIssuerFetches() int {
	u, _ := url.Parse(e.GCPIssuerURL)
	issuerRelay.Lock()
	defer issuerRelay.Unlock()
	return issuerRelay.fetches[u.Host]
}

// SetGCPIssuerReachable makes this Env's issuer reachable by the
// emulator, or not (as an issuer behind a firewall: customers then upload
// its JWKS).
func (e *Env) SetGCPIssuerReachable(t testing.TB, reachable bool) {
	u, _ := url.Parse(e.GCPIssuerURL)
	issuerRelay.Lock()
	defer issuerRelay.Unlock()
	if reachable {
		issuerRelay.servers[u.Host] = e.URL
	} else {
		delete(issuerRelay.servers, u.Host)
	}
}

// GCPIdentity is ekm's identity as customers see it (the gcp type's
// Spec().Identity): issuer, subject, and service_account or jwks_uri.
func (e *Env) GCPIdentity(t testing.TB) map[string]string {
	t.Helper()
	s, enabled, _ := e.App.Service.Registry().Spec(gcp.Type)
	if !enabled {
		t.Fatal("ekmtest: the gcp type is not enabled (Options.GCP)")
	}
	return s.Identity
}

// GCPCustomer creates a customer project in the GCP emulator and runs the
// onboarding steps of docs/gcp.md for this Env's org and ekm's identity
// (mod changes them: skip steps, other names), with the key in us-east1.
func (e *Env) GCPCustomer(t testing.TB, mod func(*gcponboard.Config)) *gcptest.Customer {
	t.Helper()
	p, err := e.GCP.CreateProject()
	if err != nil {
		t.Fatal(err)
	}
	id := e.GCPIdentity(t)
	cfg := gcponboard.Config{HTTP: e.GCP.HTTPClient(), Token: p.AdminToken, ProjectID: p.ID, ProjectNumber: p.Number,
		PoolID: "ekm-pool", ProviderID: "ekm-oidc", Issuer: id["issuer"], Subject: id["subject"], Audience: e.OrgID,
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
