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

	t.Run("RoundTrip", func(t *testing.T) {
		h := newHarness(t)
		pt := key()
		w, err := h.Provider.Wrap(ctx, pt)
		if err != nil {
			t.Fatalf("Wrap: %v", err)
		}
		if w.KeyVersion == "" || w.Algorithm == "" || len(w.Ciphertext) == 0 {
			t.Fatalf("Wrap returned incomplete %+v", w)
		}
		if bytes.Contains(w.Ciphertext, pt) {
			t.Fatal("wrapped key contains the plaintext")
		}
		got, err := h.Provider.Unwrap(ctx, w)
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
		a, err1 := h.Provider.Wrap(ctx, pt)
		b, err2 := h.Provider.Wrap(ctx, pt)
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
		w, err := h.Provider.Wrap(ctx, key())
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
		w, err := h.Provider.Wrap(ctx, pt)
		if err != nil {
			t.Fatal(err)
		}
		bad := w
		bad.Ciphertext = bytes.Clone(w.Ciphertext)
		bad.Ciphertext[len(bad.Ciphertext)/2] ^= 0x40
		got, err := h.Provider.Unwrap(ctx, bad)
		if err == nil && bytes.Equal(got, pt) {
			t.Fatal("tampered ciphertext unwrapped to the original key")
		}
		if err == nil {
			t.Fatal("tampered ciphertext unwrapped without error")
		}
		if c := kms.ClassOf(err); c == kms.Revoked {
			t.Fatalf("tampered ciphertext classified as %s: %v", c, err)
		}
		assertNoLeak(t, err, pt)
	})

	t.Run("ForeignVersionFails", func(t *testing.T) {
		h := newHarness(t)
		w, err := h.Provider.Wrap(ctx, key())
		if err != nil {
			t.Fatal(err)
		}
		w.KeyVersion = w.KeyVersion + "x"
		if _, err := h.Provider.Unwrap(ctx, w); err == nil {
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
				w, err := h.Provider.Wrap(ctx, pt)
				if err != nil {
					errs <- err
					return
				}
				got, err := h.Provider.Unwrap(ctx, w)
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
		old, err := h.Provider.Wrap(ctx, pt)
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
		nw, err := h.Provider.Wrap(ctx, pt)
		if err != nil {
			t.Fatal(err)
		}
		if nw.KeyVersion == old.KeyVersion {
			t.Fatal("wrap after rotation still used the old version")
		}
		for _, w := range []kms.Wrapped{old, nw} {
			got, err := h.Provider.Unwrap(ctx, w)
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
		w, err := h.Provider.Wrap(ctx, pt)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Revoke(ctx); err != nil {
			t.Fatalf("Revoke: %v", err)
		}
		_, err = h.Provider.Unwrap(ctx, w)
		if c := kms.ClassOf(err); c != kms.Revoked {
			t.Fatalf("Unwrap after revoke: class %q (%v), want %q", c, err, kms.Revoked)
		}
		var ke *kms.Error
		if !errors.As(err, &ke) || ke.Code == "" || ke.Message == "" {
			t.Fatalf("revocation error lacks code/message: %v", err)
		}
		assertNoLeak(t, err, pt)
		if h.Restore == nil {
			return
		}
		if err := h.Restore(ctx); err != nil {
			t.Fatalf("Restore: %v", err)
		}
		got, err := h.Provider.Unwrap(ctx, w)
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("Unwrap after restore: %v", err)
		}
	})
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
