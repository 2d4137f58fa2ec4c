// Package issuer makes ekm its own OpenID Connect issuer: it signs
// short-lived RS256 ID tokens that customers' cloud identity federation
// (a Google workload identity pool's OIDC provider) trusts, and serves the
// issuer's discovery document and JWKS.
//
// The signing keys live in one JSON file (mode 0600, created once, like
// the local root key) that every replica shares. Every key in it is
// published; one signs. Rollover never breaks a customer: a new key is
// first published next to the active one (Add), it signs only after an
// overlap long enough for every provider to have fetched it — or for
// customers who uploaded the JWKS to upload the new one (Activate) —, and
// the old key is dropped once the tokens it signed have expired (Retire).
// Running servers notice the file changing and follow without a restart.
package issuer

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

// Defaults for Config fields left zero.
const (
	DefaultSubject        = "ekm"
	DefaultTokenLifetime  = 15 * time.Minute
	DefaultReloadInterval = time.Second
	// DefaultMinOverlap is how long a new key is published before it may
	// sign. Google does not document how long STS caches an issuer's JWKS;
	// a day also gives customers who uploaded the JWKS time to update it.
	DefaultMinOverlap = 24 * time.Hour
	// DiscoveryPath and JWKSPath follow the issuer URL's path.
	DiscoveryPath = "/.well-known/openid-configuration"
	JWKSPath      = "/.well-known/jwks.json"
)

// Config configures an Issuer.
type Config struct {
	// URL is the issuer: https, no query or fragment; a path is allowed
	// (discovery is served under it). Tokens carry it as iss verbatim.
	URL string
	// Subject is the sub of every token (default "ekm"); customers'
	// attribute conditions pin it.
	Subject string
	// KeyFile holds the signing keys (created by EnsureKeyFile, changed
	// by Update).
	KeyFile string
	// TokenLifetime is exp - iat (default 15 min; Google STS accepts
	// tokens up to 24 h old and recommends less than 6 h).
	TokenLifetime time.Duration
	// ReloadInterval is how often the key file is checked for changes
	// (default 1 s).
	ReloadInterval time.Duration
	Now            func() time.Time
	// Logger hears of a key file that stops (and starts again) being
	// readable, and of one other users may read. Nil: discarded.
	Logger *slog.Logger
}

// Issuer signs ID tokens and serves its metadata. Safe for concurrent use.
type Issuer struct {
	url, subject, file string
	lifetime, reload   time.Duration
	now                func() time.Time
	log                *slog.Logger

	mu        sync.Mutex
	keys      *KeySet
	checked   time.Time
	fileInfo  os.FileInfo
	loadError error
}

// CheckURL validates an issuer URL and returns it without a trailing "/".
func CheckURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" ||
		strings.ContainsAny(s, " \t\n?#") {
		return "", errors.New("the issuer URL must be https://host[/path], without query, fragment or user info (Google accepts only https issuers)")
	}
	return strings.TrimSuffix(s, "/"), nil
}

// New returns the issuer over an existing key file.
func New(c Config) (*Issuer, error) {
	u, err := CheckURL(c.URL)
	if err != nil {
		return nil, err
	}
	if c.KeyFile == "" {
		return nil, errors.New("issuer: a key file is required")
	}
	i := &Issuer{url: u, subject: c.Subject, file: c.KeyFile, lifetime: c.TokenLifetime, reload: c.ReloadInterval, now: c.Now, log: c.Logger}
	if i.log == nil {
		i.log = slog.New(slog.DiscardHandler)
	}
	if i.subject == "" {
		i.subject = DefaultSubject
	}
	if len(i.subject) > 127 {
		return nil, errors.New("issuer: the subject must be at most 127 bytes (Google's limit on google.subject)")
	}
	if i.lifetime <= 0 {
		i.lifetime = DefaultTokenLifetime
	}
	if i.reload <= 0 {
		i.reload = DefaultReloadInterval
	}
	if i.now == nil {
		i.now = time.Now
	}
	if _, err := i.keySet(); err != nil {
		return nil, err
	}
	return i, nil
}

// URL is the issuer URL (iss).
func (i *Issuer) URL() string { return i.url }

// Subject is the sub of every token.
func (i *Issuer) Subject() string { return i.subject }

// JWKSURL is where the JWKS is served.
func (i *Issuer) JWKSURL() string { return i.url + JWKSPath }

// Describe names the issuer for customers (kms.Spec.Identity).
func (i *Issuer) Describe() map[string]string {
	return map[string]string{"issuer": i.url, "subject": i.subject, "jwks_uri": i.JWKSURL()}
}

// keySet returns the current keys, re-reading the file when it changed.
// A file that became unreadable or invalid keeps the last good keys (and
// the error is reported by Err) rather than stopping every signature.
func (i *Issuer) keySet() (*KeySet, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	now := time.Now()
	if i.keys != nil && now.Sub(i.checked) < i.reload {
		return i.keys, nil
	}
	i.checked = now
	fi, err := os.Stat(i.file)
	// A rollover renames a new file into place (a new inode), and a
	// Kubernetes secret update swaps a symlink: either way the file is not
	// the same one any more.
	if err == nil && i.keys != nil && os.SameFile(fi, i.fileInfo) && fi.ModTime().Equal(i.fileInfo.ModTime()) && fi.Size() == i.fileInfo.Size() {
		return i.keys, nil
	}
	var ks *KeySet
	if err == nil {
		ks, err = ReadKeySet(i.file)
	}
	if err != nil {
		err = fmt.Errorf("issuer key file %s: %w", i.file, err)
		if i.keys != nil {
			// Loud, once per failure: an edit meant to drop a compromised
			// key that left the file broken keeps that key signing.
			if i.loadError == nil {
				i.log.Error("the issuer key file cannot be read; ekm keeps signing with, and publishing, the keys it read before until the file is fixed",
					"err", err)
			}
			i.loadError = err
			return i.keys, nil
		}
		i.loadError = err
		return nil, err
	}
	if i.loadError != nil && i.keys != nil {
		i.log.Info("the issuer key file is readable again", "file", i.file)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		i.log.Warn("other users may read the issuer key file (it holds signing keys); run chmod 600 on it", "file", i.file, "mode", fmt.Sprintf("%#o", perm))
	}
	i.keys, i.fileInfo, i.loadError = ks, fi, nil
	return ks, nil
}

// Err reports a key file that could not be re-read (the last good keys
// are still in use), or nil.
func (i *Issuer) Err() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.loadError
}

// IDToken signs an ID token for audience: iss, sub, aud, iat, exp and a
// random jti, RS256 with the active key (its kid in the header).
func (i *Issuer) IDToken(_ context.Context, audience string) (string, error) {
	if audience == "" {
		return "", errors.New("issuer: empty audience")
	}
	ks, err := i.keySet()
	if err != nil {
		return "", err
	}
	signer, kid := ks.Signer()
	now := i.now()
	var jti [16]byte
	_, _ = rand.Read(jti[:])
	header, _ := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": kid})
	claims, _ := json.Marshal(map[string]any{
		"iss": i.url, "sub": i.subject, "aud": audience,
		"iat": now.Unix(), "exp": now.Add(i.lifetime).Unix(), "jti": b64(jti[:]),
	})
	signing := b64(header) + "." + b64(claims)
	sum := sha256.Sum256([]byte(signing))
	sig, err := signer.Sign(rand.Reader, sum[:], crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("issuer: signing: %w", err)
	}
	return signing + "." + b64(sig), nil
}

// Discovery is the OpenID Provider metadata.
func (i *Issuer) Discovery() []byte {
	b, _ := json.Marshal(map[string]any{
		"issuer":                                i.url,
		"jwks_uri":                              i.JWKSURL(),
		"response_types_supported":              []string{"id_token"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"claims_supported":                      []string{"iss", "sub", "aud", "iat", "exp", "jti"},
	})
	return b
}

// JWKS is the published keys.
func (i *Issuer) JWKS() ([]byte, error) {
	ks, err := i.keySet()
	if err != nil {
		return nil, err
	}
	return ks.JWKS(), nil
}

// Route is one HTTP route of the issuer.
type Route struct {
	Pattern string // for http.ServeMux, e.g. "GET /.well-known/jwks.json"
	Handler http.Handler
}

// Routes are the discovery document and the JWKS, under the issuer URL's
// path. They need no authentication.
func (i *Issuer) Routes() []Route {
	u, _ := url.Parse(i.url)
	base := strings.TrimSuffix(u.EscapedPath(), "/")
	serve := func(body func() ([]byte, error)) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			b, err := body()
			if err != nil {
				http.Error(w, "issuer keys unavailable", http.StatusServiceUnavailable)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			// Short enough that a rollover's new key is seen within the
			// overlap many times over.
			w.Header().Set("Cache-Control", "public, max-age=300")
			_, _ = w.Write(b)
		})
	}
	return []Route{
		{Pattern: "GET " + base + DiscoveryPath, Handler: serve(func() ([]byte, error) { return i.Discovery(), nil })},
		{Pattern: "GET " + base + JWKSPath, Handler: serve(i.JWKS)},
	}
}
