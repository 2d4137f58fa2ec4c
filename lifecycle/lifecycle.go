// Package lifecycle owns every state change of ekm's keys: external keys
// (registration, validation, removal, health: healthy, degraded, revoked,
// restored, KEK rotation) and project keys (creation, rotation, re-keying,
// rewrapping after a KEK rotation), with the audit events each emits.
//
// Callers only ask: the Admin API decodes a request and calls a method
// here; the health probe and the rotation schedule call it on a timer. Each
// change runs its KMS work first, then stores its result and its audit event
// in one transaction (compare-and-set where another writer may race), so a
// failure or a crash at any point leaves nothing half-written.
//
// The hot path (plaintext project keys, their cache and the per-key gates)
// is package keyring; every KMS call goes through the call layer of package
// kms, which this package observes for metrics and kms.call audit events.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ekm-dev/ekm/audit"
	"github.com/ekm-dev/ekm/cluster"
	"github.com/ekm-dev/ekm/keyring"
	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/metrics"
	"github.com/ekm-dev/ekm/store"
)

// Config configures a Service. Zero values take the defaults noted.
type Config struct {
	Store    store.Store
	Registry *kms.Registry
	// Default is the operator's key for projects created without an
	// external key.
	Default kms.Ref
	// CacheTTL and CacheSize configure the keyring (defaults 1h, 10000).
	CacheTTL  time.Duration
	CacheSize int
	// KMSTimeout bounds one KMS operation (default 30s).
	KMSTimeout time.Duration
	// ValidateTimeout bounds the live KMS work of one registration,
	// validation or re-key (default 30s).
	ValidateTimeout time.Duration
	// Changes is the change log the service publishes its changes to and
	// applies other replicas' changes from (default: a new log over Store,
	// which the caller then runs, or Syncs).
	Changes *cluster.Log
	Now     func() time.Time
	Metrics *metrics.Metrics
	Logger  *slog.Logger
}

// Service is safe for concurrent use.
type Service struct {
	cfg     Config
	st      store.Store
	keys    *kms.Keys
	kr      *keyring.Keyring
	log     *slog.Logger
	changes *cluster.Log

	closedMu sync.Mutex
	// closedAt: per external key whose gate this service closed, when the
	// revocation behind it happened (its stored StatusAt, or this replica's
	// clock when it saw it first). A stored `valid` older than that is stale
	// and does not reopen the gate (followStored). Entries go when the gate
	// opens or the key is forgotten: at most one per closed gate.
	closedAt map[string]time.Time

	// rotating: projects (org/project) with an Admin API rotation in
	// progress on this replica. A second one waits for no KMS call: it is
	// refused as a concurrent update (RotateProjectKey).
	rotating sync.Map
}

// New assembles the service with its KMS call layer and keyring.
func New(cfg Config) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ValidateTimeout <= 0 {
		cfg.ValidateTimeout = 30 * time.Second
	}
	s := &Service{cfg: cfg, st: cfg.Store, log: cfg.Logger, closedAt: map[string]time.Time{}}
	s.keys = kms.NewKeys(kms.KeysConfig{Registry: cfg.Registry, Timeout: cfg.KMSTimeout, Logger: cfg.Logger,
		Observer: &callRecorder{st: cfg.Store, metrics: cfg.Metrics, now: cfg.Now, log: cfg.Logger}})
	s.kr = keyring.New(keyring.Config{Store: cfg.Store, Keys: s.keys, Default: cfg.Default, CacheTTL: cfg.CacheTTL, CacheSize: cfg.CacheSize,
		Now: cfg.Now, Metrics: cfg.Metrics, Logger: cfg.Logger})
	s.kr.SetRevocationHandler(s.requestRevoked)
	s.changes = cfg.Changes
	if s.changes == nil {
		s.changes = cluster.New(cluster.Config{Store: cfg.Store, Now: cfg.Now, Logger: cfg.Logger})
	}
	s.follow(s.changes)
	return s
}

// Keyring is the hot path the data plane reads keys from.
func (s *Service) Keyring() *keyring.Keyring { return s.kr }

// Changes is the change log the service publishes to and follows.
func (s *Service) Changes() *cluster.Log { return s.changes }

// Registry is the KMS drivers this server runs.
func (s *Service) Registry() *kms.Registry { return s.cfg.Registry }

// Kind says what a refusal means.
type Kind int

const (
	// NotFound: a referenced object does not exist (in the caller's org).
	NotFound Kind = iota + 1
	// Conflict: the object's state forbids the change.
	Conflict
	// KMSFailure: the customer's KMS refused or failed; Err explains it
	// (kms.Diagnose).
	KMSFailure
	// Invalid: the request asks for something the rules forbid (e.g. a
	// project outside a customer key where the org requires one).
	Invalid
)

// Error is a refusal: its kind, a stable code, the request field at fault,
// and a message safe to show to the caller.
type Error struct {
	Kind    Kind
	Code    string
	Param   string
	Message string
	Err     error
}

func (e *Error) Error() string {
	if e.Kind == KMSFailure && e.Err != nil {
		return e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

func conflict(code, format string, args ...any) *Error {
	return &Error{Kind: Conflict, Code: code, Message: fmt.Sprintf(format, args...)}
}

func keyNotFound(param, id string) *Error {
	return &Error{Kind: NotFound, Code: "not_found", Param: param, Message: fmt.Sprintf("No external key found with id '%s'.", id)}
}

// kmsFailure marks a KMS failure and the request field it concerns. Errors
// that did not come from a KMS (the database) pass through unchanged.
func kmsFailure(err error, param string) error {
	if _, ok := kms.Diagnose(err); !ok {
		return err
	}
	return &Error{Kind: KMSFailure, Param: param, Err: err}
}

// entry is the audit entry of a change by actor ("" = ekm or the operator).
func (s *Service) entry(orgID, actor, projectID string) audit.Entry {
	return audit.Entry{OrgID: orgID, Actor: actor, ProjectID: projectID, At: s.cfg.Now()}
}

// kmsContext bounds the live KMS work of one request.
func (s *Service) kmsContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.cfg.ValidateTimeout)
}

// externalKey loads an org's external key ("" = none: the default key).
func (s *Service) externalKey(ctx context.Context, q store.Queries, orgID, id string) (*store.ExternalKey, error) {
	if id == "" {
		return nil, nil
	}
	k, err := q.GetExternalKey(ctx, orgID, id)
	if err != nil {
		return nil, err
	}
	return &k, nil
}

// isNotFound reports a store miss.
func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }
