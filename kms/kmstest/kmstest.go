// Package kmstest is the conformance suite every kms.Provider must pass.
package kmstest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/ekm-dev/ekm/kms"
)

// Harness is one freshly provisioned KEK and the customer-side levers the
// suite pulls. Optional funcs may be nil; the tests that need them skip.
type Harness struct {
	Provider kms.Provider
	// Driver, if set, is the driver Provider came from; the suite checks its
	// Spec and that every error code the provider returns is listed there.
	Driver kms.Driver
	// OrgID is the org the key was opened for (default "org-kmstest").
	OrgID string
	// Rotate makes the KMS create a new current version of the KEK.
	Rotate func(ctx context.Context) error
	// Revoke withdraws ekm's access in some customer-side way.
	Revoke func(ctx context.Context) error
	// Restore undoes Revoke.
	Restore func(ctx context.Context) error
}

// Run runs the suite. newHarness is called once per subtest.
func Run(t *testing.T, newHarness func(t *testing.T) Harness) {
	ctx := context.Background()
	key := func() []byte {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		return b
	}
	// Every wrap of the suite is bound to a project's AAD, as ekm binds them.
	aadOf := func(h Harness) kms.AAD {
		org := h.OrgID
		if org == "" {
			org = "org-kmstest"
		}
		return kms.AAD{OrgID: org, ProjectID: "proj_kmstest", Version: 1}
	}

	t.Run("RoundTrip", func(t *testing.T) {
		h := newHarness(t)
		pt := key()
		w, err := h.Provider.Wrap(ctx, pt, aadOf(h))
		if err != nil {
			t.Fatalf("Wrap: %v", err)
		}
		if w.KeyVersion == "" || w.Algorithm == "" || len(w.Ciphertext) == 0 {
			t.Fatalf("Wrap returned incomplete %+v", w)
		}
		if bytes.Contains(w.Ciphertext, pt) {
			t.Fatal("wrapped key contains the plaintext")
		}
		got, err := h.Provider.Unwrap(ctx, w, aadOf(h))
		if err != nil {
			t.Fatalf("Unwrap: %v", err)
		}
		if !bytes.Equal(got, pt) {
			t.Fatal("Unwrap returned different bytes")
		}
	})

	t.Run("WrapIsRandomized", func(t *testing.T) {
		h := newHarness(t)
		pt := key()
		a, err1 := h.Provider.Wrap(ctx, pt, aadOf(h))
		b, err2 := h.Provider.Wrap(ctx, pt, aadOf(h))
		if err := errors.Join(err1, err2); err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(a.Ciphertext, b.Ciphertext) {
			t.Fatal("two wraps of one key are identical")
		}
	})

	t.Run("DescribeMatchesWrap", func(t *testing.T) {
		h := newHarness(t)
		info, err := h.Provider.Describe(ctx)
		if err != nil {
			t.Fatalf("Describe: %v", err)
		}
		if !info.Enabled || info.CurrentVersion == "" {
			t.Fatalf("Describe = %+v, want enabled with a version", info)
		}
		w, err := h.Provider.Wrap(ctx, key(), aadOf(h))
		if err != nil {
			t.Fatal(err)
		}
		if w.KeyVersion != info.CurrentVersion {
			t.Fatalf("Wrap used version %q, Describe says current is %q", w.KeyVersion, info.CurrentVersion)
		}
	})

	t.Run("TamperedCiphertextFails", func(t *testing.T) {
		h := newHarness(t)
		pt := key()
		w, err := h.Provider.Wrap(ctx, pt, aadOf(h))
		if err != nil {
			t.Fatal(err)
		}
		bad := w
		bad.Ciphertext = bytes.Clone(w.Ciphertext)
		bad.Ciphertext[len(bad.Ciphertext)/2] ^= 0x40
		got, err := h.Provider.Unwrap(ctx, bad, aadOf(h))
		if err == nil && bytes.Equal(got, pt) {
			t.Fatal("tampered ciphertext unwrapped to the original key")
		}
		if err == nil {
			t.Fatal("tampered ciphertext unwrapped without error")
		}
		if c := kms.ClassOf(err); c == kms.Revoked {
			t.Fatalf("tampered ciphertext classified as %s: %v", c, err)
		}
		checkCode(t, h, err)
		assertNoLeak(t, err, pt)
	})

	t.Run("AADIsBound", func(t *testing.T) {
		h := newHarness(t)
		pt := key()
		aad := aadOf(h)
		w, err := h.Provider.Wrap(ctx, pt, aad)
		if err != nil {
			t.Fatal(err)
		}
		other := map[string]kms.AAD{
			"project": {OrgID: aad.OrgID, ProjectID: "proj_other", Version: aad.Version},
			"version": {OrgID: aad.OrgID, ProjectID: aad.ProjectID, Version: aad.Version + 1},
			"org":     {OrgID: aad.OrgID + "x", ProjectID: aad.ProjectID, Version: aad.Version},
			"none":    {OrgID: aad.OrgID},
		}
		for name, a := range other {
			got, err := h.Provider.Unwrap(ctx, w, a)
			if err == nil {
				t.Fatalf("unwrap with another %s's AAD succeeded", name)
			}
			if bytes.Equal(got, pt) {
				t.Fatalf("unwrap with another %s's AAD returned the key", name)
			}
			if c := kms.ClassOf(err); c == kms.Revoked {
				t.Fatalf("AAD mismatch (%s) classified as %s: %v", name, c, err)
			}
			checkCode(t, h, err)
			assertNoLeak(t, err, pt)
		}
		got, err := h.Provider.Unwrap(ctx, w, aad)
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("Unwrap with the right AAD: %v", err)
		}
	})

	t.Run("SpecDescribesDriver", func(t *testing.T) {
		h := newHarness(t)
		if h.Driver == nil {
			t.Skip("harness has no driver")
		}
		checkSpec(t, h.Driver)
	})

	t.Run("ForeignVersionFails", func(t *testing.T) {
		h := newHarness(t)
		w, err := h.Provider.Wrap(ctx, key(), aadOf(h))
		if err != nil {
			t.Fatal(err)
		}
		w.KeyVersion = w.KeyVersion + "x"
		if _, err := h.Provider.Unwrap(ctx, w, aadOf(h)); err == nil {
			t.Fatal("unwrap with a foreign version succeeded")
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		h := newHarness(t)
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for range 16 {
			wg.Go(func() {
				pt := key()
				w, err := h.Provider.Wrap(ctx, pt, aadOf(h))
				if err != nil {
					errs <- err
					return
				}
				got, err := h.Provider.Unwrap(ctx, w, aadOf(h))
				if err == nil && !bytes.Equal(got, pt) {
					err = errors.New("mismatch")
				}
				if err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})

	t.Run("RotationKeepsOldVersionsReadable", func(t *testing.T) {
		h := newHarness(t)
		if h.Rotate == nil {
			t.Skip("harness cannot rotate")
		}
		pt := key()
		old, err := h.Provider.Wrap(ctx, pt, aadOf(h))
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Rotate(ctx); err != nil {
			t.Fatalf("Rotate: %v", err)
		}
		info, err := h.Provider.Describe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.CurrentVersion == old.KeyVersion {
			t.Fatal("Describe did not report the new version after rotation")
		}
		nw, err := h.Provider.Wrap(ctx, pt, aadOf(h))
		if err != nil {
			t.Fatal(err)
		}
		if nw.KeyVersion == old.KeyVersion {
			t.Fatal("wrap after rotation still used the old version")
		}
		for _, w := range []kms.Wrapped{old, nw} {
			got, err := h.Provider.Unwrap(ctx, w, aadOf(h))
			if err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("Unwrap(%s) = %v", w.KeyVersion, err)
			}
		}
	})

	t.Run("RevocationIsClassified", func(t *testing.T) {
		h := newHarness(t)
		if h.Revoke == nil {
			t.Skip("harness cannot revoke")
		}
		pt := key()
		w, err := h.Provider.Wrap(ctx, pt, aadOf(h))
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Revoke(ctx); err != nil {
			t.Fatalf("Revoke: %v", err)
		}
		_, err = h.Provider.Unwrap(ctx, w, aadOf(h))
		if c := kms.ClassOf(err); c != kms.Revoked {
			t.Fatalf("Unwrap after revoke: class %q (%v), want %q", c, err, kms.Revoked)
		}
		var ke *kms.Error
		if !errors.As(err, &ke) || ke.Code == "" || ke.Message == "" {
			t.Fatalf("revocation error lacks code/message: %v", err)
		}
		checkCode(t, h, err)
		assertNoLeak(t, err, pt)
		if h.Restore == nil {
			return
		}
		if err := h.Restore(ctx); err != nil {
			t.Fatalf("Restore: %v", err)
		}
		got, err := h.Provider.Unwrap(ctx, w, aadOf(h))
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("Unwrap after restore: %v", err)
		}
	})
}

// checkCode fails unless err is a *kms.Error whose code the driver's Spec
// lists with the same class (when the harness has a driver).
func checkCode(t *testing.T, h Harness, err error) {
	t.Helper()
	var ke *kms.Error
	if !errors.As(err, &ke) {
		t.Fatalf("error is not a *kms.Error: %v", err)
	}
	if h.Driver == nil {
		return
	}
	for _, c := range h.Driver.Spec().Codes {
		if c.Code == ke.Code {
			return
		}
	}
	t.Fatalf("error code %q is not listed in the driver's Spec", ke.Code)
}

// checkSpec checks that a driver's Spec is complete and consistent.
func checkSpec(t *testing.T, d kms.Driver) {
	t.Helper()
	s := d.Spec()
	if s.Type != d.Type() || s.Title == "" {
		t.Fatalf("Spec type %q title %q, driver type %q", s.Type, s.Title, d.Type())
	}
	seen := map[string]bool{}
	for _, f := range s.Fields {
		if f.Name == "" || f.MaxLen <= 0 || f.Description == "" || seen["field:"+f.Name] {
			t.Fatalf("bad or duplicate field %+v", f)
		}
		if f.Name == "type" || f.Name == "name" || f.Name == "purpose" {
			t.Fatalf("field %q clashes with the external key object", f.Name)
		}
		seen["field:"+f.Name] = true
	}
	for _, st := range s.Steps {
		if st.ID == "" || st.Title == "" || seen["step:"+st.ID] {
			t.Fatalf("bad or duplicate step %+v", st)
		}
		seen["step:"+st.ID] = true
	}
	classes := map[kms.Class]bool{kms.Revoked: true, kms.Outage: true, kms.Operator: true, kms.Invalid: true}
	for _, c := range s.Codes {
		if c.Code == "" || !classes[c.Class] || c.Description == "" || seen["code:"+c.Code] {
			t.Fatalf("bad or duplicate code %+v", c)
		}
		for _, id := range strings.Split(c.Step, ",") {
			if c.Step != "" && !seen["step:"+id] {
				t.Fatalf("code %s names unknown step %q", c.Code, id)
			}
		}
		seen["code:"+c.Code] = true
	}
	if !s.Development && len(s.Steps) == 0 {
		t.Fatal("a customer-held key type must describe its onboarding steps")
	}
}

func assertNoLeak(t *testing.T, err error, pt []byte) {
	t.Helper()
	if err == nil {
		return
	}
	s := err.Error()
	if strings.Contains(s, string(pt)) {
		t.Fatalf("error message contains key material: %q", s)
	}
}
