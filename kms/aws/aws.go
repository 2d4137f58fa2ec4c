// Package aws is the kms provider for customer keys in AWS KMS.
//
// ekm's identity is the operator's own AWS principal, from the SDK's
// default credential chain (environment, web identity, container or
// instance role); no customer secret is ever stored. For each registered
// key ekm assumes the customer's role (sts:AssumeRole with the registered
// ExternalId and a RoleSessionName naming ekm and the org), then calls
// kms:Encrypt and kms:Decrypt on the customer's key with an
// EncryptionContext that binds the org, project and project key version
// (kms.AAD), so that a customer can grant or deny one project in its own key
// policy.
//
// The driver keeps one credentials cache per (role, external id, org):
// sessions last an hour, are renewed five minutes before they expire and,
// so that a changed trust policy is noticed like any other revocation,
// after Config.SessionRefresh (an STS outage keeps the current session in
// use until it expires). One KMS client is kept per (session, region).
//
// Every failure is a *kms.Error whose Code (constants in this package) and
// Step name the onboarding step the customer has to fix; see docs/aws.md.
package aws

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	smithyendpoints "github.com/aws/smithy-go/endpoints"
	"github.com/aws/smithy-go/logging"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/ekm-dev/ekm/kms"
)

// Algorithm is the label of wraps this driver makes: AWS KMS Encrypt with
// SYMMETRIC_DEFAULT and ekm's encryption context (kms.AAD.Context: ekm:org,
// ekm:project, ekm:version). The KEK version recorded with each wrap is the
// key ARN that KMS used (an alias is resolved).
const Algorithm = "AWS-KMS-SYMMETRIC+ekm-ctx-v1"

// Defaults for Config fields left zero.
const (
	DefaultTimeout          = 30 * time.Second
	DefaultSessionDuration  = time.Hour
	DefaultSessionRefresh   = 5 * time.Minute
	DefaultMaxAttempts      = 3
	DefaultMaxBackoff       = 2 * time.Second
	DefaultMaxResponseBytes = 1 << 20
	// sessionExpiryWindow: a session is renewed this long before it expires.
	sessionExpiryWindow = 5 * time.Minute
)

// Config configures the driver. ekm's own credentials always come from the
// SDK's default chain; nothing secret is configured here.
type Config struct {
	// HTTPClient carries every request to AWS (STS, KMS, and the SDK's
	// default credential chain). Nil means the SDK's default client. Use
	// dialoverride.TransportOptions with WithTransportOptions to reach the
	// emulator: the production code path stays the same.
	HTTPClient *awshttp.BuildableClient
	// Partitions whose keys may be registered (aws, aws-us-gov, aws-cn).
	// Nil means aws only. ekm's principal exists in one partition: roles of
	// another cannot trust it.
	Partitions []string
	// FIPS uses the FIPS endpoints (kms-fips.<region>…, sts-fips.<region>…).
	FIPS bool
	// PrincipalARN, if set, is the principal customers must trust (shown
	// in the Spec and the docs' trust policy). Default: derived from
	// sts:GetCallerIdentity (an assumed-role session becomes its role's
	// ARN, which loses the role's path: set this when the role has one).
	PrincipalARN string
	// SessionRefresh bounds how long one assumed-role session is used
	// before AssumeRole is called again: how long a trust policy change
	// (external id, principal) or a deleted role can go unnoticed. The
	// server sets it to the probe interval. Default 5 minutes.
	SessionRefresh time.Duration
	// SessionDuration of assumed-role sessions (default and at most 1 h:
	// role chaining limits sessions to an hour).
	SessionDuration time.Duration
	// Timeout bounds one provider call including retries (default 30s).
	Timeout time.Duration
	// MaxAttempts per AWS request, the first included (default 3): 5xx,
	// throttling and connection errors are retried with jittered backoff
	// of at most MaxBackoff (default 2s).
	MaxAttempts int
	MaxBackoff  time.Duration
	// MaxResponseBytes bounds every response body (default 1 MiB).
	MaxResponseBytes int64
	// Logger for the identity found at start (default: discard).
	Logger *slog.Logger
	// Now is the clock of session renewal (default time.Now).
	Now func() time.Time
}

// Driver opens AWS KMS keys. It is safe for concurrent use.
type Driver struct {
	cfg        Config
	partitions map[string]bool
	http       aws.HTTPClient
	vendor     aws.CredentialsProvider
	vendorRgn  string // region of the SDK config, if any
	log        *slog.Logger

	mu       sync.Mutex
	sessions map[sessionKey]*roleSession
	clients  map[clientKey]*awskms.Client
	stsByRgn map[string]*sts.Client

	idMu      sync.Mutex
	identity  Identity
	idPending bool
	idTried   time.Time
}

// Identity is ekm's own AWS principal.
type Identity struct {
	// ARN is the principal customers put in their trust policy.
	ARN string
	// CallerARN is what sts:GetCallerIdentity answered.
	CallerARN string
	Account   string
	Partition string
}

type sessionKey struct {
	partition, role, externalID, org string
}

type clientKey struct {
	session *roleSession
	region  string
}

// maxCached bounds the sessions and clients the driver keeps.
const maxCached = 10000

// NewDriver loads ekm's own AWS configuration (the SDK's default chain:
// environment, shared files, web identity, container or instance
// credentials) and returns a driver. It makes no network call itself; the
// identity is looked up in the background and logged.
func NewDriver(ctx context.Context, cfg Config) (*Driver, error) {
	d := &Driver{cfg: cfg, partitions: map[string]bool{}, sessions: map[sessionKey]*roleSession{},
		clients: map[clientKey]*awskms.Client{}, stsByRgn: map[string]*sts.Client{}, log: cfg.Logger}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if len(cfg.Partitions) == 0 {
		cfg.Partitions = []string{PartitionAWS}
	}
	for _, p := range cfg.Partitions {
		if _, ok := partitions[p]; !ok {
			return nil, fmt.Errorf("aws: unknown partition %q (aws, aws-us-gov or aws-cn)", p)
		}
		d.partitions[p] = true
	}
	if cfg.PrincipalARN != "" && (len(cfg.PrincipalARN) > 2048 || !principalARNRE.MatchString(cfg.PrincipalARN)) {
		return nil, fmt.Errorf("aws: principal ARN %q is not an IAM role or user ARN", cfg.PrincipalARN)
	}
	if cfg.SessionRefresh <= 0 {
		cfg.SessionRefresh = DefaultSessionRefresh
	}
	if cfg.SessionDuration <= 0 || cfg.SessionDuration > time.Hour {
		cfg.SessionDuration = DefaultSessionDuration
	}
	if cfg.SessionDuration < 15*time.Minute {
		return nil, errors.New("aws: SessionDuration must be at least 15 minutes")
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
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	d.cfg = cfg

	bc := cfg.HTTPClient
	if bc == nil {
		bc = awshttp.NewBuildableClient()
	}
	ac, err := config.LoadDefaultConfig(ctx, config.WithHTTPClient(bc))
	if err != nil {
		return nil, fmt.Errorf("aws: loading the SDK's default configuration: %w", err)
	}
	if ac.Credentials == nil {
		return nil, errors.New("aws: the SDK's default chain has no credentials provider")
	}
	d.vendor = vendorCredentials{ac.Credentials}
	d.vendorRgn = ac.Region
	// STS and KMS calls use a client built from the same transport (with
	// AWS_CA_BUNDLE applied by the SDK) that follows no redirect and reads
	// bounded bodies: nothing but the partition's real hosts is contacted.
	var tr *http.Transport
	if b, ok := ac.HTTPClient.(*awshttp.BuildableClient); ok {
		tr = b.GetTransport()
	} else {
		tr = bc.GetTransport()
	}
	d.http = boundedClient{c: &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		max: cfg.MaxResponseBytes}
	go d.lookupIdentity()
	return d, nil
}

var principalARNRE = regexp.MustCompile(`^arn:(aws|aws-cn|aws-us-gov):iam::[0-9]{12}:(role|user)/([A-Za-z0-9_+=,.@-]+/)*[A-Za-z0-9_+=,.@-]{1,64}$`)

func (*Driver) Type() string { return Type }

// Check validates and normalises registration params (docs/aws.md). It
// makes no network call.
func (d *Driver) Check(orgID string, p kms.Params) (kms.Params, error) {
	out, _, err := checkParams(orgID, p, d.partitions)
	return out, err
}

// Open returns the provider for params that pass Check.
func (d *Driver) Open(orgID string, p kms.Params) (kms.Provider, error) {
	return d.open(orgID, p)
}

func (d *Driver) open(orgID string, p kms.Params) (*Provider, error) {
	_, ps, err := checkParams(orgID, p, d.partitions)
	if err != nil {
		return nil, err
	}
	sess := d.session(orgID, ps)
	return &Provider{d: d, key: ps.key, role: ps.role.String(), externalID: ps.externalID, sess: sess,
		client: d.kmsClient(sess, ps.key.Region)}, nil
}

// session returns the credentials cache of one (role, external id, org).
func (d *Driver) session(orgID string, ps params) *roleSession {
	k := sessionKey{partition: ps.key.Partition, role: ps.role.String(), externalID: ps.externalID, org: orgID}
	d.mu.Lock()
	defer d.mu.Unlock()
	if s, ok := d.sessions[k]; ok {
		return s
	}
	if len(d.sessions) >= maxCached {
		// Registrations that failed or keys removed leave entries behind;
		// dropping them costs one AssumeRole per live role.
		clear(d.sessions)
		clear(d.clients)
	}
	s := &roleSession{d: d, sts: d.stsClientLocked(ps.key.Region), role: k.role, externalID: ps.externalID,
		sessionName: "ekm-" + orgID, sem: make(chan struct{}, 1)}
	d.sessions[k] = s
	return s
}

func (d *Driver) kmsClient(s *roleSession, region string) *awskms.Client {
	k := clientKey{session: s, region: region}
	d.mu.Lock()
	defer d.mu.Unlock()
	if c, ok := d.clients[k]; ok {
		return c
	}
	fips := aws.FIPSEndpointStateUnset
	if d.cfg.FIPS {
		fips = aws.FIPSEndpointStateEnabled
	}
	c := awskms.New(awskms.Options{
		Region:             region,
		Credentials:        s,
		HTTPClient:         d.http,
		Retryer:            d.retryer(),
		AppID:              "ekm",
		Logger:             logging.Nop{},
		EndpointOptions:    awskms.EndpointResolverOptions{UseFIPSEndpoint: fips},
		EndpointResolverV2: kmsResolver{inner: awskms.NewDefaultEndpointResolverV2(), region: region},
		APIOptions:         []func(*middleware.Stack) error{recordRequestIDs},
	})
	d.clients[k] = c
	return c
}

// stsClientLocked returns the STS client of a region (vendor credentials).
func (d *Driver) stsClientLocked(region string) *sts.Client {
	if c, ok := d.stsByRgn[region]; ok {
		return c
	}
	fips := aws.FIPSEndpointStateUnset
	if d.cfg.FIPS {
		fips = aws.FIPSEndpointStateEnabled
	}
	c := sts.New(sts.Options{
		Region:             region,
		Credentials:        d.vendor,
		HTTPClient:         d.http,
		Retryer:            d.retryer(),
		AppID:              "ekm",
		Logger:             logging.Nop{},
		EndpointOptions:    sts.EndpointResolverOptions{UseFIPSEndpoint: fips},
		EndpointResolverV2: stsResolver{inner: sts.NewDefaultEndpointResolverV2(), region: region},
		APIOptions:         []func(*middleware.Stack) error{recordRequestIDs},
	})
	d.stsByRgn[region] = c
	return c
}

func (d *Driver) retryer() aws.Retryer {
	return retry.NewStandard(func(o *retry.StandardOptions) {
		o.MaxAttempts = d.cfg.MaxAttempts
		o.MaxBackoff = d.cfg.MaxBackoff
	})
}

// ---- endpoints: only the partition's real hosts ----

// checkHost verifies that an endpoint the SDK resolved is exactly
// https://<service>[-fips].<region>.<partition suffix> (no port, path,
// query or user info): whatever the SDK's rules or environment say,
// nothing else is contacted.
func checkHost(ep smithyendpoints.Endpoint, service, region string) error {
	p, ok := partitionOfRegion(region)
	if !ok {
		return fmt.Errorf("region %q belongs to no enabled partition", region)
	}
	u := ep.URI
	if u.Scheme != "https" || u.User != nil || u.Port() != "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("endpoint %s is not a bare https host", redact(u))
	}
	h := u.Host
	for _, name := range []string{service, service + "-fips"} {
		if h == name+"."+region+"."+p.dnsSuffix {
			return nil
		}
	}
	return fmt.Errorf("endpoint host %q is not AWS %s in %s", h, strings.ToUpper(service), region)
}

func redact(u url.URL) string { u.User = nil; u.RawQuery = ""; return u.String() }

type kmsResolver struct {
	inner  awskms.EndpointResolverV2
	region string
}

func (r kmsResolver) ResolveEndpoint(ctx context.Context, p awskms.EndpointParameters) (smithyendpoints.Endpoint, error) {
	p.Endpoint = nil // never a configured endpoint URL
	ep, err := r.inner.ResolveEndpoint(ctx, p)
	if err == nil {
		err = checkHost(ep, "kms", r.region)
	}
	if err != nil {
		return ep, &setupError{err}
	}
	return ep, nil
}

type stsResolver struct {
	inner  sts.EndpointResolverV2
	region string
}

func (r stsResolver) ResolveEndpoint(ctx context.Context, p sts.EndpointParameters) (smithyendpoints.Endpoint, error) {
	p.Endpoint = nil
	ep, err := r.inner.ResolveEndpoint(ctx, p)
	if err == nil {
		err = checkHost(ep, "sts", r.region)
	}
	if err != nil {
		return ep, &setupError{err}
	}
	return ep, nil
}

// ---- request ids ----

// recordRequestIDs records the x-amzn-RequestId of every response (each
// attempt, failures included) in the call's kms.CallInfo, so that kms.call
// audit events name every request the customer can find in CloudTrail.
func recordRequestIDs(st *middleware.Stack) error {
	return st.Deserialize.Add(middleware.DeserializeMiddlewareFunc("ekmRecordRequestID",
		func(ctx context.Context, in middleware.DeserializeInput, next middleware.DeserializeHandler) (middleware.DeserializeOutput, middleware.Metadata, error) {
			out, md, err := next.HandleDeserialize(ctx, in)
			if resp, ok := out.RawResponse.(*smithyhttp.Response); ok && resp != nil {
				id := resp.Header.Get("X-Amzn-Requestid")
				if id == "" {
					id = resp.Header.Get("X-Amz-Request-Id")
				}
				if id != "" && len(id) <= 128 {
					if ci := kms.CallInfoFrom(ctx); ci != nil {
						ci.Record(id)
					}
					if r := recorderFrom(ctx); r != nil {
						r.set(id)
					}
				}
			}
			return out, md, err
		}), middleware.Before)
}

// recorder keeps the last request id of one provider call (for
// kms.Error.RequestID).
type recorder struct {
	mu   sync.Mutex
	last string
}

func (r *recorder) set(id string) { r.mu.Lock(); r.last = id; r.mu.Unlock() }
func (r *recorder) get() string   { r.mu.Lock(); defer r.mu.Unlock(); return r.last }

type recorderKey struct{}

func recorderFrom(ctx context.Context) *recorder {
	r, _ := ctx.Value(recorderKey{}).(*recorder)
	return r
}

// ---- ekm's own credentials and identity ----

// vendorCredentials marks failures of the default chain as the operator's.
type vendorCredentials struct{ inner aws.CredentialsProvider }

func (v vendorCredentials) Retrieve(ctx context.Context) (aws.Credentials, error) {
	c, err := v.inner.Retrieve(ctx)
	if err != nil {
		return c, &vendorCredentialsError{err}
	}
	return c, nil
}

// Identity returns ekm's principal, looking it up (sts:GetCallerIdentity)
// if it is not known yet.
func (d *Driver) Identity(ctx context.Context) (Identity, error) {
	d.idMu.Lock()
	id := d.identity
	d.idMu.Unlock()
	if id.CallerARN != "" {
		return id, nil
	}
	region := d.vendorRgn
	if p, ok := partitionOfRegion(region); !ok || !d.partitions[p.id] {
		region = ""
		for _, p := range []string{PartitionAWS, PartitionGov, PartitionChina} {
			if d.partitions[p] {
				region = partitions[p].homeRegion
				break
			}
		}
	}
	d.mu.Lock()
	c := d.stsClientLocked(region)
	d.mu.Unlock()
	out, err := c.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		return Identity{}, err
	}
	id = Identity{CallerARN: aws.ToString(out.Arn), Account: aws.ToString(out.Account)}
	id.Partition, id.ARN = principalOf(id.CallerARN)
	if d.cfg.PrincipalARN != "" {
		id.ARN = d.cfg.PrincipalARN
	}
	d.idMu.Lock()
	d.identity = id
	d.idMu.Unlock()
	return id, nil
}

var assumedRoleRE = regexp.MustCompile(`^arn:([a-z-]+):sts::([0-9]{12}):assumed-role/([^/]+)/[^/]+$`)

// principalOf returns the partition of a caller ARN and the principal a
// trust policy names for it: a role session's role (without its path,
// which the session ARN omits), a user as is.
func principalOf(caller string) (partition, principal string) {
	if m := assumedRoleRE.FindStringSubmatch(caller); m != nil {
		return m[1], "arn:" + m[1] + ":iam::" + m[2] + ":role/" + m[3]
	}
	f := strings.SplitN(caller, ":", 3)
	if len(f) == 3 {
		partition = f[1]
	}
	return partition, caller
}

// lookupIdentity resolves the identity once in the background and logs it
// (or why it could not), so that the operator sees at start which
// principal customers must trust.
func (d *Driver) lookupIdentity() {
	d.idMu.Lock()
	if d.idPending {
		d.idMu.Unlock()
		return
	}
	d.idPending, d.idTried = true, d.cfg.Now()
	d.idMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.Timeout)
	id, err := d.Identity(ctx)
	cancel()
	d.idMu.Lock()
	d.idPending = false
	d.idMu.Unlock()
	if err != nil {
		d.log.Error("aws: cannot determine ekm's own AWS identity (sts:GetCallerIdentity); customers cannot be told which principal to trust", "err", err)
		return
	}
	if strings.HasSuffix(id.CallerARN, ":root") {
		d.log.Error("aws: ekm runs as an account root user, which cannot assume roles; use an IAM role or user", "caller", id.CallerARN)
	}
	if d.cfg.PrincipalARN != "" && !strings.Contains(d.cfg.PrincipalARN, ":"+id.Account+":") {
		d.log.Warn("aws: the configured principal ARN is not in the account of ekm's credentials", "principal", d.cfg.PrincipalARN, "caller", id.CallerARN)
	}
	if !d.partitions[id.Partition] {
		d.log.Warn("aws: ekm's credentials belong to a partition that is not enabled", "partition", id.Partition)
	}
	d.log.Info("aws: ekm's identity", "principal_arn", id.ARN, "caller_arn", id.CallerARN, "account", id.Account)
}

// knownIdentity returns the identity if known; otherwise it starts a lookup
// (at most one every 30 s) and returns the configured principal, if any.
func (d *Driver) knownIdentity() Identity {
	d.idMu.Lock()
	id, pending, tried := d.identity, d.idPending, d.idTried
	d.idMu.Unlock()
	if id.CallerARN == "" {
		if !pending && d.cfg.Now().Sub(tried) > 30*time.Second {
			go d.lookupIdentity()
		}
		id.ARN = d.cfg.PrincipalARN
	}
	return id
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
