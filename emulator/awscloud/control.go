package awscloud

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/ekm-dev/ekm/emulator/emukit"
)

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
	if len(segs) == 3 && segs[0] == "accounts" {
		route = r.Method + " accounts/*/" + segs[2]
	}
	if len(segs) == 2 && segs[0] == "faults" {
		route = r.Method + " faults/*"
	}
	bad := func(err error) { emukit.ControlError(w, http.StatusBadRequest, err.Error()) }
	switch route {
	case "GET healthz":
		emukit.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	case "GET vendor":
		emukit.WriteJSON(w, http.StatusOK, e.Vendor())
	case "POST accounts":
		var req struct {
			Partition string `json:"partition"`
		}
		if err := emukit.ReadJSON(r, &req); err != nil && err != emukit.ErrEmptyBody {
			bad(err)
			return
		}
		if req.Partition == "" {
			req.Partition = "aws"
		}
		c, err := e.CreateAccountIn(req.Partition)
		if err != nil {
			bad(err)
			return
		}
		emukit.WriteJSON(w, http.StatusCreated, c)
	case "GET accounts":
		e.mu.Lock()
		out := []map[string]any{}
		for _, id := range sortedKeys(e.st.Accounts) {
			a := e.st.Accounts[id]
			out = append(out, map[string]any{"account_id": a.ID, "partition": a.Partition, "vendor": a.ID == e.st.Vendor,
				"roles": len(a.Roles), "keys": len(a.Keys)})
		}
		e.mu.Unlock()
		emukit.WriteJSON(w, http.StatusOK, map[string]any{"accounts": out})
	case "POST accounts/*/users":
		var req struct {
			Name   string          `json:"name"`
			Policy json.RawMessage `json:"policy"`
		}
		if err := emukit.ReadJSON(r, &req); err != nil {
			bad(err)
			return
		}
		policy := ""
		if len(req.Policy) > 0 && string(req.Policy) != "null" {
			var s string
			if json.Unmarshal(req.Policy, &s) == nil {
				policy = s
			} else {
				policy = string(req.Policy)
			}
		}
		c, err := e.CreateUser(segs[1], req.Name, policy)
		if err != nil {
			bad(err)
			return
		}
		emukit.WriteJSON(w, http.StatusCreated, c)
	case "POST issuers":
		var req struct {
			Issuer string          `json:"issuer"`
			JWKS   json.RawMessage `json:"jwks"`
		}
		if err := emukit.ReadJSON(r, &req); err != nil {
			bad(err)
			return
		}
		if err := e.RegisterIssuer(req.Issuer, req.JWKS); err != nil {
			bad(err)
			return
		}
		emukit.WriteJSON(w, http.StatusCreated, map[string]string{"issuer": req.Issuer})
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
