package aws

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/ekm-dev/ekm/kms"
)

// roleSession is the credentials cache of one customer role (for one
// external id and org): an aws.CredentialsProvider for the KMS clients.
//
// Credentials are renewed (a new sts:AssumeRole) when they are within five
// minutes of expiry, when they are older than Config.SessionRefresh (a
// trust policy is only evaluated by AssumeRole, so this bounds how long a
// changed trust policy or a deleted role goes unnoticed), and on demand
// (registration, or a KMS denial that may mean the role is gone). If STS
// fails transiently, the current session stays in use until it expires:
// an STS outage is not a KMS outage. A refusal (AccessDenied) drops it.
type roleSession struct {
	d                             *Driver
	sts                           *sts.Client
	role, externalID, sessionName string
	// sem admits one AssumeRole at a time; the others wait for its result
	// (or their context).
	sem chan struct{}

	mu      sync.Mutex
	creds   aws.Credentials
	fetched time.Time
	gen     uint64 // incremented by every successful renewal
}

// errNoCredentials: AssumeRole answered without credentials.
var errNoCredentials = errors.New("sts:AssumeRole returned no credentials")

// Retrieve implements aws.CredentialsProvider.
func (s *roleSession) Retrieve(ctx context.Context) (aws.Credentials, error) {
	if c, ok := s.current(); ok {
		return c, nil
	}
	return s.renew(ctx, false)
}

// current returns the cached credentials if they need no renewal.
func (s *roleSession) current() (aws.Credentials, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.d.cfg.Now()
	if !s.creds.HasKeys() || now.Sub(s.fetched) >= s.d.cfg.SessionRefresh || !now.Before(s.creds.Expires.Add(-sessionExpiryWindow)) {
		return aws.Credentials{}, false
	}
	return s.creds, true
}

func (s *roleSession) generation() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen
}

// invalidate makes the next Retrieve renew the session.
func (s *roleSession) invalidate() {
	s.mu.Lock()
	s.fetched = time.Time{}
	s.mu.Unlock()
}

// renew assumes the role. With force it does so even if the cached session
// is fresh, unless another caller renewed it while this one waited.
func (s *roleSession) renew(ctx context.Context, force bool) (aws.Credentials, error) {
	gen := s.generation()
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return aws.Credentials{}, &assumeRoleError{ctx.Err()}
	}
	defer func() { <-s.sem }()
	if !force || s.generation() != gen {
		if c, ok := s.current(); ok {
			return c, nil
		}
	}
	c, err := s.assume(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.d.cfg.Now()
	if err != nil {
		if (diag{}).sts(err).Class == kms.Outage && s.creds.HasKeys() && now.Before(s.creds.Expires.Add(-time.Minute)) {
			// STS is down or slow: the session we have is still valid.
			return s.creds, nil
		}
		if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			s.creds = aws.Credentials{}
		}
		return aws.Credentials{}, &assumeRoleError{err}
	}
	s.creds, s.fetched = c, now
	s.gen++
	return c, nil
}

func (s *roleSession) assume(ctx context.Context) (aws.Credentials, error) {
	out, err := s.sts.AssumeRole(ctx, &sts.AssumeRoleInput{
		RoleArn:         aws.String(s.role),
		RoleSessionName: aws.String(s.sessionName),
		ExternalId:      aws.String(s.externalID),
		DurationSeconds: aws.Int32(int32(s.d.cfg.SessionDuration / time.Second)),
	})
	if err != nil {
		return aws.Credentials{}, err
	}
	c := out.Credentials
	if c == nil || aws.ToString(c.AccessKeyId) == "" || aws.ToString(c.SecretAccessKey) == "" || aws.ToString(c.SessionToken) == "" || c.Expiration == nil {
		return aws.Credentials{}, errNoCredentials
	}
	// Never trust an expiry beyond what was asked for (a server clock ahead
	// of ours would otherwise keep a session past its real end).
	exp := *c.Expiration
	if limit := s.d.cfg.Now().Add(s.d.cfg.SessionDuration); exp.After(limit) {
		exp = limit
	}
	return aws.Credentials{AccessKeyID: *c.AccessKeyId, SecretAccessKey: *c.SecretAccessKey, SessionToken: *c.SessionToken,
		Source: "ekm sts:AssumeRole", CanExpire: true, Expires: exp}, nil
}
