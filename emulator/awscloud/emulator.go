// Package awscloud is an emulator of AWS STS, IAM and KMS for ekm's tests
// and `ekm emulate aws`.
//
// It serves the production host names (sts.amazonaws.com,
// sts.<region>.amazonaws.com, iam.amazonaws.com, kms.<region>.amazonaws.com,
// their FIPS variants and the aws-cn and aws-us-gov partitions' hosts) over
// one TLS port with a CA it generates. Clients reach it by redirecting
// their TCP dials (internal/dialoverride), so the official AWS SDK for Go
// runs its production code path: SigV4 is verified on every request,
// STS and IAM speak the Query protocol, KMS JSON 1.1. Authorization
// follows AWS's evaluation of identity policies, trust policies, key
// policies and grants. A control API on the listener's own address
// creates accounts, injects faults, reads counters and the request log,
// and moves the clock. See docs/emulator-aws.md.
package awscloud

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ekm-dev/ekm/emulator/emukit"
	"github.com/ekm-dev/ekm/internal/dialoverride"
)

// Options configure an Emulator.
type Options struct {
	// Addr is the TCP listen address; "" means 127.0.0.1:0.
	Addr string
	// StateDir persists all state (CA, accounts, credentials, sessions,
	// roles, policies, keys) in StateDir/state.json and writes ca.pem
	// there. "" keeps state in memory; ca.pem goes to a temporary directory.
	StateDir string
	// Now is the base clock; nil means time.Now. The control API's clock
	// offset is applied on top of it.
	Now func() time.Time
	// Logger receives one line per request (never secrets, tokens or key
	// material); nil discards.
	Logger *slog.Logger
	// Settings overrides the persisted settings when non-nil.
	Settings *Settings
}

// Settings are run-time switches (control API: GET/PUT /settings).
type Settings struct {
	Quotas Quotas `json:"quotas"`
}

// Quotas are KMS request quotas, per second, per caller account and
// region (cross-account calls count against the caller's account).
type Quotas struct {
	Disabled bool `json:"disabled"`
	// Symmetric is the shared "cryptographic operations (symmetric)"
	// quota (Encrypt, Decrypt, GenerateDataKey*, ReEncrypt,
	// GenerateRandom) for regions not in SymmetricByRegion.
	Symmetric         int            `json:"symmetric"`
	SymmetricByRegion map[string]int `json:"symmetric_by_region"`
	// RSA is the shared quota of cryptographic operations on RSA keys.
	RSA int `json:"rsa"`
	// Operations are per-API quotas (e.g. "DescribeKey": 2000); an
	// operation not listed is not throttled.
	Operations map[string]int `json:"operations"`
}

// DefaultSettings returns AWS's published default quotas
// (https://docs.aws.amazon.com/kms/latest/developerguide/requests-per-second.html).
func DefaultSettings() Settings {
	by := map[string]int{}
	for _, r := range []string{"us-east-2", "ap-southeast-1", "ap-southeast-2", "ap-northeast-1", "eu-central-1", "eu-west-2"} {
		by[r] = 20_000
	}
	for _, r := range []string{"us-east-1", "us-west-2", "eu-west-1"} {
		by[r] = 100_000
	}
	return Settings{Quotas: Quotas{Symmetric: 10_000, SymmetricByRegion: by, RSA: 500,
		Operations: map[string]int{"DescribeKey": 2000, "GetKeyPolicy": 1000, "CreateKey": 5, "PutKeyPolicy": 15, "CreateGrant": 50}}}
}

func (s *Settings) validate() error {
	q := &s.Quotas
	check := func(name string, n int) error {
		if n < 1 || n > 10_000_000 {
			return fmt.Errorf("quota %s must be 1..10000000", name)
		}
		return nil
	}
	if err := check("symmetric", q.Symmetric); err != nil {
		return err
	}
	if err := check("rsa", q.RSA); err != nil {
		return err
	}
	for r, n := range q.SymmetricByRegion {
		if !isKnownRegion(r) {
			return fmt.Errorf("unknown region %q", r)
		}
		if err := check(r, n); err != nil {
			return err
		}
	}
	for op, n := range q.Operations {
		if kmsOps[op] == nil {
			return fmt.Errorf("unknown KMS operation %q", op)
		}
		if err := check(op, n); err != nil {
			return err
		}
	}
	return nil
}

// Credentials are long-term credentials of a root user or IAM user.
type Credentials struct {
	AccountID       string `json:"account_id"`
	Partition       string `json:"partition"`
	ARN             string `json:"arn"`
	UserName        string `json:"user_name,omitempty"` // "" for the root user
	AccessKeyID     string `json:"access_key_id"`
	SecretAccessKey string `json:"secret_access_key"`
}

// VendorUserName is the IAM user ekm runs as in the vendor's account.
const VendorUserName = "ekm"

// VendorPolicy is the vendor user's identity policy: it may assume any
// role (customers' trust policies decide which).
const VendorPolicy = `{"Version":"2012-10-17","Statement":[{"Sid":"AssumeCustomerRoles","Effect":"Allow","Action":"sts:AssumeRole","Resource":"*"}]}`

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
			return nil, fmt.Errorf("aws emulator: settings: %w", err)
		}
	}
	e := &Emulator{opts: opts, clock: emukit.NewClock(opts.Now), files: emukit.NewFiles(opts.StateDir), log: opts.Logger}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	var st *state
	if opts.StateDir != "" {
		e.stateFile.Path = filepath.Join(opts.StateDir, stateFileName)
		if err := mkdirPrivate(opts.StateDir); err != nil {
			return nil, fmt.Errorf("aws emulator: state dir: %w", err)
		}
		var loaded state
		found, err := e.stateFile.Load(&loaded)
		if err != nil {
			return nil, fmt.Errorf("aws emulator: load state: %w", err)
		}
		if found {
			if loaded.Version != stateVersion {
				return nil, fmt.Errorf("aws emulator: %s has version %d, want %d", stateFileName, loaded.Version, stateVersion)
			}
			loaded.normalize()
			st = &loaded
		}
	}
	if st == nil {
		var err error
		if st, err = e.freshState(); err != nil {
			return nil, fmt.Errorf("aws emulator: init: %w", err)
		}
	}
	if opts.Settings != nil {
		st.Settings = *opts.Settings
	}
	if err := st.Settings.validate(); err != nil {
		return nil, fmt.Errorf("aws emulator: settings: %w", err)
	}
	ca, err := emukit.ParseCA(st.CACertDER, st.CAKeyDER)
	if err != nil {
		return nil, fmt.Errorf("aws emulator: %w", err)
	}
	e.ca, e.st = ca, st
	if err := e.saveLocked(); err != nil {
		return nil, fmt.Errorf("aws emulator: save state: %w", err)
	}
	return e, nil
}

func (e *Emulator) freshState() (*state, error) {
	st := &state{Version: stateVersion, Settings: DefaultSettings()}
	st.normalize()
	var err error
	if st.CACertDER, st.CAKeyDER, err = emukit.NewCA("ekm AWS emulator CA", time.Now()); err != nil {
		return nil, err
	}
	now := e.clock.Now()
	v := newAccount("aws", now)
	st.Accounts[v.ID] = v
	st.Vendor = v.ID
	u := &user{Name: VendorUserName, ID: newUniqueID("AIDA"), Path: "/", Created: now,
		Inline: map[string]string{"ekm-assume-customer-roles": VendorPolicy}}
	v.Users[strings.ToLower(u.Name)] = u
	k := &accessKey{ID: newUniqueID("AKIA"), Secret: newSecretKey(), Account: v.ID, User: u.Name, Created: now}
	st.AccessKeys[k.ID] = k
	return st, nil
}

func newAccount(partitionID string, now time.Time) *account {
	a := &account{ID: newAccountID(), Partition: partitionID, Created: now}
	a.normalize()
	return a
}

// saveLocked persists state; callers hold e.mu (or own e exclusively).
func (e *Emulator) saveLocked() error { return e.stateFile.Save(e.st) }

// Start listens and serves in the background.
func (e *Emulator) Start() error {
	if e.server != nil {
		return errors.New("aws emulator: already started")
	}
	srv, err := emukit.Serve(emukit.ServerConfig{
		Addr: e.opts.Addr, Name: "aws emulator", CommonName: "ekm AWS emulator", CA: e.ca,
		DNSNames: serverDNSNames(), Handler: e, Logger: e.log,
		BeforeServe: func() error {
			if err := e.files.Prepare("ekm-aws-emulator-"); err != nil {
				return fmt.Errorf("aws emulator: %w", err)
			}
			if err := e.files.Write("ca.pem", e.CAPEM(), 0o644); err != nil {
				return fmt.Errorf("aws emulator: %w", err)
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
			panic("aws emulator: " + err.Error())
		}
		e.client = c
	})
	return e.client
}

// ControlURL is the base URL of the control API.
func (e *Emulator) ControlURL() string { return "https://" + e.dialAddr() + emukit.ControlPrefix }

// Vendor returns the credentials of ekm's own IAM user ("ekm") in the
// vendor account; its identity policy (VendorPolicy) allows
// sts:AssumeRole on any role.
func (e *Emulator) Vendor() Credentials {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, k := range sortedKeys(e.st.AccessKeys) {
		ak := e.st.AccessKeys[k]
		if ak.Account == e.st.Vendor && ak.User == VendorUserName {
			return e.credentialsLocked(ak)
		}
	}
	return Credentials{}
}

func (e *Emulator) credentialsLocked(ak *accessKey) Credentials {
	a := e.st.Accounts[ak.Account]
	c := Credentials{AccountID: a.ID, Partition: a.Partition, AccessKeyID: ak.ID, SecretAccessKey: ak.Secret, UserName: ak.User}
	if ak.User == "" {
		c.ARN = rootARN(a)
	} else if u := a.Users[strings.ToLower(ak.User)]; u != nil {
		c.ARN = userARN(a, u)
	}
	return c
}

// CreateAccount creates a customer account in the aws partition and
// returns its root user's access key.
func (e *Emulator) CreateAccount() (Credentials, error) { return e.CreateAccountIn("aws") }

// CreateAccountIn creates an account in a partition (aws, aws-cn,
// aws-us-gov); its credentials work only against that partition's hosts.
func (e *Emulator) CreateAccountIn(partitionID string) (Credentials, error) {
	if partitionByID(partitionID) == nil {
		return Credentials{}, fmt.Errorf("unknown partition %q", partitionID)
	}
	now := e.clock.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.st.Accounts) >= 10_000 {
		return Credentials{}, errors.New("too many accounts")
	}
	a := newAccount(partitionID, now)
	for e.st.Accounts[a.ID] != nil {
		a.ID = newAccountID()
	}
	e.st.Accounts[a.ID] = a
	k := &accessKey{ID: newUniqueID("AKIA"), Secret: newSecretKey(), Account: a.ID, Created: now}
	e.st.AccessKeys[k.ID] = k
	if err := e.saveLocked(); err != nil {
		return Credentials{}, err
	}
	return e.credentialsLocked(k), nil
}

// CreateUser creates an IAM user with an access key in an account, with
// an optional inline identity policy (named "policy").
func (e *Emulator) CreateUser(accountID, name, policy string) (Credentials, error) {
	if !iamNameRE.MatchString(name) || len(name) > 64 {
		return Credentials{}, fmt.Errorf("invalid user name %q", name)
	}
	if policy != "" {
		if _, err := parsePolicy(policy, identityPolicy); err != nil {
			return Credentials{}, fmt.Errorf("policy: %w", err)
		}
	}
	now := e.clock.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	a := e.st.Accounts[accountID]
	if a == nil {
		return Credentials{}, fmt.Errorf("account %q not found", accountID)
	}
	if a.Users[strings.ToLower(name)] != nil {
		return Credentials{}, fmt.Errorf("user %q already exists", name)
	}
	u := &user{Name: name, ID: newUniqueID("AIDA"), Path: "/", Created: now, Inline: map[string]string{}}
	if policy != "" {
		u.Inline["policy"] = policy
	}
	a.Users[strings.ToLower(name)] = u
	k := &accessKey{ID: newUniqueID("AKIA"), Secret: newSecretKey(), Account: a.ID, User: name, Created: now}
	e.st.AccessKeys[k.ID] = k
	if err := e.saveLocked(); err != nil {
		return Credentials{}, err
	}
	return e.credentialsLocked(k), nil
}

// RegisterIssuer sets the JWKS that verifies web identity tokens from an
// OIDC issuer (AWS would fetch it from the issuer's discovery document).
// The account still needs an IAM OIDC provider for the issuer
// (CreateOpenIDConnectProvider) and a role trusting it.
func (e *Emulator) RegisterIssuer(issuer string, jwks []byte) error {
	if !strings.HasPrefix(issuer, "https://") || len(issuer) > 255 {
		return errors.New("issuer must be an https URL of at most 255 characters")
	}
	if _, err := parseJWKS(jwks); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.st.Issuers[strings.TrimSuffix(issuer, "/")] = string(jwks)
	return e.saveLocked()
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

// Counters returns requests seen per operation ("kms.Decrypt",
// "sts.AssumeRole", "iam.CreateRole", ...).
func (e *Emulator) Counters() map[string]int { return e.counters.Snapshot() }

// ResetCounters zeroes the counters and empties the request log.
func (e *Emulator) ResetCounters() { e.counters.Reset(); e.reqlog.Reset() }

// Requests returns the request log (CloudTrail-like), oldest first: the
// last 10,000 STS, IAM and KMS requests.
func (e *Emulator) Requests() []Request { return e.reqlog.Snapshot() }

// Fault is an injected failure (see emukit.Fault). Host is "" (any), a
// service ("sts", "iam", "kms") or an exact host name; Operation a counter
// name ("kms.Decrypt") or a prefix ending in "*" ("kms.*"). Status gets a
// service-shaped error body: ErrorCode defaults by status (KMS: 400
// ValidationException, 429/400 throttling via error_code
// ThrottlingException, 500 KMSInternalException, 503
// DependencyTimeoutException; STS/IAM: ServiceUnavailable, Throttling...).
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

// Main runs `ekm emulate aws`: it starts the emulator, prints one JSON
// line describing how to use it, and serves until ctx is done.
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
	info := map[string]any{
		"address":     e.Addr(),
		"ca_file":     e.CAFile(),
		"vendor":      e.Vendor(),
		"control_url": e.ControlURL(),
		"create_account": fmt.Sprintf("curl --cacert %s -X POST %s/accounts",
			emukit.ShellQuote(e.CAFile()), e.ControlURL()),
		"client": fmt.Sprintf("send every AWS host (sts.*, iam.*, kms.*.amazonaws.com) to %s (dial override) and trust %s",
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

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
