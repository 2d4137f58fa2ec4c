package adminapi

import (
	"log/slog"
	"net/http"

	"github.com/ekm-dev/ekm/auth"
	"github.com/ekm-dev/ekm/httpx"
	"github.com/ekm-dev/ekm/store"
)

// meObject answers GET /v1/organization/me (an ekm extension): the
// organization of the admin key making the request, and that key. The web
// console uses it to check a key at sign-in and to fill the org id into the
// customer's onboarding commands; any Admin API client may use it.
type meObject struct {
	Object      string     `json:"object"`
	ID          string     `json:"id"`
	Name        string     `json:"name"`
	CreatedAt   int64      `json:"created_at"`
	AdminAPIKey meAdminKey `json:"admin_api_key"`
}

// meAdminKey is the calling key in organization.admin_api_key's shape,
// without its owner (the organization around it).
type meAdminKey struct {
	Object        string `json:"object"`
	ID            string `json:"id"`
	Name          string `json:"name"`
	RedactedValue string `json:"redacted_value"`
	CreatedAt     int64  `json:"created_at"`
}

// NewReads returns the handler of ekm's read-only Admin API extensions that
// are mounted beside New (app routes them by their exact patterns):
//
//	GET /v1/organization/me
//
// It authenticates exactly as New does (an admin key; 401 otherwise) and
// answers errors in the same shape. It writes nothing.
func NewReads(d Deps) http.Handler {
	a := &api{st: d.Store, svc: d.Service, log: d.Logger, now: d.Now, maxBody: d.MaxBodyBytes}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/organization/me", a.handle(a.getMe))
	mw := auth.Middleware(d.Store, store.KindAdmin, func(r *http.Request, err error) {
		a.log.Error("admin API authentication failed", "request_id", httpx.RequestID(r.Context()), "method", r.Method, "path", r.URL.Path, "err", err)
	}, auth.TrackLastUse(d.LastUsed))
	return noStoreHandler(mw(httpx.Route(mux)))
}

// ReadPatterns are the patterns NewReads serves, for the caller's mux.
var ReadPatterns = []string{"GET /v1/organization/me"}

func (a *api) getMe(w http.ResponseWriter, r *http.Request) error {
	if err := onlyQuery(r.URL.Query(), nil); err != nil {
		return err
	}
	k := caller(r)
	org, err := a.st.GetOrg(r.Context(), k.OrgID)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusOK, meObject{Object: "organization", ID: org.ID, Name: org.Name, CreatedAt: unix(org.CreatedAt),
		AdminAPIKey: meAdminKey{Object: "organization.admin_api_key", ID: k.ID, Name: k.Name, RedactedValue: k.RedactedValue, CreatedAt: unix(k.CreatedAt)}})
}
