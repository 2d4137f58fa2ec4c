// Package oci is the kms provider for customer keys in OCI Vault.
//
// ekm's identity is the operator's own OCI principal: an API-key user
// (tenancy, user, fingerprint and private key file), an instance principal
// or a resource principal. Customers admit its group to their tenancy
// (Define/Admit policies in their root compartment: docs/oci.md); the
// vendor's tenancy endorses it (Endorse … in any-tenancy). No customer
// secret is ever stored.
//
// For each registered key ekm reads the vault (GetVault on
// kms.<region>.<domain>, the region's host from ekm's own table) to learn
// its crypto and management endpoints — never from customer input — and
// accepts only https://<prefix>-crypto.kms.<region>.<domain> and
// …-management… hosts of the registered region. Wraps are Encrypt calls with
// the AAD as associatedData (kms.AAD.Context: ekm:org, ekm:project,
// ekm:version), recording the key version OCI used; unwraps are Decrypt
// calls naming that version. The official OCI Go SDK carries every call,
// its HTTP client the one Config gives (internal/dialoverride), its circuit
// breaker and retries off (ekm retries transient failures itself, within
// its timeout).
//
// Every failure is a *kms.Error whose Code (constants in this package) and
// Step name the onboarding step the customer has to fix; see docs/oci.md.
// OCI answers 404 NotAuthorizedOrNotFound alike for a missing policy and a
// missing resource; ekm then reads the vault and the key to tell what it
// can.
package oci

import (
	"context"
	"crypto/md5"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/oracle/oci-go-sdk/v65/common"
	"github.com/oracle/oci-go-sdk/v65/common/auth"
	"github.com/oracle/oci-go-sdk/v65/keymanagement"

	"github.com/ekm-dev/ekm/kms"
)

// Algorithm is the label of wraps this driver makes: OCI Vault Encrypt
// (AES-256-GCM) with ekm's associated data (kms.AAD.Context). The KEK
// version recorded with each wrap is the key version OCID OCI used.
const Algorithm = "OCI-AES-256-GCM+ekm-ad-v1"

// Ways ekm authenticates to OCI (Config.Auth).
const (
	AuthAPIKey            = "api-key"
	AuthInstancePrincipal = "instance-principal"
	AuthResourcePrincipal = "resource-principal"
)

// Defaults for Config fields left zero.
const (
	DefaultTimeout          = 30 * time.Second
	DefaultMaxAttempts      = 3
	DefaultMaxBackoff       = 2 * time.Second
	DefaultMaxResponseBytes = 1 << 20
	maxKeyFileSize          = 64 << 10
)

// Config configures the driver.
type Config struct {
	// Auth is how ekm signs its requests: AuthAPIKey (default),
	// AuthInstancePrincipal or AuthResourcePrincipal (the SDK's providers,
	// which read the instance metadata service or the OCI_RESOURCE_PRINCIPAL_*
	// environment).
	Auth string
	// TenancyOCID is ekm's tenancy: what customers Define as ekm's
	// tenancy.
	TenancyOCID string
	// GroupOCID is the group (an ocid1.group. OCID) or, for instance and
	// resource principals, the dynamic group (ocid1.dynamicgroup.) that
	// the vendor tenancy endorses and customers admit.
	GroupOCID string
	// UserOCID, Fingerprint and PrivateKeyFile are the API-key user's
	// signing identity; PrivateKeyPassphrase decrypts an encrypted key.
	// The key is read from the file once, at start.
	UserOCID             string
	Fingerprint          string
	PrivateKeyFile       string
	PrivateKeyPassphrase string
	// Realms whose keys may be registered (default: oc1, the commercial
	// realm). ekm's principal exists in one realm: other realms' tenancies
	// cannot admit it.
	Realms []string
	// HTTPClient carries every request to OCI. Nil means a default client.
	// Use dialoverride.NewClient to reach the emulator: the production
	// code path stays the same. Redirects are never followed.
	HTTPClient *http.Client
	// Timeout bounds one provider call including retries (default 30s).
	Timeout time.Duration
	// MaxAttempts per OCI request, the first included (default 3): 429,
	// 5xx and connection errors are retried with jittered backoff of at
	// most MaxBackoff (default 2s).
	MaxAttempts int
	MaxBackoff  time.Duration
	// MaxResponseBytes bounds every response body (default 1 MiB).
	MaxResponseBytes int64
	// Logger for the identity found at start (default: discard).
	Logger *slog.Logger
}

// Driver opens OCI Vault keys. It is safe for concurrent use.
type Driver struct {
	cfg    Config
	realms map[string]bool
	cp     common.ConfigurationProvider
	http   common.HTTPRequestDispatcher
	log    *slog.Logger

	mu     sync.Mutex
	vaults map[string]*vaultConn                   // by vault OCID
	vcs    map[string]keymanagement.KmsVaultClient // by region id
	// reading coalesces concurrent reads of one vault (OCI throttles
	// management reads at 10 per second per tenancy).
	reading map[string]*vaultRead
}

// vaultRead is one GetVault in flight.
type vaultRead struct {
	done chan struct{}
	vc   *vaultConn
	err  error
}

// vaultConn is one vault's endpoints and clients, from GetVault.
type vaultConn struct {
	crypto keymanagement.KmsCryptoClient
	mgmt   keymanagement.KmsManagementClient
}

// maxCached bounds the vaults the driver keeps clients for.
const maxCached = 10000

var (
	groupOCIDRE   = regexp.MustCompile(`^ocid1\.(group|dynamicgroup)\.oc[0-9]{1,3}\.\.[a-z0-9]{1,64}$`)
	tenancyOCIDRE = regexp.MustCompile(`^ocid1\.tenancy\.oc[0-9]{1,3}\.\.[a-z0-9]{1,64}$`)
	userOCIDRE    = regexp.MustCompile(`^ocid1\.user\.oc[0-9]{1,3}\.\.[a-z0-9]{1,64}$`)
	fingerprintRE = regexp.MustCompile(`^[0-9a-f]{2}(:[0-9a-f]{2}){15}$`)
)

// NewDriver checks the configuration, reads ekm's signing key and returns
// a driver. It makes no network call for API-key users; the SDK's instance
// and resource principal providers read their metadata when built.
func NewDriver(cfg Config) (*Driver, error) {
	d := &Driver{realms: map[string]bool{}, vaults: map[string]*vaultConn{}, vcs: map[string]keymanagement.KmsVaultClient{},
		reading: map[string]*vaultRead{}, log: cfg.Logger}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if cfg.Auth == "" {
		cfg.Auth = AuthAPIKey
	}
	if len(cfg.Realms) == 0 {
		cfg.Realms = []string{"oc1"}
	}
	for _, r := range cfg.Realms {
		if !KnownRealm(r) {
			return nil, fmt.Errorf("oci: unknown realm %q", r)
		}
		d.realms[r] = true
	}
	if !tenancyOCIDRE.MatchString(cfg.TenancyOCID) {
		return nil, fmt.Errorf("oci: the tenancy OCID %q is not ocid1.tenancy.<realm>..<id>", cfg.TenancyOCID)
	}
	if !groupOCIDRE.MatchString(cfg.GroupOCID) {
		return nil, fmt.Errorf("oci: the group OCID %q is not ocid1.group.<realm>..<id> (or ocid1.dynamicgroup.… for instance and resource principals): customers' Admit statements name it", cfg.GroupOCID)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.MaxResponseBytes <= 0 {
		cfg.MaxResponseBytes = DefaultMaxResponseBytes
	}
	switch cfg.Auth {
	case AuthAPIKey:
		cp, err := apiKeyProvider(cfg)
		if err != nil {
			return nil, err
		}
		d.cp = cp
	case AuthInstancePrincipal:
		cp, err := auth.InstancePrincipalConfigurationProvider()
		if err != nil {
			return nil, fmt.Errorf("oci: instance principal: %w", err)
		}
		d.cp = cp
	case AuthResourcePrincipal:
		cp, err := auth.ResourcePrincipalConfigurationProvider()
		if err != nil {
			return nil, fmt.Errorf("oci: resource principal: %w", err)
		}
		d.cp = cp
	default:
		return nil, fmt.Errorf("oci: unknown auth %q (api-key, instance-principal or resource-principal)", cfg.Auth)
	}
	if cfg.Auth != AuthAPIKey && strings.HasPrefix(cfg.GroupOCID, "ocid1.group.") {
		d.log.Warn("oci: instance and resource principals belong to dynamic groups; customers' Admit statements must name a dynamic group", "group", cfg.GroupOCID)
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 2 * time.Minute}
	}
	nc := *hc
	nc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	d.http = boundedClient{c: &nc, max: cfg.MaxResponseBytes}
	d.cfg = cfg
	d.log.Info("oci: ekm's identity", "auth", cfg.Auth, "tenancy", cfg.TenancyOCID, "group", cfg.GroupOCID, "user", cfg.UserOCID, "fingerprint", cfg.Fingerprint)
	return d, nil
}

// apiKeyProvider reads the private key file and checks that the
// configured fingerprint is the key's (OCI would refuse every request).
func apiKeyProvider(cfg Config) (common.ConfigurationProvider, error) {
	if !userOCIDRE.MatchString(cfg.UserOCID) {
		return nil, fmt.Errorf("oci: the user OCID %q is not ocid1.user.<realm>..<id>", cfg.UserOCID)
	}
	if !fingerprintRE.MatchString(cfg.Fingerprint) {
		return nil, fmt.Errorf("oci: the fingerprint %q is not 16 colon-separated lower-case hex bytes", cfg.Fingerprint)
	}
	if cfg.PrivateKeyFile == "" {
		return nil, errors.New("oci: the API key's private key file is required")
	}
	pemData, err := readBounded(cfg.PrivateKeyFile, maxKeyFileSize)
	if err != nil {
		return nil, fmt.Errorf("oci: private key file: %w", err)
	}
	var pass *string
	if cfg.PrivateKeyPassphrase != "" {
		pass = &cfg.PrivateKeyPassphrase
	}
	k, err := common.PrivateKeyFromBytes(pemData, pass)
	if err != nil {
		return nil, fmt.Errorf("oci: private key file %s: %w", cfg.PrivateKeyFile, err)
	}
	if fp := Fingerprint(&k.PublicKey); fp != cfg.Fingerprint {
		return nil, fmt.Errorf("oci: the private key's fingerprint is %s, not the configured %s: OCI would refuse every request", fp, cfg.Fingerprint)
	}
	// The region is set per client (regionProvider); this one only
	// satisfies the SDK's checks.
	return common.NewRawConfigurationProvider(cfg.TenancyOCID, cfg.UserOCID, "us-ashburn-1", cfg.Fingerprint, string(pemData), pass), nil
}

// Fingerprint is OCI's API key fingerprint of a public key (MD5 of its DER
// SubjectPublicKeyInfo, colon-separated lower-case hex).
func Fingerprint(pub *rsa.PublicKey) string {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	sum := md5.Sum(der)
	var b strings.Builder
	for i, c := range sum {
		if i > 0 {
			b.WriteByte(':')
		}
		fmt.Fprintf(&b, "%02x", c)
	}
	return b.String()
}

func readBounded(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("larger than %d bytes", max)
	}
	return b, nil
}

// regionProvider is ekm's identity with the region of the client it
// signs for (the SDK checks a provider has one).
type regionProvider struct {
	common.ConfigurationProvider
	region string
}

func (p regionProvider) Region() (string, error) { return p.region, nil }

func (*Driver) Type() string { return Type }

// Identity keys of the Spec: what customers' Define statements need.
const (
	IdentityTenancyOCID = "tenancy_ocid"
	IdentityGroupOCID   = "group_ocid"
)

// Spec describes the oci type with ekm's tenancy and group.
func (d *Driver) Spec() kms.Spec {
	s := Spec()
	s.Identity = map[string]string{IdentityTenancyOCID: d.cfg.TenancyOCID, IdentityGroupOCID: d.cfg.GroupOCID}
	return s
}

// Check validates and normalises registration params (docs/oci.md). It
// makes no network call.
func (d *Driver) Check(_ string, p kms.Params) (kms.Params, error) {
	out, _, err := checkParams(p, d.realms)
	return out, err
}

// Open returns the provider for params that pass Check.
func (d *Driver) Open(orgID string, p kms.Params) (kms.Provider, error) {
	return d.open(orgID, p)
}

func (d *Driver) open(orgID string, p kms.Params) (*Provider, error) {
	_, ps, err := checkParams(p, d.realms)
	if err != nil {
		return nil, err
	}
	return &Provider{d: d, p: ps, org: orgID}, nil
}

// ---- clients ----

// prepare gives an SDK client ekm's transport and no retries or circuit
// breaker of its own, and pins it to host: a request to any other host
// fails before it is signed.
func (d *Driver) prepare(bc *common.BaseClient, host string) {
	bc.HTTPClient = d.http
	bc.Configuration.CircuitBreaker = nil
	p := common.NoRetryPolicy()
	bc.Configuration.RetryPolicy = &p
	bc.Host = "https://" + host
	bc.Interceptor = func(r *http.Request) error {
		if r.URL.Scheme != "https" || r.URL.Host != host || r.URL.User != nil {
			return &setupError{fmt.Errorf("request to %s://%s refused: the client is pinned to %s", r.URL.Scheme, r.URL.Host, host)}
		}
		return nil
	}
}

// vaultClient is the region's vault API client.
func (d *Driver) vaultClient(r region) (keymanagement.KmsVaultClient, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c, ok := d.vcs[r.id]; ok {
		return c, nil
	}
	c, err := keymanagement.NewKmsVaultClientWithConfigurationProvider(regionProvider{d.cp, r.id})
	if err != nil {
		return c, &setupError{err}
	}
	d.prepare(&c.BaseClient, r.kmsHost())
	d.vcs[r.id] = c
	return c, nil
}

// endpointHost checks that an endpoint OCI gave for a vault is
// https://<prefix>-<kind>.kms.<region>.<domain> of the registered region,
// with nothing else, and returns its host.
func endpointHost(endpoint, kind string, r region) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme != "https" || u.User != nil || u.Port() != "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "", fmt.Errorf("the vault's %s endpoint %q is not a bare https host", kind, truncate(endpoint, 200))
	}
	prefix, ok := strings.CutSuffix(u.Host, "-"+kind+".kms."+r.id+"."+r.domain())
	if !ok || !endpointPrefixRE.MatchString(prefix) {
		return "", fmt.Errorf("the vault's %s endpoint %q is not an OCI Vault host of %s", kind, truncate(u.Host, 200), r.id)
	}
	return u.Host, nil
}

var endpointPrefixRE = regexp.MustCompile(`^[a-z0-9]{1,63}$`)

// endpointError marks a vault endpoint that is not OCI's.
type endpointError struct{ err error }

func (e *endpointError) Error() string { return e.err.Error() }

// vault returns the clients of the registered vault, reading the vault
// (GetVault) unless known; fresh reads it anyway (preflight, diagnosis).
// Concurrent reads of one vault share one GetVault.
func (p *Provider) vault(ctx context.Context, fresh bool) (*vaultConn, error) {
	d := p.d
	id := p.p.vault.raw
	d.mu.Lock()
	if vc := d.vaults[id]; vc != nil && !fresh {
		d.mu.Unlock()
		return vc, nil
	}
	if r := d.reading[id]; r != nil {
		d.mu.Unlock()
		select {
		case <-r.done:
			return r.vc, r.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	r := &vaultRead{done: make(chan struct{})}
	d.reading[id] = r
	d.mu.Unlock()
	// The shared read ends for every waiter even if readVault panics (the
	// call layer recovers it): a read left in d.reading would make every
	// later call on this vault wait out its timeout until a restart.
	completed := false
	defer func() {
		if !completed {
			r.vc, r.err = nil, errors.New("oci: reading the vault failed unexpectedly")
		}
		d.mu.Lock()
		delete(d.reading, id)
		if r.err == nil {
			if len(d.vaults) >= maxCached {
				clear(d.vaults)
			}
			d.vaults[id] = r.vc
		}
		d.mu.Unlock()
		close(r.done)
	}()
	r.vc, r.err = p.readVault(ctx)
	completed = true
	return r.vc, r.err
}

// readVault reads the vault and builds the clients of its endpoints.
func (p *Provider) readVault(ctx context.Context) (*vaultConn, error) {
	d := p.d
	c, err := d.vaultClient(p.p.region)
	if err != nil {
		return nil, err
	}
	resp, err := c.GetVault(sdk(ctx), keymanagement.GetVaultRequest{VaultId: &p.p.vault.raw, OpcRequestId: record(ctx), RequestMetadata: noRetry()})
	if err != nil {
		return nil, &vaultError{err}
	}
	if resp.Id == nil || *resp.Id != p.p.vault.raw || resp.CryptoEndpoint == nil || resp.ManagementEndpoint == nil {
		return nil, errUnexpected
	}
	if resp.LifecycleState != keymanagement.VaultLifecycleStateActive && resp.LifecycleState != keymanagement.VaultLifecycleStateUpdating {
		return nil, &judgement{&kms.Error{Class: kms.Revoked, Code: CodeVaultNotActive, Step: StepKey,
			Message: fmt.Sprintf("vault %s is %s, not ACTIVE; its keys cannot be used (onboarding step 1)", p.p.vault.raw, resp.LifecycleState)}}
	}
	ch, err := endpointHost(*resp.CryptoEndpoint, "crypto", p.p.region)
	if err != nil {
		return nil, &endpointError{err}
	}
	mh, err := endpointHost(*resp.ManagementEndpoint, "management", p.p.region)
	if err != nil {
		return nil, &endpointError{err}
	}
	rp := regionProvider{d.cp, p.p.region.id}
	cc, err := keymanagement.NewKmsCryptoClientWithConfigurationProvider(rp, "https://"+ch)
	if err != nil {
		return nil, &setupError{err}
	}
	d.prepare(&cc.BaseClient, ch)
	mc, err := keymanagement.NewKmsManagementClientWithConfigurationProvider(rp, "https://"+mh)
	if err != nil {
		return nil, &setupError{err}
	}
	d.prepare(&mc.BaseClient, mh)
	return &vaultConn{crypto: cc, mgmt: mc}, nil
}

func noRetry() common.RequestMetadata {
	p := common.NoRetryPolicy()
	return common.RequestMetadata{RetryPolicy: &p}
}

// ---- contexts ----

// liveCtxKey carries the caller's context through the SDK.
type liveCtxKey struct{}

// sdk returns the context to hand the OCI SDK: ctx's values without its
// deadline or cancellation, ctx itself riding along for the HTTP request
// (boundedClient.Do puts it back). The SDK's common.Retry returns as soon as
// its context is done while its worker goroutine still writes the response
// (a data race in v65.131.0); with a context that is never done it always
// waits for the worker, whose HTTP request is bounded by ctx.
func sdk(ctx context.Context) context.Context {
	return context.WithValue(context.WithoutCancel(ctx), liveCtxKey{}, ctx)
}

// ---- bounded HTTP ----

// boundedClient caps every response body so that neither the SDK nor the
// diagnosis ever reads an unbounded amount from the network.
type boundedClient struct {
	c   *http.Client
	max int64
}

var errBodyTooLarge = errors.New("response body exceeds the size limit")

func (b boundedClient) Do(req *http.Request) (*http.Response, error) {
	if live, ok := req.Context().Value(liveCtxKey{}).(context.Context); ok {
		req = req.WithContext(live)
	}
	resp, err := b.c.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.ContentLength > b.max {
		resp.Body.Close()
		return nil, errBodyTooLarge
	}
	resp.Body = &limitedBody{rc: resp.Body, left: b.max}
	return resp, nil
}

type limitedBody struct {
	rc   io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		var one [1]byte
		n, err := b.rc.Read(one[:])
		if n > 0 {
			return 0, errBodyTooLarge
		}
		return 0, err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
