// Package ocicloud is an emulator of OCI Identity and Vault (Key
// Management API 20180608) for ekm's tests and `ekm emulate oci`.
//
// It serves the production host names — identity.<region>.oci.<domain>,
// kms.<region>.<domain> (vaults), and each vault's own
// <prefix>-management.kms.<region>.<domain> (keys) and
// <prefix>-crypto.kms.<region>.<domain> (encrypt, decrypt) — for every
// region of the OCI Go SDK, over one TLS port with a CA it generates.
// Clients reach it by redirecting their TCP dials (internal/dialoverride),
// so the official OCI Go SDK runs its production code path: every request's
// HTTP signature (keyId <tenancy>/<user>/<fingerprint>) is verified, and
// every call is authorized by the tenancies' IAM policies, cross-tenancy
// Define/Endorse/Admit statements and where conditions included; a refusal
// looks exactly like a missing resource (404 NotAuthorizedOrNotFound). A
// control API on the listener's own address creates tenancies, injects
// faults, reads counters and the request log, and moves the clock. See
// docs/emulator-oci.md.
package ocicloud

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
	"sort"
	"sync"
	"time"

	"github.com/ekm-dev/ekm/emulator/emukit"
	"github.com/ekm-dev/ekm/internal/dialoverride"
)

// Options configure an Emulator.
type Options struct {
	// Addr is the TCP listen address; "" means 127.0.0.1:0.
	Addr string
	// StateDir persists all state (CA, tenancies, users and their public
	// keys, groups, policies, vaults, keys) in StateDir/state.json and
	// writes ca.pem and the vendor user's private key (vendor-key.pem,
	// 0600) there. "" keeps state in memory; the files go to a temporary
	// directory.
	StateDir string
	// Now is the base clock; nil means time.Now. The control API's clock
	// offset is applied on top of it.
	Now func() time.Time
	// Logger receives one line per request (never keys, signatures or
	// plaintexts); nil discards.
	Logger *slog.Logger
	// Settings overrides the persisted settings when non-nil.
	Settings *Settings
}

// Settings are run-time switches (control API: GET/PUT /settings).
type Settings struct {
	// PolicyDelay is how long a policy change takes to take effect (OCI:
	// "typically within 10 seconds"); 0, the default, is immediate.
	PolicyDelay emukit.Duration `json:"policy_delay"`
	// ManagementQuota is the requests per second per tenancy that Key
	// Management accepts for management reads (GetVault, GetKey, List…)
	// and, separately, writes (CreateKey, EnableKey, …); beyond it, 429
	// TooManyRequests. OCI documents 10; 0 turns throttling off.
	ManagementQuota int `json:"management_quota"`
	// DisabledKeyError is the error of Encrypt and Decrypt on a key that is
	// not ENABLED: "IncorrectState" (409, the default) or
	// "InvalidParameter" (400). OCI does not document which it answers.
	DisabledKeyError string `json:"disabled_key_error"`
}

// DefaultSettings returns OCI's documented behaviour.
func DefaultSettings() Settings {
	return Settings{ManagementQuota: 10, DisabledKeyError: "IncorrectState"}
}

func (s *Settings) validate() error {
	switch {
	case s.PolicyDelay < 0 || time.Duration(s.PolicyDelay) > time.Hour:
		return errors.New("policy_delay must be 0..1h")
	case s.ManagementQuota < 0 || s.ManagementQuota > 1_000_000:
		return errors.New("management_quota must be 0..1000000")
	case s.DisabledKeyError != "IncorrectState" && s.DisabledKeyError != "InvalidParameter":
		return errors.New(`disabled_key_error must be "IncorrectState" or "InvalidParameter"`)
	}
	return nil
}

// Credentials are an API-key user's signing identity: what an OCI config
// file names (tenancy, user, fingerprint, key_file, region).
type Credentials struct {
	TenancyOCID string `json:"tenancy_ocid"`
	TenancyName string `json:"tenancy_name"`
	UserOCID    string `json:"user_ocid"`
	UserName    string `json:"user_name"`
	Fingerprint string `json:"fingerprint"`
	Region      string `json:"region"`
	// PrivateKeyPEM is the user's private key (PKCS#8 PEM).
	PrivateKeyPEM string `json:"private_key_pem,omitempty"`
}

// Vendor is ekm's own identity: the user ekm signs as, the group
// customers admit, and the file holding the user's private key.
type Vendor struct {
	Credentials
	GroupOCID string `json:"group_ocid"`
	GroupName string `json:"group_name"`
	// KeyFile is the path of the private key (0600), what an operator
	// gives ekm serve (--oci-private-key-file).
	KeyFile string `json:"key_file"`
}

// Names of what every emulated tenancy and the vendor tenancy hold.
const (
	// AdministratorsGroup is every tenancy's admin group; the tenancy's
	// "Tenant Admin Policy" lets it manage all resources.
	AdministratorsGroup = "Administrators"
	// VendorUserName and VendorGroupName are ekm's user and group in the
	// vendor tenancy.
	VendorUserName  = "ekm"
	VendorGroupName = "ekm-kms"
	// VendorPolicyName is the vendor tenancy's policy endorsing the group.
	VendorPolicyName = "ekm-endorse"
)

// VendorStatements are the vendor tenancy's Endorse statements (docs/oci.md,
// the operator's set-up): ekm's group may use keys and read vaults in any
// tenancy that admits it.
var VendorStatements = []string{
	"Endorse group " + VendorGroupName + " to use keys in any-tenancy",
	"Endorse group " + VendorGroupName + " to read vaults in any-tenancy",
}

// Emulator is one running emulator instance.
type Emulator struct {
	opts  Options
	clock *emukit.Clock
	log   *slog.Logger

	mu        sync.Mutex // guards st
	st        *state
	stateFile emukit.StateFile

	ca       *emukit.CA
	files    *emukit.Files
	counters emukit.Counters
	reqlog   emukit.Ring[Request]
	faults   emukit.FaultSet[struct{}]
	quota    quotaWindows

	clientOnce sync.Once
	client     *http.Client
	server     *emukit.Server
}

// New creates an emulator, loading state from opts.StateDir if present.
func New(opts Options) (*Emulator, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.Settings != nil {
		if err := opts.Settings.validate(); err != nil {
			return nil, fmt.Errorf("oci emulator: settings: %w", err)
		}
	}
	e := &Emulator{opts: opts, clock: emukit.NewClock(opts.Now), files: emukit.NewFiles(opts.StateDir), log: opts.Logger}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	var st *state
	if opts.StateDir != "" {
		e.stateFile.Path = filepath.Join(opts.StateDir, stateFileName)
		if err := os.MkdirAll(opts.StateDir, 0o700); err != nil {
			return nil, fmt.Errorf("oci emulator: state dir: %w", err)
		}
		var loaded state
		found, err := e.stateFile.Load(&loaded)
		if err != nil {
			return nil, fmt.Errorf("oci emulator: load state: %w", err)
		}
		if found {
			if loaded.Version != stateVersion {
				return nil, fmt.Errorf("oci emulator: %s has version %d, want %d", stateFileName, loaded.Version, stateVersion)
			}
			loaded.normalize()
			st = &loaded
		}
	}
	e.st = st
	if st == nil {
		e.st = &state{Version: stateVersion, Settings: DefaultSettings()}
		e.st.normalize()
		if err := e.initLocked(); err != nil {
			return nil, fmt.Errorf("oci emulator: init: %w", err)
		}
	}
	if opts.Settings != nil {
		e.st.Settings = *opts.Settings
	}
	if err := e.st.Settings.validate(); err != nil {
		return nil, fmt.Errorf("oci emulator: settings: %w", err)
	}
	ca, err := emukit.ParseCA(e.st.CACertDER, e.st.CAKeyDER)
	if err != nil {
		return nil, fmt.Errorf("oci emulator: %w", err)
	}
	e.ca = ca
	if err := e.saveLocked(); err != nil {
		return nil, fmt.Errorf("oci emulator: save state: %w", err)
	}
	return e, nil
}

// initLocked creates the CA and the vendor tenancy: ekm's user (with an
// API key) in ekm's group, endorsed to use keys and read vaults in any
// tenancy.
func (e *Emulator) initLocked() error {
	var err error
	if e.st.CACertDER, e.st.CAKeyDER, err = emukit.NewCA("ekm OCI emulator CA", time.Now()); err != nil {
		return err
	}
	ten, _, err := e.newTenancyLocked("ekm-vendor", DefaultRegion, "oc1")
	if err != nil {
		return err
	}
	now := e.clock.Now()
	g := &group{ID: globalOCID("group", ten.Realm), Tenancy: ten.ID, Name: VendorGroupName, Description: "ekm: uses customers' keys", Created: now}
	e.st.Groups[g.ID] = g
	u, k, err := e.newUserLocked(ten, VendorUserName, "ekm's API signing identity", g)
	if err != nil {
		return err
	}
	// The vendor's private key is kept (state and key file) so that a
	// restarted emulator hands out the same identity.
	e.st.Vendor, e.st.VendorUser, e.st.VendorGroup, e.st.VendorKeyPEM = ten.ID, u.ID, g.ID, privatePEM(k)
	bind, _, err := e.bindPolicyLocked(ten, ten.ID, VendorStatements)
	if err != nil {
		return err
	}
	p := &policy{ID: globalOCID("policy", ten.Realm), Tenancy: ten.ID, Compartment: ten.ID, Name: VendorPolicyName,
		Description: "ekm's group may use customers' keys that they admit it to", Created: now,
		Versions: []policyVersion{{At: now, Statements: VendorStatements, Bindings: bind}}}
	e.st.Policies[p.ID] = p
	return nil
}

// newTenancyLocked creates a tenancy with its Administrators group, an
// admin user with an API key, and the Tenant Admin Policy.
func (e *Emulator) newTenancyLocked(name, home, realm string) (*tenancy, *rsa.PrivateKey, error) {
	now := e.clock.Now()
	ten := &tenancy{ID: globalOCID("tenancy", realm), Name: name, Realm: realm, HomeRegion: home, Created: now}
	e.st.Tenancies[ten.ID] = ten
	admins := &group{ID: globalOCID("group", realm), Tenancy: ten.ID, Name: AdministratorsGroup, Description: "Administrators", Created: now}
	e.st.Groups[admins.ID] = admins
	stmts := []string{"ALLOW GROUP " + AdministratorsGroup + " to manage all-resources IN TENANCY"}
	bind, _, err := e.bindPolicyLocked(ten, ten.ID, stmts)
	if err != nil {
		return nil, nil, err
	}
	p := &policy{ID: globalOCID("policy", realm), Tenancy: ten.ID, Compartment: ten.ID, Name: "Tenant Admin Policy",
		Description: "Tenant Admin Policy", Created: now, Versions: []policyVersion{{At: now, Statements: stmts, Bindings: bind}}}
	e.st.Policies[p.ID] = p
	if name == "ekm-vendor" {
		return ten, nil, nil
	}
	u, k, err := e.newUserLocked(ten, "admin", "tenancy administrator", admins)
	if err != nil {
		return nil, nil, err
	}
	ten.Admin, ten.AdminKeyPEM = u.ID, privatePEM(k)
	return ten, k, nil
}

// newUserLocked creates a user with one API key, member of g.
func (e *Emulator) newUserLocked(ten *tenancy, name, desc string, g *group) (*user, *rsa.PrivateKey, error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, err
	}
	now := e.clock.Now()
	u := &user{ID: globalOCID("user", ten.Realm), Tenancy: ten.ID, Name: name, Description: desc, Created: now,
		APIKeys: []*apiKey{{Fingerprint: Fingerprint(&k.PublicKey), PublicPEM: publicPEM(&k.PublicKey), Created: now}}}
	e.st.Users[u.ID] = u
	if g != nil {
		m := &membership{ID: globalOCID("groupmembership", ten.Realm), Tenancy: ten.ID, User: u.ID, Group: g.ID, Created: now}
		e.st.Memberships[m.ID] = m
	}
	return u, k, nil
}

// saveLocked persists state; callers hold e.mu (or own e exclusively).
func (e *Emulator) saveLocked() error { return e.stateFile.Save(e.st) }

// Start listens and serves in the background.
func (e *Emulator) Start() error {
	if e.server != nil {
		return errors.New("oci emulator: already started")
	}
	srv, err := emukit.Serve(emukit.ServerConfig{
		Addr: e.opts.Addr, Name: "oci emulator", CommonName: "ekm OCI emulator", CA: e.ca,
		DNSNames: serverDNSNames(), Handler: e, Logger: e.log,
		BeforeServe: func() error {
			if err := e.files.Prepare("ekm-oci-emulator-"); err != nil {
				return fmt.Errorf("oci emulator: %w", err)
			}
			if err := e.files.Write("ca.pem", e.CAPEM(), 0o644); err != nil {
				return fmt.Errorf("oci emulator: %w", err)
			}
			if err := e.files.Write(vendorKeyFile, []byte(e.vendorKeyPEM()), 0o600); err != nil {
				return fmt.Errorf("oci emulator: %w", err)
			}
			return nil
		},
	})
	if err != nil {
		return err
	}
	e.server = srv
	return nil
}

const vendorKeyFile = "vendor-key.pem"

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

func (e *Emulator) dialAddr() string { return emukit.DialAddr(e.Addr()) }

// CAPEM is the emulator CA certificate in PEM.
func (e *Emulator) CAPEM() []byte { return emukit.PEMCert(e.st.CACertDER) }

// CAFile is the path of ca.pem; valid after Start.
func (e *Emulator) CAFile() string { return e.files.Path("ca.pem") }

// HTTPClient returns a client that dials the emulator for every host and
// trusts its CA (what dialoverride.NewClient(e.Addr(), e.CAFile())
// builds). Created once, so connections are reused.
func (e *Emulator) HTTPClient() *http.Client {
	e.clientOnce.Do(func() {
		c, err := dialoverride.NewClientFromPEM(e.dialAddr(), e.CAPEM())
		if err != nil {
			panic("oci emulator: " + err.Error())
		}
		e.client = c
	})
	return e.client
}

// ControlURL is the base URL of the control API.
func (e *Emulator) ControlURL() string { return "https://" + e.dialAddr() + emukit.ControlPrefix }

func (e *Emulator) vendorKeyPEM() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.st.VendorKeyPEM
}

// Vendor returns ekm's identity in the vendor tenancy: its user's API key
// (the private key also in Vendor.KeyFile after Start) and its group,
// endorsed by VendorStatements.
func (e *Emulator) Vendor() Vendor {
	e.mu.Lock()
	defer e.mu.Unlock()
	ten := e.st.Tenancies[e.st.Vendor]
	u := e.st.Users[e.st.VendorUser]
	g := e.st.Groups[e.st.VendorGroup]
	v := Vendor{Credentials: Credentials{TenancyOCID: ten.ID, TenancyName: ten.Name, UserOCID: u.ID, UserName: u.Name,
		Region: ten.HomeRegion, PrivateKeyPEM: e.st.VendorKeyPEM}, GroupOCID: g.ID, GroupName: g.Name, KeyFile: e.files.Path(vendorKeyFile)}
	if len(u.APIKeys) > 0 {
		v.Fingerprint = u.APIKeys[0].Fingerprint
	}
	return v
}

// CreateTenancy creates a customer tenancy in realm oc1 with home region
// region ("" = us-ashburn-1) and returns its administrator's API key: a
// user in the Administrators group, which the Tenant Admin Policy lets
// manage all resources.
func (e *Emulator) CreateTenancy(name, regionID string) (Credentials, error) {
	if regionID == "" {
		regionID = DefaultRegion
	}
	r := regionByID(regionID)
	if r == nil {
		return Credentials{}, fmt.Errorf("unknown region %q", regionID)
	}
	if name == "" {
		name = "customer-" + randBase32(6)
	}
	if !nameRE.MatchString(name) {
		return Credentials{}, fmt.Errorf("invalid tenancy name %q", name)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.st.Tenancies) >= 10_000 {
		return Credentials{}, errors.New("too many tenancies")
	}
	ten, k, err := e.newTenancyLocked(name, r.ID, r.Realm)
	if err != nil {
		return Credentials{}, err
	}
	if err := e.saveLocked(); err != nil {
		return Credentials{}, err
	}
	u := e.st.Users[ten.Admin]
	return Credentials{TenancyOCID: ten.ID, TenancyName: ten.Name, UserOCID: u.ID, UserName: u.Name, Region: r.ID,
		Fingerprint: Fingerprint(&k.PublicKey), PrivateKeyPEM: ten.AdminKeyPEM}, nil
}

// TenancyAdmin returns the administrator credentials of a tenancy the
// control API created.
func (e *Emulator) TenancyAdmin(tenancyOCID string) (Credentials, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ten := e.st.Tenancies[tenancyOCID]
	if ten == nil || ten.Admin == "" {
		return Credentials{}, fmt.Errorf("tenancy %q not found", tenancyOCID)
	}
	u := e.st.Users[ten.Admin]
	c := Credentials{TenancyOCID: ten.ID, TenancyName: ten.Name, UserOCID: u.ID, UserName: u.Name, Region: ten.HomeRegion, PrivateKeyPEM: ten.AdminKeyPEM}
	if len(u.APIKeys) > 0 {
		c.Fingerprint = u.APIKeys[0].Fingerprint
	}
	return c, nil
}

// Now is the emulator's current time.
func (e *Emulator) Now() time.Time { return e.clock.Now() }

// SetClock moves the emulator clock to t.
func (e *Emulator) SetClock(t time.Time) { e.clock.Set(t) }

// AdvanceClock moves the emulator clock by d.
func (e *Emulator) AdvanceClock(d time.Duration) { e.clock.Advance(d) }

// Settings returns the current settings.
func (e *Emulator) Settings() Settings {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.st.Settings
}

// SetSettings replaces the settings.
func (e *Emulator) SetSettings(s Settings) error {
	if err := s.validate(); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.st.Settings = s
	return e.saveLocked()
}

// Counters returns requests seen per operation ("kms.Encrypt",
// "kms.GetVault", "identity.CreatePolicy", ...).
func (e *Emulator) Counters() map[string]int { return e.counters.Snapshot() }

// ResetCounters zeroes the counters and empties the request log.
func (e *Emulator) ResetCounters() { e.counters.Reset(); e.reqlog.Reset() }

// Requests returns the request log (like OCI Audit), oldest first: the
// last 10,000 requests.
func (e *Emulator) Requests() []Request { return e.reqlog.Snapshot() }

// Fault is an injected failure (see emukit.Fault). Host is "" (any), a
// service ("kms", "identity") or an exact host name (a vault's crypto
// host, say); Operation a counter name ("kms.Decrypt") or a prefix ending
// in "*" ("kms.*"). Status gets OCI's error body; ErrorCode defaults by
// status (400 InvalidParameter, 401 NotAuthenticated, 404
// NotAuthorizedOrNotFound, 409 IncorrectState, 429 TooManyRequests, 500
// InternalServerError, 503 ServiceUnavailable).
type Fault = emukit.Fault

// Duration is a JSON-friendly time.Duration ("1.5s").
type Duration = emukit.Duration

// InjectFault adds a fault and returns its id.
func (e *Emulator) InjectFault(f Fault) (string, error) { return e.faults.Add(f, struct{}{}) }

// Faults lists the active faults.
func (e *Emulator) Faults() []Fault {
	l := e.faults.List()
	out := make([]Fault, 0, len(l))
	for _, fe := range l {
		out = append(out, fe.Fault)
	}
	return out
}

// RemoveFault deletes one fault; it reports whether it existed.
func (e *Emulator) RemoveFault(id string) bool { return e.faults.Remove(id) }

// ClearFaults removes all faults.
func (e *Emulator) ClearFaults() { e.faults.Clear() }

// Main runs `ekm emulate oci`: it starts the emulator, prints one JSON line
// describing how to use it, and serves until ctx is done.
func Main(ctx context.Context, opts Options, stdout io.Writer) error {
	// The control API hands out credentials without authentication.
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
	v.PrivateKeyPEM = "" // the file is enough; never print a private key
	info := map[string]any{
		"address":     e.Addr(),
		"ca_file":     e.CAFile(),
		"vendor":      v,
		"control_url": e.ControlURL(),
		"create_tenancy": fmt.Sprintf("curl --cacert %s -X POST %s/tenancies",
			emukit.ShellQuote(e.CAFile()), e.ControlURL()),
		"client": fmt.Sprintf("send every OCI host (identity.<region>.oci.oraclecloud.com, kms.<region>.oraclecloud.com, *.kms.<region>.oraclecloud.com) to %s (dial override) and trust %s",
			e.dialAddr(), e.CAFile()),
		"ekm_serve": fmt.Sprintf("ekm serve --oci-tenancy %s --oci-user %s --oci-fingerprint %s --oci-private-key-file %s --oci-group %s --oci-dial-override %s --oci-ca-file %s",
			v.TenancyOCID, v.UserOCID, v.Fingerprint, emukit.ShellQuote(v.KeyFile), v.GroupOCID, e.dialAddr(), emukit.ShellQuote(e.CAFile())),
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

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
