// Package ekmtest starts a whole ekm — the Azure emulator and an ekm server
// wired to it exactly as `ekm serve --azure-dial-override … --azure-ca-file …`
// would be, and with Options.AWS the AWS emulator too, wired as
// `ekm serve --aws --aws-dial-override … --aws-ca-file …` with the vendor's
// credentials in the AWS_* environment — for end-to-end tests. Test-only: it
// imports testing.
package ekmtest

import (
	"context"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/ekm-dev/ekm/adminapi"
	"github.com/ekm-dev/ekm/app"
	"github.com/ekm-dev/ekm/emulator/awscloud"
	"github.com/ekm-dev/ekm/emulator/azurecloud"
	"github.com/ekm-dev/ekm/emulator/gcpcloud"
	"github.com/ekm-dev/ekm/emulator/ocicloud"
	"github.com/ekm-dev/ekm/internal/apispec"
	"github.com/ekm-dev/ekm/internal/azonboard"
)

// Options tune the server; zero values keep app defaults except where noted.
type Options struct {
	// GCP also enables the gcp key type against the GCP emulator
	// (GCPEmulator, or a new one from StartGCPEmulator) with ekm's identity
	// GCPGoogle or GCPIssuer; GCPTrustRecheck is --gcp-trust-recheck
	// (default: 4/5 of the probe interval). See gcp.go.
	GCP             string
	GCPEmulator     *gcpcloud.Emulator
	GCPTrustRecheck time.Duration

	ProbeInterval time.Duration // default 200ms in tests
	CacheTTL      time.Duration
	KMSTimeout    time.Duration
	// Database: "" = SQLite in a temp dir; or a postgres DSN.
	Database string
	// DataDir: "" = a fresh temp dir.
	DataDir string
	// NoRun: build the app but do not serve or probe (the test drives it).
	NoRun bool
	// Emulator, if set, is used instead of starting a new one.
	Emulator *azurecloud.Emulator
	Logger   *slog.Logger
	// AWS also enables the aws key type against the AWS emulator
	// (AWSEmulator, or a new one), ekm's identity being the emulator's
	// vendor user in the environment (SetAWSEnv). AWSSessionRefresh is
	// --aws-session-refresh (default: the probe interval).
	AWS               bool
	AWSEmulator       *awscloud.Emulator
	AWSSessionRefresh time.Duration
	// OCI also enables the oci key type against the OCI emulator
	// (OCIEmulator, or a new one), ekm's identity being the emulator's
	// vendor user and its key file (oci.go).
	OCI         bool
	OCIEmulator *ocicloud.Emulator
}

// Env is a running emulator + server.
type Env struct {
	t   testing.TB
	Emu *azurecloud.Emulator
	// AWS is the AWS emulator (with Options.AWS).
	AWS *awscloud.Emulator
	App *app.App
	// URL is the server's base URL, e.g. http://127.0.0.1:1234 ("" with NoRun).
	URL string
	// OrgID and AdminKey of an org created at start.
	OrgID, AdminKey string
	// GCP is the GCP emulator (with Options.GCP); GCPIssuerURL is ekm's
	// issuer (GCPIssuer), which the emulator reaches at URL.
	GCP          *gcpcloud.Emulator
	GCPIssuerURL string
	// OCI is the OCI emulator (with Options.OCI).
	OCI *ocicloud.Emulator
}

// Start starts an emulator (unless given) and a server, and creates an org.
// Everything stops at test cleanup.
func Start(t testing.TB, o Options) *Env {
	t.Helper()
	for _, v := range []string{"AZURE_AUTHORITY_HOST", "AZURE_REGIONAL_AUTHORITY_NAME", "AZURE_CLIENT_ID", "AZURE_TENANT_ID",
		"AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_ADDITIONALLY_ALLOWED_TENANTS"} {
		t.Setenv(v, "")
	}
	e := &Env{t: t, Emu: o.Emulator}
	if e.Emu == nil {
		emu, err := azurecloud.New(azurecloud.Options{Addr: "127.0.0.1:0"})
		if err != nil {
			t.Fatal(err)
		}
		if err := emu.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { emu.Close() })
		e.Emu = emu
	}
	if o.ProbeInterval == 0 {
		o.ProbeInterval = 200 * time.Millisecond
	}
	if o.DataDir == "" {
		o.DataDir = t.TempDir()
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	creds := e.Emu.App()
	cfg := app.Config{Addr: "127.0.0.1:0", DataDir: o.DataDir, Database: o.Database, ProbeInterval: o.ProbeInterval,
		CacheTTL: o.CacheTTL, KMSTimeout: o.KMSTimeout, Logger: logger,
		Azure: app.AzureConfig{ClientID: creds.ClientID, ClientSecret: creds.ClientSecret, DialOverride: e.Emu.Addr(), CAFile: e.Emu.CAFile()}}
	if o.GCP != "" {
		cfg.GCP = startGCP(t, o, e)
	}
	if o.AWS {
		e.AWS = startAWS(t, o)
		SetAWSEnv(t, e.AWS)
		cfg.AWS = app.AWSConfig{Enabled: true, DialOverride: e.AWS.Addr(), CAFile: e.AWS.CAFile(), SessionRefresh: o.AWSSessionRefresh}
	}
	if o.OCI {
		cfg.OCI = startOCI(t, o, e)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a, err := app.Open(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	e.App = a
	org, key, err := adminapi.CreateOrg(ctx, a.Store, "Acme", time.Now())
	if err != nil {
		cancel()
		a.Close()
		t.Fatal(err)
	}
	e.OrgID, e.AdminKey = org.ID, key
	if o.NoRun {
		t.Cleanup(func() { cancel(); a.Close() })
		return e
	}
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, func(addr string) { ready <- addr }) }()
	select {
	case addr := <-ready:
		e.URL = "http://" + addr
		e.relayIssuer(t)
	case err := <-done:
		cancel()
		a.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		<-done
		a.Close()
	})
	return e
}

// Admin returns an OpenAI SDK client authenticated with the org's admin key.
func (e *Env) Admin() openai.Client { return e.Client(e.AdminKey) }

// Client returns an OpenAI SDK client for this server and key (admin or
// project), with retries off so tests see every answer.
func (e *Env) Client(key string) openai.Client {
	return openai.NewClient(option.WithBaseURL(e.URL+"/v1/"), option.WithAPIKey(key), option.WithAdminAPIKey(key), option.WithMaxRetries(0),
		option.WithHTTPClient(e.HTTPClient()))
}

// HTTPClient returns an HTTP client whose every exchange is checked against
// docs/openapi.yaml (internal/apispec): a mismatch fails the test. Clients
// of this server (Client, the Go client, raw calls) should use it.
func (e *Env) HTTPClient() *http.Client { return apispec.Client(e.t, nil) }

// Customer creates a new customer tenant in the emulator and returns its
// admin, ready to run the onboarding steps.
func (e *Env) Customer(t testing.TB) *azonboard.Customer {
	t.Helper()
	ten, err := e.Emu.CreateTenant()
	if err != nil {
		t.Fatal(err)
	}
	return &azonboard.Customer{HTTP: e.Emu.HTTPClient(), TenantID: ten.ID, SubscriptionID: ten.SubscriptionID,
		GraphToken: ten.AdminTokens.Graph, ARMToken: ten.AdminTokens.Management, VaultToken: ten.AdminTokens.Vault}
}

// Onboard creates a tenant and runs steps 1–4 for this env's org, with a
// vault of a unique name and a key named <org>--<suffix>.
func (e *Env) Onboard(t testing.TB, suffix string) (*azonboard.Customer, azonboard.Onboarding) {
	t.Helper()
	c := e.Customer(t)
	vault := "v" + strings.ReplaceAll(c.TenantID, "-", "")[:20]
	o, err := c.Onboard(context.Background(), e.Emu.App().ClientID, e.OrgID, vault, suffix)
	if err != nil {
		t.Fatal(err)
	}
	return c, o
}

// DataDir is where the server keeps its SQLite file and blobs.
func (e *Env) DataDir() string { return filepath.Clean(e.App.Config.DataDir) }
