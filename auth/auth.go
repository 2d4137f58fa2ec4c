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
	"fmt"
	"net/http"
	"strings"

	"github.com/ekm-dev/ekm/apierr"
	"github.com/ekm-dev/ekm/httpx"
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

// Error is an authentication failure; it says why in terms safe to show
// the caller (never the key). errors.Is(err, ErrUnauthorized) holds.
type Error struct {
	// Message is shown to the caller as the 401 message.
	Message string
}

func (e *Error) Error() string        { return "auth: " + e.Message }
func (e *Error) Is(target error) bool { return target == ErrUnauthorized }

// kindNames name the keys each API wants.
var kindNames = map[string]string{
	store.KindAdmin:   "an admin key (sk-admin-…)",
	store.KindProject: "a project API key (sk-proj-…)",
}

// apiNeeds say which API wants each key kind.
var apiNeeds = map[string]string{
	store.KindAdmin:   "The Admin API needs",
	store.KindProject: "The Files and crypto APIs need",
}

// BearerValue returns the credential of an Authorization header. The
// scheme is case-insensitive (RFC 9110 §11.1), so "bearer" is accepted.
func BearerValue(h string) (string, bool) {
	scheme, value, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	value = strings.TrimLeft(value, " ")
	return value, value != ""
}

// KeyFinder finds an API key by the SHA-256 of its value, in any org:
// store.Queries, or a cache in front of it (package readcache, which the
// data plane uses). The record it returns is not modified.
type KeyFinder interface {
	APIKeyByHash(ctx context.Context, hash []byte) (store.APIKey, error)
}

// Authenticate resolves the bearer key of r, which must be of kind.
func Authenticate(ctx context.Context, st KeyFinder, r *http.Request, kind string) (store.APIKey, error) {
	want := kindNames[kind]
	h := r.Header.Get("Authorization")
	if h == "" {
		return store.APIKey{}, &Error{fmt.Sprintf("You didn't provide an API key. Send %s in an Authorization header: Authorization: Bearer <key>.", want)}
	}
	value, ok := BearerValue(h)
	if !ok {
		return store.APIKey{}, &Error{fmt.Sprintf("The Authorization header must be 'Bearer <key>' with %s.", want)}
	}
	if len(value) > maxKeyLen {
		return store.APIKey{}, &Error{fmt.Sprintf("Incorrect API key provided. You need %s for this endpoint.", want)}
	}
	prefix, other := AdminPrefix, store.KindProject
	if kind == store.KindProject {
		prefix, other = ProjectPrefix, store.KindAdmin
	}
	if !strings.HasPrefix(value, prefix) {
		otherPrefix := ProjectPrefix
		if other == store.KindAdmin {
			otherPrefix = AdminPrefix
		}
		if strings.HasPrefix(value, otherPrefix) {
			return store.APIKey{}, &Error{fmt.Sprintf("Incorrect API key provided: this is %s. %s %s.", kindNames[other], apiNeeds[kind], want)}
		}
		return store.APIKey{}, &Error{fmt.Sprintf("Incorrect API key provided: this is not an ekm key. You need %s for this endpoint.", want)}
	}
	hash := Hash(value)
	k, err := st.APIKeyByHash(ctx, hash)
	if errors.Is(err, store.ErrNotFound) {
		return store.APIKey{}, &Error{fmt.Sprintf("Incorrect API key provided: no such key (it may have been deleted). You need %s for this endpoint.", want)}
	}
	if err != nil {
		return store.APIKey{}, err
	}
	// The lookup already matched the hash; compare again in constant time so
	// that correctness never rests on the database's comparison.
	if subtle.ConstantTimeCompare(k.Hash, hash) != 1 || k.Kind != kind {
		return store.APIKey{}, &Error{fmt.Sprintf("Incorrect API key provided. You need %s for this endpoint.", want)}
	}
	return k, nil
}

// Option adjusts Middleware.
type Option func(*options)

type options struct{ lastUsed *LastUsed }

// TrackLastUse records each authenticated key's use in lu (nil: none).
func TrackLastUse(lu *LastUsed) Option { return func(o *options) { o.lastUsed = lu } }

// Middleware authenticates every request as kind, or answers 401 in
// OpenAI's error shape. A refused request's connection is closed after the
// answer, without reading its body: an unauthenticated client cannot hold
// the connection open by declaring a body it never sends.
func Middleware(st KeyFinder, kind string, onErr func(r *http.Request, err error), opts ...Option) func(http.Handler) http.Handler {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			k, err := Authenticate(r.Context(), st, r, kind)
			if err != nil {
				httpx.CloseAfterReply(w, r)
				var ae *Error
				if !errors.As(err, &ae) {
					if onErr != nil {
						onErr(r, err)
					}
					apierr.Write(w, apierr.Internal())
					return
				}
				apierr.Write(w, apierr.Unauthorized("%s", ae.Message))
				return
			}
			o.lastUsed.Seen(k.ID)
			next.ServeHTTP(w, r.WithContext(WithKey(r.Context(), k)))
		})
	}
}
