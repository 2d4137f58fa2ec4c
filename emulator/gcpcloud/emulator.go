// Package gcpcloud is an emulator of the Google Cloud services ekm talks
// to: Security Token Service (workload identity federation), IAM
// (workload identity pools and OIDC providers, service accounts and
// keys), IAM Credentials (generateIdToken), OAuth 2.0 (JWT-bearer grant),
// Google's OIDC issuer (discovery, JWKS) and Cloud KMS REST v1.
//
// It serves the production host names (sts.googleapis.com,
// iam.googleapis.com, iamcredentials.googleapis.com,
// cloudkms.googleapis.com, oauth2.googleapis.com, accounts.google.com,
// www.googleapis.com) over one TLS port with a CA it generates. Clients
// reach it by redirecting their TCP dials (internal/dialoverride), so
// Google's official Go clients run their production code path. A control
// API on the listener's own address creates customer projects, injects
// faults, reads counters and the request log and moves the clock. See
// docs/emulator-gcp.md.
package gcpcloud

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/ekm-dev/ekm/emulator/emukit"
)

// Options configure an Emulator.
type Options struct {
	// Addr is the TCP listen address; "" means 127.0.0.1:0.
	Addr string
	// StateDir persists all state (CA, signing keys, projects, pools,
	// service accounts, keys, policies) in StateDir/state.json and writes
	// ca.pem and the vendor's service-account key file there. "" keeps
	// state in memory; files go to a temporary directory.
	StateDir string
	// Now is the base clock; nil means time.Now. The control API's clock
	// offset is applied on top of it.
	Now func() time.Time
	// Settings overrides the behavioural switches (and the persisted ones)
	// when non-nil. See DefaultSettings.
	Settings *Settings
	// IssuerHTTPClient fetches external OIDC issuers' discovery documents
	// and JWKS during STS exchanges (e.g. ekm's own issuer served over
	// https). nil means a plain client with a 10 s timeout. Issuers served
	// by the emulator itself (https://accounts.google.com) and issuers
	// registered with RegisterIssuer are never fetched.
	IssuerHTTPClient *http.Client
	// Logger receives one line per request (never tokens or key
	// material); nil discards.
	Logger *slog.Logger
}

// Settings are behavioural switches where Google's behaviour is a choice
// (propagation lag, token lifetime) and the Cloud KMS quotas. They can be
// changed at run time through the control API (PUT /settings).
type Settings struct {
	// IAMPropagationSeconds delays allow-policy changes (KMS and service
	// account policies): for that long after a change, authorisation still
	// uses the previous policy. Google documents typically 2 minutes,
	// sometimes 7 or more. Default 0 (instant).
	IAMPropagationSeconds int `json:"iam_propagation_seconds"`
	// FederatedTokenLifetimeSeconds is the lifetime of STS tokens (default
	// 3600), capped by the subject token's exp when CapAtSubjectExpiry.
	FederatedTokenLifetimeSeconds int   `json:"federated_token_lifetime_seconds"`
	CapAtSubjectExpiry            bool  `json:"cap_at_subject_expiry"`
	Quota                         Quota `json:"quota"`
}

// Quota holds Cloud KMS per-project quotas, counted on the project that
// holds the resource. Limits are per minute, as Google publishes them;
// cryptographic requests are enforced per second (limit/60, rounded up),
// as Google enforces hosting-project quotas, reads and writes per
// (fixed) minute. Over the limit: 429 RESOURCE_EXHAUSTED.
type Quota struct {
	Disabled bool `json:"disabled"`
	// CryptoPerMinute: encrypt/decrypt (Google's default 60,000).
	CryptoPerMinute int `json:"crypto_requests_per_minute"`
	// ReadPerMinute: get/list/getIamPolicy (default 300).
	ReadPerMinute int `json:"read_requests_per_minute"`
	// WritePerMinute: create/update/destroy/setIamPolicy (default 300).
	WritePerMinute int `json:"write_requests_per_minute"`
}

// DefaultSettings returns Google's published defaults.
func DefaultSettings() Settings {
	return Settings{FederatedTokenLifetimeSeconds: 3600, CapAtSubjectExpiry: true,
		Quota: Quota{CryptoPerMinute: 60_000, ReadPerMinute: 300, WritePerMinute: 300}}
}

func (s *Settings) validate() error {
	switch {
	case s.IAMPropagationSeconds < 0 || s.IAMPropagationSeconds > 86400:
		return errors.New("iam_propagation_seconds must be 0..86400")
	case s.FederatedTokenLifetimeSeconds < 60 || s.FederatedTokenLifetimeSeconds > 43200:
		return errors.New("federated_token_lifetime_seconds must be 60..43200")
	}
	for _, n := range []int{s.Quota.CryptoPerMinute, s.Quota.ReadPerMinute, s.Quota.WritePerMinute} {
		if n < 1 || n > 100_000_000 {
			return errors.New("quota limits must be 1..100000000")
		}
	}
	return nil
}

// Emulator is one running emulator instance.
type Emulator struct {
	opts  Options
	clock *emukit.Clock
	log   *slog.Logger

	mu        sync.RWMutex // guards st
	st        *state
	stateFile emukit.StateFile

	ca       *emukit.CA
	signKey  *rsa.PrivateKey // Google's OIDC signing key (accounts.google.com)
	files    *emukit.Files
	counters emukit.Counters
	reqlog   *emukit.Ring[Request]
	faults   emukit.FaultSet[faultExt]
	quota    quotaLimiter
	ops      opLog
	issuerHC *http.Client

	server *emukit.Server
}

// New creates an emulator, loading state from opts.StateDir if present.
func New(opts Options) (*Emulator, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Settings != nil {
		if err := opts.Settings.validate(); err != nil {
			return nil, fmt.Errorf("gcp emulator: settings: %w", err)
		}
	}
	e := &Emulator{opts: opts, clock: emukit.NewClock(opts.Now), files: emukit.NewFiles(opts.StateDir),
		reqlog: emukit.NewRing[Request](0), issuerHC: opts.IssuerHTTPClient}
	if e.issuerHC == nil {
		e.issuerHC = &http.Client{Timeout: 10 * time.Second}
	}
	e.log = opts.Logger
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	var st *state
	if opts.StateDir != "" {
		if err := os.MkdirAll(opts.StateDir, 0o700); err != nil {
			return nil, fmt.Errorf("gcp emulator: state dir: %w", err)
		}
		e.stateFile.Path = filepath.Join(opts.StateDir, stateFileName)
		st = &state{}
		found, err := e.stateFile.Load(st)
		if err != nil {
			return nil, fmt.Errorf("gcp emulator: load state: %w", err)
		}
		if !found {
			st = nil
		} else if st.Version != stateVersion {
			return nil, fmt.Errorf("gcp emulator: state version %d not supported (want %d)", st.Version, stateVersion)
		}
	}
	if st == nil {
		var err error
		if st, err = e.freshState(); err != nil {
			return nil, fmt.Errorf("gcp emulator: init: %w", err)
		}
	}
	st.normalize()
	if opts.Settings != nil {
		st.Settings = *opts.Settings
	}
	if err := st.Settings.validate(); err != nil {
		return nil, fmt.Errorf("gcp emulator: settings: %w", err)
	}
	e.st = st
	ca, err := emukit.ParseCA(st.CACertDER, st.CAKeyDER)
	if err != nil {
		return nil, fmt.Errorf("gcp emulator: %w", err)
	}
	e.ca = ca
	k, err := x509.ParsePKCS1PrivateKey(st.SignKeyDER)
	if err != nil {
		return nil, fmt.Errorf("gcp emulator: signing key: %w", err)
	}
	e.signKey = k
	if err := e.saveLocked(); err != nil {
		return nil, fmt.Errorf("gcp emulator: save state: %w", err)
	}
	return e, nil
}

func (e *Emulator) freshState() (*state, error) {
	now := time.Now() // certificates are checked by real clocks
	st := &state{Version: stateVersion, Settings: DefaultSettings()}
	st.normalize()
	var err error
	if st.CACertDER, st.CAKeyDER, err = emukit.NewCA("ekm GCP emulator CA", now); err != nil {
		return nil, err
	}
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	st.SignKeyDER = x509.MarshalPKCS1PrivateKey(k)
	st.SignKid = randHex(20)
	st.TokenSecret = make([]byte, 32)
	rand.Read(st.TokenSecret)
	// The vendor's own project and service account (ekm's identity, way (a)).
	vp := newProject(vendorProjectID, e.clock.Now())
	st.Projects[vp.ID] = vp
	st.VendorProject = vp.ID
	sa, err := newServiceAccount(vp, "ekm-kms", "ekm (emulated vendor)", e.clock.Now())
	if err != nil {
		return nil, err
	}
	if _, err := sa.addKey(e.clock.Now()); err != nil {
		return nil, err
	}
	// The service account may mint ID tokens for itself
	// (roles/iam.serviceAccountOpenIdTokenCreator on itself), which
	// generateIdToken needs.
	sa.Policy.Bindings = []binding{{Role: roleOpenIDTokenCreator, Members: []string{"serviceAccount:" + sa.Email}}}
	st.VendorSA = sa.Email
	return st, nil
}

const vendorProjectID = "ekm-vendor"

// saveLocked persists state; callers hold e.mu.
func (e *Emulator) saveLocked() error { return e.stateFile.Save(e.st) }

// Start listens and serves in the background.
func (e *Emulator) Start() error {
	if e.server != nil {
		return errors.New("gcp emulator: already started")
	}
	srv, err := emukit.Serve(emukit.ServerConfig{
		Addr: e.opts.Addr, Name: "gcp emulator", CommonName: "ekm GCP emulator", CA: e.ca, DNSNames: serverDNSNames,
		Handler: e, Logger: e.log, BeforeServe: e.writeFiles,
	})
	if err != nil {
		return err
	}
	e.server = srv
	return nil
}

var serverDNSNames = []string{
	"sts.googleapis.com", "iam.googleapis.com", "iamcredentials.googleapis.com", "cloudkms.googleapis.com",
	"oauth2.googleapis.com", "accounts.google.com", "www.googleapis.com",
}

// writeFiles writes ca.pem and the vendor's key file for CLI users.
func (e *Emulator) writeFiles() error {
	if err := e.files.Prepare("ekm-gcp-emulator-"); err != nil {
		return fmt.Errorf("gcp emulator: %w", err)
	}
	if err := e.files.Write("ca.pem", e.CAPEM(), 0o644); err != nil {
		return fmt.Errorf("gcp emulator: %w", err)
	}
	v := e.Vendor()
	if err := e.files.Write(vendorKeyFile, v.KeyJSON, 0o600); err != nil {
		return fmt.Errorf("gcp emulator: %w", err)
	}
	return nil
}

const vendorKeyFile = "vendor-sa-key.json"

// Close stops serving and removes temporary files.
func (e *Emulator) Close() error {
	var err error
	if e.server != nil {
		err = e.server.Close()
	}
	e.files.Cleanup()
	return err
}

// Addr is the listener address; valid after Start.
func (e *Emulator) Addr() string { return e.server.Addr() }

// CAPEM is the emulator CA certificate in PEM.
func (e *Emulator) CAPEM() []byte { return e.ca.PEM() }

// CAFile is the path of ca.pem; valid after Start.
func (e *Emulator) CAFile() string { return e.files.Path("ca.pem") }

// HTTPClient returns a client that dials the emulator for every host and
// trusts its CA: the client production code builds with
// dialoverride.NewClient(e.Addr(), e.CAFile()).
func (e *Emulator) HTTPClient() *http.Client { return e.server.HTTPClient() }

// ControlURL is the base URL of the control API.
func (e *Emulator) ControlURL() string {
	return "https://" + e.server.DialAddr() + emukit.ControlPrefix
}

// Now is the emulator's current time.
func (e *Emulator) Now() time.Time { return e.clock.Now() }

// SetClock moves the emulator clock to t.
func (e *Emulator) SetClock(t time.Time) { e.clock.Set(t) }

// AdvanceClock moves the emulator clock by d.
func (e *Emulator) AdvanceClock(d time.Duration) { e.clock.Advance(d) }

// Settings returns the current behavioural switches.
func (e *Emulator) Settings() Settings {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.st.Settings
}

// SetSettings replaces the behavioural switches.
func (e *Emulator) SetSettings(s Settings) error {
	if err := s.validate(); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.st.Settings = s
	return e.saveLocked()
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// randDigits returns n random decimal digits, the first non-zero.
func randDigits(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	for i := range b {
		b[i] = '0' + b[i]%10
	}
	if b[0] == '0' {
		b[0] = '1'
	}
	return string(b)
}

// Main runs `ekm emulate gcp`: it starts the emulator, prints one JSON line
// describing how to use it, and serves until ctx is done.
func Main(ctx context.Context, opts Options, stdout io.Writer) error {
	// The control API hands out admin tokens and the vendor's key without
	// authentication: it must only be reachable from this host.
	if err := emukit.CheckLoopbackListen(opts.Addr); err != nil {
		return err
	}
	e, err := New(opts)
	if err != nil {
		return err
	}
	if err := e.Start(); err != nil {
		return err
	}
	defer e.Close()
	v := e.Vendor()
	info := map[string]any{
		"address":     e.Addr(),
		"ca_file":     e.CAFile(),
		"control_url": e.ControlURL(),
		"vendor": map[string]any{
			"project_id": v.ProjectID, "project_number": v.ProjectNumber,
			"service_account": v.ServiceAccountEmail, "unique_id": v.UniqueID, "key_file": v.KeyFile,
		},
		"create_project": fmt.Sprintf("curl --cacert %s -X POST %s/projects",
			emukit.ShellQuote(e.CAFile()), e.ControlURL()),
		"client": fmt.Sprintf("send every Google API host to %s (dial override) and trust %s",
			e.server.DialAddr(), e.CAFile()),
	}
	b, err := json.Marshal(info)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(stdout, "%s\n", b); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}
