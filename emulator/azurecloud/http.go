package azurecloud

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ekm-dev/ekm/emulator/emukit"
)

const (
	// maxBody bounds every request body; Key Vault requests are small.
	maxBody       = 1 << 20
	controlPrefix = emukit.ControlPrefix
)

type service int

const (
	svcUnknown service = iota
	svcLogin
	svcGraph
	svcARM
	svcVault
	svcControl
	svcAttest
)

var loginHosts = map[string]bool{
	"login.microsoftonline.com": true, "login.microsoft.com": true, "login.windows.net": true,
	"sts.windows.net": true, "login.microsoftonline.us": true, "login.chinacloudapi.cn": true,
	"login.partner.microsoftonline.cn": true,
}

var armHosts = map[string]bool{
	"management.azure.com": true, "management.usgovcloudapi.net": true, "management.chinacloudapi.cn": true,
}

// vaultSuffixes map a vault DNS suffix to the token resource Key Vault
// names in its challenge.
var vaultSuffixes = []struct{ suffix, resource string }{
	{".vault.azure.net", "https://vault.azure.net"},
	{".vault.azure.cn", "https://vault.azure.cn"},
	{".vault.usgovcloudapi.net", "https://vault.usgovcloudapi.net"},
	{hsmSuffix, hsmResource},
}

// classify maps a Host header to a service; for vaults it also returns the
// vault name and its token resource.
func classify(hostport string) (svc service, host, vaultName, resource string) {
	host = emukit.HostName(hostport)
	switch {
	case loginHosts[host]:
		return svcLogin, host, "", ""
	case host == "graph.microsoft.com":
		return svcGraph, host, "", ""
	case armHosts[host]:
		return svcARM, host, "", ""
	case emukit.IsControlHost(host):
		return svcControl, host, "", ""
	case isAttestHost(host):
		return svcAttest, host, "", ""
	}
	for _, s := range vaultSuffixes {
		if name, ok := strings.CutSuffix(host, s.suffix); ok && name != "" && !strings.Contains(name, ".") {
			return svcVault, host, name, s.resource
		}
	}
	return svcUnknown, host, "", ""
}

// ServeHTTP routes by Host header, like the real front doors do.
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			// A bug must not take the emulator down or leak details.
			e.log.Error("azure emulator: panic", "panic", fmt.Sprint(v), "path", r.URL.Path)
			http.Error(w, "internal error", http.StatusInternalServerError)
		}
	}()
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	svc, host, vaultName, resource := classify(r.Host)
	sw := &emukit.StatusWriter{ResponseWriter: w}
	w = sw
	start := time.Now()
	defer func() {
		// Paths hold only resource names; tokens and bodies are never logged.
		e.log.Debug("azure emulator request", "method", r.Method, "host", host, "path", truncate(r.URL.Path, 256),
			"status", sw.Status, "duration", time.Since(start))
		if svc != svcControl {
			e.reqlog.Add(Request{At: start, Method: r.Method, Host: host, Operation: sw.Op, ClientRequestID: clientRequestID(r), Status: sw.Status})
		}
	}()
	switch svc {
	case svcLogin:
		e.serveLogin(w, r, host)
	case svcGraph:
		e.serveGraph(w, r)
	case svcARM:
		e.serveARM(w, r)
	case svcVault:
		e.serveVault(w, r, host, vaultName, resource)
	case svcControl:
		e.serveControl(w, r)
	case svcAttest:
		e.serveAttestation(w, r, host)
	default:
		writeJSON(w, http.StatusMisdirectedRequest, map[string]any{"error": map[string]string{
			"code": "UnknownHost", "message": "The Azure emulator does not serve this host name."}})
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) { emukit.WriteJSON(w, status, v) }

// readJSON decodes a bounded JSON body; empty bodies decode to nothing.
func readJSON(r *http.Request, v any) error { return emukit.ReadJSON(r, v) }

var errEmptyBody = emukit.ErrEmptyBody

// clientRequestID returns the caller's x-ms-client-request-id if it is sane.
func clientRequestID(r *http.Request) string {
	v := r.Header.Get("x-ms-client-request-id")
	if len(v) > 128 {
		return ""
	}
	for _, c := range v {
		if c < 0x21 || c > 0x7e {
			return ""
		}
	}
	return v
}

// bearer extracts the token from "Authorization: Bearer ..."; ok is false
// when the header is absent.
func bearer(r *http.Request) (tok string, present bool) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", false
	}
	scheme, tok, _ := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "Bearer") && !strings.EqualFold(scheme, "PoP") {
		return "", true
	}
	return strings.TrimSpace(tok), true
}

// ---- counters ----

// Counters returns requests seen per operation (e.g. "entra.token",
// "kv.decrypt", "kv.challenge").
func (e *Emulator) Counters() map[string]int { return e.counters.Snapshot() }

// ResetCounters zeroes all counters and empties the request log.
func (e *Emulator) ResetCounters() { e.counters.Reset(); e.reqlog.Reset() }

// ---- request log ----

// Request is one entry of the request log: enough to match a caller's own
// record of a call (its x-ms-client-request-id) with what the emulator saw.
// Tokens, bodies and query strings are never kept.
type Request struct {
	At        time.Time `json:"at"`
	Method    string    `json:"method"`
	Host      string    `json:"host"`
	Operation string    `json:"operation"` // counter name; "" if the request was not routed
	// ClientRequestID is the caller's x-ms-client-request-id ("" if absent
	// or not printable ASCII of at most 128 bytes).
	ClientRequestID string `json:"client_request_id,omitempty"`
	Status          int    `json:"status"` // 0: the connection was aborted (fault reset)
}

// Requests returns the request log, oldest first: the last 10,000 requests
// to Entra ID, Key Vault, Graph and ARM (not the control API).
func (e *Emulator) Requests() []Request { return e.reqlog.Snapshot() }

// ---- faults ----

// Duration is a time.Duration that reads and writes JSON as "1.5s".
type Duration = emukit.Duration

// Fault is an injected failure. A request matches when its service (Host)
// and operation match; then Latency is applied, and then either the
// connection is reset, or Status is returned with a service-shaped error
// body, or (neither set) the request proceeds normally.
type Fault struct {
	ID string `json:"id,omitempty"`
	// Host: "" (any), a service ("login", "vault", "graph", "management")
	// or an exact host name such as "myvault.vault.azure.net".
	Host string `json:"host,omitempty"`
	// Operation: "" (any), an exact name ("kv.decrypt") or a prefix ending
	// in "*" ("kv.*"). Names are those of Counters.
	Operation string   `json:"operation,omitempty"`
	Latency   Duration `json:"latency,omitempty"`
	Status    int      `json:"status,omitempty"`
	// RetryAfter is sent as the Retry-After header with Status.
	RetryAfter string `json:"retry_after,omitempty"`
	// ErrorCode overrides the error code in the body (Key Vault, ARM and
	// Graph); AADSTS sets the AADSTS number for Entra bodies.
	ErrorCode string `json:"error_code,omitempty"`
	AADSTS    int    `json:"aadsts,omitempty"`
	Message   string `json:"message,omitempty"`
	// Reset aborts the connection without a response.
	Reset bool `json:"reset,omitempty"`
	// Probability in (0,1] applies the fault to that share of matching
	// requests; 0 means always.
	Probability float64 `json:"probability,omitempty"`
	// Count limits how many requests the fault hits; 0 means unlimited.
	Count int `json:"count,omitempty"`
}

// kit splits f into the shared fault and the Azure extra (AADSTS).
func (f Fault) kit() (emukit.Fault, int) {
	return emukit.Fault{ID: f.ID, Host: f.Host, Operation: f.Operation, Latency: f.Latency, Status: f.Status,
		RetryAfter: f.RetryAfter, ErrorCode: f.ErrorCode, Message: f.Message, Reset: f.Reset,
		Probability: f.Probability, Count: f.Count}, f.AADSTS
}

func faultOf(fe emukit.FaultEntry[int]) Fault {
	k := fe.Fault
	return Fault{ID: k.ID, Host: k.Host, Operation: k.Operation, Latency: k.Latency, Status: k.Status,
		RetryAfter: k.RetryAfter, ErrorCode: k.ErrorCode, AADSTS: fe.Ext, Message: k.Message, Reset: k.Reset,
		Probability: k.Probability, Count: k.Count}
}

var serviceNames = map[service]string{svcLogin: "login", svcGraph: "graph", svcARM: "management", svcVault: "vault", svcAttest: "attestation"}

// InjectFault adds a fault and returns its id.
func (e *Emulator) InjectFault(f Fault) (string, error) {
	k, aadsts := f.kit()
	return e.faults.Add(k, aadsts)
}

// Faults lists the active faults (with remaining counts).
func (e *Emulator) Faults() []Fault {
	list := e.faults.List()
	out := make([]Fault, 0, len(list))
	for _, fe := range list {
		out = append(out, faultOf(fe))
	}
	return out
}

// RemoveFault deletes one fault; it reports whether it existed.
func (e *Emulator) RemoveFault(id string) bool { return e.faults.Remove(id) }

// ClearFaults removes all faults.
func (e *Emulator) ClearFaults() { e.faults.Clear() }

// begin counts the operation and applies faults. It returns false when a
// fault has answered (or aborted) the request.
func (e *Emulator) begin(w http.ResponseWriter, r *http.Request, svc service, host, op string) bool {
	e.counters.Inc(op)
	if sw, ok := w.(*emukit.StatusWriter); ok {
		sw.Op = op
	}
	fe, ok := e.faults.Match(serviceNames[svc], host, op)
	if !ok {
		return true
	}
	f := faultOf(fe)
	if !emukit.Apply(r, fe.Fault) { // latency; a reset aborts the connection
		return true
	}
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	e.writeFault(w, r, svc, &f)
	return false
}

func (e *Emulator) writeFault(w http.ResponseWriter, r *http.Request, svc service, f *Fault) {
	msg := f.Message
	if msg == "" {
		msg = "Injected fault: " + http.StatusText(f.Status)
	}
	code := f.ErrorCode
	if code == "" {
		code = defaultFaultCode(f.Status)
	}
	switch svc {
	case svcLogin:
		n := f.AADSTS
		if n == 0 {
			n = 90033 // "A transient error has occurred. Please try again."
		}
		name := "temporarily_unavailable"
		if f.ErrorCode != "" {
			name = f.ErrorCode
		}
		e.entraError(w, f.Status, name, n, msg)
	case svcVault:
		kvHeaders(w, r, "")
		kvError(w, f.Status, code, msg, "")
	case svcGraph:
		graphError(w, r, f.Status, code, msg)
	case svcAttest:
		attestError(w, f.Status, code, msg)
	default:
		armError(w, f.Status, code, msg)
	}
}

func defaultFaultCode(status int) string {
	switch status {
	case 429:
		return "Throttled"
	case 401:
		return "Unauthorized"
	case 403:
		return "Forbidden"
	case 404:
		return "NotFound"
	case 503:
		return "ServiceUnavailable"
	}
	if status >= 500 {
		return "InternalServerError"
	}
	return "BadRequest"
}

// ---- Key Vault throttling ----

type limiter struct {
	mu     sync.Mutex
	window map[string]int64 // vault -> window index
	used   map[string]int64 // vault -> weighted units used in the window
}

// budget is the units available per window; an operation costs
// budget/limit, so mixed workloads are weighted exactly as Azure documents.
const budget = 1_000_000_000

// allow charges one operation against the vault's current window. It
// returns ok=false and the time until the window ends when over budget.
func (l *limiter) allow(vault string, now time.Time, t Throttle, limit int) (bool, time.Duration) {
	if t.Disabled {
		return true, 0
	}
	win := time.Duration(t.WindowSeconds) * time.Second
	idx := now.UnixNano() / int64(win)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.window == nil {
		l.window, l.used = map[string]int64{}, map[string]int64{}
	}
	if l.window[vault] != idx {
		l.window[vault], l.used[vault] = idx, 0
	}
	cost := int64(budget / limit)
	if l.used[vault]+cost > budget {
		next := time.Unix(0, (idx+1)*int64(win))
		return false, next.Sub(now)
	}
	l.used[vault] += cost
	return true, 0
}

// sortedKeys returns map keys in order, for deterministic output.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
