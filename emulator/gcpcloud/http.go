package gcpcloud

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/ekm-dev/ekm/emulator/emukit"
)

const maxBody = 1 << 20

var b64std = base64.StdEncoding

type service int

const (
	svcUnknown service = iota
	svcSTS
	svcIAM
	svcIAMCredentials
	svcKMS
	svcOAuth2
	svcAccounts // accounts.google.com and www.googleapis.com (discovery, JWKS)
	svcControl
)

var hostServices = map[string]service{
	"sts.googleapis.com":            svcSTS,
	"iam.googleapis.com":            svcIAM,
	"iamcredentials.googleapis.com": svcIAMCredentials,
	"cloudkms.googleapis.com":       svcKMS,
	"oauth2.googleapis.com":         svcOAuth2,
	"accounts.google.com":           svcAccounts,
	"www.googleapis.com":            svcAccounts,
}

// serviceNames are the fault "host" values for each service.
var serviceNames = map[service]string{svcSTS: "sts", svcIAM: "iam", svcIAMCredentials: "iamcredentials",
	svcKMS: "kms", svcOAuth2: "oauth2", svcAccounts: "accounts"}

// ServeHTTP routes by Host header, as Google's front ends do.
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			e.log.Error("gcp emulator: panic", "panic", fmt.Sprint(v), "path", r.URL.Path)
			http.Error(w, "internal error", http.StatusInternalServerError)
		}
	}()
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	host := emukit.HostName(r.Host)
	svc, ok := hostServices[host]
	if !ok && emukit.IsControlHost(host) {
		svc = svcControl
	}
	reqID := randHex(8)
	rw := &respWriter{StatusWriter: emukit.StatusWriter{ResponseWriter: w}}
	if svc != svcControl {
		w.Header().Set("X-Emulator-Request-Id", reqID)
	}
	start := time.Now()
	defer func() {
		e.log.Debug("gcp emulator request", "method", r.Method, "host", host, "path", truncate(r.URL.Path, 256),
			"status", rw.Status, "duration", time.Since(start), "request_id", reqID)
		if svc != svcControl {
			e.reqlog.Add(Request{At: e.clock.Now(), RequestID: reqID, ClientRequestID: clientRequestID(r),
				Method: r.Method, Host: host, Operation: rw.Op, Principal: rw.principal, Status: rw.Status})
		}
	}()
	switch svc {
	case svcSTS:
		e.serveSTS(rw, r)
	case svcIAM:
		e.serveIAM(rw, r)
	case svcIAMCredentials:
		e.serveIAMCredentials(rw, r)
	case svcKMS:
		e.serveKMS(rw, r)
	case svcOAuth2:
		e.serveOAuth2(rw, r)
	case svcAccounts:
		e.serveAccounts(rw, r, host)
	case svcControl:
		e.serveControl(rw, r)
	default:
		writeGoogleError(rw, http.StatusNotFound, "NOT_FOUND", "The GCP emulator does not serve this host name.")
	}
}

// respWriter is the StatusWriter plus the caller's identity for the log.
type respWriter struct {
	emukit.StatusWriter
	principal string
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// clientRequestID is the caller's X-Request-Id (or x-goog-request-id) if
// it is printable ASCII of at most 128 bytes.
func clientRequestID(r *http.Request) string {
	v := r.Header.Get("X-Request-Id")
	if v == "" {
		v = r.Header.Get("X-Goog-Request-Id")
	}
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

// Request is one entry of the request log. Tokens, bodies and query
// strings are never kept.
type Request struct {
	At        time.Time `json:"at"` // emulator clock
	RequestID string    `json:"request_id"`
	// ClientRequestID is the caller's X-Request-Id or X-Goog-Request-Id.
	ClientRequestID string `json:"client_request_id,omitempty"`
	Method          string `json:"method"`
	Host            string `json:"host"`
	Operation       string `json:"operation"`           // counter name
	Principal       string `json:"principal,omitempty"` // the authenticated caller (policy member form)
	Status          int    `json:"status"`              // 0: connection aborted by a fault
}

// Requests returns the request log (last 10,000 requests, control API
// excluded), oldest first.
func (e *Emulator) Requests() []Request { return e.reqlog.Snapshot() }

// Counters returns requests per operation (e.g. "kms.encrypt").
func (e *Emulator) Counters() map[string]int { return e.counters.Snapshot() }

// ResetCounters zeroes the counters and empties the request log.
func (e *Emulator) ResetCounters() { e.counters.Reset(); e.reqlog.Reset() }

// ---- faults ----

// Duration is a time.Duration that reads and writes JSON as "1.5s".
type Duration = emukit.Duration

// Fault is an injected failure (see emukit.Fault). Host is "" (any), a
// service ("sts", "iam", "iamcredentials", "kms", "oauth2", "accounts")
// or an exact host name; Operation is a counter name or a prefix ending
// in "*" ("kms.*").
type Fault struct {
	ID          string   `json:"id,omitempty"`
	Host        string   `json:"host,omitempty"`
	Operation   string   `json:"operation,omitempty"`
	Latency     Duration `json:"latency,omitempty"`
	Status      int      `json:"status,omitempty"`
	RetryAfter  string   `json:"retry_after,omitempty"`
	ErrorCode   string   `json:"error_code,omitempty"` // google.rpc status name, or OAuth error for sts/oauth2
	Message     string   `json:"message,omitempty"`
	Reset       bool     `json:"reset,omitempty"`
	Probability float64  `json:"probability,omitempty"`
	Count       int      `json:"count,omitempty"`
	// Corrupt lets a KMS encrypt or decrypt succeed but damages its
	// response, to exercise the client's integrity checks:
	// "ciphertext_crc32c" / "plaintext_crc32c" (a wrong checksum),
	// "unverified" (verified* flags false).
	Corrupt string `json:"corrupt,omitempty"`
}

type faultExt struct{ Corrupt string }

func (f Fault) kit() (emukit.Fault, faultExt) {
	return emukit.Fault{ID: f.ID, Host: f.Host, Operation: f.Operation, Latency: f.Latency, Status: f.Status,
		RetryAfter: f.RetryAfter, ErrorCode: f.ErrorCode, Message: f.Message, Reset: f.Reset,
		Probability: f.Probability, Count: f.Count}, faultExt{Corrupt: f.Corrupt}
}

func faultOf(fe emukit.FaultEntry[faultExt]) Fault {
	k := fe.Fault
	return Fault{ID: k.ID, Host: k.Host, Operation: k.Operation, Latency: k.Latency, Status: k.Status,
		RetryAfter: k.RetryAfter, ErrorCode: k.ErrorCode, Message: k.Message, Reset: k.Reset,
		Probability: k.Probability, Count: k.Count, Corrupt: fe.Ext.Corrupt}
}

// InjectFault adds a fault and returns its id.
func (e *Emulator) InjectFault(f Fault) (string, error) {
	switch f.Corrupt {
	case "", "ciphertext_crc32c", "plaintext_crc32c", "unverified":
	default:
		return "", fmt.Errorf("corrupt must be ciphertext_crc32c, plaintext_crc32c or unverified")
	}
	k, x := f.kit()
	if x.Corrupt != "" && k.Status == 0 && !k.Reset && k.Latency == 0 {
		k.Latency = 1 // a corrupting fault needs no other effect; emukit wants one
	}
	if x.Corrupt != "" && (k.Status != 0 || k.Reset) {
		return "", fmt.Errorf("corrupt excludes status and reset")
	}
	return e.faults.Add(k, x)
}

// Faults lists the active faults.
func (e *Emulator) Faults() []Fault {
	list := e.faults.List()
	out := make([]Fault, 0, len(list))
	for _, fe := range list {
		out = append(out, faultOf(fe))
	}
	return out
}

// RemoveFault deletes one fault.
func (e *Emulator) RemoveFault(id string) bool { return e.faults.Remove(id) }

// ClearFaults removes all faults.
func (e *Emulator) ClearFaults() { e.faults.Clear() }

// begin counts op and applies faults. ok is false when a fault answered
// or aborted the request; corrupt is a matched corruption to apply.
func (e *Emulator) begin(w http.ResponseWriter, r *http.Request, svc service, op string) (corrupt string, ok bool) {
	e.counters.Inc(op)
	if rw, isRW := w.(*respWriter); isRW {
		rw.Op = op
	}
	fe, hit := e.faults.Match(serviceNames[svc], emukit.HostName(r.Host), op)
	if !hit {
		return "", true
	}
	if !emukit.Apply(r, fe.Fault) {
		return fe.Ext.Corrupt, true
	}
	f := fe.Fault
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	msg := f.Message
	if msg == "" {
		msg = "Injected fault: " + http.StatusText(f.Status)
	}
	switch svc {
	case svcSTS, svcOAuth2:
		code := f.ErrorCode
		if code == "" {
			code = "temporarily_unavailable"
			if f.Status < 500 {
				code = "invalid_request"
			}
		}
		writeOAuthError(w, f.Status, code, msg)
	default:
		code := f.ErrorCode
		if code == "" {
			code = canonicalStatus(f.Status)
		}
		writeGoogleError(w, f.Status, code, msg)
	}
	return "", false
}

// canonicalStatus maps an HTTP status to the google.rpc code name Google
// uses with it.
func canonicalStatus(status int) string {
	switch status {
	case 400:
		return "INVALID_ARGUMENT"
	case 401:
		return "UNAUTHENTICATED"
	case 403:
		return "PERMISSION_DENIED"
	case 404:
		return "NOT_FOUND"
	case 409:
		return "ABORTED"
	case 429:
		return "RESOURCE_EXHAUSTED"
	case 499:
		return "CANCELLED"
	case 501:
		return "UNIMPLEMENTED"
	case 503:
		return "UNAVAILABLE"
	case 504:
		return "DEADLINE_EXCEEDED"
	}
	if status >= 500 {
		return "INTERNAL"
	}
	return "FAILED_PRECONDITION"
}

// ---- error bodies ----

// apiError is a google.rpc.Status to write.
type apiError struct {
	HTTP    int
	Status  string
	Message string
	Details []any
}

func (a *apiError) Error() string { return a.Status + ": " + a.Message }

func errf(httpStatus int, status, format string, args ...any) *apiError {
	return &apiError{HTTP: httpStatus, Status: status, Message: fmt.Sprintf(format, args...)}
}

func invalidArg(format string, args ...any) *apiError {
	return errf(http.StatusBadRequest, "INVALID_ARGUMENT", format, args...)
}

func notFound(format string, args ...any) *apiError {
	return errf(http.StatusNotFound, "NOT_FOUND", format, args...)
}

// permissionDenied is Google's IAM denial: the permission and the
// resource as the caller named it.
func permissionDenied(domain, perm, resource string) *apiError {
	return &apiError{HTTP: http.StatusForbidden, Status: "PERMISSION_DENIED",
		Message: fmt.Sprintf("Permission '%s' denied on resource '%s' (or it may not exist).", perm, resource),
		Details: []any{map[string]any{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "IAM_PERMISSION_DENIED",
			"domain": domain, "metadata": map[string]string{"permission": perm, "resource": resource}}}}
}

// preconditionFailed is FAILED_PRECONDITION (HTTP 400) with one
// PreconditionFailure violation.
func preconditionFailed(msg, vtype, subject string) *apiError {
	return &apiError{HTTP: http.StatusBadRequest, Status: "FAILED_PRECONDITION", Message: msg,
		Details: []any{map[string]any{"@type": "type.googleapis.com/google.rpc.PreconditionFailure",
			"violations": []any{map[string]string{"type": vtype, "subject": subject, "description": msg}}}}}
}

func writeAPIError(w http.ResponseWriter, a *apiError) {
	body := map[string]any{"code": a.HTTP, "message": a.Message, "status": a.Status}
	if len(a.Details) > 0 {
		body["details"] = a.Details
	}
	if a.HTTP == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="https://accounts.google.com/"`)
	}
	emukit.WriteJSONType(w, a.HTTP, "application/json; charset=UTF-8", map[string]any{"error": body})
}

func writeGoogleError(w http.ResponseWriter, httpStatus int, status, msg string) {
	writeAPIError(w, &apiError{HTTP: httpStatus, Status: status, Message: msg})
}

// writeOAuthError writes the OAuth 2.0 error body STS and the OAuth token
// endpoint use.
func writeOAuthError(w http.ResponseWriter, httpStatus int, code, desc string) {
	w.Header().Set("Cache-Control", "no-store")
	emukit.WriteJSONType(w, httpStatus, "application/json; charset=utf-8", map[string]string{"error": code, "error_description": desc})
}

func writeJSON(w http.ResponseWriter, v any) {
	emukit.WriteJSONType(w, http.StatusOK, "application/json; charset=UTF-8", v)
}

// ---- enums ----

// enumInts reports whether the caller asked for enums as numbers
// ($alt=json;enum-encoding=int, as the gapic REST clients do).
func enumInts(r *http.Request) bool {
	// Read the raw query: an unescaped ';' makes url.ParseQuery drop the pair.
	q, err := url.QueryUnescape(r.URL.RawQuery)
	if err != nil {
		q = r.URL.RawQuery
	}
	return strings.Contains(q, "$alt=json;enum-encoding=int")
}

// enum is a proto enum's value names by number.
type enum map[int]string

func (en enum) out(ints bool, v int) any {
	if ints {
		return v
	}
	if s, ok := en[v]; ok {
		return s
	}
	return v
}

// parse accepts a name or a number (protojson accepts both).
func (en enum) parse(v any) (int, bool) {
	switch x := v.(type) {
	case string:
		for n, s := range en {
			if s == x {
				return n, true
			}
		}
	case float64:
		n := int(x)
		if float64(n) == x {
			if _, ok := en[n]; ok {
				return n, true
			}
		}
	}
	return 0, false
}

// bearer extracts the token from "Authorization: Bearer ...".
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", false
	}
	scheme, tok, _ := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", true
	}
	return strings.TrimSpace(tok), true
}

func timestamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000000000Z") }
