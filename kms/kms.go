// Package kms defines how ekm talks to a customer's key management service.
//
// A [Provider] wraps and unwraps ekm's project keys under one customer key
// (the KEK). The KEK never leaves the customer's KMS; ekm stores only what
// Wrap returns, including the exact KEK version the KMS used, and passes that
// back to Unwrap so that a customer rotating its key never breaks old data.
//
// Every provider reports failures as [*Error], which classifies them (see
// [Class]) so that revocation can be told apart from an outage, and carries a
// machine-readable code and the onboarding step the customer has to fix.
// Each provider passes the conformance suite in package kmstest.
package kms

import (
	"context"
	"errors"
	"fmt"
)

// Wrapped is a project key as the KMS returned it. All fields are stored.
type Wrapped struct {
	// KeyVersion is the full identity of the KEK version that produced
	// Ciphertext (for Azure, the versioned kid URL). Unwrap uses exactly this
	// version.
	KeyVersion string
	// Algorithm names the wrapping algorithm (e.g. "RSA-OAEP-256", "A256GCM").
	Algorithm string
	// Ciphertext is the wrapped key, opaque to ekm.
	Ciphertext []byte
}

// KeyInfo describes the KEK as the KMS reports it.
type KeyInfo struct {
	// CurrentVersion is the full identity of the version new wraps use.
	CurrentVersion string
	// KeyType is the KMS's key type (e.g. "RSA", "RSA-HSM", "AES").
	KeyType string
	Enabled bool
	// Operations the key permits, in the KMS's words (e.g. "encrypt").
	Operations []string
}

// Provider is one customer key in one KMS. Implementations are safe for
// concurrent use.
type Provider interface {
	// Wrap encrypts plaintext (a 32-byte project key) under the KEK's current
	// version.
	Wrap(ctx context.Context, plaintext []byte) (Wrapped, error)
	// Unwrap decrypts w with exactly the KEK version recorded in it. The
	// caller owns (and must wipe) the returned bytes.
	Unwrap(ctx context.Context, w Wrapped) ([]byte, error)
	// Describe reports the KEK's current version and state.
	Describe(ctx context.Context) (KeyInfo, error)
}

// Class tells callers what a failure means for the customer's data.
type Class string

const (
	// Revoked: the customer has withdrawn access (permission removed, key
	// disabled, deleted or expired, service principal gone). Cached keys of
	// this KEK must be evicted.
	Revoked Class = "revoked"
	// Outage: the KMS could not be reached or is overloaded (timeouts,
	// connection errors, 5xx, 429). Retry later; cached keys stay usable.
	Outage Class = "outage"
	// Operator: ekm's own configuration or credential is wrong. Not the
	// customer's fault and not a revocation.
	Operator Class = "operator"
	// Invalid: the request itself is wrong (bad registration parameters,
	// corrupt wrapped key). Retrying will not help.
	Invalid Class = "invalid"
)

// Error is the error every provider returns. Message is safe to show to the
// customer: it never contains key material or tokens.
type Error struct {
	Class Class
	// Code is a stable machine-readable diagnosis, e.g.
	// "azure_service_principal_missing". Documented per provider.
	Code string
	// Step is the onboarding step the customer must fix ("" if none).
	Step string
	// Message explains the failure and the fix in plain words.
	Message string
	// RequestID is the id the KMS can correlate (e.g. x-ms-client-request-id).
	RequestID string
	// Err is the underlying error, for logs and errors.As. It must not be
	// shown to customers verbatim.
	Err error
}

func (e *Error) Error() string {
	s := fmt.Sprintf("kms %s (%s): %s", e.Class, e.Code, e.Message)
	if e.Step != "" {
		s += " [fix: " + e.Step + "]"
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// ClassOf returns the class of err, Outage for context deadlines and
// unclassified errors (the safe default: never mistake an unknown failure
// for a revocation), and "" for nil.
func ClassOf(err error) Class {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Class
	}
	return Outage
}

// Params are a provider's registration fields, exactly as they appear on the
// external key object (e.g. tenant_id, vault_uri, key_name for Azure).
type Params map[string]string

// Driver builds Providers of one type ("local", "azure", ...).
type Driver interface {
	// Type is the external key type this driver serves.
	Type() string
	// Check validates and normalises registration params for orgID without
	// any network call. Errors are *Error with Class Invalid and a Code
	// naming the offending parameter.
	Check(orgID string, p Params) (Params, error)
	// Open returns a Provider for params that passed Check.
	Open(orgID string, p Params) (Provider, error)
}

// Registry maps external key types to drivers.
type Registry struct {
	drivers map[string]Driver
}

// NewRegistry returns a registry with the given drivers.
func NewRegistry(ds ...Driver) *Registry {
	r := &Registry{drivers: map[string]Driver{}}
	for _, d := range ds {
		r.drivers[d.Type()] = d
	}
	return r
}

// Driver returns the driver for typ, or false if none is built in.
func (r *Registry) Driver(typ string) (Driver, bool) {
	d, ok := r.drivers[typ]
	return d, ok
}

// Open is a shortcut for Driver(typ).Open.
func (r *Registry) Open(typ, orgID string, p Params) (Provider, error) {
	d, ok := r.drivers[typ]
	if !ok {
		return nil, &Error{Class: Invalid, Code: "unsupported_type", Message: fmt.Sprintf("external key type %q is not supported by this server", typ)}
	}
	return d.Open(orgID, p)
}

// Preflighter is implemented by providers that can check a key's setup
// beyond a round trip (key type, enabled, permitted operations) and explain
// what is wrong. Registration and /validate call it before the round trip.
type Preflighter interface {
	Preflight(ctx context.Context) error
}

// CallInfo collects facts about one KMS call that the caller records in the
// audit log. Providers fill it in when present in the context.
type CallInfo struct {
	// RequestID is the id sent to the KMS so the customer can find the call
	// in its own logs (Azure: x-ms-client-request-id); the last one when
	// the call made several requests.
	RequestID string
	// RequestIDs are all the ids sent, in order: one operation such as a
	// validation (read, encrypt, decrypt, read) makes several requests, and
	// each must be findable. At most MaxCallRequestIDs.
	RequestIDs []string
}

// MaxCallRequestIDs bounds CallInfo.RequestIDs.
const MaxCallRequestIDs = 16

// Record notes one request id sent to the KMS. Providers call it once per
// request, sequentially.
func (ci *CallInfo) Record(id string) {
	ci.RequestID = id
	if len(ci.RequestIDs) < MaxCallRequestIDs {
		ci.RequestIDs = append(ci.RequestIDs, id)
	}
}

type callInfoKey struct{}

// WithCallInfo returns a context in which providers record into ci.
func WithCallInfo(ctx context.Context, ci *CallInfo) context.Context {
	return context.WithValue(ctx, callInfoKey{}, ci)
}

// CallInfoFrom returns the CallInfo of ctx, or nil.
func CallInfoFrom(ctx context.Context) *CallInfo {
	ci, _ := ctx.Value(callInfoKey{}).(*CallInfo)
	return ci
}
