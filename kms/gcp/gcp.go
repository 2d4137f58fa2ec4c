// Package gcp is the kms provider for customer keys in Google Cloud KMS.
//
// ekm reaches a customer's key by workload identity federation: it
// presents an OIDC ID token of its own (a Google-signed token of the
// operator's service account, or a token of ekm's own issuer, package
// issuer) to Google STS, which exchanges it, under the customer's
// workload identity pool and provider, for a federated access token. The
// customer grants that federated principal (or, optionally, a service
// account of its own that the principal impersonates) encrypt, decrypt
// and view on one symmetric key. ekm never holds a customer secret.
//
// Wrap and unwrap are Cloud KMS encrypt and decrypt through the official
// REST client (cloud.google.com/go/kms/apiv1), with the org, project and
// project key version as additionalAuthenticatedData and the CRC32C
// integrity fields checked on every call. Every failure is a *kms.Error
// whose Code and Step name the onboarding step to fix; see docs/gcp.md.
package gcp

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"cloud.google.com/go/auth"
	"cloud.google.com/go/auth/httptransport"
	kmsapi "cloud.google.com/go/kms/apiv1"
	"google.golang.org/api/option"

	"github.com/ekm-dev/ekm/kms"
)

// Algorithm is the label of wraps this driver makes: Cloud KMS symmetric
// encryption (GOOGLE_SYMMETRIC_ENCRYPTION) with kms.AAD.Bytes() as the
// additional authenticated data.
const Algorithm = "GOOGLE_SYMMETRIC_ENCRYPTION+aad-v1"

// Defaults for Config fields left zero.
const (
	DefaultTimeout      = 30 * time.Second
	DefaultTrustRecheck = 30 * time.Second
	DefaultExpiryMargin = 3 * time.Minute
	DefaultMaxRetries   = 2
)

// Config configures the driver. Nothing is read from the environment by
// the driver itself.
type Config struct {
	// Identity is ekm's own identity (required).
	Identity Identity
	// HTTPClient carries every request to Google (nil: Go's default
	// transport). Only its transport is used; redirects are never followed.
	HTTPClient *http.Client
	// TrustRecheck is the longest a federated token is used without a new
	// token exchange (default 30 s; the server sets its probe interval).
	TrustRecheck time.Duration
	// ExpiryMargin: a federated token is replaced this long before it
	// expires (default 3 min).
	ExpiryMargin time.Duration
	// Timeout bounds one provider call including retries (default 30 s).
	Timeout time.Duration
	// MaxRetries bounds retries of 429, 500, 502, 503 and 504 answers of
	// Cloud KMS and of integrity-check failures (default 2; negative: none).
	MaxRetries int
	// Now is the clock of token lifetimes (default time.Now).
	Now func() time.Time
}

// Driver opens Cloud KMS keys. It is safe for concurrent use.
type Driver struct {
	identity     Identity
	base         http.RoundTripper
	recordHC     *http.Client // the customer's calls: STS, impersonation, Cloud KMS
	recheck      time.Duration
	expiryMargin time.Duration
	timeout      time.Duration
	retries      int
	now          func() time.Time

	// The federations and clients of recent Opens, by fedKey, so that
	// providers of one federated identity share one token cache. Bounded
	// (least recently opened dropped first); see client.
	mu      sync.Mutex
	clients map[fedKey]*list.Element // of *cachedClient
	lru     *list.List               // front = most recently opened
}

// cachedClient is one fedKey's federation and the Cloud KMS client that
// authenticates with it.
type cachedClient struct {
	key    fedKey
	fed    *federation
	client *kmsapi.KeyManagementClient
}

// NewDriver validates cfg and returns a driver. It makes no network call.
func NewDriver(cfg Config) (*Driver, error) {
	if cfg.Identity == nil {
		return nil, errors.New("gcp: an identity is required")
	}
	d := &Driver{
		identity: cfg.Identity, recheck: cfg.TrustRecheck, expiryMargin: cfg.ExpiryMargin,
		timeout: cfg.Timeout, retries: cfg.MaxRetries, now: cfg.Now,
		clients: map[fedKey]*list.Element{}, lru: list.New(),
	}
	if d.recheck <= 0 {
		d.recheck = DefaultTrustRecheck
	}
	if d.expiryMargin <= 0 {
		d.expiryMargin = DefaultExpiryMargin
	}
	if d.timeout <= 0 {
		d.timeout = DefaultTimeout
	}
	switch {
	case d.retries == 0:
		d.retries = DefaultMaxRetries
	case d.retries < 0:
		d.retries = 0
	}
	if d.now == nil {
		d.now = time.Now
	}
	d.base = http.DefaultTransport
	if cfg.HTTPClient != nil && cfg.HTTPClient.Transport != nil {
		d.base = cfg.HTTPClient.Transport
	}
	d.recordHC = newHTTPClient(d.base, true)
	return d, nil
}

func (*Driver) Type() string { return Type }

// Spec describes the gcp type with ekm's identity customers trust.
func (d *Driver) Spec() kms.Spec {
	s := Spec()
	s.Identity = d.identity.Describe()
	return s
}

// Check validates and normalises registration params (syntax only, no
// network call): see docs/gcp.md for the rules.
func (d *Driver) Check(_ string, p kms.Params) (kms.Params, error) {
	r, err := checkParams(p)
	if err != nil {
		return nil, err
	}
	return r.params(), nil
}

// Open returns the provider for params that pass Check.
func (d *Driver) Open(_ string, p kms.Params) (kms.Provider, error) {
	return d.open(p)
}

func (d *Driver) open(p kms.Params) (*Provider, error) {
	r, err := checkParams(p)
	if err != nil {
		return nil, err
	}
	key := fedKey{provider: r.providerName(), audience: r.audience, serviceAccount: r.serviceAccount}
	fed, cl, err := d.client(key)
	if err != nil {
		return nil, &kms.Error{Class: kms.Operator, Code: CodeClientSetup, Message: "the server could not set up its Cloud KMS client", Err: err}
	}
	return &Provider{d: d, ref: r, name: r.keyName(), member: d.member(r), fed: fed, client: cl}, nil
}

// member is ekm's principal as the customer's key policy names it: the
// federated principal of its subject in the customer's pool, or the
// customer's service account that ekm impersonates.
func (d *Driver) member(r keyRef) string {
	if r.serviceAccount != "" {
		return "serviceAccount:" + r.serviceAccount
	}
	return Member(r.projectNumber, r.pool, d.identity.Describe()["subject"])
}

// Member is the principal identifier of subject in a workload identity
// pool: what the customer grants roles to.
func Member(projectNumber, pool, subject string) string {
	return "principal://iam.googleapis.com/projects/" + projectNumber + "/locations/global/workloadIdentityPools/" + pool + "/subject/" + subject
}

// maxCachedClients bounds the federations and clients the driver keeps
// for new Opens to share.
const maxCachedClients = 10000

// client returns the federation of key and the Cloud KMS client that
// authenticates with it, creating both on first use. The client's only
// transport is the driver's (internal/dialoverride), with the federated
// token layered on by cloud.google.com/go/auth/httptransport; the endpoint
// is always Google's own.
//
// The cache is only for sharing: every Provider keeps its own federation
// and client, so dropping an entry never affects a provider in use, and a
// dropped client is never closed (the REST client's Close only nils its
// HTTP client, which makes the next call on it panic; it holds nothing
// else to release — connections belong to the driver's shared transport —
// so the garbage collector reclaims it once no provider holds it). Entries
// are dropped least recently opened first at the bound, and as soon as
// their token exchange is refused (forget), so registrations that fail do
// not push out the federations of keys in use.
func (d *Driver) client(key fedKey) (*federation, *kmsapi.KeyManagementClient, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if el, ok := d.clients[key]; ok {
		d.lru.MoveToFront(el)
		c := el.Value.(*cachedClient)
		return c.fed, c.client, nil
	}
	fed := newFederation(d, key)
	hc, err := httptransport.NewClient(&httptransport.Options{
		Credentials:      auth.NewCredentials(&auth.CredentialsOptions{TokenProvider: fed}),
		BaseRoundTripper: d.recordHC.Transport,
	})
	if err != nil {
		return nil, nil, err
	}
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	cl, err := kmsapi.NewKeyManagementRESTClient(context.Background(), option.WithHTTPClient(hc))
	if err != nil {
		return nil, nil, fmt.Errorf("cloud kms client: %w", err)
	}
	d.clients[key] = d.lru.PushFront(&cachedClient{key: key, fed: fed, client: cl})
	for d.lru.Len() > maxCachedClients {
		d.dropLocked(d.lru.Back())
	}
	return fed, cl, nil
}

// forget drops key's cache entry if it still holds fed (its token exchange
// was refused: new Opens start afresh). Providers holding fed keep it.
func (d *Driver) forget(key fedKey, fed *federation) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if el, ok := d.clients[key]; ok && el.Value.(*cachedClient).fed == fed {
		d.dropLocked(el)
	}
}

// dropLocked removes a cache entry. It does not close the client: a
// provider may still be using it.
func (d *Driver) dropLocked(el *list.Element) {
	d.lru.Remove(el)
	delete(d.clients, el.Value.(*cachedClient).key)
}

// cachedClients is how many federations the driver keeps for sharing.
func (d *Driver) cachedClients() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lru.Len()
}
