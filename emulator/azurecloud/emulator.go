// Package azurecloud is an emulator of Microsoft Entra ID (client-credential
// tokens), Azure Key Vault and Managed HSM (keys, with backup/restore,
// rotation policies and secure key release), a local Microsoft Azure
// Attestation issuer, Microsoft Graph (service principals) and Azure
// Resource Manager (vaults, Managed HSM pools, custom roles, role
// assignments).
//
// It serves the production host names (login.microsoftonline.com,
// graph.microsoft.com, management.azure.com, <vault>.vault.azure.net,
// <pool>.managedhsm.azure.net, <provider>.<region>.attest.azure.net, ...)
// over one TLS port with a CA it generates. Clients reach it by redirecting
// their TCP dials (see internal/dialoverride), so the official Azure SDK for
// Go runs its production code path unchanged. A control API on the
// listener's own address creates customer tenants, injects faults, reads
// counters and moves the emulator's clock. See docs/emulator-azure.md.
package azurecloud

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
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
	"github.com/ekm-dev/ekm/internal/dialoverride"
)

// Options configure an Emulator.
type Options struct {
	// Addr is the TCP listen address; "" means 127.0.0.1:0 (any free port).
	Addr string
	// StateDir persists all state (CA, app credential, tenants, vaults, keys)
	// in StateDir/state.json and writes ca.pem and the app's certificate
	// there. "" keeps state in memory; files go to a temporary directory.
	StateDir string
	// Now is the base clock; nil means time.Now. The control API's clock
	// offset is applied on top of it.
	Now func() time.Time
	// TokenLifetime of issued app tokens; 0 means 1h. Must be at least
	// 10 minutes: MSAL and azcore refresh 5 minutes before expiry, so
	// shorter tokens would make every request hit the token endpoint.
	TokenLifetime time.Duration
	// AdminTokenLifetime of customer admin tokens issued by the control API;
	// 0 means 24h.
	AdminTokenLifetime time.Duration
	// Settings overrides the behavioural switches (and the persisted ones)
	// when non-nil. See DefaultSettings.
	Settings *Settings
	// Logger receives one line per request (never tokens or key material);
	// nil discards.
	Logger *slog.Logger
}

// Settings are behavioural switches where Azure's behaviour is not fully
// documented, plus the Key Vault throttling model. They can be changed at
// run time through the control API (PATCH /settings).
type Settings struct {
	// ReadAllowsPublicKeyOps lets keys/read alone authorise encrypt, wrapKey
	// and verify on asymmetric keys (the RBAC permission list says these
	// "can be performed by principals with read access"). Default false:
	// encrypt/action and wrap/action are required.
	ReadAllowsPublicKeyOps bool `json:"read_allows_public_key_ops"`
	// DisabledKeyBlocksGet makes GET of a disabled key version fail with 403
	// KeyDisabled (as lowkey-vault does). Default false: GET returns the key
	// with enabled=false, and only cryptographic operations are refused.
	DisabledKeyBlocksGet bool `json:"disabled_key_blocks_get"`
	// Throttle is the per-vault weighted request limiter.
	Throttle Throttle `json:"throttle"`
}

// Throttle models Key Vault's per-vault limits: within each window the
// weighted sum of transactions may not exceed 1, where a transaction costs
// 1/limit for its key type. HSM keys get half the software limits. Rejected
// (429) requests do not count.
type Throttle struct {
	Disabled bool `json:"disabled"`
	// RetryAfter adds a Retry-After header (seconds to the next window) to
	// 429 responses. Real captures sometimes lack it.
	RetryAfter    bool `json:"retry_after"`
	WindowSeconds int  `json:"window_seconds"`
	RSA2048       int  `json:"rsa_2048"`
	RSA3072       int  `json:"rsa_3072"`
	RSA4096       int  `json:"rsa_4096"`
	EC            int  `json:"ec"`
	Create        int  `json:"create"`
}

// DefaultSettings returns Azure's published software-key limits per 10 s.
func DefaultSettings() Settings {
	return Settings{Throttle: Throttle{RetryAfter: true, WindowSeconds: 10,
		RSA2048: 4000, RSA3072: 1000, RSA4096: 500, EC: 4000, Create: 20}}
}

// Bounds of the throttle settings (docs/emulator-azure.md, "Settings"). A
// limit of at least 2 keeps the HSM limit (half) at 1 or more.
const (
	MinWindowSeconds = 1
	MaxWindowSeconds = 3600
	MinThrottleLimit = 2
	MaxThrottleLimit = 1_000_000
)

func (s *Settings) validate() error {
	t := &s.Throttle
	if t.WindowSeconds < MinWindowSeconds || t.WindowSeconds > MaxWindowSeconds {
		return fmt.Errorf("throttle.window_seconds must be %d..%d", MinWindowSeconds, MaxWindowSeconds)
	}
	for _, n := range []int{t.RSA2048, t.RSA3072, t.RSA4096, t.EC, t.Create} {
		if n < MinThrottleLimit || n > MaxThrottleLimit {
			return fmt.Errorf("throttle limits (rsa_2048, rsa_3072, rsa_4096, ec, create) must be %d..%d", MinThrottleLimit, MaxThrottleLimit)
		}
	}
	return nil
}

// AppCredentials describe the emulator's multi-tenant application (the
// vendor's app registration).
type AppCredentials struct {
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret"`
	CertPEM      []byte `json:"-"`
	KeyPEM       []byte `json:"-"`
	CertPath     string `json:"certificate_path"`
	KeyPath      string `json:"key_path"`
	HomeTenantID string `json:"tenant_id"`
}

// Emulator is one running emulator instance.
type Emulator struct {
	opts  Options
	clock *emukit.Clock
	log   *slog.Logger

	mu        sync.RWMutex // guards st and jti
	st        *state
	jti       map[string]int64 // seen client-assertion ids -> exp
	stateFile emukit.StateFile // serialises state file writes

	ca         *emukit.CA
	signKey    *rsa.PrivateKey
	signKid    string
	releaseKey *rsa.PrivateKey // signs key release responses
	attestKey  *rsa.PrivateKey // signs attestation tokens
	files      *emukit.Files   // where ca.pem and app files go
	counters   emukit.Counters
	reqlog     emukit.Ring[Request]
	faults     emukit.FaultSet[int] // extra: the AADSTS number for Entra faults
	limiter    limiter

	clientOnce sync.Once
	client     *http.Client

	server *emukit.Server
}

// New creates an emulator, loading state from opts.StateDir if present.
func New(opts Options) (*Emulator, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.TokenLifetime == 0 {
		opts.TokenLifetime = time.Hour
	}
	if opts.TokenLifetime < 10*time.Minute {
		return nil, errors.New("azure emulator: TokenLifetime must be at least 10 minutes")
	}
	if opts.AdminTokenLifetime == 0 {
		opts.AdminTokenLifetime = 24 * time.Hour
	}
	if opts.Settings != nil {
		if err := opts.Settings.validate(); err != nil {
			return nil, fmt.Errorf("azure emulator: settings: %w", err)
		}
	}
	e := &Emulator{opts: opts, clock: emukit.NewClock(opts.Now), jti: map[string]int64{}, files: emukit.NewFiles(opts.StateDir)}
	e.log = opts.Logger
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}

	var st *state
	if opts.StateDir != "" {
		if err := os.MkdirAll(opts.StateDir, 0o700); err != nil {
			return nil, fmt.Errorf("azure emulator: state dir: %w", err)
		}
		e.stateFile.Path = filepath.Join(opts.StateDir, stateFile)
		var err error
		if st, err = loadState(&e.stateFile); err != nil {
			return nil, fmt.Errorf("azure emulator: load state: %w", err)
		}
	}
	if st == nil {
		var err error
		if st, err = e.freshState(); err != nil {
			return nil, fmt.Errorf("azure emulator: init: %w", err)
		}
	}
	if opts.Settings != nil {
		st.Settings = *opts.Settings
	}
	if err := st.Settings.validate(); err != nil {
		return nil, fmt.Errorf("azure emulator: settings: %w", err)
	}
	e.st = st
	if err := e.loadKeys(); err != nil {
		return nil, fmt.Errorf("azure emulator: %w", err)
	}
	if opts.StateDir != "" {
		if err := e.saveLocked(); err != nil {
			return nil, fmt.Errorf("azure emulator: save state: %w", err)
		}
	}
	return e, nil
}

func (e *Emulator) freshState() (*state, error) {
	// Certificates are checked by real clocks, not the emulator's.
	now := time.Now()
	st := &state{Version: stateVersion, Settings: DefaultSettings()}
	st.normalize()
	var err error
	if st.CACertDER, st.CAKeyDER, err = emukit.NewCA("ekm Azure emulator CA", now); err != nil {
		return nil, err
	}
	if st.SignCertDER, st.SignKeyDER, err = newSelfSignedRSA("ekm emulator token signing", now, 10); err != nil {
		return nil, err
	}
	a := &app{ClientID: newGUID(), DisplayName: "ekm (emulated vendor app)", Secret: newClientSecret()}
	if a.CertDER, a.KeyDER, err = newSelfSignedRSA("ekm-emulator-app", now, 2); err != nil {
		return nil, err
	}
	home := newTenant(now, "Vendor (home tenant)")
	a.HomeTenantID = home.ID
	spID := newGUID()
	home.SPs[spID] = &servicePrinc{ID: spID, AppID: a.ClientID, Created: now}
	st.Tenants[home.ID] = home
	st.HomeTenantID = home.ID
	st.AppID = a.ClientID
	st.Apps[a.ClientID] = a
	return st, nil
}

// newClientSecret mimics the shape of Entra secrets ("xxx8Q~...").
func newClientSecret() string {
	return "emu8Q~" + randHex(17)
}

func (e *Emulator) loadKeys() error {
	ca, err := emukit.ParseCA(e.st.CACertDER, e.st.CAKeyDER)
	if err != nil {
		return err
	}
	e.ca = ca
	if e.signKey, err = parseRSAKey(e.st.SignKeyDER); err != nil {
		return fmt.Errorf("signing key: %w", err)
	}
	e.signKid = b64url.EncodeToString(x5tSHA1(e.st.SignCertDER))
	if err := e.ensureReleaseKeys(); err != nil {
		return err
	}
	if e.releaseKey, err = parseRSAKey(e.st.ReleaseKeyDER); err != nil {
		return fmt.Errorf("release key: %w", err)
	}
	if e.attestKey, err = parseRSAKey(e.st.AttestKeyDER); err != nil {
		return fmt.Errorf("attestation key: %w", err)
	}
	if len(e.st.BackupKey) != 32 {
		return errors.New("backup key must be 32 bytes")
	}
	return nil
}

// ensureReleaseKeys creates the release signing certificate (issued by the
// CA for the vault and Managed HSM host names), the attestation signing
// certificate and the backup key when the state lacks them (new state, or
// state written before they existed).
func (e *Emulator) ensureReleaseKeys() error {
	now := time.Now()
	var err error
	if e.st.ReleaseCertDER == nil {
		if e.st.ReleaseCertDER, e.st.ReleaseKeyDER, err = newCASignedRSA(e.ca, "ekm emulated Key Vault", vaultCertNames, now); err != nil {
			return err
		}
	}
	if e.st.AttestCertDER == nil {
		if e.st.AttestCertDER, e.st.AttestKeyDER, err = newSelfSignedRSA("ekm emulated attestation provider", now, 10); err != nil {
			return err
		}
	}
	if e.st.BackupKey == nil {
		e.st.BackupKey = make([]byte, 32)
		if _, err := rand.Read(e.st.BackupKey); err != nil {
			return err
		}
	}
	return nil
}

// saveLocked persists state; callers hold e.mu (read or write).
func (e *Emulator) saveLocked() error { return e.stateFile.Save(e.st) }

// Start listens and serves in the background.
func (e *Emulator) Start() error {
	if e.server != nil {
		return errors.New("azure emulator: already started")
	}
	srv, err := emukit.Serve(emukit.ServerConfig{
		Addr: e.opts.Addr, Name: "azure emulator", CommonName: "ekm Azure emulator", CA: e.ca, DNSNames: serverDNSNames,
		Handler: e, Logger: e.log, BeforeServe: e.writeFiles,
	})
	if err != nil {
		return err
	}
	e.server = srv
	return nil
}

// writeFiles writes ca.pem and the app certificate/key for CLI users.
func (e *Emulator) writeFiles() error {
	if err := e.files.Prepare("ekm-azure-emulator-"); err != nil {
		return fmt.Errorf("azure emulator: %w", err)
	}
	a := e.App()
	files := []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{"ca.pem", e.CAPEM(), 0o644},
		{"app-cert.pem", a.CertPEM, 0o644},
		{"app-key.pem", a.KeyPEM, 0o600},
	}
	for _, f := range files {
		if err := e.files.Write(f.name, f.data, f.perm); err != nil {
			return fmt.Errorf("azure emulator: %w", err)
		}
	}
	return nil
}

// Close stops serving and removes temporary files.
func (e *Emulator) Close() error {
	var err error
	if e.server != nil {
		err = e.server.Close()
	}
	e.files.Cleanup()
	return err
}

// Addr is the listener address ("127.0.0.1:port"); valid after Start.
func (e *Emulator) Addr() string { return e.server.Addr() }

// dialAddr is Addr with an unspecified IP replaced by loopback.
func (e *Emulator) dialAddr() string { return emukit.DialAddr(e.Addr()) }

// CAPEM is the emulator CA certificate in PEM.
func (e *Emulator) CAPEM() []byte { return emukit.PEMCert(e.st.CACertDER) }

// CAFile is the path of ca.pem (StateDir or a temporary directory); valid
// after Start.
func (e *Emulator) CAFile() string { return e.files.Path("ca.pem") }

// HTTPClient returns a client that dials the emulator for every host and
// trusts its CA, the same client production code builds with
// dialoverride.NewClient(e.Addr(), e.CAFile()).
// The client is created once, so connections are reused.
func (e *Emulator) HTTPClient() *http.Client {
	e.clientOnce.Do(func() {
		c, err := dialoverride.NewClientFromPEM(e.dialAddr(), e.CAPEM())
		if err != nil {
			panic("azure emulator: " + err.Error()) // our own address and CA are always valid
		}
		e.client = c
	})
	return e.client
}

// App returns the credentials of the emulated multi-tenant application.
func (e *Emulator) App() AppCredentials {
	e.mu.RLock()
	defer e.mu.RUnlock()
	a := e.st.Apps[e.st.AppID]
	ac := AppCredentials{
		ClientID: a.ClientID, ClientSecret: a.Secret, HomeTenantID: a.HomeTenantID,
		CertPEM: emukit.PEMCert(a.CertDER), KeyPEM: emukit.PEMKey(a.KeyDER),
		CertPath: e.files.Path("app-cert.pem"), KeyPath: e.files.Path("app-key.pem"),
	}
	return ac
}

// ControlURL is the base URL of the control API (reachable with the CA at
// the listener address, no dial override needed).
func (e *Emulator) ControlURL() string { return "https://" + e.dialAddr() + emukit.ControlPrefix }

// Now is the emulator's current time (base clock plus offset).
func (e *Emulator) Now() time.Time { return e.clock.Now() }

// SetClock moves the emulator clock to t; automatic rotations and purges
// that come due happen at once.
func (e *Emulator) SetClock(t time.Time) { e.clock.Set(t); e.housekeepAll() }

// AdvanceClock moves the emulator clock by d (may be negative); automatic
// rotations and purges that come due happen at once.
func (e *Emulator) AdvanceClock(d time.Duration) { e.clock.Advance(d); e.housekeepAll() }

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

// Main runs `ekm emulate azure`: it starts the emulator, prints one JSON line
// describing how to use it, and serves until ctx is done.
func Main(ctx context.Context, opts Options, stdout io.Writer) error {
	// The control API hands out the app's secret and tenant admin tokens
	// without authentication: it must only ever be reachable from this host.
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
	a := e.App()
	info := map[string]any{
		"address":     e.Addr(),
		"ca_file":     e.CAFile(),
		"app":         a,
		"control_url": e.ControlURL(),
		"create_tenant": fmt.Sprintf("curl --cacert %s -X POST %s/tenants",
			emukit.ShellQuote(e.CAFile()), e.ControlURL()),
		"client": fmt.Sprintf("send every Azure host to %s (dial override) and trust %s",
			e.dialAddr(), e.CAFile()),
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
