// Package dataplane serves the project-scoped data APIs: the OpenAI-compatible
// Files API (/v1/files…) and the crypto API (/v1/crypto/…). Both are
// authenticated by a project API key and only ever touch that key's project.
//
// Everything customer-provided is stored encrypted under the project's key
// (docs/DATA.md lists exactly what is and is not encrypted). When the
// project's customer key cannot be used, requests fail with a specific error
// code (customer_key_unavailable or customer_key_temporarily_unavailable)
// and never fall back to anything else.
package dataplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"time"

	"github.com/ekm-dev/ekm/apierr"
	"github.com/ekm-dev/ekm/auth"
	"github.com/ekm-dev/ekm/blob"
	"github.com/ekm-dev/ekm/files"
	"github.com/ekm-dev/ekm/httpx"
	"github.com/ekm-dev/ekm/keyring"
	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/secret"
	"github.com/ekm-dev/ekm/store"
)

// Defaults for Deps' limits.
const (
	DefaultMaxFileBytes      = 512 << 20
	DefaultMaxBodyBytes      = 4 << 20
	DefaultBodyTimeout       = 30 * time.Second
	DefaultUploadIdleTimeout = 60 * time.Second
)

// Deps are the data plane's collaborators and limits.
type Deps struct {
	Store   store.Store
	Keyring *keyring.Keyring
	Blobs   blob.Store
	Logger  *slog.Logger
	Now     func() time.Time
	// MaxFileBytes bounds an uploaded file's size (default 512 MiB).
	MaxFileBytes int64
	// MaxBodyBytes bounds crypto API request bodies (default 4 MiB).
	MaxBodyBytes int64
	// BodyTimeout bounds the time to receive a crypto API body (default
	// 30s; 408 after it).
	BodyTimeout time.Duration
	// UploadIdleTimeout cuts off an upload that sends nothing for this long
	// (default 60s; 408), however long the upload has run.
	UploadIdleTimeout time.Duration
	// LastUsed, if set, records each project key's use (last_used_at).
	LastUsed *auth.LastUsed
	// Keys finds the API key of each request (nil: Store). A cache
	// (readcache.Keys) takes that store read off the hot path.
	Keys auth.KeyFinder
	// Projects reads the project of each request (nil: Store); a cache
	// (readcache.Projects) likewise. Either cache must follow the change
	// log (readcache.Follow), so that deletions, archiving, re-keying and
	// rotation are seen at once.
	Projects ProjectGetter
}

// ProjectGetter reads a project of an org (store.Queries, or
// readcache.Projects). The record it returns is not modified.
type ProjectGetter interface {
	GetProject(ctx context.Context, orgID, id string) (store.Project, error)
}

type server struct {
	Deps
	files *files.Store
}

// New returns the handler of /v1/files… and /v1/crypto/…, authenticated by
// project API keys.
func New(d Deps) http.Handler {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.MaxFileBytes <= 0 {
		d.MaxFileBytes = DefaultMaxFileBytes
	}
	if d.MaxBodyBytes <= 0 {
		d.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if d.BodyTimeout <= 0 {
		d.BodyTimeout = DefaultBodyTimeout
	}
	if d.UploadIdleTimeout <= 0 {
		d.UploadIdleTimeout = DefaultUploadIdleTimeout
	}
	if d.Keys == nil {
		d.Keys = d.Store
	}
	if d.Projects == nil {
		d.Projects = d.Store
	}
	s := &server{Deps: d, files: &files.Store{Records: d.Store, Blobs: d.Blobs, Logger: d.Logger}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/files", s.uploadFile)
	mux.HandleFunc("GET /v1/files", s.listFiles)
	mux.HandleFunc("GET /v1/files/{id}", s.getFile)
	mux.HandleFunc("DELETE /v1/files/{id}", s.deleteFile)
	mux.HandleFunc("GET /v1/files/{id}/content", s.fileContent)
	mux.HandleFunc("POST /v1/crypto/encrypt", s.encrypt)
	mux.HandleFunc("POST /v1/crypto/decrypt", s.decrypt)
	mux.HandleFunc("POST /v1/crypto/rewrap", s.rewrap)
	mux.HandleFunc("POST /v1/crypto/datakey/plaintext", s.datakey(true))
	mux.HandleFunc("POST /v1/crypto/datakey/wrapped", s.datakey(false))
	// Known paths with another method: 405; anything else: 404. Both in
	// the API's JSON error shape.
	notAllowed := func(w http.ResponseWriter, r *http.Request) {
		apierr.Write(w, apierr.New(http.StatusMethodNotAllowed, "invalid_request_error", "method_not_allowed", "", "Method %s is not allowed on %s.", r.Method, r.URL.Path))
	}
	for _, p := range []string{"/v1/files", "/v1/files/{id}", "/v1/files/{id}/content", "/v1/crypto/encrypt", "/v1/crypto/decrypt",
		"/v1/crypto/rewrap", "/v1/crypto/datakey/plaintext", "/v1/crypto/datakey/wrapped"} {
		mux.HandleFunc(p, notAllowed)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		apierr.Write(w, apierr.New(http.StatusNotFound, "invalid_request_error", "unknown_url", "", "Unknown request URL: %s %s.", r.Method, clip(r.URL.Path)))
	})
	onErr := func(r *http.Request, err error) {
		d.Logger.Error("authenticating request", "request_id", httpx.RequestID(r.Context()), "path", r.URL.Path, "err", err)
	}
	// Responses carry plaintext, keys or encrypted names: never cached by a
	// proxy or a client's disk cache.
	routed := httpx.Route(mux)
	noStore := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		// r.URL.Query() drops pairs it cannot decode: refuse them instead.
		if param, err := httpx.CheckQuery(r.URL.RawQuery); err != nil {
			apierr.Write(w, apierr.BadRequest(param, "Invalid query parameter '%s': %v.", param, err))
			return
		}
		routed.ServeHTTP(w, r)
	})
	return auth.Middleware(d.Keys, store.KindProject, onErr, auth.TrackLastUse(d.LastUsed))(noStore)
}

// revocationCheckBytes: a long upload or download re-checks that the
// project's external key is still available after this many bytes, so a
// stream started before a revocation does not outlive it by minutes.
const revocationCheckBytes = 1 << 20

// stillAvailable returns the key gate's error if the project's external key
// has been marked unavailable since the request started.
func (s *server) stillAvailable(sc scope) error {
	if sc.Project.ExternalKeyID == "" {
		return nil
	}
	if u := s.Keyring.Unavailable(sc.Project.ExternalKeyID); u != nil {
		return u
	}
	return nil
}

// Error codes specific to the data plane (documented in docs/API.md).
const (
	CodeKeyUnavailable            = "customer_key_unavailable"
	CodeKeyTemporarilyUnavailable = "customer_key_temporarily_unavailable"
	CodeKeyInvalid                = "customer_key_invalid"
	CodeProjectArchived           = "project_archived"
	// CodeStorageUnavailable: the blob store cannot serve now (503).
	CodeStorageUnavailable = "storage_unavailable"
)

// storageRetryAfter is the Retry-After hint when the blob store is
// unavailable.
const storageRetryAfter = 5

// keyRetryAfter is the Retry-After hint for outage-class key failures.
const keyRetryAfter = 30

// scope is the authenticated caller's project.
type scope struct {
	OrgID, ProjectID string
	Project          store.Project
}

// project resolves the request's project and refuses archived ones.
func (s *server) project(r *http.Request) (scope, error) {
	k, ok := auth.From(r.Context())
	if !ok || k.Kind != store.KindProject || k.ProjectID == "" {
		return scope{}, apierr.Unauthorized("A project API key is required.")
	}
	p, err := s.Projects.GetProject(r.Context(), k.OrgID, k.ProjectID)
	if errors.Is(err, store.ErrNotFound) {
		return scope{}, apierr.Unauthorized("The project of this API key no longer exists.")
	}
	if err != nil {
		return scope{}, fmt.Errorf("loading project: %w", err)
	}
	if p.ArchivedAt != nil {
		return scope{}, apierr.New(http.StatusForbidden, "invalid_request_error", CodeProjectArchived, "", "Project %s is archived; its data cannot be read or written.", p.ID)
	}
	return scope{OrgID: k.OrgID, ProjectID: k.ProjectID, Project: p}, nil
}

// keyError maps a key-use failure to the API error callers see, from its
// diagnosis (kms.Diagnose): access withdrawn → 403, an outage or ekm's own
// misconfiguration → 503 with Retry-After, and the KMS refusing the stored
// wrapped key itself (corrupt, or wrapped by a key it does not know) → 502:
// not retryable, not a revocation, and not a generic internal error either.
// Anything else is not a key failure.
func keyError(err error) (*apierr.Error, bool) {
	d, ok := kms.Diagnose(err)
	if !ok {
		return nil, false
	}
	var u *keyring.UnavailableError
	switch {
	case !errors.As(err, &u):
		// Only Invalid failures leave the keyring as they are.
		if d.Class != kms.Invalid {
			return nil, false
		}
		return apierr.New(http.StatusBadGateway, "server_error", CodeKeyInvalid, "",
			"The customer's key management service rejected this project's stored key (%s): %s", d.Code, d.Message), true
	case d.Class == kms.Revoked:
		return apierr.New(http.StatusForbidden, "invalid_request_error", CodeKeyUnavailable, "",
			"The customer-managed key of this project is unavailable (%s): %s", d.Code, d.Message), true
	}
	e := apierr.New(http.StatusServiceUnavailable, "server_error", CodeKeyTemporarilyUnavailable, "",
		"The customer-managed key of this project is temporarily unavailable (%s): %s Retry later.", d.Code, d.Message)
	e.RetryAfter = keyRetryAfter
	return e, true
}

// fail writes err: API errors as they are, key failures mapped, anything
// else logged and answered as a generic 500.
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var ae *apierr.Error
	if errors.As(err, &ae) {
		apierr.Write(w, ae)
		return
	}
	if ke, ok := keyError(err); ok {
		// Debug, not Warn: while a key is revoked every request is refused,
		// and the state change itself is logged once (lifecycle).
		s.Logger.Debug("customer key unavailable", "request_id", httpx.RequestID(r.Context()), "path", r.URL.Path, "err", err)
		apierr.Write(w, ke)
		return
	}
	if r.Context().Err() != nil {
		// The client is gone; nobody reads the answer.
		return
	}
	if errors.Is(err, blob.ErrUnavailable) {
		// The blob store is down, stalled or throttling: retryable, not
		// an internal error.
		s.Logger.Warn("blob store unavailable", "request_id", httpx.RequestID(r.Context()), "method", r.Method, "path", r.URL.Path, "err", err)
		e := apierr.New(http.StatusServiceUnavailable, "server_error", CodeStorageUnavailable, "", "The file store is temporarily unavailable. Retry later.")
		e.RetryAfter = storageRetryAfter
		apierr.Write(w, e)
		return
	}
	s.Logger.Error("data plane request failed", "request_id", httpx.RequestID(r.Context()), "method", r.Method, "path", r.URL.Path, "err", err)
	apierr.Write(w, apierr.Internal())
}

// keys fetches project key versions for one request, at most once each,
// and zeroes them at the end of the request.
type keys struct {
	kr        *keyring.Keyring
	ctx       context.Context
	project   store.Project
	org, proj string
	byVersion map[uint32]secret.Key // allocated on first use
}

func (s *server) keys(ctx context.Context, sc scope) *keys {
	return &keys{kr: s.Keyring, ctx: ctx, project: sc.Project, org: sc.OrgID, proj: sc.ProjectID}
}

// errNoSuchVersion: a ciphertext names a key version the project never had.
var errNoSuchVersion = errors.New("no such project key version")

// get is an envelope.KeyFunc.
func (k *keys) get(v uint32) (secret.Key, error) {
	if key, ok := k.byVersion[v]; ok {
		return key, nil
	}
	if v == 0 || v > math.MaxInt32 {
		return secret.Key{}, errNoSuchVersion
	}
	key, err := k.kr.KeyOf(k.ctx, k.project, int(v))
	if errors.Is(err, store.ErrNotFound) {
		return secret.Key{}, errNoSuchVersion
	}
	if err != nil {
		return secret.Key{}, err
	}
	if k.byVersion == nil {
		k.byVersion = make(map[uint32]secret.Key, 1)
	}
	k.byVersion[v] = key
	return key, nil
}

// current returns the version new data is written under and its key.
func (k *keys) current(sc scope) (uint32, secret.Key, error) {
	v := sc.Project.CurrentKeyVersion
	if v <= 0 || v > math.MaxInt32 {
		return 0, secret.Key{}, fmt.Errorf("project %s has invalid current key version %d", sc.ProjectID, v)
	}
	key, err := k.get(uint32(v))
	return uint32(v), key, err
}

func (k *keys) zero() {
	for _, key := range k.byVersion {
		key.Zero()
	}
	clear(k.byVersion)
}

// clip bounds caller-supplied text echoed in an error message.
func clip(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}
