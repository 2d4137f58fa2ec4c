package app

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/issuer"
	"github.com/ekm-dev/ekm/kms/gcp"
)

// The issuer identity: the key file is created 0600 in the data dir, the
// gcp type is enabled with ekm's issuer as its identity, and the discovery
// document and JWKS are served without authentication under the issuer
// URL's path.
func TestGCPIssuerIdentity(t *testing.T) {
	dir := t.TempDir()
	a, err := Open(context.Background(), Config{DataDir: dir, Logger: slog.New(slog.DiscardHandler),
		GCP: GCPConfig{Identity: GCPIdentityIssuer, IssuerURL: "https://ekm.example.com/issuer"}})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	fi, err := os.Stat(filepath.Join(dir, "gcp-issuer.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("issuer key file: %v %v", fi, err)
	}
	spec, enabled, ok := a.Service.Registry().Spec(gcp.Type)
	if !ok || !enabled || spec.Identity["issuer"] != "https://ekm.example.com/issuer" || spec.Identity["subject"] != "ekm" {
		t.Fatalf("gcp spec: enabled %v identity %v", enabled, spec.Identity)
	}
	for path, want := range map[string]string{
		"/issuer/.well-known/openid-configuration": `"jwks_uri":"https://ekm.example.com/issuer/.well-known/jwks.json"`,
		"/issuer/.well-known/jwks.json":            `"kty":"RSA"`,
	} {
		rec := httptest.NewRecorder()
		a.Handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != 200 || !strings.Contains(rec.Body.String(), want) || !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("GET %s: %d %s", path, rec.Code, rec.Body)
		}
	}
}

func TestGCPConfigRefusals(t *testing.T) {
	for name, g := range map[string]GCPConfig{
		"issuer without URL":         {Identity: GCPIdentityIssuer},
		"issuer with http URL":       {Identity: GCPIdentityIssuer, IssuerURL: "http://ekm.example.com"},
		"unknown identity":           {Identity: "aws"},
		"issuer URL but no identity": {IssuerURL: "https://ekm.example.com"},
		"metadata without subject":   {Identity: GCPIdentityMetadata},
		"google without a key file":  {Identity: GCPIdentityGoogle, CredentialsFile: filepath.Join(t.TempDir(), "missing.json")},
	} {
		if _, err := gcpDriver(Config{DataDir: t.TempDir(), GCP: g}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if d, err := gcpDriver(Config{}); d != nil || err != nil {
		t.Fatalf("no identity: %v %v", d, err)
	}
	// Not enabled: the type says how to enable it.
	if s, enabled, ok := Registry(nil).Spec(gcp.Type); !ok || enabled || !strings.Contains(s.Enable, "--gcp-identity") || !strings.Contains(s.Enable, "ekm dev --cloud gcp") {
		t.Fatalf("gcp without a driver: enabled %v, %q", enabled, s.Enable)
	}
}

// Replicas on PostgreSQL share one issuer key file: one that finds none
// refuses to start (and creates nothing) rather than signing with a key of
// its own that customers' providers do not trust.
func TestGCPIssuerReplicasNeedTheSharedKeyFile(t *testing.T) {
	dir := t.TempDir()
	c := Config{DataDir: dir, Database: "postgres://ekm@127.0.0.1:5432/ekm",
		GCP: GCPConfig{Identity: GCPIdentityIssuer, IssuerURL: "https://ekm.example.com"}}
	file := filepath.Join(dir, "gcp-issuer.json")
	if _, err := gcpDriver(c); err == nil || !strings.Contains(err.Error(), "ekm issuer init") {
		t.Fatalf("a replica without the key file: %v", err)
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Fatalf("a replica created the key file: %v", err)
	}
	if _, err := issuer.EnsureKeyFile(file, time.Now()); err != nil {
		t.Fatal(err)
	}
	if d, err := gcpDriver(c); err != nil || d == nil {
		t.Fatalf("a replica with the shared key file: %v %v", d, err)
	}
}
