// Package kmsfake is a test KMS driver: local keys whose calls can be
// counted, held and made to fail, standing in for a customer's KMS in tests
// of what ekm does with KMS results. It is never linked into the binary.
package kmsfake

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/kms/local"
	"github.com/ekm-dev/ekm/secret"
)

// Type is the external key type the driver serves.
const Type = "fake"

// Driver serves Type keys backed by local keys.
type Driver struct {
	inner    *local.Driver
	Unwraps  atomic.Int64
	Wraps    atomic.Int64
	Describs atomic.Int64
	// projectScoped: the type declares that its policies can refuse single
	// projects (kms.Spec.ProjectScoped); see SetProjectScoped.
	projectScoped atomic.Bool
	// MaxInFlight is the most Unwrap calls seen running at once.
	MaxInFlight atomic.Int64
	inFlight    atomic.Int64

	mu     sync.Mutex
	fail   error
	hold   chan struct{}
	label  string
	denied map[string]bool // project ids refused alone
}

// SetProjectScoped makes the type declare that its customers' policies can
// refuse single projects, so that the probe checks every project.
func (d *Driver) SetProjectScoped(on bool) { d.projectScoped.Store(on) }

// DenyProject makes every call with projectID's associated data fail as a
// customer policy refusing that project alone would (kms.ScopeProject);
// AllowProject undoes it.
func (d *Driver) DenyProject(projectID string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.denied == nil {
		d.denied = map[string]bool{}
	}
	d.denied[projectID] = true
}

// AllowProject undoes DenyProject.
func (d *Driver) AllowProject(projectID string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.denied, projectID)
}

// ErrProjectDenied is what a denied project's calls return.
var ErrProjectDenied = &kms.Error{Class: kms.Revoked, Code: "project_denied", Scope: kms.ScopeProject, Message: "the key's policy refuses this project"}

func (d *Driver) deniedFor(aad kms.AAD) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if aad.ProjectID != "" && d.denied[aad.ProjectID] {
		return ErrProjectDenied
	}
	return nil
}

// Relabel makes new wraps carry algorithm label (as an older version of a
// driver would have); "" restores the driver's own.
func (d *Driver) Relabel(label string) { d.mu.Lock(); d.label = label; d.mu.Unlock() }

func (d *Driver) relabel() string { d.mu.Lock(); defer d.mu.Unlock(); return d.label }

// New returns a driver over a fresh root key.
func New() *Driver { return &Driver{inner: local.NewDriver(secret.New())} }

func (d *Driver) Type() string { return Type }
func (d *Driver) Spec() kms.Spec {
	s := d.inner.Spec()
	s.Type, s.Title = Type, "Test KMS"
	s.ProjectScoped = d.projectScoped.Load()
	s.Codes = append(s.Codes, kms.Code{Code: ErrProjectDenied.Code, Class: kms.Revoked, Description: "a policy refuses one project"},
		kms.Code{Code: ErrRevoked.Code, Class: kms.Revoked, Description: "access withdrawn"},
		kms.Code{Code: ErrOutage.Code, Class: kms.Outage, Description: "the KMS answered 503"})
	return s
}
func (d *Driver) Check(org string, p kms.Params) (kms.Params, error) {
	return d.inner.Check(org, p)
}
func (d *Driver) Open(org string, p kms.Params) (kms.Provider, error) {
	inner, err := d.inner.Open(org, p)
	return &provider{d: d, inner: inner}, err
}

// Fail makes every call return err (nil: work again).
func (d *Driver) Fail(err error) { d.mu.Lock(); d.fail = err; d.mu.Unlock() }

// InFlight is the number of Unwrap calls running now.
func (d *Driver) InFlight() int64 { return d.inFlight.Load() }

// Hold makes Unwrap calls wait until the returned func is called.
func (d *Driver) Hold() (release func()) {
	ch := make(chan struct{})
	d.mu.Lock()
	d.hold = ch
	d.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			d.mu.Lock()
			d.hold = nil
			d.mu.Unlock()
			close(ch)
		})
	}
}

func (d *Driver) state() (chan struct{}, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.hold, d.fail
}

type provider struct {
	d     *Driver
	inner kms.Provider
}

func (p *provider) Wrap(ctx context.Context, pt []byte, aad kms.AAD) (kms.Wrapped, error) {
	p.d.Wraps.Add(1)
	if _, err := p.d.state(); err != nil {
		return kms.Wrapped{}, err
	}
	if err := p.d.deniedFor(aad); err != nil {
		return kms.Wrapped{}, err
	}
	w, err := p.inner.Wrap(ctx, pt, aad)
	if l := p.d.relabel(); err == nil && l != "" {
		w.Algorithm = l
	}
	return w, err
}

func (p *provider) Unwrap(ctx context.Context, w kms.Wrapped, aad kms.AAD) ([]byte, error) {
	p.d.Unwraps.Add(1)
	n := p.d.inFlight.Add(1)
	defer p.d.inFlight.Add(-1)
	for {
		m := p.d.MaxInFlight.Load()
		if n <= m || p.d.MaxInFlight.CompareAndSwap(m, n) {
			break
		}
	}
	hold, err := p.d.state()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		_, err = p.d.state()
	}
	if err != nil {
		return nil, err
	}
	if err := p.d.deniedFor(aad); err != nil {
		return nil, err
	}
	if w.Algorithm != local.Algorithm && w.Algorithm != local.LegacyAlgorithm {
		w.Algorithm = local.Algorithm // a relabelled wrap
	}
	return p.inner.Unwrap(ctx, w, aad)
}

func (p *provider) Describe(ctx context.Context) (kms.KeyInfo, error) {
	p.d.Describs.Add(1)
	if _, err := p.d.state(); err != nil {
		return kms.KeyInfo{}, err
	}
	return p.inner.Describe(ctx)
}

// Errors of each class, as a provider would return them.
var (
	ErrRevoked = &kms.Error{Class: kms.Revoked, Code: "permission_denied", Message: "access to the key was withdrawn"}
	ErrOutage  = &kms.Error{Class: kms.Outage, Code: "kms_unavailable", Message: "the KMS answered 503"}
)
