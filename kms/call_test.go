package kms_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/kms/local"
	"github.com/ekm-dev/ekm/secret"
)

type ctxKey struct{}

// recorder is an Observer that keeps every call with a value of its context.
type recorder struct {
	mu    sync.Mutex
	calls []kms.Call
	vals  []any
}

func (r *recorder) ObserveCall(ctx context.Context, c kms.Call) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, c)
	r.vals = append(r.vals, ctx.Value(ctxKey{}))
}

// slowDriver serves local keys whose Unwrap waits for the context and
// whose Wrap fails with a plain error (what a buggy provider might do).
type slowDriver struct{ *local.Driver }

func (d slowDriver) Type() string { return "slow" }
func (d slowDriver) Spec() kms.Spec {
	s := d.Driver.Spec()
	s.Type = "slow"
	return s
}
func (d slowDriver) Open(org string, p kms.Params) (kms.Provider, error) {
	inner, err := d.Driver.Open(org, p)
	return slowProvider{inner}, err
}

type slowProvider struct{ kms.Provider }

func (slowProvider) Wrap(context.Context, []byte, kms.AAD) (kms.Wrapped, error) {
	return kms.Wrapped{}, errors.New("socket: connection reset")
}
func (slowProvider) Unwrap(ctx context.Context, _ kms.Wrapped, _ kms.AAD) ([]byte, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func TestCallLayer(t *testing.T) {
	rec := &recorder{}
	root := secret.New()
	reg := kms.NewRegistry(local.NewDriver(root), slowDriver{local.NewDriver(root)})
	keys := kms.NewKeys(kms.KeysConfig{Registry: reg, Timeout: 20 * time.Millisecond, Observer: rec})
	ctx := context.WithValue(context.Background(), ctxKey{}, "req-42")
	aad := kms.AAD{OrgID: "org-a", ProjectID: "proj_a", Version: 1}

	k, err := keys.Open(kms.Ref{ID: "extkey_1", OrgID: "org-a", Type: local.Type, Params: kms.Params{local.ParamKeyID: "k", local.ParamKeyVersion: "1"}})
	if err != nil {
		t.Fatal(err)
	}
	w, err := k.Wrap(ctx, make([]byte, 32), aad)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Unwrap(ctx, w, aad); err != nil {
		t.Fatal(err)
	}
	if len(rec.calls) != 2 || rec.calls[0].Op != kms.OpWrap || rec.calls[1].Op != kms.OpUnwrap || rec.calls[0].Key.ID != "extkey_1" {
		t.Fatalf("observed %+v", rec.calls)
	}
	// The observer sees the caller's context (its request id), not a fresh one.
	if rec.vals[0] != "req-42" || rec.calls[0].Outcome() != "ok" {
		t.Fatalf("observer context value %v, outcome %s", rec.vals[0], rec.calls[0].Outcome())
	}

	// The same ref opens the same key; changed params reopen it.
	same, _ := keys.Open(k.Ref())
	if same != k {
		t.Fatal("an unchanged ref opened a new provider")
	}
	ref := k.Ref()
	ref.Params = kms.Params{local.ParamKeyID: "k", local.ParamKeyVersion: "2"}
	if k2, _ := keys.Open(ref); k2 == k {
		t.Fatal("changed params reused the old provider")
	}

	slow, err := keys.Open(kms.Ref{ID: "extkey_2", OrgID: "org-a", Type: "slow", Params: kms.Params{local.ParamKeyID: "k"}})
	if err != nil {
		t.Fatal(err)
	}
	// A provider that never answers is cut off by the layer's timeout, as
	// an outage (never a revocation).
	_, err = slow.Unwrap(ctx, w, aad)
	var ke *kms.Error
	if !errors.As(err, &ke) || ke.Class != kms.Outage || ke.Code != kms.CodeTimeout || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("timeout: %v", err)
	}
	// An unclassified provider error becomes an Outage *kms.Error whose
	// message hides the raw text.
	_, err = slow.Wrap(ctx, make([]byte, 32), aad)
	if !errors.As(err, &ke) || ke.Class != kms.Outage || strings.Contains(ke.Message, "socket") {
		t.Fatalf("unclassified: %v", err)
	}
	if got := rec.calls[len(rec.calls)-1].Outcome(); got != string(kms.Outage) {
		t.Fatalf("failed call outcome %q", got)
	}

	// Unknown and not-enabled types are refused with a parameter.
	reg.Describe(kms.Spec{Type: "aws", Title: "AWS KMS"})
	for typ, want := range map[string]string{"nope": "not supported", "aws": "not enabled"} {
		_, err := reg.Check(typ, "org-a", nil)
		if !errors.As(err, &ke) || ke.Code != kms.CodeUnsupportedType || ke.Param != "type" || !strings.Contains(ke.Message, want) {
			t.Fatalf("Check(%s) = %v", typ, err)
		}
	}
	if _, enabled, ok := reg.Spec("aws"); !ok || enabled {
		t.Fatal("described type not known, or known as enabled")
	}
}

func TestOpenIsBounded(t *testing.T) {
	keys := kms.NewKeys(kms.KeysConfig{Registry: kms.NewRegistry(local.NewDriver(secret.New())), MaxOpen: 3})
	var first *kms.Key
	for i := range 10 {
		k, err := keys.Open(kms.Ref{ID: "extkey_" + string(rune('a'+i)), OrgID: "org-a", Type: local.Type, Params: kms.Params{local.ParamKeyID: "k"}})
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = k
		}
	}
	// The first was dropped at the bound: opening it again builds a new one.
	if k, _ := keys.Open(first.Ref()); k == first {
		t.Fatal("cache grew past MaxOpen")
	}
}

func TestAAD(t *testing.T) {
	a := kms.AAD{OrgID: "org-a", ProjectID: "proj_b", Version: 3}
	if got := string(a.Bytes()); got != `{"ekm:org":"org-a","ekm:project":"proj_b","ekm:version":"3"}` {
		t.Fatalf("Bytes = %s", got)
	}
	if got := (kms.AAD{OrgID: "org-a"}).Context(); len(got) != 1 || got[kms.AADOrg] != "org-a" {
		t.Fatalf("org-only context %v", got)
	}
	// Different AADs never encode alike, even with separators in ids.
	b := kms.AAD{OrgID: `org-a","ekm:project":"proj_b`, Version: 3}
	if string(a.Bytes()) == string(b.Bytes()) {
		t.Fatal("collision")
	}
}

// panicDriver serves local keys whose Unwrap panics with a value that
// must never reach a log.
type panicDriver struct{ *local.Driver }

func (d panicDriver) Type() string { return "panicky" }
func (d panicDriver) Spec() kms.Spec {
	s := d.Driver.Spec()
	s.Type = "panicky"
	return s
}
func (d panicDriver) Open(org string, p kms.Params) (kms.Provider, error) {
	inner, err := d.Driver.Open(org, p)
	return panicProvider{inner}, err
}

type panicProvider struct{ kms.Provider }

func (panicProvider) Unwrap(context.Context, kms.Wrapped, kms.AAD) ([]byte, error) {
	panic("SECRET-KEY-MATERIAL")
}

// A provider that panics is answered as an outage, observed like any
// failure, and logged without the panic value; the caller's goroutine (a
// request, a probe worker, a leader job) goes on.
func TestProviderPanicIsAnOutage(t *testing.T) {
	rec := &recorder{}
	var logs strings.Builder
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(p)
	}), nil))
	keys := kms.NewKeys(kms.KeysConfig{Registry: kms.NewRegistry(panicDriver{local.NewDriver(secret.New())}), Observer: rec, Logger: logger})
	k, err := keys.Open(kms.Ref{ID: "extkey_p", OrgID: "org-a", Type: "panicky", Params: kms.Params{local.ParamKeyID: "k", local.ParamKeyVersion: "1"}})
	if err != nil {
		t.Fatal(err)
	}
	aad := kms.AAD{OrgID: "org-a", ProjectID: "proj_a", Version: 1}
	w, err := k.Wrap(context.Background(), make([]byte, 32), aad)
	if err != nil {
		t.Fatal(err)
	}
	// From another goroutine, as the probe's per-project workers call it:
	// an unrecovered panic there would end the test binary.
	errc := make(chan error)
	go func() {
		_, err := k.Unwrap(context.Background(), w, aad)
		errc <- err
	}()
	err = <-errc
	var ke *kms.Error
	if !errors.As(err, &ke) || ke.Class != kms.Outage || !errors.Is(err, kms.ErrProviderPanicked) {
		t.Fatalf("Unwrap of a panicking provider: %v, want an outage wrapping ErrProviderPanicked", err)
	}
	if n := len(rec.calls); n != 2 || rec.calls[1].Outcome() != string(kms.Outage) {
		t.Fatalf("observed %+v", rec.calls)
	}
	mu.Lock()
	out := logs.String()
	mu.Unlock()
	if strings.Contains(out, "SECRET-KEY-MATERIAL") || strings.Contains(err.Error(), "SECRET-KEY-MATERIAL") {
		t.Fatalf("the panic value leaked: %s / %v", out, err)
	}
	if !strings.Contains(out, "panic value of type string") || !strings.Contains(out, "panicProvider.Unwrap") || !strings.Contains(out, "extkey_p") {
		t.Fatalf("the log does not say what panicked where: %s", out)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// openPanicDriver panics while opening a key (parsing its params).
type openPanicDriver struct{ panicDriver }

func (openPanicDriver) Open(string, kms.Params) (kms.Provider, error) {
	var m map[string]int
	m["driver bug"]++
	return nil, nil
}

// A driver that panics opening a key fails the open as an outage.
func TestDriverPanicOnOpenIsAnOutage(t *testing.T) {
	keys := kms.NewKeys(kms.KeysConfig{Registry: kms.NewRegistry(openPanicDriver{panicDriver{local.NewDriver(secret.New())}}),
		Logger: slog.New(slog.DiscardHandler)})
	_, err := keys.Open(kms.Ref{ID: "extkey_o", OrgID: "org-a", Type: "panicky", Params: kms.Params{local.ParamKeyID: "k"}})
	var ke *kms.Error
	if !errors.As(err, &ke) || ke.Class != kms.Outage || !errors.Is(err, kms.ErrProviderPanicked) {
		t.Fatalf("open by a panicking driver: %v", err)
	}
}
