package azurecloud

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

const (
	// maxBody bounds every request body; Key Vault requests are small.
	maxBody = 1 << 20
	// controlHost is an extra name for the control API besides the
	// listener's address.
	controlHost   = "emulator.local"
	controlPrefix = "/_emulator"
)

type service int

const (
	svcUnknown service = iota
	svcLogin
	svcGraph
	svcARM
	svcVault
	svcControl
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
}

// classify maps a Host header to a service; for vaults it also returns the
// vault name and its token resource.
func classify(hostport string) (svc service, host, vaultName, resource string) {
	host = strings.ToLower(hostport)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(host, ".")
	switch {
	case loginHosts[host]:
		return svcLogin, host, "", ""
	case host == "graph.microsoft.com":
		return svcGraph, host, "", ""
	case armHosts[host]:
		return svcARM, host, "", ""
	case host == controlHost || host == "localhost" || net.ParseIP(strings.Trim(host, "[]")) != nil:
		return svcControl, host, "", ""
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
	sw := &statusWriter{ResponseWriter: w}
	w = sw
	start := time.Now()
	defer func() {
		// Paths hold only resource names; tokens and bodies are never logged.
		e.log.Debug("azure emulator request", "method", r.Method, "host", host, "path", truncate(r.URL.Path, 256),
			"status", sw.status, "duration", time.Since(start))
		if svc != svcControl {
			e.reqlog.add(Request{At: start, Method: r.Method, Host: host, Operation: sw.op, ClientRequestID: clientRequestID(r), Status: sw.status})
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
	default:
		writeJSON(w, http.StatusMisdirectedRequest, map[string]any{"error": map[string]string{
			"code": "UnknownHost", "message": "The Azure emulator does not serve this host name."}})
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", fmt.Sprint(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}

// readJSON decodes a bounded JSON body; empty bodies decode to nothing.
func readJSON(r *http.Request, v any) error {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("request body larger than %d bytes", mbe.Limit)
		}
		return fmt.Errorf("read body: %w", err)
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return errEmptyBody
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("the request body is not valid JSON: %w", err)
	}
	return nil
}

var errEmptyBody = errors.New("the request body is empty")

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

type counters struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *counters) inc(op string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]int{}
	}
	c.m[op]++
}

func (c *counters) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.m))
	for k, v := range c.m {
		out[k] = v
	}
	return out
}

func (c *counters) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m = nil
}

// Counters returns requests seen per operation (e.g. "entra.token",
// "kv.decrypt", "kv.challenge").
func (e *Emulator) Counters() map[string]int { return e.counters.snapshot() }

// ResetCounters zeroes all counters and empties the request log.
func (e *Emulator) ResetCounters() { e.counters.reset(); e.reqlog.reset() }

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

// maxRequestLog bounds the request log; older entries are dropped first.
const maxRequestLog = 10_000

type requestLog struct {
	mu   sync.Mutex
	buf  []Request // ring, len <= maxRequestLog
	next int
}

func (l *requestLog) add(r Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) < maxRequestLog {
		l.buf = append(l.buf, r)
		return
	}
	l.buf[l.next] = r
	l.next = (l.next + 1) % maxRequestLog
}

func (l *requestLog) snapshot() []Request {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Request, 0, len(l.buf))
	out = append(out, l.buf[l.next:]...)
	return append(out, l.buf[:l.next]...)
}

func (l *requestLog) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf, l.next = nil, 0
}

// Requests returns the request log, oldest first: the last 10,000 requests
// to Entra ID, Key Vault, Graph and ARM (not the control API).
func (e *Emulator) Requests() []Request { return e.reqlog.snapshot() }

// ---- faults ----

// Duration is a time.Duration that reads and writes JSON as "1.5s".
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n float64
		if err2 := json.Unmarshal(b, &n); err2 != nil {
			return errors.New("duration must be a string like \"1.5s\" or a number of seconds")
		}
		*d = Duration(n * float64(time.Second))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

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

func (f *Fault) validate() error {
	switch {
	case f.Status != 0 && (f.Status < 400 || f.Status > 599):
		return errors.New("status must be 400..599")
	case f.Status != 0 && f.Reset:
		return errors.New("status and reset are exclusive")
	case f.Status == 0 && !f.Reset && f.Latency <= 0:
		return errors.New("a fault needs status, reset or latency")
	case f.Latency < 0 || time.Duration(f.Latency) > 10*time.Minute:
		return errors.New("latency must be 0..10m")
	case f.Probability < 0 || f.Probability > 1:
		return errors.New("probability must be 0..1")
	case f.Count < 0:
		return errors.New("count must be >= 0")
	case len(f.Message) > 4096 || len(f.ErrorCode) > 128 || len(f.RetryAfter) > 64 || len(f.Host) > 256 || len(f.Operation) > 128:
		return errors.New("fault fields too long")
	case strings.ContainsAny(f.RetryAfter, "\r\n"):
		return errors.New("retry_after must be one header line")
	}
	return nil
}

type faults struct {
	mu   sync.Mutex
	list []*Fault
	rand *rand.Rand
}

func newRand() *rand.Rand { return rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())) }

var serviceNames = map[service]string{svcLogin: "login", svcGraph: "graph", svcARM: "management", svcVault: "vault"}

// match returns a copy of the first fault that applies, consuming one use.
func (fs *faults) match(svc service, host, op string) *Fault {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for i, f := range fs.list {
		if f.Host != "" && !strings.EqualFold(f.Host, serviceNames[svc]) && !strings.EqualFold(f.Host, host) {
			continue
		}
		if f.Operation != "" {
			if p, ok := strings.CutSuffix(f.Operation, "*"); ok {
				if !strings.HasPrefix(op, p) {
					continue
				}
			} else if f.Operation != op {
				continue
			}
		}
		if f.Probability > 0 && f.Probability < 1 && fs.rand.Float64() >= f.Probability {
			continue
		}
		hit := *f
		if f.Count > 0 {
			f.Count--
			if f.Count == 0 {
				fs.list = append(fs.list[:i:i], fs.list[i+1:]...)
			}
		}
		return &hit
	}
	return nil
}

// InjectFault adds a fault and returns its id.
func (e *Emulator) InjectFault(f Fault) (string, error) {
	if err := f.validate(); err != nil {
		return "", err
	}
	f.ID = newGUID()
	e.faults.mu.Lock()
	defer e.faults.mu.Unlock()
	if len(e.faults.list) >= 1000 {
		return "", errors.New("too many faults")
	}
	e.faults.list = append(e.faults.list, &f)
	return f.ID, nil
}

// Faults lists the active faults (with remaining counts).
func (e *Emulator) Faults() []Fault {
	e.faults.mu.Lock()
	defer e.faults.mu.Unlock()
	out := make([]Fault, 0, len(e.faults.list))
	for _, f := range e.faults.list {
		out = append(out, *f)
	}
	return out
}

// RemoveFault deletes one fault; it reports whether it existed.
func (e *Emulator) RemoveFault(id string) bool {
	e.faults.mu.Lock()
	defer e.faults.mu.Unlock()
	for i, f := range e.faults.list {
		if f.ID == id {
			e.faults.list = append(e.faults.list[:i:i], e.faults.list[i+1:]...)
			return true
		}
	}
	return false
}

// ClearFaults removes all faults.
func (e *Emulator) ClearFaults() {
	e.faults.mu.Lock()
	defer e.faults.mu.Unlock()
	e.faults.list = nil
}

// begin counts the operation and applies faults. It returns false when a
// fault has answered (or aborted) the request.
func (e *Emulator) begin(w http.ResponseWriter, r *http.Request, svc service, host, op string) bool {
	e.counters.inc(op)
	if sw, ok := w.(*statusWriter); ok {
		sw.op = op
	}
	f := e.faults.match(svc, host, op)
	if f == nil {
		return true
	}
	if f.Latency > 0 {
		t := time.NewTimer(time.Duration(f.Latency))
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			panic(http.ErrAbortHandler)
		}
	}
	switch {
	case f.Reset:
		panic(http.ErrAbortHandler) // closes the connection (HTTP/1) or resets the stream (HTTP/2)
	case f.Status != 0:
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		e.writeFault(w, r, svc, f)
		return false
	}
	return true
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

// statusWriter records the response status (and the counted operation)
// for the request log.
type statusWriter struct {
	http.ResponseWriter
	status int
	op     string
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}
