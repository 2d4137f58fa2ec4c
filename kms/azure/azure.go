// Package azure is the kms provider for customer keys in Azure Key Vault and
// Managed HSM.
//
// ekm authenticates as one multi-tenant Microsoft Entra application (the
// operator's) to each customer's tenant. The customer grants that app's
// service principal encrypt/decrypt/read on one RSA key named for its org;
// ekm never holds a customer secret. The driver keeps one credential per
// customer tenant (tokens are cached by the SDK inside it) and one Key Vault
// client per vault.
//
// Every failure is a *kms.Error whose Code (constants in this package) and
// Step name the onboarding step the customer has to fix; see docs/azure.md.
package azure

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"

	"github.com/ekm-dev/ekm/kms"
)

// Type is the external key type served by this package.
const Type = "azure"

// Algorithm is the label of wraps this driver makes: Key Vault's
// RSA-OAEP-256 over the project key followed by its AAD tag (see
// provider.go). LegacyAlgorithm labels wraps made before the AAD binding
// (the bare 32-byte key); they stay readable and are rewrapped in the
// background (kms.Spec.Algorithm).
const (
	Algorithm       = "RSA-OAEP-256+ekm-aad-v1"
	LegacyAlgorithm = "RSA-OAEP-256"
)

// Defaults for Config fields left zero.
const (
	DefaultTimeout       = 30 * time.Second
	DefaultTryTimeout    = 10 * time.Second
	DefaultMaxRetries    = 3
	DefaultRetryDelay    = 500 * time.Millisecond
	DefaultMaxRetryDelay = 8 * time.Second
	// DefaultMaxResponseBytes bounds every response body read from Entra or
	// Key Vault.
	DefaultMaxResponseBytes = 1 << 20
)

// Config configures the driver. Exactly one of ClientSecret,
// CertificateFile or FederatedTokenFile must be set. Nothing is read from
// the environment.
type Config struct {
	// ClientID is the application (client) id of the operator's multi-tenant
	// Entra app.
	ClientID string
	// ClientSecret is a client secret of that app.
	ClientSecret string
	// CertificateFile is a PEM or PKCS#12 (PFX) file holding the app's
	// certificate and private key; CertificatePassword decrypts a PFX.
	CertificateFile     string
	CertificatePassword string
	// FederatedTokenFile is a file holding a federated token (e.g. a
	// Kubernetes service account token for workload identity). It is re-read
	// whenever a new Entra token is needed, so rotation needs no restart.
	FederatedTokenFile string

	// HTTPClient carries every request to Entra and Key Vault. Nil means a
	// client with Go's default transport. Redirects are never followed.
	HTTPClient *http.Client

	// Clouds the operator's app is registered in; vaults in other clouds are
	// refused at registration. Nil means CloudPublic only. The Entra
	// authority is always the one of the vault's cloud.
	Clouds []Cloud

	// Timeout bounds one provider call including retries (default 30s).
	Timeout time.Duration
	// Retry bounds retries of throttled (429), 408 and 5xx responses and
	// connection failures, on both Key Vault and Entra.
	Retry RetryConfig
	// MaxResponseBytes bounds every response body (default 1 MiB).
	MaxResponseBytes int64
	// Now is the clock for key expiry checks (default time.Now).
	Now func() time.Time
}

// RetryConfig maps onto azcore's policy.RetryOptions. The azcore retry
// policy honours Retry-After / retry-after-ms / x-ms-retry-after-ms; when the
// server asks for a delay longer than MaxRetryDelay it gives up at once
// instead of waiting, so a throttled vault never holds a caller for long.
type RetryConfig struct {
	// MaxRetries is the number of retries after the first attempt: 0 means
	// the default (3), a negative value disables retries.
	MaxRetries int
	// RetryDelay is the base of the exponential backoff (with jitter).
	RetryDelay time.Duration
	// MaxRetryDelay caps the backoff and any server-requested delay.
	MaxRetryDelay time.Duration
	// TryTimeout bounds a single attempt.
	TryTimeout time.Duration
}

func (r RetryConfig) options() policy.RetryOptions {
	o := policy.RetryOptions{
		MaxRetries:    int32(r.MaxRetries),
		RetryDelay:    r.RetryDelay,
		MaxRetryDelay: r.MaxRetryDelay,
		TryTimeout:    r.TryTimeout,
	}
	switch {
	case r.MaxRetries == 0:
		o.MaxRetries = DefaultMaxRetries
	case r.MaxRetries < 0:
		o.MaxRetries = -1 // azcore: negative means no retries
	}
	if o.RetryDelay <= 0 {
		o.RetryDelay = DefaultRetryDelay
	}
	if o.MaxRetryDelay <= 0 {
		o.MaxRetryDelay = DefaultMaxRetryDelay
	}
	if o.TryTimeout <= 0 {
		o.TryTimeout = DefaultTryTimeout
	}
	return o
}

// Driver opens Azure Key Vault keys. It is safe for concurrent use.
type Driver struct {
	clientID string
	newCred  func(tenant string, opts azcore.ClientOptions) (azcore.TokenCredential, error)
	// precheck, if set, verifies the server's credential material before a
	// token request so that its failure is reported as the operator's.
	precheck  func() error
	transport policy.Transporter
	retry     policy.RetryOptions
	clouds    map[Cloud]bool
	timeout   time.Duration
	now       func() time.Time

	mu      sync.Mutex
	creds   map[credKey]*tenantCredential
	clients map[clientKey]*azkeys.Client
}

type credKey struct {
	cloud  Cloud
	tenant string
}

type clientKey struct {
	tenant string
	vault  string
}

// maxCredentialFile bounds the certificate and federated token files.
const maxCredentialFile = 1 << 20

// NewDriver validates cfg and returns a driver. It makes no network call.
func NewDriver(cfg Config) (*Driver, error) {
	if !guidRE.MatchString(strings.ToLower(cfg.ClientID)) {
		return nil, errors.New("azure: ClientID must be the Entra application (client) id, a GUID")
	}
	n := 0
	for _, s := range []string{cfg.ClientSecret, cfg.CertificateFile, cfg.FederatedTokenFile} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return nil, errors.New("azure: set exactly one of client secret, client certificate or federated token file")
	}
	if cfg.CertificatePassword != "" && cfg.CertificateFile == "" {
		return nil, errors.New("azure: a certificate password needs a certificate file")
	}
	d := &Driver{
		clientID: cfg.ClientID,
		retry:    cfg.Retry.options(),
		clouds:   map[Cloud]bool{},
		timeout:  cfg.Timeout,
		now:      cfg.Now,
		creds:    map[credKey]*tenantCredential{},
		clients:  map[clientKey]*azkeys.Client{},
	}
	if d.timeout <= 0 {
		d.timeout = DefaultTimeout
	}
	if d.now == nil {
		d.now = time.Now
	}
	if len(cfg.Clouds) == 0 {
		d.clouds[CloudPublic] = true
	}
	for _, c := range cfg.Clouds {
		if _, ok := cloudConfig(c); !ok {
			return nil, fmt.Errorf("azure: unknown cloud %q", c)
		}
		d.clouds[c] = true
	}
	hc := &http.Client{}
	if cfg.HTTPClient != nil {
		c := *cfg.HTTPClient // shallow copy: the transport is shared
		hc = &c
	}
	// A redirect would send the request, maybe with a token, somewhere we did
	// not validate.
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	maxBody := cfg.MaxResponseBytes
	if maxBody <= 0 {
		maxBody = DefaultMaxResponseBytes
	}
	d.transport = boundedTransport{c: hc, max: maxBody}

	switch {
	case cfg.ClientSecret != "":
		secret := cfg.ClientSecret
		d.newCred = func(tenant string, o azcore.ClientOptions) (azcore.TokenCredential, error) {
			return azidentity.NewClientSecretCredential(tenant, cfg.ClientID, secret, &azidentity.ClientSecretCredentialOptions{ClientOptions: o})
		}
	case cfg.CertificateFile != "":
		certs, key, err := loadCertificate(cfg.CertificateFile, cfg.CertificatePassword)
		if err != nil {
			return nil, err
		}
		d.newCred = func(tenant string, o azcore.ClientOptions) (azcore.TokenCredential, error) {
			return azidentity.NewClientCertificateCredential(tenant, cfg.ClientID, certs, key, &azidentity.ClientCertificateCredentialOptions{ClientOptions: o})
		}
	default:
		file := cfg.FederatedTokenFile
		if _, err := readBounded(file); err != nil {
			return nil, fmt.Errorf("azure: federated token file: %w", err)
		}
		d.precheck = func() error {
			if _, err := readBounded(file); err != nil {
				return &operatorError{what: "federated token file unreadable", err: err}
			}
			return nil
		}
		assertion := func(context.Context) (string, error) {
			b, err := readBounded(file)
			if err != nil {
				return "", fmt.Errorf("reading federated token file: %w", err)
			}
			return strings.TrimSpace(string(b)), nil
		}
		d.newCred = func(tenant string, o azcore.ClientOptions) (azcore.TokenCredential, error) {
			return azidentity.NewClientAssertionCredential(tenant, cfg.ClientID, assertion, &azidentity.ClientAssertionCredentialOptions{ClientOptions: o})
		}
	}
	return d, nil
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxCredentialFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxCredentialFile {
		return nil, errors.New("file too large")
	}
	if len(b) == 0 {
		return nil, errors.New("file is empty")
	}
	return b, nil
}

func loadCertificate(path, password string) ([]*x509.Certificate, crypto.PrivateKey, error) {
	b, err := readBounded(path)
	if err != nil {
		return nil, nil, fmt.Errorf("azure: client certificate: %w", err)
	}
	var pw []byte
	if password != "" {
		pw = []byte(password)
	}
	certs, key, err := azidentity.ParseCertificates(b, pw)
	if err != nil {
		// The parse error never contains the password or key bytes.
		return nil, nil, fmt.Errorf("azure: client certificate %s: %w", path, err)
	}
	return certs, key, nil
}

func cloudConfig(c Cloud) (cloud.Configuration, bool) {
	switch c {
	case CloudPublic:
		return cloud.AzurePublic, true
	case CloudChina:
		return cloud.AzureChina, true
	case CloudGovernment:
		return cloud.AzureGovernment, true
	}
	return cloud.Configuration{}, false
}

func (*Driver) Type() string { return Type }

// Check validates and normalises registration params (see the package
// docs/azure.md for the rules). It makes no network call.
func (d *Driver) Check(orgID string, p kms.Params) (kms.Params, error) {
	out, _, err := checkParams(orgID, p, d.clouds)
	return out, err
}

// Open returns the provider for params that pass Check.
func (d *Driver) Open(orgID string, p kms.Params) (kms.Provider, error) {
	return d.open(orgID, p)
}

func (d *Driver) open(orgID string, p kms.Params) (*Provider, error) {
	p, c, err := checkParams(orgID, p, d.clouds)
	if err != nil {
		return nil, err
	}
	tenant, vault := p[ParamTenantID], p[ParamVaultURI]
	client, err := d.client(c, tenant, vault)
	if err != nil {
		return nil, &kms.Error{Class: kms.Operator, Code: CodeClientSetup, Message: "the server could not set up its Azure client", Err: err}
	}
	return &Provider{
		d:       d,
		client:  client,
		tenant:  tenant,
		host:    strings.TrimSuffix(strings.TrimPrefix(vault, "https://"), "/"),
		keyName: p[ParamKeyName],
	}, nil
}

func (d *Driver) clientOptions(c Cloud) azcore.ClientOptions {
	cc, _ := cloudConfig(c)
	return azcore.ClientOptions{
		Cloud:     cc,
		Transport: d.transport,
		Retry:     d.retry,
		Telemetry: policy.TelemetryOptions{ApplicationID: "ekm"},
	}
}

// maxCachedClients bounds the per-(tenant, vault) clients and per-tenant
// credentials the driver keeps.
const maxCachedClients = 10000

// client returns the cached Key Vault client for (tenant, vault), creating
// the tenant's credential on first use. Clients are keyed by tenant too so
// that a registration naming the wrong tenant never borrows another
// registration's working credential.
func (d *Driver) client(c Cloud, tenant, vault string) (*azkeys.Client, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ck := clientKey{tenant: tenant, vault: vault}
	if cl, ok := d.clients[ck]; ok {
		return cl, nil
	}
	// Bound the caches: registrations that fail, or keys later removed,
	// leave entries behind. Dropping all at the bound only costs new token
	// requests; live credentials are rebuilt on their next use.
	if len(d.clients) >= maxCachedClients {
		clear(d.clients)
	}
	if len(d.creds) >= maxCachedClients {
		clear(d.creds)
	}
	kk := credKey{cloud: c, tenant: tenant}
	cred, ok := d.creds[kk]
	if !ok {
		inner, err := d.newCred(tenant, d.clientOptions(c))
		if err != nil {
			return nil, err
		}
		cred = &tenantCredential{tenant: tenant, cred: inner, precheck: d.precheck}
		d.creds[kk] = cred
	}
	cl, err := azkeys.NewClient(vault, cred, &azkeys.ClientOptions{ClientOptions: d.clientOptions(c)})
	if err != nil {
		return nil, err
	}
	d.clients[ck] = cl
	return cl, nil
}

// tenantCredential refuses tokens for any tenant but the registered one.
// Key Vault's challenge names the tenant that owns the vault; if that is not
// the customer's tenant_id the registration is wrong, and we say so
// precisely instead of surfacing the SDK's generic tenant error.
type tenantCredential struct {
	tenant   string
	cred     azcore.TokenCredential
	precheck func() error
}

type tenantMismatchError struct{ registered, vault string }

func (e *tenantMismatchError) Error() string {
	return fmt.Sprintf("vault belongs to tenant %s, not the registered tenant %s", e.vault, e.registered)
}

func (c *tenantCredential) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	if o.TenantID != "" && !strings.EqualFold(o.TenantID, c.tenant) {
		return azcore.AccessToken{}, &tenantMismatchError{registered: c.tenant, vault: o.TenantID}
	}
	if c.precheck != nil {
		if err := c.precheck(); err != nil {
			return azcore.AccessToken{}, err
		}
	}
	return c.cred.GetToken(ctx, o)
}

// boundedTransport caps every response body so that neither the SDK nor our
// diagnosis ever reads an unbounded amount from the network.
type boundedTransport struct {
	c   *http.Client
	max int64
}

var errBodyTooLarge = errors.New("response body exceeds the size limit")

func (t boundedTransport) Do(req *http.Request) (*http.Response, error) {
	resp, err := t.c.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.ContentLength > t.max {
		resp.Body.Close()
		return nil, errBodyTooLarge
	}
	resp.Body = &limitedBody{rc: resp.Body, left: t.max}
	return resp, nil
}

type limitedBody struct {
	rc   io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// Probe one byte: a body of exactly the limit is fine.
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
