package local_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/kms/kmstest"
	"github.com/ekm-dev/ekm/kms/local"
	"github.com/ekm-dev/ekm/secret"
)

// rotatable re-opens the provider at a higher version, as an operator would
// by bumping key_version on the external key.
type rotatable struct {
	d       *local.Driver
	params  kms.Params
	current kms.Provider
}

func (r *rotatable) Wrap(ctx context.Context, pt []byte, aad kms.AAD) (kms.Wrapped, error) {
	return r.current.Wrap(ctx, pt, aad)
}
func (r *rotatable) Unwrap(ctx context.Context, w kms.Wrapped, aad kms.AAD) ([]byte, error) {
	return r.current.Unwrap(ctx, w, aad)
}

var testAAD = kms.AAD{OrgID: "o", ProjectID: "proj_1", Version: 1}

func (r *rotatable) Describe(ctx context.Context) (kms.KeyInfo, error) {
	return r.current.Describe(ctx)
}

func TestConformance(t *testing.T) {
	root := secret.New()
	d := local.NewDriver(root)
	kmstest.Run(t, func(t *testing.T) kmstest.Harness {
		p, err := d.Check("org-test", nil)
		if err != nil {
			t.Fatal(err)
		}
		prov, err := d.Open("org-test", p)
		if err != nil {
			t.Fatal(err)
		}
		r := &rotatable{d: d, params: p, current: prov}
		return kmstest.Harness{
			Provider: r, Driver: d, OrgID: "org-test",
			Rotate: func(context.Context) error {
				n, _ := strconv.Atoi(r.params[local.ParamKeyVersion])
				r.params[local.ParamKeyVersion] = strconv.Itoa(n + 1)
				r.current, err = d.Open("org-test", r.params)
				return err
			},
		}
	})
}

func TestCheckRejectsBadParams(t *testing.T) {
	d := local.NewDriver(secret.New())
	for _, p := range []kms.Params{
		{local.ParamKeyID: "UPPER"},
		{local.ParamKeyVersion: "0"},
		{local.ParamKeyVersion: "01"},
		{"vault_uri": "https://x"},
	} {
		if _, err := d.Check("org-1", p); kms.ClassOf(err) != kms.Invalid {
			t.Errorf("Check(%v) = %v, want Invalid", p, err)
		}
	}
}

func TestDifferentRootsDifferentKeys(t *testing.T) {
	p := kms.Params{local.ParamKeyID: "k1", local.ParamKeyVersion: "1"}
	a, _ := local.NewDriver(secret.New()).Open("o", p)
	b, _ := local.NewDriver(secret.New()).Open("o", p)
	w, err := a.Wrap(context.Background(), make([]byte, 32), testAAD)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Unwrap(context.Background(), w, testAAD); err == nil {
		t.Fatal("a key wrapped under one root unwrapped under another")
	}
}

func TestKeysAreBoundToTheOrg(t *testing.T) {
	d := local.NewDriver(secret.New())
	p := kms.Params{local.ParamKeyID: "default", local.ParamKeyVersion: "1"}
	a, _ := d.Open("org-a", p)
	b, _ := d.Open("org-b", p)
	w, err := a.Wrap(context.Background(), make([]byte, 32), testAAD)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Unwrap(context.Background(), w, testAAD); err == nil {
		t.Fatal("another org naming the same local key id unwrapped the key")
	}
}
