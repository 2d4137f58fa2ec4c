package ocicloud

import (
	"net/http"
	"strings"

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
