// Package adminapi serves ekm's OpenAI-wire-compatible Admin API under
// /v1/organization/: external keys (customer KEKs), projects, admin API keys,
// project service accounts and their API keys, and the audit log.
//
// The official OpenAI SDKs are the contract: request bodies, objects, list
// pages and errors have OpenAI's shapes, and ekm-specific additions are extra
// fields that OpenAI clients ignore (documented in docs/API.md).
//
// Every request is authenticated with an admin key of one org and sees only
// that org's objects: another org's object is "not found", never "forbidden",
// so ids cannot be probed across orgs. Writes that change keys run the KMS
// work first, then store the result and its audit event in one transaction,
// so a failure at any step leaves nothing half-written.
package adminapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/ekm-dev/ekm/apierr"
	"github.com/ekm-dev/ekm/audit"
	"github.com/ekm-dev/ekm/auth"
	"github.com/ekm-dev/ekm/httpx"
	"github.com/ekm-dev/ekm/ids"
	"github.com/ekm-dev/ekm/lifecycle"
	"github.com/ekm-dev/ekm/store"
)

// Deps are what the Admin API needs.
type Deps struct {
	Store store.Store
	// Service makes every change to keys and projects.
	Service *lifecycle.Service
	Logger  *slog.Logger
	Now     func() time.Time // nil = time.Now
	// MaxBodyBytes bounds request bodies (default 1 MiB).
	MaxBodyBytes int64
	// BodyTimeout bounds the time to receive a request body (default 30s;
	// 408 after it).
	BodyTimeout time.Duration
	// LastUsed, if set, records each admin key's use (last_used_at).
	LastUsed *auth.LastUsed
	// KMSRate bounds how often each organization may call the routes
	// that make ekm call a KMS (zero: no limit; app sets the server's).
	// Its clock is Now.
	KMSRate KMSRateLimit
}

// DefaultBodyTimeout is Deps.BodyTimeout's default.
const DefaultBodyTimeout = 30 * time.Second

// Id prefixes of the objects served here.
const (
	prefixOrg            = "org-"
	prefixExternalKey    = "extkey_"
	prefixProject        = "proj_"
	prefixAPIKey         = "key_"
	prefixServiceAccount = "svc_acct_"
	prefixAudit          = "audit_log-"
)

type api struct {
	st          store.Store
	svc         *lifecycle.Service
	log         *slog.Logger
	now         func() time.Time
	maxBody     int64
	bodyTimeout time.Duration
	kmsLimit    *kmsLimiter // nil: no limit
}

// New returns the handler of every route under /v1/organization/.
func New(d Deps) http.Handler {
	a := &api{st: d.Store, svc: d.Service, log: d.Logger, now: d.Now, maxBody: d.MaxBodyBytes, bodyTimeout: d.BodyTimeout}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.maxBody <= 0 {
		a.maxBody = 1 << 20
	}
	if a.bodyTimeout <= 0 {
		a.bodyTimeout = DefaultBodyTimeout
	}
	a.kmsLimit = newKMSLimiter(d.KMSRate, a.now)
	mux := http.NewServeMux()
	h := func(pattern string, fn func(w http.ResponseWriter, r *http.Request) error) {
		mux.HandleFunc(pattern, a.handle(fn))
	}
	h("POST /v1/organization/external_keys", a.createExternalKey)
	h("GET /v1/organization/external_keys", a.listExternalKeys)
	h("GET /v1/organization/external_keys/{id}", a.getExternalKey)
	h("DELETE /v1/organization/external_keys/{id}", a.deleteExternalKey)
	h("POST /v1/organization/external_keys/{id}/validate", a.validateExternalKey)
	h("GET /v1/organization/external_key_types", a.listExternalKeyTypes)

	h("POST /v1/organization/projects", a.createProject)
	h("GET /v1/organization/projects", a.listProjects)
	h("GET /v1/organization/projects/{id}", a.getProject)
	h("POST /v1/organization/projects/{id}", a.updateProject)
	h("POST /v1/organization/projects/{id}/archive", a.archiveProject)
	h("POST /v1/organization/projects/{id}/rotate_key", a.rotateProjectKey)

	h("POST /v1/organization/projects/{id}/service_accounts", a.createServiceAccount)
	h("GET /v1/organization/projects/{id}/service_accounts", a.listServiceAccounts)
	h("GET /v1/organization/projects/{id}/service_accounts/{sa}", a.getServiceAccount)
	h("POST /v1/organization/projects/{id}/service_accounts/{sa}", a.updateServiceAccount)
	h("DELETE /v1/organization/projects/{id}/service_accounts/{sa}", a.deleteServiceAccount)

	h("GET /v1/organization/projects/{id}/api_keys", a.listProjectKeys)
	h("GET /v1/organization/projects/{id}/api_keys/{key}", a.getProjectKey)
	h("POST /v1/organization/projects/{id}/api_keys/{key}", a.updateProjectKey)
	h("DELETE /v1/organization/projects/{id}/api_keys/{key}", a.deleteProjectKey)

	h("POST /v1/organization/admin_api_keys", a.createAdminKey)
	h("GET /v1/organization/admin_api_keys", a.listAdminKeys)
	h("GET /v1/organization/admin_api_keys/{id}", a.getAdminKey)
	h("DELETE /v1/organization/admin_api_keys/{id}", a.deleteAdminKey)

	h("GET /v1/organization/audit_logs", a.listAudit)

	h("GET /v1/organization/settings", a.getSettings)
	h("POST /v1/organization/settings", a.updateSettings)

	// Anything else (unknown path or method) answers like OpenAI does for an
	// invalid URL, in the JSON error shape rather than the mux's plain text.
	h("/v1/organization/", func(w http.ResponseWriter, r *http.Request) error {
		return apierr.New(http.StatusNotFound, "invalid_request_error", "unknown_url", "", "Invalid URL (%s %s).", r.Method, clip(r.URL.Path))
	})

	mw := auth.Middleware(d.Store, store.KindAdmin, func(r *http.Request, err error) {
		a.log.Error("admin API authentication failed", "request_id", httpx.RequestID(r.Context()), "method", r.Method, "path", r.URL.Path, "err", err)
	}, auth.TrackLastUse(d.LastUsed))
	// Answers hold an org's keys, projects and audit log: never cached by a
	// proxy or a browser, never sniffed as another type.
	return noStoreHandler(mw(httpx.Route(mux)))
}

// handle adapts a handler that returns its failure.
func (a *api) handle(fn func(w http.ResponseWriter, r *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		// r.URL.Query() drops pairs it cannot decode: refuse them instead.
		if param, err := httpx.CheckQuery(r.URL.RawQuery); err != nil {
			a.writeError(w, r, apierr.BadRequest(param, "Invalid query parameter '%s': %v.", param, err))
			return
		}
		if err := fn(w, r); err != nil {
			a.writeError(w, r, err)
		}
	}
}

// kmsAPIError is an API error caused by the customer's KMS. It adds the
// onboarding step to fix to OpenAI's error shape.
type kmsAPIError struct {
	api  *apierr.Error
	Step string
}

func (e *kmsAPIError) Error() string { return e.api.Error() }
func (e *kmsAPIError) Unwrap() error { return e.api }

func (a *api) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var ae *apierr.Error
	if !errors.As(err, &ae) {
		a.log.Error("admin API request failed", "request_id", httpx.RequestID(r.Context()), "method", r.Method, "path", r.URL.Path, "err", err)
		ae = apierr.Internal()
	}
	// The SDKs retry 409 and 5xx unless told otherwise; a conflict or ekm's
	// own KMS misconfiguration will not go away by itself.
	var ke *kmsAPIError
	isKMS := errors.As(err, &ke)
	if ae.Status == http.StatusConflict || (isKMS && ae.Status == http.StatusInternalServerError) {
		w.Header().Set("X-Should-Retry", "false")
	}
	if !isKMS {
		apierr.Write(w, ae)
		return
	}
	if ae.RetryAfter > 0 {
		w.Header().Set("Retry-After", fmt.Sprint(ae.RetryAfter))
	}
	type withStep struct {
		*apierr.Error
		Step string `json:"step,omitempty"`
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(ae.Status)
	_ = json.NewEncoder(w).Encode(struct {
		Error withStep `json:"error"`
	}{withStep{ae, ke.Step}})
}

// noStoreHandler marks every answer of h not to be cached or type-sniffed.
func noStoreHandler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		h.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
	return nil
}

// caller returns the authenticated admin key (set by the middleware).
func caller(r *http.Request) store.APIKey {
	k, _ := auth.From(r.Context())
	return k
}

// pathID returns the {name} path value if it is a well-formed id of prefix;
// a malformed id cannot exist, so it is reported as not found.
func pathID(r *http.Request, name, prefix, kind string) (string, error) {
	id := r.PathValue(name)
	if !ids.Valid(prefix, id) {
		return "", notFound(kind, id)
	}
	return id, nil
}

func notFound(kind, id string) error {
	if len(id) > 64 {
		id = id[:64] + "…"
	}
	return apierr.NotFound(kind, id)
}

// storeErr maps store errors on a lookup of one object.
func storeErr(err error, kind, id string) error {
	if errors.Is(err, store.ErrNotFound) {
		return notFound(kind, id)
	}
	return err
}

// record is the audit record of ev, caused by the request's admin key.
func (a *api) record(r *http.Request, projectID string, ev audit.Event) store.AuditEvent {
	return audit.Record(audit.Entry{OrgID: caller(r).OrgID, Actor: caller(r).ID, ProjectID: projectID, At: a.now()}, ev)
}

func unix(t time.Time) int64 { return t.Unix() }

// page is OpenAI's cursor list.
type page[T any] struct {
	Object  string  `json:"object"`
	Data    []T     `json:"data"`
	FirstID *string `json:"first_id"`
	LastID  *string `json:"last_id"`
	HasMore bool    `json:"has_more"`
}

// trim cuts a result fetched with limit+1 rows to limit and reports whether
// there was more.
func trim[T any](items []T, limit int) ([]T, bool) {
	if len(items) > limit {
		return items[:limit], true
	}
	return items, false
}

func listPage[T any](data []T, more bool, id func(T) string) page[T] {
	p := page[T]{Object: "list", Data: data, HasMore: more}
	if p.Data == nil {
		p.Data = []T{}
	}
	if len(data) > 0 {
		first, last := id(data[0]), id(data[len(data)-1])
		p.FirstID, p.LastID = &first, &last
	}
	return p
}
