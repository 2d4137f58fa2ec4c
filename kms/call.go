package kms

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// Ref names one KEK as ekm registered it: an external key, or the
// operator's default key (ID "").
type Ref struct {
	ID     string // external key id; "" = the operator's default key
	OrgID  string // "" for the default key
	Type   string
	Params Params
}

func (r Ref) fingerprint() string {
	b, _ := json.Marshal(r.Params) // map keys are sorted
	return r.Type + "|" + r.OrgID + "|" + string(b)
}

// Operation names, as recorded in metrics and kms.call audit events.
const (
	OpWrap     = "wrap"
	OpUnwrap   = "unwrap"
	OpDescribe = "describe"
	OpValidate = "validate"
)

// Call is one KMS operation as the call layer saw it.
type Call struct {
	Key Ref
	Op  string
	// Err is nil on success, else a *Error (or wraps one).
	Err      error
	Duration time.Duration
	// RequestID is the last id sent to the KMS ("" if none).
	RequestID string
	// RequestIDs are the ids sent to the KMS, in order (at most
	// MaxCallRequestIDs): one operation such as a validation makes several
	// requests, and the customer must be able to find each in its own logs.
	RequestIDs []string
}

// Outcome is "ok" or the failure's class.
func (c Call) Outcome() string {
	if c.Err == nil {
		return "ok"
	}
	return string(ClassOf(c.Err))
}

// Observer sees every KMS call, with the context of the caller that caused
// it (so request ids and deadlines carry through). It must not block for
// long: calls wait for it.
type Observer interface {
	ObserveCall(ctx context.Context, c Call)
}

// KeysConfig configures Keys.
type KeysConfig struct {
	Registry *Registry
	// Timeout bounds one operation, including every request it makes
	// (default 30s).
	Timeout time.Duration
	// Observer, if set, sees every call.
	Observer Observer
	// MaxOpen bounds the cache of open providers (default 10000).
	MaxOpen int
	// Logger receives the report of a provider that panicked (default:
	// slog.Default()).
	Logger *slog.Logger
}

// Keys opens registered KEKs and runs every operation on them through one
// call layer. Safe for concurrent use.
type Keys struct {
	cfg  KeysConfig
	mu   sync.Mutex
	open map[string]openKey // by Ref.ID
}

type openKey struct {
	fingerprint string
	key         *Key
}

// NewKeys returns the call layer over cfg.Registry.
func NewKeys(cfg KeysConfig) *Keys {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.MaxOpen <= 0 {
		cfg.MaxOpen = 10000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Keys{cfg: cfg, open: map[string]openKey{}}
}

// Registry returns the drivers behind these keys.
func (ks *Keys) Registry() *Registry { return ks.cfg.Registry }

// Open returns the key for ref. Providers are opened once per ref and
// reopened when its type or params change.
func (ks *Keys) Open(ref Ref) (*Key, error) {
	fp := ref.fingerprint()
	ks.mu.Lock()
	ok, hit := ks.open[ref.ID]
	ks.mu.Unlock()
	if hit && ok.fingerprint == fp {
		return ok.key, nil
	}
	p, err := ks.openProvider(ref)
	if err != nil {
		return nil, err
	}
	k := &Key{ks: ks, ref: ref, p: p}
	ks.mu.Lock()
	// Bounded: registrations that fail validation or are deleted leave
	// entries behind. Opening again is cheap (drivers cache credentials),
	// so dropping them all at the bound is fine.
	if len(ks.open) >= ks.cfg.MaxOpen {
		clear(ks.open)
	}
	ks.open[ref.ID] = openKey{fingerprint: fp, key: k}
	ks.mu.Unlock()
	return k, nil
}

// openProvider opens ref's provider; a driver that panics while opening
// (parsing params, building its SDK clients) fails like a call that panics
// (Key.run): an outage, logged without the panic's value.
func (ks *Keys) openProvider(ref Ref) (p Provider, err error) {
	completed := false
	defer func() {
		if completed {
			return
		}
		p, err = nil, ks.panicked(recover(), PanicStack(), "kms: the driver panicked opening a key; answered as an outage", ref, "open")
	}()
	p, err = ks.cfg.Registry.Open(ref.Type, ref.OrgID, ref.Params)
	completed = true
	return p, err
}

// panicked logs a recovered panic of a driver or provider (what and where,
// never the value) and returns the outage every caller gets for it.
func (ks *Keys) panicked(v any, stack, msg string, ref Ref, op string) *Error {
	ks.cfg.Logger.Error(msg, "type", ref.Type, "external_key_id", ref.ID, "op", op, "panic", DescribePanic(v), "stack", stack)
	return &Error{Class: Outage, Code: CodeUnreachable,
		Message: "ekm's connector to the customer's key management service failed unexpectedly; retry later", Err: ErrProviderPanicked}
}

// Forget drops the open provider of a deleted external key.
func (ks *Keys) Forget(id string) {
	ks.mu.Lock()
	delete(ks.open, id)
	ks.mu.Unlock()
}

// Key is one open KEK. Every method is one recorded operation.
type Key struct {
	ks  *Keys
	ref Ref
	p   Provider
}

// Ref returns what the key was opened for.
func (k *Key) Ref() Ref { return k.ref }

// Wrap wraps plaintext under the KEK's current version, bound to aad.
func (k *Key) Wrap(ctx context.Context, plaintext []byte, aad AAD) (Wrapped, error) {
	var w Wrapped
	err := k.Do(ctx, OpWrap, func(ctx context.Context, p Provider) error {
		var err error
		w, err = p.Wrap(ctx, plaintext, aad)
		return err
	})
	return w, err
}

// Unwrap unwraps w, which must have been wrapped with aad.
func (k *Key) Unwrap(ctx context.Context, w Wrapped, aad AAD) ([]byte, error) {
	var pt []byte
	err := k.Do(ctx, OpUnwrap, func(ctx context.Context, p Provider) error {
		var err error
		pt, err = p.Unwrap(ctx, w, aad)
		return err
	})
	return pt, err
}

// Describe reports the KEK's current version and state.
func (k *Key) Describe(ctx context.Context) (KeyInfo, error) {
	var info KeyInfo
	err := k.Do(ctx, OpDescribe, func(ctx context.Context, p Provider) error {
		var err error
		info, err = p.Describe(ctx)
		return err
	})
	return info, err
}

// Validate checks the KEK end to end as one operation: the provider's
// preflight (key type, state, permitted operations), a wrap and unwrap of a
// random key bound to aad, and a describe.
func (k *Key) Validate(ctx context.Context, aad AAD) (KeyInfo, error) {
	var info KeyInfo
	err := k.Do(ctx, OpValidate, func(ctx context.Context, p Provider) error {
		if pf, ok := p.(Preflighter); ok {
			if err := pf.Preflight(ctx); err != nil {
				return err
			}
		}
		probe := make([]byte, 32)
		_, _ = rand.Read(probe)
		defer clear(probe)
		w, err := p.Wrap(ctx, probe, aad)
		if err != nil {
			return err
		}
		got, err := p.Unwrap(ctx, w, aad)
		if err != nil {
			return err
		}
		same := bytes.Equal(got, probe)
		clear(got)
		if !same {
			return &Error{Class: Invalid, Code: CodeRoundTripFailed, Message: "the key management service returned different bytes than were encrypted"}
		}
		info, err = p.Describe(ctx)
		if info.CurrentVersion == "" {
			info.CurrentVersion = w.KeyVersion
		}
		return err
	})
	return info, err
}

// Do runs fn against the provider as one recorded operation named op: with
// the layer's timeout, its requests' ids collected, any failure returned as
// a *Error, and the call reported to the observer with ctx.
func (k *Key) Do(ctx context.Context, op string, fn func(ctx context.Context, p Provider) error) error {
	ci := &CallInfo{}
	cctx, cancel := context.WithTimeout(WithCallInfo(ctx, ci), k.ks.cfg.Timeout)
	start := time.Now()
	err := wrapError(k.run(cctx, op, fn))
	d := time.Since(start)
	cancel()
	if o := k.ks.cfg.Observer; o != nil {
		o.ObserveCall(ctx, Call{Key: k.ref, Op: op, Err: err, Duration: d, RequestID: ci.RequestID, RequestIDs: ci.RequestIDs})
	}
	return err
}

// run calls fn, turning a panic of the provider or its SDK into an
// outage: every caller (a request, the probe's per-project checks, a
// scheduled rotation, the org migration) gets an error it already handles,
// and one bug in a provider cannot end the process of every replica that
// uses the key. The panic value is not logged (it could hold anything).
func (k *Key) run(ctx context.Context, op string, fn func(ctx context.Context, p Provider) error) (err error) {
	completed := false
	defer func() {
		if completed {
			return
		}
		err = k.ks.panicked(recover(), PanicStack(), "kms: the provider panicked during a call; answered as an outage", k.ref, op)
	}()
	err = fn(ctx, k.p)
	completed = true
	return err
}

// wrapError makes every failure of the call layer a *Error: a provider's
// own, or an Outage for timeouts and anything unclassified (never mistake
// an unknown failure for a revocation).
func wrapError(err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &Error{Class: Outage, Code: CodeTimeout, Message: "the customer's key management service did not answer in time", Err: err}
	}
	return &Error{Class: Outage, Code: CodeUnreachable, Message: "the customer's key management service could not be reached", Err: err}
}

// CallInfo collects the request ids of one operation. Providers record into
// it when present in the context.
type CallInfo struct {
	// RequestID is the last id sent.
	RequestID string
	// RequestIDs are all the ids sent, in order; at most MaxCallRequestIDs.
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
