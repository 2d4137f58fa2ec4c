package ocicloud

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/oracle/oci-go-sdk/v65/common"

	"github.com/ekm-dev/ekm/emulator/emukit"
)

// serveControl is the control API, served only on the listener's own
// (loopback) address under /_emulator: never on an OCI host name.
func (e *Emulator) serveControl(w http.ResponseWriter, r *http.Request) {
	path, ok := strings.CutPrefix(r.URL.Path, emukit.ControlPrefix)
	if !ok {
		emukit.ControlError(w, http.StatusNotFound, "the control API lives under "+emukit.ControlPrefix+"/")
		return
	}
	var segs []string
	for _, s := range strings.Split(path, "/") {
		if s != "" {
			segs = append(segs, s)
		}
	}
	route := r.Method + " " + strings.Join(segs, "/")
	if len(segs) == 3 && segs[0] == "tenancies" {
		route = r.Method + " tenancies/*/" + segs[2]
	}
	if len(segs) == 2 && segs[0] == "faults" {
		route = r.Method + " faults/*"
	}
	bad := func(err error) { emukit.ControlError(w, http.StatusBadRequest, err.Error()) }
	switch route {
	case "GET healthz":
		emukit.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	case "GET vendor":
		v := e.Vendor()
		v.PrivateKeyPEM = "" // in v.KeyFile
		emukit.WriteJSON(w, http.StatusOK, v)
	case "POST tenancies":
		var req struct {
			Name   string `json:"name"`
			Region string `json:"region"`
		}
		if err := emukit.ReadJSON(r, &req); err != nil && err != emukit.ErrEmptyBody {
			bad(err)
			return
		}
		c, err := e.CreateTenancy(req.Name, req.Region)
		if err != nil {
			bad(err)
			return
		}
		emukit.WriteJSON(w, http.StatusCreated, c)
	case "GET tenancies":
		e.mu.Lock()
		out := []map[string]any{}
		for _, id := range sortedKeys(e.st.Tenancies) {
			t := e.st.Tenancies[id]
			n := map[string]int{}
			for _, v := range e.st.Vaults {
				if v.Tenancy == id {
					n["vaults"]++
				}
			}
			for _, k := range e.st.Keys {
				if k.Tenancy == id {
					n["keys"]++
				}
			}
			for _, p := range e.st.Policies {
				if p.Tenancy == id && !p.latest().Deleted {
					n["policies"]++
				}
			}
			out = append(out, map[string]any{"tenancy_ocid": t.ID, "name": t.Name, "home_region": t.HomeRegion,
				"vendor": t.ID == e.st.Vendor, "vaults": n["vaults"], "keys": n["keys"], "policies": n["policies"]})
		}
		e.mu.Unlock()
		emukit.WriteJSON(w, http.StatusOK, map[string]any{"tenancies": out})
	case "GET tenancies/*/admin":
		c, err := e.TenancyAdmin(segs[1])
		if err != nil {
			emukit.ControlError(w, http.StatusNotFound, err.Error())
			return
		}
		emukit.WriteJSON(w, http.StatusOK, c)
	case "POST tenancies/*/call":
		e.serveCall(w, r, segs[1])
	case "POST faults":
		var f Fault
		if err := emukit.ReadJSON(r, &f); err != nil {
			bad(err)
			return
		}
		id, err := e.InjectFault(f)
		if err != nil {
			bad(err)
			return
		}
		f.ID = id
		emukit.WriteJSON(w, http.StatusCreated, f)
	case "GET faults":
		emukit.WriteJSON(w, http.StatusOK, map[string]any{"faults": e.Faults()})
	case "DELETE faults":
		e.ClearFaults()
		w.WriteHeader(http.StatusNoContent)
	case "DELETE faults/*":
		if !e.RemoveFault(segs[1]) {
			emukit.ControlError(w, http.StatusNotFound, "no such fault")
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case "GET counters":
		emukit.WriteJSON(w, http.StatusOK, e.Counters())
	case "DELETE counters":
		e.ResetCounters()
		w.WriteHeader(http.StatusNoContent)
	case "GET requests":
		emukit.WriteJSON(w, http.StatusOK, map[string]any{"requests": e.Requests()})
	case "GET clock", "POST clock":
		emukit.ServeClock(w, r, e.clock)
	case "GET settings":
		emukit.WriteJSON(w, http.StatusOK, e.Settings())
	case "PUT settings":
		s := e.Settings()
		if err := emukit.ReadJSON(r, &s); err != nil {
			bad(err)
			return
		}
		if err := e.SetSettings(s); err != nil {
			bad(err)
			return
		}
		emukit.WriteJSON(w, http.StatusOK, s)
	default:
		emukit.ControlError(w, http.StatusNotFound, "unknown control API route: "+truncate(route, 128))
	}
}

// serveCall sends one OCI API request as a tenancy's administrator, signed
// with its API key like any client's, through the emulator's own TLS
// listener: so that `ekm dev` can print the customer's commands as curl
// lines (curl cannot sign OCI requests). The request is authenticated and
// authorized exactly like any other; the answer is relayed as is.
func (e *Emulator) serveCall(w http.ResponseWriter, r *http.Request, tenancyOCID string) {
	var req struct {
		Method string          `json:"method"`
		URL    string          `json:"url"`
		Body   json.RawMessage `json:"body"`
	}
	if err := emukit.ReadJSON(r, &req); err != nil {
		emukit.ControlError(w, http.StatusBadRequest, err.Error())
		return
	}
	u, err := url.Parse(req.URL)
	if err != nil || u.Scheme != "https" {
		emukit.ControlError(w, http.StatusBadRequest, "url must be an https URL of an OCI host")
		return
	}
	if ep, _ := classify(u.Host); ep.svc == svcUnknown || ep.svc == svcControl {
		emukit.ControlError(w, http.StatusBadRequest, "url must name an OCI host the emulator serves")
		return
	}
	switch req.Method {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete:
	default:
		emukit.ControlError(w, http.StatusBadRequest, "method must be GET, POST, PUT or DELETE")
		return
	}
	admin, err := e.TenancyAdmin(tenancyOCID)
	if err != nil {
		emukit.ControlError(w, http.StatusNotFound, err.Error())
		return
	}
	var body []byte
	if hasBody(req.Method) {
		body = []byte(req.Body)
		if len(body) == 0 || string(body) == "null" {
			body = []byte("{}")
		}
	}
	out, err := http.NewRequestWithContext(r.Context(), req.Method, u.String(), bytes.NewReader(body))
	if err != nil {
		emukit.ControlError(w, http.StatusBadRequest, err.Error())
		return
	}
	out.Header.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	out.Header.Set("Content-Type", "application/json")
	if hasBody(req.Method) {
		out.ContentLength = int64(len(body))
		out.Header.Set("Content-Length", itoa(len(body)))
	}
	cp := common.NewRawConfigurationProvider(admin.TenancyOCID, admin.UserOCID, admin.Region, admin.Fingerprint, admin.PrivateKeyPEM, nil)
	if err := common.DefaultRequestSigner(cp).Sign(out); err != nil {
		emukit.ControlError(w, http.StatusInternalServerError, err.Error())
		return
	}
	resp, err := e.HTTPClient().Do(out)
	if err != nil {
		emukit.ControlError(w, http.StatusBadGateway, err.Error())
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	w.Header().Set("Content-Type", "application/json")
	if id := resp.Header.Get("opc-request-id"); id != "" {
		w.Header().Set("opc-request-id", id)
	}
	w.WriteHeader(resp.StatusCode)
	w.Write(b)
}

func itoa(n int) string { return sprintf("%d", n) }
