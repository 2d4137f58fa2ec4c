package gcp

import (
	"context"
	"errors"
	"net/url"
	"time"

	"cloud.google.com/go/auth"
	"cloud.google.com/go/auth/credentials/externalaccount"

	"github.com/ekm-dev/ekm/kms"
)

const (
	scopeCloudPlatform = "https://www.googleapis.com/auth/cloud-platform"
	tokenTypeJWT       = "urn:ietf:params:oauth:token-type:jwt"
)

// outageRecheck is how soon a recheck that found STS unreachable is tried
// again (at most the recheck interval).
const outageRecheck = 5 * time.Second

// fedKey names one federated identity: a customer's provider, the
// audience ekm's ID tokens carry for it, and the customer's service
// account when ekm impersonates one.
type fedKey struct {
	provider, audience, serviceAccount string
}

// federation is the federated access token of one fedKey, obtained by
// Google STS token exchange through the official externalaccount package
// (ekm's ID token as the subject token). It implements auth.TokenProvider.
//
// The token is reused until expiryMargin before it expires, but the trust
// behind it is checked again (a fresh exchange) once it is older than
// recheck: Google keeps honouring a token issued by a provider that the
// customer has since disabled, or whose condition no longer admits ekm,
// until it expires (up to an hour), while ekm must stop within one probe
// interval. A recheck that cannot reach STS (outage) keeps the valid
// token, so an STS outage never interrupts access; one that STS refuses
// drops it.
type federation struct {
	d   *Driver
	key fedKey
	sem chan struct{} // one exchange at a time; waiters honour their context

	tok     *auth.Token
	fetched time.Time
}

func newFederation(d *Driver, key fedKey) *federation {
	return &federation{d: d, key: key, sem: make(chan struct{}, 1)}
}

func (f *federation) lock(ctx context.Context) error {
	select {
	case f.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (f *federation) unlock() { <-f.sem }

// Token returns a federated access token, exchanging a new one when the
// cached one is near expiry or due for its trust recheck. Failures are
// diagnosed *kms.Error values.
func (f *federation) Token(ctx context.Context) (*auth.Token, error) {
	if err := f.lock(ctx); err != nil {
		return nil, err
	}
	defer f.unlock()
	now := f.d.now()
	valid := f.tok != nil && now.Add(f.d.expiryMargin).Before(f.tok.Expiry)
	if valid && now.Sub(f.fetched) < f.d.recheck {
		return f.tok, nil
	}
	tok, err := f.exchange(ctx)
	if err != nil {
		var ke *kms.Error
		if valid && errors.As(err, &ke) && ke.Class == kms.Outage {
			// STS (or ekm's identity) is unreachable: the token Google
			// issued is still good. Check again in a few seconds rather
			// than on every call, which would make every call wait for
			// an unreachable STS.
			if retry := now.Add(outageRecheck).Add(-f.d.recheck); retry.After(f.fetched) {
				f.fetched = retry
			}
			return f.tok, nil
		}
		f.tok = nil
		// Refused (or failed with no token to fall back on): new Opens of
		// this identity start with a fresh federation, and a registration
		// that never works does not occupy the driver's cache.
		f.d.forget(f.key, f)
		return nil, err
	}
	f.tok, f.fetched = tok, f.d.now()
	return tok, nil
}

// invalidate drops the cached token if it is still tok (Cloud KMS refused
// it: the pool may have been disabled or deleted since it was issued).
func (f *federation) invalidate(tok *auth.Token) {
	f.sem <- struct{}{}
	if f.tok == tok {
		f.tok = nil
	}
	<-f.sem
}

// exchange runs one token exchange (and, with a customer service account,
// the impersonation) and diagnoses its failure.
func (f *federation) exchange(ctx context.Context) (*auth.Token, error) {
	ctx, tr := withTrace(ctx)
	opts := &externalaccount.Options{
		Audience:             f.key.provider,
		SubjectTokenType:     tokenTypeJWT,
		Scopes:               []string{scopeCloudPlatform},
		SubjectTokenProvider: subjectTokens{f},
		Client:               f.d.recordHC,
	}
	if sa := f.key.serviceAccount; sa != "" {
		opts.ServiceAccountImpersonationURL = "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/" + url.PathEscape(sa) + ":generateAccessToken"
		opts.ServiceAccountImpersonationLifetimeSeconds = 3600
	}
	creds, err := externalaccount.NewCredentials(opts)
	if err != nil {
		return nil, &kms.Error{Class: kms.Operator, Code: CodeClientSetup, Message: "ekm could not set up its Google token exchange", Err: err}
	}
	tok, err := creds.Token(ctx)
	if err != nil {
		e := f.d.diagnoseExchange(ctx, f.key, tr, err)
		e.RequestID = tr.requestID()
		return nil, e
	}
	if tok == nil || tok.Value == "" || tok.Expiry.IsZero() {
		return nil, &kms.Error{Class: kms.Outage, Code: CodeUnexpectedResponse, Message: "Google STS returned a token ekm could not use; treated as transient", RequestID: tr.requestID()}
	}
	return tok, nil
}

// subjectTokens supplies ekm's ID token, with the registration's
// audience, to the token exchange.
type subjectTokens struct{ f *federation }

func (s subjectTokens) SubjectToken(ctx context.Context, _ *externalaccount.RequestOptions) (string, error) {
	tok, err := s.f.d.identity.IDToken(ctx, s.f.key.audience)
	if err != nil {
		var ie *IdentityError
		if !errors.As(err, &ie) {
			err = &IdentityError{Message: "ekm's identity could not issue an ID token", Err: err}
		}
		return "", err
	}
	return tok, nil
}
