package app

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/ekm-dev/ekm/internal/dialoverride"
	"github.com/ekm-dev/ekm/issuer"
	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/kms/gcp"
)

// GCPConfig is ekm's own identity toward Google Cloud (the subject token of
// workload identity federation) and, for the emulator only, where to dial.
// The gcp key type is enabled when Identity is set.
type GCPConfig struct {
	// Identity is how ekm proves who it is to customers' workload identity
	// providers: GCPIdentityGoogle, GCPIdentityMetadata or GCPIdentityIssuer.
	Identity string
	// CredentialsFile is the Application Default Credentials file (a
	// service account key file) of GCPIdentityGoogle; "" = ADC's own search
	// (GOOGLE_APPLICATION_CREDENTIALS, gcloud's file, the metadata server).
	CredentialsFile string
	// ServiceAccount is the email of the service account whose ID tokens
	// ekm presents (google: default the key file's; when ADC is another
	// principal, ekm impersonates this account to mint its ID tokens).
	ServiceAccount string
	// Subject is the sub of ekm's ID tokens: the service account's unique
	// id (google: default the key file's client_id; metadata: required),
	// or the issuer's subject (issuer: default "ekm").
	Subject string
	// IssuerURL is ekm's own OIDC issuer (GCPIdentityIssuer): an https URL
	// that reaches this server; ekm serves <IssuerURL>/.well-known/… .
	IssuerURL string
	// IssuerKeyFile holds the issuer's signing keys (default
	// DataDir/gcp-issuer.json, created 0600 on first start; replicas must
	// share it, like the local root key).
	IssuerKeyFile string
	// TrustRecheck is the longest a federated token is used without a new
	// token exchange (default: 4/5 of ProbeInterval, so that every health
	// probe exchanges anew despite the probe's ±10% jitter), which is how a
	// provider the customer disabled is noticed within one probe interval.
	TrustRecheck time.Duration
	// DialOverride sends every Google connection to host:port (the
	// emulator); CAFile is a PEM CA to trust (the emulator's).
	DialOverride string
	CAFile       string
}

// The identities of GCPConfig.Identity.
const (
	GCPIdentityGoogle   = "google"
	GCPIdentityMetadata = "metadata"
	GCPIdentityIssuer   = "issuer"
)

// GCPIssuerKeyFile is where the issuer's keys are kept for c.
func GCPIssuerKeyFile(c Config) string {
	if c.GCP.IssuerKeyFile != "" {
		return c.GCP.IssuerKeyFile
	}
	dir := c.DataDir
	if dir == "" {
		dir = "ekm-data"
	}
	return filepath.Join(dir, "gcp-issuer.json")
}

// GCPIssuer opens ekm's OIDC issuer of c over its existing key file.
func GCPIssuer(c Config) (*issuer.Issuer, error) {
	if c.GCP.IssuerURL == "" {
		return nil, errors.New("gcp: the issuer identity needs --gcp-issuer-url (an https URL that reaches this server)")
	}
	file := GCPIssuerKeyFile(c)
	if _, err := os.Stat(file); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("gcp: the issuer key file %s does not exist; create it with `ekm issuer init` (same --data-dir "+
			"or --gcp-issuer-key-file as the server)", file)
	}
	return issuer.New(issuer.Config{URL: c.GCP.IssuerURL, Subject: c.GCP.Subject, KeyFile: file, Logger: c.Logger})
}

// serverGCPIssuer opens the issuer for a server. A server on SQLite is the
// only one, so it creates the key file on first start (zero setup).
// Replicas on PostgreSQL must all sign with the keys customers trust: a
// replica that created its own would sign tokens Google refuses, which
// ekm would take for the customer revoking access. So they refuse to
// start until the operator created the one shared file.
func serverGCPIssuer(c Config) (*issuer.Issuer, error) {
	file := GCPIssuerKeyFile(c)
	if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
		return GCPIssuer(c)
	}
	if c.Database != "" {
		return nil, fmt.Errorf("gcp: the issuer key file %s does not exist. Replicas on PostgreSQL share one: create it once "+
			"(ekm issuer init --gcp-issuer-key-file %s) and give every replica the same file", file, file)
	}
	created, err := issuer.EnsureKeyFile(file, time.Now())
	if err != nil {
		return nil, fmt.Errorf("gcp issuer key file: %w", err)
	}
	if created && c.Logger != nil {
		c.Logger.Info("created the GCP issuer's key file with a new signing key", "file", file)
	}
	return GCPIssuer(c)
}

// gcpDriver builds the gcp driver c configures, or nil when the gcp type
// is not enabled.
func gcpDriver(c Config) (kms.Driver, error) {
	g := c.GCP
	if g.Identity == "" {
		if g.IssuerURL != "" || g.CredentialsFile != "" {
			return nil, errors.New("gcp: set --gcp-identity (google, metadata or issuer) to enable the gcp key type")
		}
		return nil, nil
	}
	hc, err := dialoverride.NewClient(g.DialOverride, g.CAFile)
	if err != nil {
		return nil, fmt.Errorf("gcp transport: %w", err)
	}
	var id gcp.Identity
	switch g.Identity {
	case GCPIdentityGoogle:
		id, err = gcp.NewGoogleIdentity(gcp.GoogleIdentityConfig{CredentialsFile: g.CredentialsFile, ServiceAccount: g.ServiceAccount,
			Subject: g.Subject, HTTPClient: hc})
	case GCPIdentityMetadata:
		id, err = gcp.NewMetadataIdentity(gcp.MetadataIdentityConfig{Subject: g.Subject, ServiceAccount: g.ServiceAccount})
	case GCPIdentityIssuer:
		id, err = serverGCPIssuer(c)
	default:
		return nil, fmt.Errorf("gcp: unknown identity %q (want google, metadata or issuer)", g.Identity)
	}
	if err != nil {
		return nil, err
	}
	recheck := g.TrustRecheck
	if recheck <= 0 {
		recheck = c.ProbeInterval * 4 / 5
	}
	return gcp.NewDriver(gcp.Config{Identity: id, HTTPClient: hc, TrustRecheck: recheck,
		// One provider call, retries included, fits in the keyring's KMS timeout.
		Timeout: c.KMSTimeout})
}

// gcpRoutes serves ekm's issuer discovery document and JWKS (no
// authentication) when ekm is its own issuer.
func (a *App) gcpRoutes(mux *http.ServeMux) {
	if a.Config.GCP.Identity != GCPIdentityIssuer {
		return
	}
	iss, err := GCPIssuer(a.Config)
	if err != nil {
		// Drivers opened the same issuer a moment ago.
		a.Logger.Error("gcp issuer routes", "err", err)
		return
	}
	for _, r := range iss.Routes() {
		mux.Handle(r.Pattern, lastOnConn(r.Handler))
	}
}

// gcpEnable says how an operator enables the gcp type (kms.Spec.Enable).
const gcpEnable = "start ekm serve with --gcp-identity: google (a service account's ID tokens through Application Default " +
	"Credentials, --gcp-credentials-file), metadata (the metadata server's, --gcp-subject) or issuer (ekm's own OIDC issuer, " +
	"--gcp-issuer-url); see docs/gcp.md. Or try it locally with ekm dev --cloud gcp"
