package probe_test

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/ids"
	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/kms/kmsfake"
	"github.com/ekm-dev/ekm/kms/local"
	"github.com/ekm-dev/ekm/lifecycle"
	"github.com/ekm-dev/ekm/metrics"
	"github.com/ekm-dev/ekm/probe"
	"github.com/ekm-dev/ekm/secret"
	"github.com/ekm-dev/ekm/store"
	"github.com/ekm-dev/ekm/store/sqlstore"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// panicType is a test driver whose provider panics on demand, as a bug in
// a provider or its SDK would (H1: a closed Cloud KMS client).
const panicType = "panicky"

// secretMark is in every panic value: it must never reach the log.
const secretMark = "SECRET-KEY-MATERIAL-0123456789"

type panicDriver struct {
	inner       *local.Driver
	unwrap      atomic.Bool // Unwrap panics
	wrapProject atomic.Bool // Wrap of a project key (not the probe's encrypt) panics
}

func (d *panicDriver) Type() string { return panicType }
func (d *panicDriver) Spec() kms.Spec {
	s := d.inner.Spec()
	s.Type = panicType
	return s
}
func (d *panicDriver) Check(org string, p kms.Params) (kms.Params, error) {
	return d.inner.Check(org, p)
}
func (d *panicDriver) Open(org string, p kms.Params) (kms.Provider, error) {
	inner, err := d.inner.Open(org, p)
	return &panicProvider{d: d, Provider: inner}, err
}

type panicProvider struct {
	d *panicDriver
	kms.Provider
}

func (p *panicProvider) Unwrap(ctx context.Context, w kms.Wrapped, aad kms.AAD) ([]byte, error) {
	if p.d.unwrap.Load() {
		panic(secretMark)
	}
	return p.Provider.Unwrap(ctx, w, aad)
}

func (p *panicProvider) Wrap(ctx context.Context, pt []byte, aad kms.AAD) (kms.Wrapped, error) {
	if p.d.wrapProject.Load() && aad.ProjectID != "" {
		var m map[string]int
		m[secretMark] = 1 // a runtime error: assignment to entry in nil map
	}
	return p.Provider.Wrap(ctx, pt, aad)
}

// syncBuffer is a log sink safe for the probe's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type panicEnv struct {
	*env
	pd  *panicDriver
	log *syncBuffer
	m   *metrics.Metrics
}

func newPanicEnv(t *testing.T) *panicEnv {
	t.Helper()
	st, err := sqlstore.Open(context.Background(), filepath.Join(t.TempDir(), "ekm.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	drv := kmsfake.New()
	pd := &panicDriver{inner: local.NewDriver(secret.New())}
	log := &syncBuffer{}
	// The KMS call layer recovers a provider's panic (an outage) and logs
	// it through the service's logger; the probe recovers what panics above it.
	svc := lifecycle.New(lifecycle.Config{Store: st, Registry: kms.NewRegistry(local.NewDriver(secret.New()), drv, pd),
		Default: kms.Ref{Type: local.Type, Params: kms.Params{local.ParamKeyID: "default"}}, Logger: slog.New(slog.NewTextHandler(log, nil))})
	m := metrics.New()
	e := &env{st: st, svc: svc, kr: svc.Keyring(), drv: drv, org: ids.New("org-")}
	e.p = probe.New(probe.Config{Store: st, Service: svc, Interval: time.Hour, EncryptEvery: 1,
		Logger: slog.New(slog.NewTextHandler(log, nil)), Metrics: m})
	if err := st.CreateOrg(context.Background(), store.Org{ID: e.org, Name: "o", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	return &panicEnv{env: e, pd: pd, log: log, m: m}
}

// A provider that panics during its key's check does not end the process
// (the check runs in a goroutine of the round: an unrecovered panic there
// exits), does not stop the other keys' checks, and counts as an outage:
// the key is not marked unavailable, its gate stays open and its cached
// project keys keep serving. The log names the key and the panic site but
// not the panic's value.
func TestPanickingProviderIsAnOutage(t *testing.T) {
	e := newPanicEnv(t)
	ctx := context.Background()
	bad := e.extKey(t, panicType)
	good := e.extKey(t, kmsfake.Type)
	badPid := e.project(t, bad)
	goodPid := e.project(t, good)
	for _, pid := range []string{badPid, goodPid} {
		if _, err := e.kr.Key(ctx, e.org, pid, 1); err != nil {
			t.Fatal(err)
		}
	}
	e.pd.unwrap.Store(true)
	e.drv.Fail(kmsfake.ErrRevoked) // the other key's check still runs and finds this
	e.p.Round(ctx)

	// An outage: degraded at most, never unavailable.
	if got := e.status(t, bad.ID); got.Status != store.StatusValid && got.Status != store.StatusDegraded {
		t.Fatalf("a panicking check recorded more than an outage: %+v", got)
	}
	if u := e.kr.Unavailable(bad.ID); u != nil {
		t.Fatalf("a panicking check closed the gate: %v", u)
	}
	if _, err := e.kr.Key(ctx, e.org, badPid, 1); err != nil {
		t.Fatalf("the cached key of a key whose check panicked: %v", err)
	}
	if got := e.status(t, good.ID); got.Status != store.StatusUnavailable {
		t.Fatalf("the other key's check did not run to its end: %+v", got)
	}
	if n := testutil.ToFloat64(e.m.KeyStatus.WithLabelValues(store.StatusDegraded)); n != 1 {
		t.Fatalf("degraded keys in the round's figures = %v, want 1 (the panicking check)", n)
	}
	out := e.log.String()
	if !strings.Contains(out, "panicked") || !strings.Contains(out, bad.ID) || !strings.Contains(out, "Unwrap") {
		t.Fatalf("the panic is not logged with its key and site:\n%s", out)
	}
	if strings.Contains(out, secretMark) {
		t.Fatalf("the panic's value reached the log:\n%s", out)
	}
	// Fixed, the next round finds the key valid as before.
	e.pd.unwrap.Store(false)
	e.p.Round(ctx)
	if got := e.status(t, bad.ID); got.Status != store.StatusValid {
		t.Fatalf("after the fix: %+v", got)
	}
}

// A provider that panics while rewrapping after a KEK rotation (which runs
// on the round's own goroutine) does not end the process either; the next
// round rewraps.
func TestPanickingRewrapIsRetried(t *testing.T) {
	e := newPanicEnv(t)
	ctx := context.Background()
	ek := e.extKey(t, panicType)
	pid := e.project(t, ek)
	e.p.Round(ctx) // first sight of the current version
	v1 := e.status(t, ek.ID).CurrentKEKVersion
	params := ek.Params
	params[local.ParamKeyVersion] = "2"
	if err := e.st.UpdateExternalKeyParams(ctx, e.org, ek.ID, params); err != nil {
		t.Fatal(err)
	}
	e.pd.wrapProject.Store(true)
	e.p.Round(ctx)
	after := e.status(t, ek.ID)
	if after.Status != store.StatusValid || after.CurrentKEKVersion == v1 {
		t.Fatalf("rotation not noticed: %+v", after)
	}
	if counts, _ := e.st.CountProjectKeysByKEKVersion(ctx, e.org, ek.ID); counts[v1] != 1 {
		t.Fatalf("rewrapped although the provider panicked: %v", counts)
	}
	out := e.log.String()
	if !strings.Contains(out, "panicked") || !strings.Contains(out, "assignment to entry in nil map") {
		t.Fatalf("the panic is not logged:\n%s", out)
	}
	if strings.Contains(out, secretMark) {
		t.Fatalf("the panic's value reached the log:\n%s", out)
	}
	e.pd.wrapProject.Store(false)
	e.p.Round(ctx)
	if counts, _ := e.st.CountProjectKeysByKEKVersion(ctx, e.org, ek.ID); counts[v1] != 0 || counts[after.CurrentKEKVersion] != 1 {
		t.Fatalf("not rewrapped by the next round: %v", counts)
	}
	if _, err := e.kr.Key(ctx, e.org, pid, 1); err != nil {
		t.Fatal(err)
	}
}
