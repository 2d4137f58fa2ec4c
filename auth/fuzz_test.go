package auth

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/store"
	"github.com/ekm-dev/ekm/store/sqlstore"
)

// fuzzKey is the value of the only key in the fuzz store. It is fixed so
// that the seed corpus (testdata/fuzz/FuzzAuthenticate) can hold the exact
// header and its near misses.
const fuzzKey = AdminPrefix + "c2VlZC1rZXktZm9yLWZ1enppbmctb25seS0wMTIzNDU"

// FuzzAuthenticate feeds arbitrary Authorization header values to
// Authenticate against a real store holding one admin key: only
// "Bearer <value>" (any case of "Bearer") for the key's kind may authenticate, and every refusal is
// ErrUnauthorized (never a store error or a panic).
func FuzzAuthenticate(f *testing.F) {
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, filepath.Join(f.TempDir(), "ekm.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	now := time.Now()
	if err := st.CreateOrg(ctx, store.Org{ID: "org-fuzz", Name: "fuzz", CreatedAt: now}); err != nil {
		f.Fatal(err)
	}
	want := store.APIKey{ID: "key_fuzz", OrgID: "org-fuzz", Kind: store.KindAdmin, Name: "fuzz",
		Hash: Hash(fuzzKey), RedactedValue: Redact(fuzzKey), CreatedAt: now}
	if err := st.CreateAPIKey(ctx, want); err != nil {
		f.Fatal(err)
	}

	f.Fuzz(func(t *testing.T, header string, project bool) {
		kind := store.KindAdmin
		if project {
			kind = store.KindProject
		}
		r, _ := http.NewRequestWithContext(ctx, "GET", "/", nil)
		r.Header["Authorization"] = []string{header}
		k, err := Authenticate(ctx, st, r, kind)
		// The scheme is case-insensitive and may be followed by several
		// spaces (RFC 9110); the credential must be exact.
		scheme, rest, _ := strings.Cut(header, " ")
		exact := strings.EqualFold(scheme, "Bearer") && strings.TrimLeft(rest, " ") == fuzzKey && kind == store.KindAdmin
		switch {
		case err == nil && !exact:
			t.Fatalf("header %q authenticated as %s", header, kind)
		case err == nil && (k.ID != want.ID || k.OrgID != want.OrgID || k.Kind != want.Kind):
			t.Fatalf("authenticated as the wrong key: %+v", k)
		case err != nil && exact:
			t.Fatalf("the exact header was refused: %v", err)
		case err != nil && !errors.Is(err, ErrUnauthorized):
			t.Fatalf("refusal is not ErrUnauthorized: %v", err)
		}
	})
}
