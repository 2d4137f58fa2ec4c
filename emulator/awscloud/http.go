package awscloud

import (
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ekm-dev/ekm/emulator/emukit"
)

// maxBody bounds request bodies: KMS requests are small; IAM policy
// documents are at most 131072 characters, form-encoded.
const maxBody = 1 << 20

const (
	stsXMLNS = "https://sts.amazonaws.com/doc/2011-06-15/"
	iamXMLNS = "https://iam.amazonaws.com/doc/2010-05-08/"
)

// Request is one entry of the request log, close to a CloudTrail event:
// who called what on which resource, and the ids that tie it to the
// caller's own logs. Secrets, tokens, plaintexts and ciphertexts are
// never kept.
type Request struct {
	At        time.Time `json:"at"`
	RequestID string    `json:"request_id"` // x-amzn-RequestId of the response
	// InvocationID is the SDK's amz-sdk-invocation-id (constant across
	// retries of one call).
	InvocationID string `json:"invocation_id,omitempty"`
	Host         string `json:"host"`
	Service      string `json:"service"`   // sts, iam, kms
	Operation    string `json:"operation"` // counter name, e.g. kms.Decrypt
	Region       string `json:"region"`
	SourceIP     string `json:"source_ip,omitempty"`
	AccessKeyID  string `json:"access_key_id,omitempty"`
	Principal    string `json:"principal,omitempty"` // caller ARN
	Account      string `json:"account,omitempty"`   // caller account
	// Resource is the key or role ARN acted on, and ResourceAccount its
	// owner (CloudTrail's recipientAccountId).
	Resource          string            `json:"resource,omitempty"`
	ResourceAccount   string            `json:"resource_account,omitempty"`
	EncryptionContext map[string]string `json:"encryption_context,omitempty"`
	ErrorCode         string            `json:"error_code,omitempty"`
	Status            int               `json:"status"` // 0: the connection was aborted (fault reset)
}

// apiError is an error in the service's own shape.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.code + ": " + e.msg }

func errf(status int, code, format string, args ...any) *apiError {
	return &apiError{status, code, fmt.Sprintf(format, args...)}
}

// call is one request being served.
type call struct {
	e      *Emulator
	w      http.ResponseWriter
	r      *http.Request
	ep     endpoint
	host   string
	body   []byte
	op     string
	form   url.Values // query protocol parameters
	json   map[string]json.RawMessage
	reqID  string
	now    time.Time
	caller *principal
	log    *Request
}

// ServeHTTP routes by Host header, like AWS's front ends.
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			e.log.Error("aws emulator: panic", "panic", fmt.Sprint(v))
			http.Error(w, "internal error", http.StatusInternalServerError)
		}
	}()
	now := e.clock.Now()
	// The SDK derives its clock skew from Date: it must be the emulator's
	// time (net/http keeps a Date we set).
	w.Header().Set("Date", now.UTC().Format(http.TimeFormat))
	ep, host := classify(r.Host)
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	if ep.svc == svcControl {
		e.serveControl(w, r)
		return
	}
	if ep.svc == svcUnknown {
		emukit.WriteJSON(w, http.StatusMisdirectedRequest, map[string]string{"error": "the AWS emulator does not serve this host name"})
		return
	}
	sw := &emukit.StatusWriter{ResponseWriter: w}
	c := &call{e: e, w: sw, r: r, ep: ep, host: host, reqID: emukit.NewUUID(), now: now}
	c.log = &Request{At: now, RequestID: c.reqID, Host: host, Service: serviceNames[ep.svc], Region: ep.region,
		InvocationID: printable(r.Header.Get("Amz-Sdk-Invocation-Id"), 64)}
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		c.log.SourceIP = ip
	}
	w.Header().Set("x-amzn-RequestId", c.reqID)
	start := time.Now()
	defer func() {
		c.log.Status = sw.Status
		c.log.Operation = sw.Op
		e.reqlog.Add(*c.log)
		e.log.Debug("aws emulator request", "host", host, "operation", sw.Op, "status", sw.Status,
			"principal", c.log.Principal, "error", c.log.ErrorCode, "duration", time.Since(start))
	}()
	if err := c.serve(); err != nil {
		c.fail(err)
	}
}

func printable(s string, n int) string {
	if len(s) > n {
		return ""
	}
	for _, ch := range s {
		if ch < 0x21 || ch > 0x7e {
			return ""
		}
	}
	return s
}

func (c *call) serve() error {
	b, err := io.ReadAll(c.r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errf(http.StatusRequestEntityTooLarge, "RequestEntityTooLarge", "Request body larger than %d bytes.", maxBody)
		}
		return err
	}
	c.body = b
	if c.ep.svc == svcKMS {
		return c.serveKMS()
	}
	return c.serveQuery()
}

// begin counts the operation and applies faults; it returns false when a
// fault answered.
func (c *call) begin() bool {
	name := serviceNames[c.ep.svc] + "." + c.op
	c.e.counters.Inc(name)
	if sw, ok := c.w.(*emukit.StatusWriter); ok {
		sw.Op = name
	}
	fe, ok := c.e.faults.Match(serviceNames[c.ep.svc], c.host, name)
	if !ok || !emukit.Apply(c.r, fe.Fault) {
		return true
	}
	f := fe.Fault
	if f.RetryAfter != "" {
		c.w.Header().Set("Retry-After", f.RetryAfter)
	}
	code := f.ErrorCode
	if code == "" {
		code = defaultFaultCode(c.ep.svc, f.Status)
	}
	msg := f.Message
	if msg == "" {
		msg = "Injected fault: " + http.StatusText(f.Status)
	}
	c.fail(&apiError{f.Status, code, msg})
	return false
}

func defaultFaultCode(svc service, status int) string {
	if svc == svcKMS {
		switch {
		case status == 429:
			return "ThrottlingException"
		case status == 503:
			return "DependencyTimeoutException"
		case status >= 500:
			return "KMSInternalException"
		case status == 404:
			return "NotFoundException"
		}
		return "ValidationException"
	}
	switch {
	case status == 429:
		return "Throttling"
	case status == 403:
		return "AccessDenied"
	case status == 404:
		return "NoSuchEntity"
	case status == 503:
		return "ServiceUnavailable"
	case status >= 500:
		if svc == svcIAM {
			return "ServiceFailure"
		}
		return "InternalFailure"
	}
	return "ValidationError"
}

// fail writes err in the service's shape.
func (c *call) fail(err error) {
	var ae *apiError
	var af *authFailure
	switch {
	case errors.As(err, &ae):
	case errors.As(err, &af):
		ae = authError(c.ep.svc, af)
	default:
		c.e.log.Error("aws emulator: internal error", "err", err)
		ae = &apiError{500, "InternalFailure", "An internal error occurred."}
		if c.ep.svc == svcKMS {
			ae.code = "KMSInternalException"
		}
	}
	c.log.ErrorCode = ae.code
	if c.ep.svc == svcKMS {
		body := map[string]string{"__type": ae.code, "message": ae.msg}
		if ae.code == "AccessDeniedException" || ae.code == "UnsupportedOperationException" {
			body = map[string]string{"__type": ae.code, "Message": ae.msg}
		}
		emukit.WriteJSONType(c.w, ae.status, "application/x-amz-json-1.1", body)
		return
	}
	typ := "Sender"
	if ae.status >= 500 {
		typ = "Receiver"
	}
	type xmlErr struct {
		Type    string `xml:"Type"`
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	}
	v := struct {
		XMLName   xml.Name `xml:"ErrorResponse"`
		NS        string   `xml:"xmlns,attr"`
		Error     xmlErr   `xml:"Error"`
		RequestID string   `xml:"RequestId"`
	}{NS: c.xmlns(), Error: xmlErr{typ, ae.code, ae.msg}, RequestID: c.reqID}
	c.writeXML(ae.status, v)
}

// authError maps an authentication failure to the protocol's code.
func authError(svc service, af *authFailure) *apiError {
	if svc == svcKMS {
		switch af.kind {
		case "incomplete":
			return &apiError{400, "IncompleteSignatureException", af.msg}
		case "missing":
			return &apiError{400, "MissingAuthenticationTokenException", af.msg}
		case "unknown-key":
			return &apiError{400, "UnrecognizedClientException", af.msg}
		case "expired-token":
			return &apiError{400, "ExpiredTokenException", af.msg}
		}
		return &apiError{400, "InvalidSignatureException", af.msg}
	}
	switch af.kind {
	case "incomplete":
		return &apiError{400, "IncompleteSignature", af.msg}
	case "missing":
		return &apiError{403, "MissingAuthenticationToken", af.msg}
	case "unknown-key":
		return &apiError{403, "InvalidClientTokenId", af.msg}
	case "expired-token":
		return &apiError{403, "ExpiredToken", af.msg}
	}
	return &apiError{403, "SignatureDoesNotMatch", af.msg}
}

func (c *call) xmlns() string {
	if c.ep.svc == svcIAM {
		return iamXMLNS
	}
	return stsXMLNS
}

func (c *call) writeXML(status int, v any) {
	b, err := xml.Marshal(v)
	if err != nil {
		http.Error(c.w, "internal error", http.StatusInternalServerError)
		return
	}
	b = append([]byte(xml.Header), b...)
	c.w.Header().Set("Content-Type", "text/xml")
	c.w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	c.w.WriteHeader(status)
	c.w.Write(b)
}

// ---- authentication ----

// principal is an authenticated caller.
type principal struct {
	kind      string // root, user, session
	account   *account
	arn       string // caller ARN (assumed-role ARN for sessions)
	userID    string // aws:userid
	uniqueID  string // user AIDA or role AROA id
	user      *user
	role      *role // nil if the session's role was deleted
	roleARN   string
	sess      *session
	accessKey string
}

func (p *principal) isRoot() bool { return p.kind == "root" }

// authenticate verifies SigV4 and resolves the caller; callers hold e.mu.
func (c *call) authenticateLocked() error {
	h := c.r.Header.Get("Authorization")
	if h == "" {
		if c.r.URL.Query().Get("X-Amz-Signature") != "" {
			return &authFailure{"incomplete", "The emulator verifies the Authorization header only; presigned query authentication is not supported."}
		}
		if c.ep.svc == svcKMS {
			return &authFailure{"missing", "Missing Authentication Token"}
		}
		return &authFailure{"missing", "Request is missing Authentication Token"}
	}
	s, err := parseAuthorization(h)
	if err != nil {
		return err
	}
	window := 15 * time.Minute
	if c.ep.svc == svcKMS {
		window = 5 * time.Minute
	}
	if _, err := checkScope(c.r, s, c.ep, c.now, window); err != nil {
		return err
	}
	invalid := &authFailure{"unknown-key", "The security token included in the request is invalid."}
	if c.ep.svc == svcKMS {
		invalid.msg = "The security token included in the request is invalid."
	}
	token := c.r.Header.Get("X-Amz-Security-Token")
	st := c.e.st
	p := &principal{accessKey: s.AccessKeyID}
	var secret string
	if ak := st.AccessKeys[s.AccessKeyID]; ak != nil {
		if token != "" {
			return invalid
		}
		a := st.Accounts[ak.Account]
		if a == nil {
			return invalid
		}
		p.account, secret = a, ak.Secret
		if ak.User == "" {
			p.kind, p.arn, p.userID = "root", rootARN(a), a.ID
		} else {
			u := a.Users[strings.ToLower(ak.User)]
			if u == nil {
				return invalid
			}
			p.kind, p.user, p.arn, p.userID, p.uniqueID = "user", u, userARN(a, u), u.ID, u.ID
		}
	} else if se := st.Sessions[s.AccessKeyID]; se != nil {
		if token == "" || token != se.Token {
			return invalid
		}
		if !c.now.Before(se.Expires) {
			return &authFailure{"expired-token", "The security token included in the request is expired"}
		}
		a := st.Accounts[se.Account]
		if a == nil {
			return invalid
		}
		p.kind, p.account, p.sess, secret = "session", a, se, se.Secret
		p.arn = assumedRoleARN(a, se.RoleName, se.SessionName)
		p.userID, p.uniqueID, p.roleARN = se.RoleID+":"+se.SessionName, se.RoleID, se.RoleARN
		if r := a.Roles[strings.ToLower(se.RoleName)]; r != nil && r.ID == se.RoleID {
			p.role = r
		}
	} else {
		return invalid
	}
	if p.account.Partition != c.ep.part.ID {
		return invalid
	}
	if err := verifySignature(c.r, c.body, s, secret); err != nil {
		return err
	}
	c.caller = p
	c.log.AccessKeyID, c.log.Principal, c.log.Account = s.AccessKeyID, p.arn, p.account.ID
	return nil
}

// ---- ARNs ----

func rootARN(a *account) string { return "arn:" + a.Partition + ":iam::" + a.ID + ":root" }

func userARN(a *account, u *user) string {
	return "arn:" + a.Partition + ":iam::" + a.ID + ":user" + u.Path + u.Name
}

func roleARNOf(a *account, r *role) string {
	return "arn:" + a.Partition + ":iam::" + a.ID + ":role" + r.Path + r.Name
}

// assumedRoleARN omits the role's path, as STS does.
func assumedRoleARN(a *account, roleName, sessionName string) string {
	return "arn:" + a.Partition + ":sts::" + a.ID + ":assumed-role/" + roleName + "/" + sessionName
}

// ---- KMS quotas ----

// quotaWindows counts requests per (account, region, quota) in one-second
// windows of the emulator clock.
type quotaWindows struct {
	mu     sync.Mutex
	second int64
	used   map[string]int
}

// take charges one request; false when the quota is exhausted.
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

func mkdirPrivate(dir string) error { return os.MkdirAll(dir, 0o700) }
