package gcp

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/auth"
	"cloud.google.com/go/auth/credentials"
	"cloud.google.com/go/compute/metadata"
)

// Identity is ekm's own identity: the source of the OIDC ID tokens ekm
// presents to Google STS as subject tokens. There are two kinds: a
// Google-issued ID token of the operator's service account
// (GoogleIdentity: Application Default Credentials → IAM Credentials
// generateIdToken; MetadataIdentity: the metadata server), and ekm as its
// own OIDC issuer (package issuer).
type Identity interface {
	// IDToken returns an ID token whose aud is audience.
	IDToken(ctx context.Context, audience string) (string, error)
	// Describe names the identity for customers: "issuer" and "subject"
	// (what their provider trusts), and any of "service_account" and
	// "jwks_uri".
	Describe() map[string]string
}

// GoogleIssuer is the issuer of Google-signed ID tokens.
const GoogleIssuer = "https://accounts.google.com"

// IdentityError is a failure of ekm's own identity. Transient failures
// (Google unreachable, 5xx) are outages; the others mean the operator's
// credential or configuration is wrong.
type IdentityError struct {
	Transient bool
	// Message is safe to show: it never holds a token or key.
	Message string
	Err     error
}

func (e *IdentityError) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

func (e *IdentityError) Unwrap() error { return e.Err }

// GoogleIdentityConfig configures GoogleIdentity.
type GoogleIdentityConfig struct {
	// CredentialsFile is an Application Default Credentials file (a
	// service account key file, or any other ADC JSON). Empty means ADC's
	// own search: GOOGLE_APPLICATION_CREDENTIALS, gcloud's well-known
	// file, then the metadata server.
	CredentialsFile string
	// CredentialsJSON is the content of such a file (instead of a path).
	CredentialsJSON []byte
	// ServiceAccount is the email of the service account whose ID tokens
	// ekm presents. Default: the key file's client_email. When ADC is
	// another principal, it impersonates this account and needs
	// iam.serviceAccounts.getOpenIdToken on it
	// (roles/iam.serviceAccountOpenIdTokenCreator).
	ServiceAccount string
	// Subject is the sub of the tokens: the account's numeric unique id.
	// Default: the key file's client_id (which is the unique id).
	Subject string
	// HTTPClient reaches oauth2.googleapis.com and
	// iamcredentials.googleapis.com (internal/dialoverride).
	HTTPClient *http.Client
	// Now is the clock for the ID-token cache (default time.Now).
	Now func() time.Time
}

// GoogleIdentity presents Google-signed ID tokens of the operator's
// service account (iss https://accounts.google.com, sub its unique id),
// from IAM Credentials generateIdToken called with the access token of
// Application Default Credentials. Tokens are cached per audience until
// five minutes before they expire.
type GoogleIdentity struct {
	email, subject string
	creds          *auth.Credentials
	hc             *http.Client
	now            func() time.Time
	cache          tokenCache
}

// NewGoogleIdentity loads ADC (no network call).
func NewGoogleIdentity(c GoogleIdentityConfig) (*GoogleIdentity, error) {
	var base http.RoundTripper = http.DefaultTransport
	if c.HTTPClient != nil && c.HTTPClient.Transport != nil {
		base = c.HTTPClient.Transport
	}
	// ekm's own calls: ids on every request, failures kept for diagnosis,
	// never reported as the customer's calls.
	c.HTTPClient = newHTTPClient(base, false)
	js := c.CredentialsJSON
	if len(js) == 0 && c.CredentialsFile != "" {
		b, err := readBounded(c.CredentialsFile)
		if err != nil {
			return nil, fmt.Errorf("gcp: credentials file: %w", err)
		}
		js = b
	}
	var kf struct {
		Type        string `json:"type"`
		ClientEmail string `json:"client_email"`
		ClientID    string `json:"client_id"`
	}
	if len(js) > 0 {
		if err := json.Unmarshal(js, &kf); err != nil {
			return nil, errors.New("gcp: credentials file is not JSON")
		}
		if kf.Type == "service_account" {
			if c.ServiceAccount == "" {
				c.ServiceAccount = kf.ClientEmail
			}
			if c.Subject == "" && strings.EqualFold(c.ServiceAccount, kf.ClientEmail) {
				c.Subject = kf.ClientID
			}
		}
	}
	if c.ServiceAccount == "" {
		return nil, errors.New("gcp: the service account email is required (it is read from a service account key file; with other credentials, set it)")
	}
	if c.Subject == "" {
		return nil, errors.New("gcp: the service account's unique id (the sub of its ID tokens) is required (it is read from a service account key file; with other credentials, set it: gcloud iam service-accounts describe <email> --format='value(uniqueId)')")
	}
	opts := &credentials.DetectOptions{Scopes: []string{scopeCloudPlatform}, Client: c.HTTPClient, DisableAsyncRefresh: true}
	if len(js) > 0 {
		opts.CredentialsJSON = js
	}
	creds, err := credentials.DetectDefault(opts)
	if err != nil {
		return nil, fmt.Errorf("gcp: application default credentials: %w", err)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return &GoogleIdentity{email: c.ServiceAccount, subject: c.Subject, creds: creds, hc: c.HTTPClient, now: c.Now}, nil
}

// Describe names the service account.
func (g *GoogleIdentity) Describe() map[string]string {
	return map[string]string{"issuer": GoogleIssuer, "subject": g.subject, "service_account": g.email}
}

// IDToken returns a Google-signed ID token for audience.
func (g *GoogleIdentity) IDToken(ctx context.Context, audience string) (string, error) {
	return g.cache.get(ctx, audience, g.now, func(ctx context.Context) (string, error) {
		at, err := g.creds.Token(ctx)
		if err != nil {
			return "", identityFailure(ctx, "ekm could not obtain an access token with its Application Default Credentials", failOAuth, err)
		}
		body, _ := json.Marshal(map[string]any{"audience": audience, "includeEmail": false})
		u := "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/" + url.PathEscape(g.email) + ":generateIdToken"
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
		if err != nil {
			return "", &IdentityError{Message: "ekm could not build its generateIdToken request", Err: err}
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+at.Value)
		resp, err := g.hc.Do(req)
		if err != nil {
			return "", &IdentityError{Transient: true, Message: "IAM Credentials (generateIdToken) could not be reached", Err: err}
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		if err != nil {
			return "", &IdentityError{Transient: true, Message: "IAM Credentials (generateIdToken) answered incompletely", Err: err}
		}
		if resp.StatusCode != http.StatusOK {
			return "", httpIdentityError("IAM Credentials generateIdToken for "+g.email, resp.StatusCode, b)
		}
		var out struct {
			Token string `json:"token"`
		}
		if json.Unmarshal(b, &out) != nil || out.Token == "" {
			return "", &IdentityError{Transient: true, Message: "IAM Credentials returned no token"}
		}
		return out.Token, nil
	})
}

// MetadataIdentityConfig configures MetadataIdentity.
type MetadataIdentityConfig struct {
	// Subject is the unique id of the instance's service account (the sub
	// of its ID tokens). Required: the metadata server does not say it.
	Subject string
	// ServiceAccount is its email, for display (optional).
	ServiceAccount string
	// HTTPClient reaches the metadata server (nil: the metadata package's
	// own client; the host comes from GCE_METADATA_HOST or the default
	// 169.254.169.254).
	HTTPClient *http.Client
	Now        func() time.Time
}

// MetadataIdentity presents Google-signed ID tokens of the service account
// attached to the instance (Compute Engine, GKE with workload identity,
// Cloud Run), from the metadata server's identity endpoint.
type MetadataIdentity struct {
	subject, email string
	mc             *metadata.Client
	now            func() time.Time
	cache          tokenCache
}

// NewMetadataIdentity returns the identity (no network call).
func NewMetadataIdentity(c MetadataIdentityConfig) (*MetadataIdentity, error) {
	if c.Subject == "" {
		return nil, errors.New("gcp: with the metadata server, the service account's unique id (the sub of its ID tokens) must be set")
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	mc := metadata.NewWithOptions(&metadata.Options{Client: c.HTTPClient, UseDefaultClient: c.HTTPClient == nil})
	return &MetadataIdentity{subject: c.Subject, email: c.ServiceAccount, mc: mc, now: c.Now}, nil
}

// Describe names the instance's service account.
func (m *MetadataIdentity) Describe() map[string]string {
	d := map[string]string{"issuer": GoogleIssuer, "subject": m.subject}
	if m.email != "" {
		d["service_account"] = m.email
	}
	return d
}

// IDToken returns the instance service account's ID token for audience.
func (m *MetadataIdentity) IDToken(ctx context.Context, audience string) (string, error) {
	return m.cache.get(ctx, audience, m.now, func(ctx context.Context) (string, error) {
		tok, err := m.mc.GetWithContext(ctx, "instance/service-accounts/default/identity?audience="+url.QueryEscape(audience)+"&format=full")
		if err != nil {
			var nd metadata.NotDefinedError
			if errors.As(err, &nd) {
				return "", &IdentityError{Message: "the metadata server has no identity endpoint for the default service account", Err: err}
			}
			return "", &IdentityError{Transient: true, Message: "the metadata server could not issue an ID token", Err: err}
		}
		if strings.Count(tok, ".") != 2 {
			return "", &IdentityError{Transient: true, Message: "the metadata server returned something that is not a JWT"}
		}
		return strings.TrimSpace(tok), nil
	})
}

// identityFailure explains a failed ADC token request from the failure
// the transport kept, if any.
func identityFailure(ctx context.Context, msg, kind string, err error) error {
	if tr := traceFrom(ctx); tr != nil {
		if f, ok := tr.failure(kind); ok {
			return httpIdentityError(msg, f.status, f.body)
		}
	}
	var ae *auth.Error
	if errors.As(err, &ae) && ae.Response != nil {
		return httpIdentityError(msg, ae.Response.StatusCode, ae.Body)
	}
	return &IdentityError{Transient: true, Message: msg, Err: err}
}

func httpIdentityError(what string, status int, body []byte) *IdentityError {
	transient := status == http.StatusTooManyRequests || status == http.StatusRequestTimeout || status >= 500
	msg := fmt.Sprintf("%s failed (HTTP %d", what, status)
	var ge struct {
		Error any `json:"error"`
	}
	if json.Unmarshal(body, &ge) == nil {
		switch v := ge.Error.(type) {
		case string:
			msg += ", " + clip(v, 64)
		case map[string]any:
			if s, ok := v["status"].(string); ok {
				msg += ", " + clip(s, 64)
			}
			if s, ok := v["message"].(string); ok {
				msg += ": " + clip(s, 300)
			}
		}
	}
	return &IdentityError{Transient: transient, Message: msg + ")"}
}

// tokenCache caches ID tokens per audience until shortly before their exp
// (read from the unverified payload; the token is ours).
type tokenCache struct {
	mu sync.Mutex
	m  map[string]cachedToken
}

type cachedToken struct {
	tok string
	exp time.Time
}

const (
	idTokenEarly    = 5 * time.Minute
	maxCachedTokens = 10000
)

func (c *tokenCache) get(ctx context.Context, aud string, now func() time.Time, fetch func(context.Context) (string, error)) (string, error) {
	c.mu.Lock()
	if t, ok := c.m[aud]; ok && now().Add(idTokenEarly).Before(t.exp) {
		c.mu.Unlock()
		return t.tok, nil
	}
	c.mu.Unlock()
	tok, err := fetch(ctx)
	if err != nil {
		return "", err
	}
	if exp, ok := jwtExpiry(tok); ok {
		c.mu.Lock()
		if c.m == nil || len(c.m) >= maxCachedTokens {
			c.m = map[string]cachedToken{}
		}
		c.m[aud] = cachedToken{tok: tok, exp: exp}
		c.mu.Unlock()
	}
	return tok, nil
}

// jwtExpiry reads exp from a JWT's payload without verifying it.
func jwtExpiry(tok string) (time.Time, bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, false
	}
	var c struct {
		Exp int64 `json:"exp"`
	}
	if json.Unmarshal(b, &c) != nil || c.Exp <= 0 {
		return time.Time{}, false
	}
	return time.Unix(c.Exp, 0), true
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// maxCredentialFile bounds the credentials file.
const maxCredentialFile = 1 << 20

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
