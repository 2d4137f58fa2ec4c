package ocicloud

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ekm-dev/ekm/emulator/emukit"
)

// maxBody bounds request bodies (KMS and Identity requests are small).
const maxBody = 1 << 20

// Request is one entry of the request log, close to an OCI Audit event:
// who called what on which resource, and the ids that tie it to the
// caller's own logs. Keys, signatures, plaintexts and ciphertexts are never
// kept.
type Request struct {
	At time.Time `json:"at"`
	// OpcRequestID is the opc-request-id the emulator answered
	// (<client's id>/<32 hex>/<32 hex>); ClientRequestID the one the
	// client sent, if any.
	OpcRequestID    string `json:"opc_request_id"`
	ClientRequestID string `json:"client_request_id,omitempty"`
	Host            string `json:"host"`
	Service         string `json:"service"`   // identity, kms
	Operation       string `json:"operation"` // counter name, e.g. kms.Encrypt
	Region          string `json:"region,omitempty"`
	SourceIP        string `json:"source_ip,omitempty"`
	// Principal is the caller's user OCID, PrincipalTenancy its tenancy.
	Principal        string `json:"principal,omitempty"`
	PrincipalTenancy string `json:"principal_tenancy,omitempty"`
	// Resource is the vault, key or policy acted on, ResourceTenancy its
	// owner.
	Resource        string `json:"resource,omitempty"`
	ResourceTenancy string `json:"resource_tenancy,omitempty"`
	KeyVersion      string `json:"key_version,omitempty"`
	// AssociatedData of Encrypt and Decrypt (not secret: it is what a
	// caller binds, e.g. ekm's org, project and version).
	AssociatedData map[string]string `json:"associated_data,omitempty"`
	ErrorCode      string            `json:"error_code,omitempty"`
	Status         int               `json:"status"` // 0: the connection was aborted (fault reset)
}

// apiError is an error in OCI's shape: {"code": …, "message": …}.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.code + ": " + e.msg }

func errf(status int, code, format string, args ...any) *apiError {
	return &apiError{status, code, fmt.Sprintf(format, args...)}
}

// The answers OCI gives whatever went wrong, so as not to tell a caller
// more than it may know.
var (
	errNotAuthenticated = &apiError{401, "NotAuthenticated", "The required information to complete authentication was not provided or was incorrect."}
	errNotFound         = &apiError{404, "NotAuthorizedOrNotFound", "Authorization failed or requested resource not found."}
)

func invalidParam(format string, args ...any) *apiError {
	return errf(400, "InvalidParameter", format, args...)
}

// caller is an authenticated user.
type caller struct {
	user    *user
	tenancy *tenancy
	groups  map[string]bool // group OCIDs
}

// call is one request being served.
type call struct {
	e      *Emulator
	w      *emukit.StatusWriter
	r      *http.Request
	ep     endpoint
	host   string
	body   []byte
	op     string // counter name
	now    time.Time
	params map[string]string // path parameters
	caller *caller
	log    *Request
}

// ServeHTTP routes by Host header, like OCI's front ends.
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			e.log.Error("oci emulator: panic", "panic", fmt.Sprint(v))
			http.Error(w, "internal error", http.StatusInternalServerError)
		}
	}()
	now := e.clock.Now()
	w.Header().Set("Date", now.UTC().Format(http.TimeFormat))
	ep, host := classify(r.Host)
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	if ep.svc == svcControl {
		e.serveControl(w, r)
		return
	}
	if ep.svc == svcUnknown {
		emukit.WriteJSON(w, http.StatusMisdirectedRequest, map[string]string{"error": "the OCI emulator does not serve this host name"})
		return
	}
	sw := &emukit.StatusWriter{ResponseWriter: w}
	c := &call{e: e, w: sw, r: r, ep: ep, host: host, now: now}
	clientID := r.Header.Get("Opc-Request-Id")
	if !printable(clientID, 98) {
		clientID = ""
	}
	base := clientID
	if base == "" {
		base = strings.ToUpper(emukit.RandHex(16))
	}
	reqID := base + "/" + strings.ToUpper(emukit.RandHex(16)) + "/" + strings.ToUpper(emukit.RandHex(16))
	c.log = &Request{At: now, OpcRequestID: reqID, ClientRequestID: clientID, Host: host, Service: ep.svc.name(), Region: ep.region.ID}
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		c.log.SourceIP = ip
	}
	w.Header().Set("opc-request-id", reqID)
	start := time.Now()
	defer func() {
		c.log.Status = sw.Status
		c.log.Operation = c.op
		e.reqlog.Add(*c.log)
		e.log.Debug("oci emulator request", "host", host, "operation", c.op, "status", sw.Status,
			"principal", c.log.Principal, "error", c.log.ErrorCode, "opc_request_id", reqID, "duration", time.Since(start))
	}()
	if err := c.serve(); err != nil {
		c.fail(err)
	}
}

func printable(s string, n int) bool {
	if s == "" || len(s) > n {
		return false
	}
	for _, ch := range s {
		if ch < 0x21 || ch > 0x7e || ch == '/' {
			return false
		}
	}
	return true
}

func (c *call) serve() error {
	rt, params, err := match(c.ep.svc, c.r.Method, c.r.URL.EscapedPath())
	if err != nil {
		c.op = c.ep.svc.name() + ".Unknown"
		c.e.counters.Inc(c.op)
		return err
	}
	c.op, c.params = c.ep.svc.name()+"."+rt.op, params
	c.e.counters.Inc(c.op)
	if fe, ok := c.e.faults.Match(c.ep.svc.name(), c.host, c.op); ok && emukit.Apply(c.r, fe.Fault) {
		f := fe.Fault
		if f.RetryAfter != "" {
			c.w.Header().Set("Retry-After", f.RetryAfter)
		}
		code := f.ErrorCode
		if code == "" {
			code = defaultFaultCode(f.Status)
		}
		msg := f.Message
		if msg == "" {
			msg = "Injected fault: " + http.StatusText(f.Status)
		}
		return &apiError{f.Status, code, msg}
	}
	b, err := io.ReadAll(c.r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errf(http.StatusRequestEntityTooLarge, "RequestEntityTooLarge", "Request body larger than %d bytes.", maxBody)
		}
		return err
	}
	c.body = b
	c.e.mu.Lock()
	defer c.e.mu.Unlock()
	if err := c.authenticateLocked(); err != nil {
		return err
	}
	return rt.h(c)
}

func defaultFaultCode(status int) string {
	switch {
	case status == 400:
		return "InvalidParameter"
	case status == 401:
		return "NotAuthenticated"
	case status == 404:
		return "NotAuthorizedOrNotFound"
	case status == 409:
		return "IncorrectState"
	case status == 412:
		return "NoEtagMatch"
	case status == 429:
		return "TooManyRequests"
	case status == 503:
		return "ServiceUnavailable"
	case status >= 500:
		return "InternalServerError"
	}
	return "InvalidParameter"
}

// fail writes err in OCI's shape.
func (c *call) fail(err error) {
	var ae *apiError
	if !errors.As(err, &ae) {
		c.e.log.Error("oci emulator: internal error", "err", err)
		ae = &apiError{500, "InternalServerError", "Internal error occurred"}
	}
	c.log.ErrorCode = ae.code
	if ae.status == 401 {
		// Byte for byte what OCI answers (spaces around the colons).
		b := []byte(`{ "code" : "NotAuthenticated", "message" : "` + ae.msg + `" }`)
		c.w.Header().Set("Content-Type", "application/json")
		c.w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		c.w.WriteHeader(401)
		c.w.Write(b)
		return
	}
	emukit.WriteJSONType(c.w, ae.status, "application/json", map[string]string{"code": ae.code, "message": ae.msg})
}

// reply writes a JSON resource, with its etag when it has one.
func (c *call) reply(status int, v any, etag string) error {
	if etag != "" {
		c.w.Header().Set("etag", etag)
	}
	emukit.WriteJSONType(c.w, status, "application/json", v)
	return nil
}

// decode reads the JSON body into v (unknown fields are ignored, as OCI
// does).
func (c *call) decode(v any) error {
	if len(strings.TrimSpace(string(c.body))) == 0 {
		return errf(400, "MissingParameter", "The request body is missing.")
	}
	if err := json.Unmarshal(c.body, v); err != nil {
		return errf(400, "CannotParseRequest", "Unable to parse the request body: %s", truncate(err.Error(), 200))
	}
	return nil
}

// ---- authentication ----

// authenticateLocked verifies the request's signature and resolves the
// caller: any failure is 401 NotAuthenticated, whatever the reason.
func (c *call) authenticateLocked() error {
	reject := func(why string) error {
		c.e.log.Debug("oci emulator: authentication failed", "reason", why, "host", c.host)
		return errNotAuthenticated
	}
	h := c.r.Header.Get("Authorization")
	if h == "" {
		return reject("no Authorization header")
	}
	p, err := parseAuthorization(h)
	if err != nil {
		return reject(err.Error())
	}
	if err := checkSigned(c.r, c.body, p, c.now); err != nil {
		return reject(err.Error())
	}
	tid, uid, fp, ok := splitKeyID(p.KeyID)
	if !ok {
		return reject("keyId is not <tenancy>/<user>/<fingerprint> (session tokens are not emulated)")
	}
	ten := c.e.st.Tenancies[tid]
	u := c.e.st.Users[uid]
	if ten == nil || u == nil || u.Tenancy != ten.ID {
		return reject("unknown tenancy or user")
	}
	var key *apiKey
	for _, k := range u.APIKeys {
		if k.Fingerprint == fp {
			key = k
		}
	}
	if key == nil {
		return reject("unknown fingerprint")
	}
	pub, err := parsePublicKeyPEM(key.PublicPEM)
	if err != nil {
		return reject(err.Error())
	}
	if err := verifyWith(c.r, p, pub); err != nil {
		return reject(err.Error())
	}
	cl := &caller{user: u, tenancy: ten, groups: map[string]bool{}}
	for _, m := range c.e.st.Memberships {
		if m.User == u.ID {
			cl.groups[m.Group] = true
		}
	}
	c.caller = cl
	c.log.Principal, c.log.PrincipalTenancy = u.ID, ten.ID
	return nil
}

// ---- authorization ----

// chainLocked is comp and its ancestors up to the tenancy, or nil if comp
// is neither a live compartment nor a tenancy.
func (e *Emulator) chainLocked(comp string) []string {
	var out []string
	for i := 0; i < 10; i++ {
		if _, ok := e.st.Tenancies[comp]; ok {
			return append(out, comp)
		}
		cp := e.st.Compartment[comp]
		if cp == nil || cp.State != "ACTIVE" {
			return nil
		}
		out = append(out, comp)
		comp = cp.Parent
	}
	return nil
}

// tenancyOfLocked is the tenancy owning a compartment (or the tenancy
// itself), "" if none.
func (e *Emulator) tenancyOfLocked(comp string) string {
	if _, ok := e.st.Tenancies[comp]; ok {
		return comp
	}
	if cp := e.st.Compartment[comp]; cp != nil {
		return cp.Tenancy
	}
	return ""
}

// allowed reports whether the caller may use verb on resource in comp,
// with the request's variables.
func (c *call) allowed(comp string, verb int, resource string, vars map[string]string) bool {
	chain := c.e.chainLocked(comp)
	if chain == nil {
		return false
	}
	if vars == nil {
		vars = map[string]string{}
	}
	vars["request.operation"] = strings.TrimPrefix(c.op, c.ep.svc.name()+".")
	vars["target.compartment.id"] = comp
	if cp := c.e.st.Compartment[comp]; cp != nil {
		vars["target.compartment.name"] = cp.Name
	}
	return c.e.authorizedLocked(authzRequest{tenancy: c.e.tenancyOfLocked(comp), chain: chain, verb: verb, resource: resource,
		vars: vars, callerTenancy: c.caller.tenancy.ID, callerGroups: c.caller.groups})
}

// throttle charges one management read or write to the tenancy that owns
// the resource (Settings.ManagementQuota per second each).
func (c *call) throttle(tenancy string, write bool) error {
	limit := c.e.st.Settings.ManagementQuota
	if limit <= 0 {
		return nil
	}
	k := tenancy + " read"
	if write {
		k = tenancy + " write"
	}
	if !c.e.quota.take(k, limit, c.now) {
		return errf(429, "TooManyRequests", "User-rate limit exceeded.")
	}
	return nil
}

// quotaWindows counts requests per key in one-second windows of the
// emulator clock.
type quotaWindows struct {
	mu     sync.Mutex
	second int64
	used   map[string]int
}

func (q *quotaWindows) take(key string, limit int, now time.Time) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if s := now.Unix(); s != q.second || q.used == nil {
		q.second, q.used = s, map[string]int{}
	}
	if q.used[key] >= limit {
		return false
	}
	q.used[key]++
	return true
}

// ---- routing ----

type route struct {
	svc     service
	method  string
	pattern []string // path segments after the API version; "{x}" binds x
	op      string
	h       func(*call) error
}

var routes []route

func addRoute(svc service, method, path, op string, h func(*call) error) {
	routes = append(routes, route{svc: svc, method: method, pattern: strings.Split(strings.Trim(path, "/"), "/"), op: op, h: h})
}

// apiVersion is each service's path prefix.
func apiVersion(svc service) string {
	if svc == svcIdentity {
		return "20160918"
	}
	return "20180608"
}

// match finds the route of method and path: 404 NotFound for no such
// path, 405 MethodNotAllowed for another method.
func match(svc service, method, path string) (*route, map[string]string, error) {
	segs := strings.Split(strings.Trim(path, "/"), "/")
	if len(segs) < 2 || segs[0] != apiVersion(svc) {
		return nil, nil, errf(404, "NotFound", "The requested path does not exist.")
	}
	segs = segs[1:]
	pathMatched := false
	for i := range routes {
		rt := &routes[i]
		if rt.svc != svc || len(rt.pattern) != len(segs) {
			continue
		}
		params := map[string]string{}
		ok := true
		for j, p := range rt.pattern {
			if strings.HasPrefix(p, "{") {
				v, err := url.PathUnescape(segs[j])
				if err != nil || v == "" {
					ok = false
					break
				}
				params[strings.Trim(p, "{}")] = v
			} else if p != segs[j] {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		pathMatched = true
		if rt.method == method {
			return rt, params, nil
		}
	}
	if pathMatched {
		return nil, nil, errf(405, "MethodNotAllowed", "Method %s is not allowed on this path.", method)
	}
	return nil, nil, errf(404, "NotFound", "The requested path does not exist.")
}

// ---- JSON helpers ----

func ociTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

func newEtag() string { return emukit.RandHex(20) }

// page returns items[start:start+limit] of a list, from the opaque page
// token, and sets opc-next-page when more remain.
func (c *call) page(n int) (start, end int, err error) {
	q := c.r.URL.Query()
	limit := 1000
	if s := q.Get("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit < 1 || limit > 1000 {
			return 0, 0, invalidParam("limit must be 1..1000")
		}
	}
	if s := q.Get("page"); s != "" {
		if start, err = strconv.Atoi(s); err != nil || start < 0 {
			return 0, 0, invalidParam("invalid page token")
		}
	}
	start = min(start, n)
	end = min(start+limit, n)
	if end < n {
		c.w.Header().Set("opc-next-page", strconv.Itoa(end))
	}
	return start, end, nil
}

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }
