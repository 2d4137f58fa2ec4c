// Package kms defines how ekm talks to a customer's key management service.
//
// A [Provider] wraps and unwraps ekm's project keys under one customer key
// (the KEK). The KEK never leaves the customer's KMS; ekm stores only what
// Wrap returns, including the exact KEK version the KMS used, and passes that
// back to Unwrap so that a customer rotating its key never breaks old data.
// Every wrap is bound to associated data ([AAD]: org, project, key version).
//
// A [Driver] builds Providers of one external key type and describes that
// type ([Spec]: its registration fields, diagnosis codes and onboarding
// steps), so that the Admin API needs no table of its own. A [Registry]
// holds the drivers a server runs.
//
// Callers do not use Providers directly: [Keys] opens them and runs every
// operation through one call layer (timeout, error wrapping, and an
// [Observer] that sees each call with the caller's context, for metrics and
// the audit log), in the manner of gocloud.dev/secrets over its drivers.
//
// Every provider reports failures as [*Error], which classifies them (see
// [Class]) so that revocation can be told apart from an outage, and carries a
// machine-readable code, the onboarding step the customer has to fix and the
// registration parameter at fault. Each provider passes the conformance
// suite in package kmstest.
package kms

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
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

// AAD is the associated data bound to a wrapped key: the org, project and
// project key version it belongs to. Unwrap with different AAD fails.
//
// Providers hand it to the KMS where the KMS takes it (AWS KMS
// EncryptionContext, Cloud KMS additionalAuthenticatedData, OCI
// associatedData), so that a customer can grant or deny one project in its
// own key policy; where the KMS has none (RSA-OAEP in Azure Key Vault), the
// provider binds it inside what it encrypts. Wraps that belong to no project
// (validation, health probes) carry only the org.
type AAD struct {
	OrgID     string
	ProjectID string // "" for wraps of no project
	Version   int    // project key version; 0 when ProjectID is ""
}

// AAD context keys, as a customer writes them in a policy condition (e.g.
// kms:EncryptionContext:ekm:project).
const (
	AADOrg     = "ekm:org"
	AADProject = "ekm:project"
	AADVersion = "ekm:version"
)

// Context returns the AAD as key-value pairs: the form of AWS KMS's
// EncryptionContext and OCI's associatedData.
func (a AAD) Context() map[string]string {
	m := map[string]string{AADOrg: a.OrgID}
	if a.ProjectID != "" {
		m[AADProject] = a.ProjectID
		m[AADVersion] = strconv.Itoa(a.Version)
	}
	return m
}

// Bytes returns a canonical encoding of the AAD for KMSs that take bytes:
// the JSON object of Context (keys sorted, so equal AADs encode equally and
// different ones never collide).
func (a AAD) Bytes() []byte {
	b, _ := json.Marshal(a.Context()) // a map of strings always marshals
	return b
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
	// version, bound to aad.
	Wrap(ctx context.Context, plaintext []byte, aad AAD) (Wrapped, error)
	// Unwrap decrypts w with exactly the KEK version recorded in it, and fails
	// unless aad is what w was wrapped with. The caller owns (and must wipe)
	// the returned bytes.
	Unwrap(ctx context.Context, w Wrapped, aad AAD) ([]byte, error)
	// Describe reports the KEK's current version and state.
	Describe(ctx context.Context) (KeyInfo, error)
}

// Preflighter is implemented by providers that can check a key's setup
// beyond a round trip (key type, enabled, permitted operations) and explain
// what is wrong. Validation calls it before the round trip.
type Preflighter interface {
	Preflight(ctx context.Context) error
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
	// "azure_service_principal_missing". Each driver lists its codes in its
	// Spec.
	Code string
	// Step is the onboarding step the customer must fix ("" if none), as
	// numbered in the driver's Spec and its docs (e.g. "3", or "2,4").
	Step string
	// Param is the registration parameter at fault ("" if none), e.g.
	// "tenant_id".
	Param string
	// Scope is what a revocation applies to: "" the whole key, ScopeProject
	// only the project whose associated data the call carried (the
	// customer's policy refuses that project, the key works for others).
	Scope string
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
		s += " [fix: step " + e.Step + "]"
	}
	if e.Param != "" {
		s += " [param: " + e.Param + "]"
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// ScopeProject is the Scope of a failure that concerns one project only.
const ScopeProject = "project"

// ClassOf returns the class of err, Outage for context deadlines and
// unclassified errors (the safe default: never mistake an unknown failure
// for a revocation), and "" for nil.
func ClassOf(err error) Class {
	if err == nil {
		return ""
	}
	if d, ok := Diagnose(err); ok {
		return d.Class
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
	// Spec describes the type: registration fields, codes, onboarding.
	Spec() Spec
	// Check validates and normalises registration params for orgID without
	// any network call. Errors are *Error with Class Invalid, a Code, and
	// Param naming the offending parameter when there is one.
	Check(orgID string, p Params) (Params, error)
	// Open returns a Provider for params that passed Check.
	Open(orgID string, p Params) (Provider, error)
}

// Registry maps external key types to drivers. It can also describe types
// this server knows but does not run (no driver configured), so that a
// registration of such a type is checked for shape and then refused as not
// enabled, and the console can say how to enable it.
type Registry struct {
	drivers map[string]Driver
	known   map[string]Spec
}

// NewRegistry returns a registry with the given drivers.
func NewRegistry(ds ...Driver) *Registry {
	r := &Registry{drivers: map[string]Driver{}, known: map[string]Spec{}}
	for _, d := range ds {
		r.drivers[d.Type()] = d
	}
	return r
}

// Describe adds the specs of types without a driver here (not enabled).
// Specs of types that have a driver are ignored. It returns r.
func (r *Registry) Describe(specs ...Spec) *Registry {
	for _, s := range specs {
		if _, ok := r.drivers[s.Type]; !ok {
			r.known[s.Type] = s
		}
	}
	return r
}

// Spec describes typ: from its driver when enabled, else from Describe.
// ok is false for types this server knows nothing of.
func (r *Registry) Spec(typ string) (s Spec, enabled, ok bool) {
	if d, ok := r.drivers[typ]; ok {
		return d.Spec(), true, true
	}
	s, ok = r.known[typ]
	return s, false, ok
}

// Known lists every type the registry describes (enabled or not), sorted.
func (r *Registry) Known() []string {
	out := make([]string, 0, len(r.drivers)+len(r.known))
	for t := range r.drivers {
		out = append(out, t)
	}
	for t := range r.known {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

// Driver returns the driver for typ, or false if none is built in.
func (r *Registry) Driver(typ string) (Driver, bool) {
	d, ok := r.drivers[typ]
	return d, ok
}

// UnsupportedType is the error for a type no driver of this server serves.
func UnsupportedType(typ string) *Error {
	return &Error{Class: Invalid, Code: CodeUnsupportedType, Param: "type",
		Message: fmt.Sprintf("external key type %q is not supported by this server", typ)}
}

// notEnabled is the error for a known type whose driver is not configured.
func notEnabled(typ string) *Error {
	return &Error{Class: Invalid, Code: CodeUnsupportedType, Param: "type",
		Message: fmt.Sprintf("external key type %q is not enabled on this server: its operator has not configured ekm's identity for it", typ)}
}

// Codes every driver may return through the call layer, in addition to its
// own.
const (
	CodeUnsupportedType  = "unsupported_type"
	CodeTimeout          = "kms_timeout"
	CodeUnreachable      = "kms_error"
	CodeRoundTripFailed  = "round_trip_mismatch"
	CodeInvalidKeyLength = "invalid_project_key"
)

// Check validates registration params of typ for orgID (no network call).
func (r *Registry) Check(typ, orgID string, p Params) (Params, error) {
	d, ok := r.drivers[typ]
	if !ok {
		if _, known := r.known[typ]; known {
			return nil, notEnabled(typ)
		}
		return nil, UnsupportedType(typ)
	}
	return d.Check(orgID, p)
}

// Open is a shortcut for Driver(typ).Open.
func (r *Registry) Open(typ, orgID string, p Params) (Provider, error) {
	d, ok := r.drivers[typ]
	if !ok {
		return nil, UnsupportedType(typ)
	}
	return d.Open(orgID, p)
}
