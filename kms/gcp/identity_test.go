package gcp

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/issuer"
	"github.com/ekm-dev/ekm/kms/gcp/gcptest"
)

// Identity way (a) through the metadata server (Compute Engine, GKE,
// Cloud Run): the identity endpoint's Google-signed token, cached per
// audience. The metadata server is a stand-in here (the emulator does not
// serve it); GCE_METADATA_HOST is how the metadata package finds it.
func TestMetadataIdentity(t *testing.T) {
	v := emu.Vendor()
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Metadata-Flavor") != "Google" || r.URL.Path != "/computeMetadata/v1/instance/service-accounts/default/identity" ||
			r.URL.Query().Get("format") != "full" {
			http.Error(w, "bad request", 400)
			return
		}
		calls.Add(1)
		tok, err := emu.GoogleIDToken(v.ServiceAccountEmail, r.URL.Query().Get("audience"), true)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Header().Set("Metadata-Flavor", "Google")
		_, _ = w.Write([]byte(tok))
	}))
	defer srv.Close()
	t.Setenv("GCE_METADATA_HOST", strings.TrimPrefix(srv.URL, "http://"))
	id, err := NewMetadataIdentity(MetadataIdentityConfig{Subject: v.UniqueID, ServiceAccount: v.ServiceAccountEmail})
	must(t, err)
	if _, err := NewMetadataIdentity(MetadataIdentityConfig{}); err == nil {
		t.Fatal("metadata identity without a subject")
	}
	d, err := NewDriver(Config{Identity: id, HTTPClient: emu.HTTPClient()})
	must(t, err)
	c := onboard(t, d, nil)
	ctx := context.Background()
	must(t, validate(ctx, open(t, d, c)))
	// A second provider of the same org (another driver: no cached
	// federated token) reuses the cached ID token.
	d2, err := NewDriver(Config{Identity: id, HTTPClient: emu.HTTPClient()})
	must(t, err)
	must(t, validate(ctx, open(t, d2, c)))
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d identity requests, want 1 (cached per audience)", n)
	}
	if got := d.Spec().Identity; got["issuer"] != GoogleIssuer || got["subject"] != v.UniqueID {
		t.Fatalf("identity %v", got)
	}
}

// Rollover of ekm's issuer keys through Google STS: a customer who
// uploaded ekm's JWKS (oidc.jwksJson) and re-uploads it during the overlap
// never notices; one who does not is diagnosed once the new key signs.
func TestIssuerRolloverThroughSTS(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "issuer.json")
	_, err := issuer.EnsureKeyFile(file, time.Now())
	must(t, err)
	iss, err := issuer.New(issuer.Config{URL: "https://rollover.ekm.test", KeyFile: file, ReloadInterval: time.Nanosecond})
	must(t, err)
	d, err := NewDriver(Config{Identity: iss, HTTPClient: emu.HTTPClient(), TrustRecheck: time.Nanosecond})
	must(t, err)
	jwks, _ := iss.JWKS()
	keepsC, lagsC := onboard(t, d, nil), onboard(t, d, nil)
	for _, c := range []*gcptest.Customer{keepsC, lagsC} {
		must(t, c.SetJWKS(ctx, string(jwks)))
	}
	keeps, lags := open(t, d, keepsC), open(t, d, lagsC)
	for _, p := range []*Provider{keeps, lags} {
		must(t, validate(ctx, p))
	}
	ks, err := issuer.ReadKeySet(file)
	must(t, err)
	_, err = ks.Add(time.Now())
	must(t, err)
	must(t, ks.Save(file))
	both, _ := iss.JWKS()
	must(t, keepsC.SetJWKS(ctx, string(both))) // the customer follows the notice
	for _, p := range []*Provider{keeps, lags} {
		must(t, validate(ctx, p)) // the old key still signs
	}
	_, err = ks.Activate(time.Now(), 0)
	must(t, err)
	must(t, ks.Save(file))
	must(t, validate(ctx, keeps))
	e := kmsErr(t, validate(ctx, lags), CodeJWKSMismatch, StepFederation)
	if !strings.Contains(e.Message, "ekm issuer jwks") || !strings.Contains(e.Message, "https://rollover.ekm.test/.well-known/jwks.json") {
		t.Fatalf("message does not say where ekm's JWKS is: %s", e.Message)
	}
}

// Without jwksJson, Google fetches the issuer's discovery document; an
// issuer it cannot reach is diagnosed as such (an outage, not a
// revocation: ekm's issuer being down must not lock every customer out).
func TestIssuerUnreachable(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "issuer.json")
	_, err := issuer.EnsureKeyFile(file, time.Now())
	must(t, err)
	iss, err := issuer.New(issuer.Config{URL: "https://unreachable.ekm.test", KeyFile: file})
	must(t, err)
	d, err := NewDriver(Config{Identity: iss, HTTPClient: emu.HTTPClient()})
	must(t, err)
	c := onboard(t, d, nil)
	e := kmsErr(t, validate(ctx, open(t, d, c)), CodeIssuerUnreachable, StepFederation)
	if !strings.Contains(e.Message, "jwksJson") {
		t.Fatalf("message does not offer the JWKS upload: %s", e.Message)
	}
}
