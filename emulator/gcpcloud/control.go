package gcpcloud

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/ekm-dev/ekm/emulator/emukit"
)

// Vendor describes the vendor's own project and service account (ekm's
// Google identity): its key file is what ADC loads, and the account can
// call generateIdToken for itself.
type Vendor struct {
	ProjectID           string `json:"project_id"`
	ProjectNumber       string `json:"project_number"`
	ServiceAccountEmail string `json:"service_account"`
	UniqueID            string `json:"unique_id"` // the sub/azp of its Google-signed ID tokens
	KeyJSON             []byte `json:"-"`
	KeyFile             string `json:"key_file"` // valid after Start
}

// Vendor returns the vendor project and service account.
func (e *Emulator) Vendor() Vendor {
	e.mu.RLock()
	defer e.mu.RUnlock()
	p := e.st.Projects[e.st.VendorProject]
	sa := p.ServiceAccounts[e.st.VendorSA]
	return Vendor{ProjectID: p.ID, ProjectNumber: p.Number, ServiceAccountEmail: sa.Email, UniqueID: sa.UniqueID,
		KeyJSON: sa.keyFileJSON(sa.Keys[0]), KeyFile: e.files.Path(vendorKeyFile)}
}

// Project is a customer project created through the control API. The
// admin token stands in for an interactive login of a project owner
// (roles/owner): it can run the whole onboarding over REST.
type Project struct {
	ID         string    `json:"project_id"`
	Number     string    `json:"project_number"`
	AdminEmail string    `json:"admin_email"`
	AdminToken string    `json:"admin_token"`
	ExpiresAt  time.Time `json:"expires_at"`
}

const adminTokenLifetime = 24 * time.Hour

// CreateProject creates a customer project whose admin owns it.
func (e *Emulator) CreateProject() (Project, error) { return e.CreateProjectWithID("") }

// CreateProjectWithID creates a customer project with a chosen id (""
// means a random "cust-xxxxxxxx").
func (e *Emulator) CreateProjectWithID(id string) (Project, error) {
	if id == "" {
		id = "cust-" + randHex(4)
	}
	if !projectIDRE.MatchString(id) {
		return Project{}, fmt.Errorf("invalid project id %q (6-30 of [a-z0-9-], starting with a letter)", id)
	}
	e.mu.Lock()
	if e.st.Projects[id] != nil {
		e.mu.Unlock()
		return Project{}, fmt.Errorf("project %q already exists", id)
	}
	if len(e.st.Projects) >= 10_000 {
		e.mu.Unlock()
		return Project{}, errors.New("too many projects")
	}
	p := newProject(id, e.clock.Now())
	e.st.Projects[id] = p
	if err := e.saveLocked(); err != nil {
		delete(e.st.Projects, id)
		e.mu.Unlock()
		return Project{}, err
	}
	e.mu.Unlock()
	return e.AdminToken(id)
}

// AdminToken mints a fresh admin token for a project (id or number).
func (e *Emulator) AdminToken(project string) (Project, error) {
	e.mu.RLock()
	p := e.projectLocked(project)
	e.mu.RUnlock()
	if p == nil {
		return Project{}, fmt.Errorf("project %q not found", project)
	}
	now := e.clock.Now()
	exp := now.Add(adminTokenLifetime)
	tok := e.mintToken(accessToken{Kind: "user", Email: p.AdminEmail, Scope: scopeCloudPlatform, Iat: now.Unix(), Exp: exp.Unix()})
	return Project{ID: p.ID, Number: p.Number, AdminEmail: p.AdminEmail, AdminToken: tok, ExpiresAt: exp.UTC()}, nil
}

// AddProjectBinding grants role to member on a project (what the console
// or `gcloud projects add-iam-policy-binding` does).
func (e *Emulator) AddProjectBinding(project, role, member string) error {
	if aerr := validateBindings("project", []binding{{Role: role, Members: []string{member}}}); aerr != nil {
		return errors.New(aerr.Message)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.projectLocked(project)
	if p == nil {
		return fmt.Errorf("project %q not found", project)
	}
	bs := append([]binding(nil), p.Policy.Bindings...)
	found := false
	for i := range bs {
		if bs[i].Role == role {
			bs[i].Members = dedupe(append(append([]string(nil), bs[i].Members...), member))
			found = true
		}
	}
	if !found {
		bs = append(bs, binding{Role: role, Members: []string{member}})
	}
	p.Policy.replace(bs, 1, e.clock.Now())
	return e.saveLocked()
}

// RegisterIssuer trusts jwksJSON as the keys of an external issuer, so
// STS verifies its tokens without fetching its discovery document. An
// empty jwksJSON removes the registration (STS then fetches the issuer's
// discovery document and JWKS through Options.IssuerHTTPClient).
func (e *Emulator) RegisterIssuer(issuer string, jwksJSON []byte) error {
	if !strings.HasPrefix(issuer, "https://") || len(issuer) > 2000 {
		return errors.New("issuer must be an https URL")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(jwksJSON) == 0 {
		delete(e.st.Issuers, issuer)
		return e.saveLocked()
	}
	if _, err := parseJWKS(jwksJSON, false); err != nil {
		return fmt.Errorf("jwks: %w", err)
	}
	e.st.Issuers[issuer] = string(jwksJSON)
	return e.saveLocked()
}

// GoogleIDToken signs an ID token as accounts.google.com for a service
// account (email), as generateIdToken would, without an API call.
func (e *Emulator) GoogleIDToken(email, audience string, includeEmail bool) (string, error) {
	e.mu.RLock()
	sa := e.serviceAccountLocked(email)
	e.mu.RUnlock()
	if sa == nil {
		return "", fmt.Errorf("service account %q not found", email)
	}
	return e.signGoogleIDToken(sa, audience, includeEmail, e.clock.Now())
}

// ---- control API ----

func (e *Emulator) serveControl(w http.ResponseWriter, r *http.Request) {
	path, ok := strings.CutPrefix(r.URL.Path, emukit.ControlPrefix)
	if !ok {
		emukit.ControlError(w, http.StatusNotFound, "not found; the control API is under "+emukit.ControlPrefix)
		return
	}
	path = strings.TrimSuffix(path, "/")
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	switch {
	case path == "/healthz":
		emukit.WriteJSON(w, 200, map[string]string{"status": "ok"})
	case path == "/vendor" && r.Method == http.MethodGet:
		v := e.Vendor()
		var key any
		json.Unmarshal(v.KeyJSON, &key)
		emukit.WriteJSON(w, 200, map[string]any{"project_id": v.ProjectID, "project_number": v.ProjectNumber,
			"service_account": v.ServiceAccountEmail, "unique_id": v.UniqueID, "key_file": v.KeyFile, "key": key})
	case path == "/projects" && r.Method == http.MethodPost:
		var req struct {
			ProjectID string `json:"project_id"`
		}
		if err := emukit.ReadJSON(r, &req); err != nil && !errors.Is(err, emukit.ErrEmptyBody) {
			emukit.ControlError(w, 400, err.Error())
			return
		}
		p, err := e.CreateProjectWithID(req.ProjectID)
		if err != nil {
			emukit.ControlError(w, 400, err.Error())
			return
		}
		emukit.WriteJSON(w, http.StatusCreated, p)
	case path == "/projects" && r.Method == http.MethodGet:
		e.mu.RLock()
		var out []map[string]string
		for _, id := range sortedKeys(e.st.Projects) {
			p := e.st.Projects[id]
			out = append(out, map[string]string{"project_id": p.ID, "project_number": p.Number, "admin_email": p.AdminEmail})
		}
		e.mu.RUnlock()
		emukit.WriteJSON(w, 200, map[string]any{"projects": out})
	case len(parts) == 3 && parts[0] == "projects" && parts[2] == "admin-token" && r.Method == http.MethodPost:
		p, err := e.AdminToken(parts[1])
		if err != nil {
			emukit.ControlError(w, 404, err.Error())
			return
		}
		emukit.WriteJSON(w, 200, p)
	case len(parts) == 3 && parts[0] == "projects" && parts[2] == "iam-bindings" && r.Method == http.MethodPost:
		var req struct{ Role, Member string }
		if err := emukit.ReadJSON(r, &req); err != nil {
			emukit.ControlError(w, 400, err.Error())
			return
		}
		if err := e.AddProjectBinding(parts[1], req.Role, req.Member); err != nil {
			emukit.ControlError(w, 400, err.Error())
			return
		}
		emukit.WriteJSON(w, 200, map[string]string{"status": "ok"})
	case path == "/issuers" && r.Method == http.MethodPost:
		var req struct {
			Issuer string          `json:"issuer"`
			JWKS   json.RawMessage `json:"jwks"`
		}
		if err := emukit.ReadJSON(r, &req); err != nil {
			emukit.ControlError(w, 400, err.Error())
			return
		}
		if err := e.RegisterIssuer(req.Issuer, req.JWKS); err != nil {
			emukit.ControlError(w, 400, err.Error())
			return
		}
		emukit.WriteJSON(w, 200, map[string]string{"status": "ok"})
	case path == "/faults" && r.Method == http.MethodPost:
		var f Fault
		if err := emukit.ReadJSON(r, &f); err != nil {
			emukit.ControlError(w, 400, err.Error())
			return
		}
		id, err := e.InjectFault(f)
		if err != nil {
			emukit.ControlError(w, 400, err.Error())
			return
		}
		f.ID = id
		emukit.WriteJSON(w, http.StatusCreated, f)
	case path == "/faults" && r.Method == http.MethodGet:
		emukit.WriteJSON(w, 200, map[string]any{"faults": e.Faults()})
	case path == "/faults" && r.Method == http.MethodDelete:
		e.ClearFaults()
		w.WriteHeader(http.StatusNoContent)
	case len(parts) == 2 && parts[0] == "faults" && r.Method == http.MethodDelete:
		if !e.RemoveFault(parts[1]) {
			emukit.ControlError(w, 404, "no such fault")
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case path == "/counters" && r.Method == http.MethodGet:
		emukit.WriteJSON(w, 200, e.Counters())
	case path == "/counters" && r.Method == http.MethodDelete:
		e.ResetCounters()
		w.WriteHeader(http.StatusNoContent)
	case path == "/requests" && r.Method == http.MethodGet:
		emukit.WriteJSON(w, 200, map[string]any{"requests": e.Requests()})
	case path == "/clock":
		emukit.ServeClock(w, r, e.clock)
	case path == "/settings" && r.Method == http.MethodGet:
		emukit.WriteJSON(w, 200, e.Settings())
	case path == "/settings" && r.Method == http.MethodPut:
		s := e.Settings()
		if err := emukit.ReadJSON(r, &s); err != nil {
			emukit.ControlError(w, 400, err.Error())
			return
		}
		if err := e.SetSettings(s); err != nil {
			emukit.ControlError(w, 400, err.Error())
			return
		}
		emukit.WriteJSON(w, 200, s)
	default:
		emukit.ControlError(w, http.StatusNotFound, "no such control route")
	}
}
