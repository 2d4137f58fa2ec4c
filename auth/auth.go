// Package auth makes and checks bearer API keys. A key's value is shown once
// at creation; only its SHA-256 is stored. Keys carry 256 bits of randomness,
// so a plain hash (no salt, no stretching) is the right tool: it lets the
// server find a key by hash in one indexed lookup.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"

	"github.com/ekm-dev/ekm/apierr"
	"github.com/ekm-dev/ekm/store"
)

// Prefixes of key values, as OpenAI uses them.
const (
	AdminPrefix   = "sk-admin-"
	ProjectPrefix = "sk-proj-"
)

// maxKeyLen bounds what we hash from an Authorization header.
const maxKeyLen = 200

// NewKeyValue returns a fresh key value for kind, its hash and its redacted
// form.
func NewKeyValue(kind string) (value string, hash []byte, redacted string) {
	prefix := AdminPrefix
	if kind == store.KindProject {
		prefix = ProjectPrefix
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("auth: crypto/rand failed: " + err.Error())
	}
	value = prefix + base64.RawURLEncoding.EncodeToString(b[:])
	return value, Hash(value), Redact(value)
}

// Hash is the stored form of a key value.
func Hash(value string) []byte {
	h := sha256.Sum256([]byte(value))
	return h[:]
}

// Redact keeps the known prefix and the last four characters. The random
// part may itself contain '-', so the prefix is matched, never searched for.
func Redact(value string) string {
	prefix := ""
	for _, p := range []string{AdminPrefix, ProjectPrefix} {
		if strings.HasPrefix(value, p) {
			prefix = p
		}
	}
	rest := value[len(prefix):]
	if len(rest) < 16 {
		return prefix + "****"
	}
	return prefix + "****" + rest[len(rest)-4:]
}

type ctxKey struct{}

// From returns the authenticated key of a request context.
func From(ctx context.Context) (store.APIKey, bool) {
	k, ok := ctx.Value(ctxKey{}).(store.APIKey)
	return k, ok
}

// WithKey returns ctx carrying k (used by Middleware).
func WithKey(ctx context.Context, k store.APIKey) context.Context {
	return context.WithValue(ctx, ctxKey{}, k)
}

// ErrUnauthorized is returned for any missing, malformed or unknown key.
var ErrUnauthorized = errors.New("auth: invalid API key")

// Authenticate resolves the bearer key of r, which must be of kind.
func Authenticate(ctx context.Context, st store.Queries, r *http.Request, kind string) (store.APIKey, error) {
	h := r.Header.Get("Authorization")
	value, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || value == "" || len(value) > maxKeyLen {
		return store.APIKey{}, ErrUnauthorized
	}
	want := AdminPrefix
	if kind == store.KindProject {
		want = ProjectPrefix
	}
	if !strings.HasPrefix(value, want) {
		return store.APIKey{}, ErrUnauthorized
	}
	hash := Hash(value)
	k, err := st.APIKeyByHash(ctx, hash)
	if errors.Is(err, store.ErrNotFound) {
		return store.APIKey{}, ErrUnauthorized
	}
	if err != nil {
		return store.APIKey{}, err
	}
	// The lookup already matched the hash; compare again in constant time so
	// that correctness never rests on the database's comparison.
	if subtle.ConstantTimeCompare(k.Hash, hash) != 1 || k.Kind != kind {
		return store.APIKey{}, ErrUnauthorized
	}
	return k, nil
}

// Middleware authenticates every request as kind, or answers 401 in
// OpenAI's error shape.
func Middleware(st store.Queries, kind string, onErr func(r *http.Request, err error)) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			k, err := Authenticate(r.Context(), st, r, kind)
			if err != nil {
				if !errors.Is(err, ErrUnauthorized) {
					if onErr != nil {
						onErr(r, err)
					}
					apierr.Write(w, apierr.Internal())
					return
				}
				apierr.Write(w, apierr.Unauthorized("Incorrect API key provided. You need an %s key for this endpoint.", map[string]string{store.KindAdmin: "admin", store.KindProject: "project"}[kind]))
				return
			}
			next.ServeHTTP(w, r.WithContext(WithKey(r.Context(), k)))
		})
	}
}
