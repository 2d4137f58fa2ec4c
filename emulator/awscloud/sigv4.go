package awscloud

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

const (
	sigAlgorithm = "AWS4-HMAC-SHA256"
	amzDateFmt   = "20060102T150405Z"
)

// sigV4 is a parsed "Authorization: AWS4-HMAC-SHA256 ..." header.
type sigV4 struct {
	AccessKeyID   string
	Date          string // yyyymmdd of the credential scope
	Region        string
	Service       string
	Terminator    string
	SignedHeaders []string
	Signature     string // 64 lower-case hex digits
}

// authFailure is an authentication error; the protocol layer turns kind
// into the service's error code (query: SignatureDoesNotMatch...,
// JSON: InvalidSignatureException...).
type authFailure struct {
	kind string // incomplete, missing, signature, unknown-key, expired-token
	msg  string
}

func (a *authFailure) Error() string { return a.kind + ": " + a.msg }

func incomplete(format string, args ...any) *authFailure {
	return &authFailure{"incomplete", fmt.Sprintf(format, args...)}
}

// parseAuthorization parses a SigV4 Authorization header strictly: the
// algorithm, then exactly the Credential, SignedHeaders and Signature
// parameters, separated by commas (spaces optional), each once.
func parseAuthorization(h string) (*sigV4, error) {
	if len(h) > 8192 {
		return nil, incomplete("Authorization header is too long.")
	}
	alg, rest, ok := strings.Cut(h, " ")
	if !ok || alg != sigAlgorithm {
		if alg == "AWS4-ECDSA-P256-SHA256" {
			return nil, incomplete("Unsupported AWS 'algorithm': '%s' (the emulator verifies SigV4, not SigV4a).", alg)
		}
		return nil, incomplete("Authorization header requires the %s algorithm. Authorization=%s", sigAlgorithm, h)
	}
	params := map[string]string{}
	for _, part := range strings.Split(rest, ",") {
		part = strings.TrimSpace(part)
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return nil, incomplete("'%s' not a valid key=value pair (missing equal-sign) in Authorization header: '%s'.", part, h)
		}
		if _, dup := params[k]; dup {
			return nil, incomplete("Authorization header has a duplicate '%s' parameter: '%s'.", k, h)
		}
		switch k {
		case "Credential", "SignedHeaders", "Signature":
		default:
			return nil, incomplete("Authorization header has an unknown parameter '%s': '%s'.", k, h)
		}
		params[k] = v
	}
	var missing []string
	for _, k := range []string{"Credential", "Signature", "SignedHeaders"} {
		if params[k] == "" {
			missing = append(missing, fmt.Sprintf("Authorization header requires '%s' parameter.", k))
		}
	}
	if len(missing) > 0 {
		return nil, incomplete("%s Authorization=%s", strings.Join(missing, " "), h)
	}
	cred := strings.Split(params["Credential"], "/")
	if len(cred) != 5 || cred[0] == "" {
		return nil, incomplete("Credential should be of the form '<access key>/<date>/<region>/<service>/aws4_request', got '%s'.", params["Credential"])
	}
	s := &sigV4{AccessKeyID: cred[0], Date: cred[1], Region: cred[2], Service: cred[3], Terminator: cred[4], Signature: params["Signature"]}
	if len(s.Signature) != 64 || strings.Trim(s.Signature, "0123456789abcdef") != "" {
		return nil, incomplete("Signature must be 64 lower-case hexadecimal digits.")
	}
	for _, n := range strings.Split(params["SignedHeaders"], ";") {
		if n == "" || n != strings.ToLower(n) || strings.ContainsAny(n, " \t") {
			return nil, incomplete("SignedHeaders must be a ';'-separated list of lower-case header names, got '%s'.", params["SignedHeaders"])
		}
		s.SignedHeaders = append(s.SignedHeaders, n)
	}
	if !sort.StringsAreSorted(s.SignedHeaders) {
		return nil, incomplete("SignedHeaders must be sorted, got '%s'.", params["SignedHeaders"])
	}
	return s, nil
}

// uriEncode is SigV4's URI encoding (RFC 3986 unreserved characters kept).
func uriEncode(s string, keepSlash bool) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_', c == '.', c == '~':
			b.WriteByte(c)
		case c == '/' && keepSlash:
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// canonicalRequest rebuilds the canonical request from what was received.
func canonicalRequest(r *http.Request, body []byte, signed []string) (string, error) {
	path := r.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	// Non-S3 services encode the (already escaped) path once more.
	canonURI := uriEncode(path, true)
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return "", incomplete("The query string is malformed.")
	}
	var pairs []string
	for k, vs := range q {
		for _, v := range vs {
			pairs = append(pairs, uriEncode(k, false)+"="+uriEncode(v, false))
		}
	}
	sort.Strings(pairs)
	var hb strings.Builder
	for _, name := range signed {
		var vals []string
		switch name {
		case "host":
			vals = []string{r.Host}
		default:
			vals = r.Header.Values(name)
			if len(vals) == 0 && name == "content-length" && r.ContentLength >= 0 {
				vals = []string{strconv.FormatInt(r.ContentLength, 10)}
			}
		}
		for i, v := range vals {
			vals[i] = strings.Join(strings.Fields(v), " ")
		}
		hb.WriteString(name + ":" + strings.Join(vals, ",") + "\n")
	}
	sum := sha256.Sum256(body)
	return strings.Join([]string{r.Method, canonURI, strings.Join(pairs, "&"), hb.String(), strings.Join(signed, ";"), hex.EncodeToString(sum[:])}, "\n"), nil
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

// signature computes the SigV4 signature of a canonical request.
func signature(secret, amzDate string, s *sigV4, canon string) string {
	scope := s.Date + "/" + s.Region + "/" + s.Service + "/" + s.Terminator
	h := sha256.Sum256([]byte(canon))
	sts := sigAlgorithm + "\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(h[:])
	k := hmacSHA256([]byte("AWS4"+secret), s.Date)
	k = hmacSHA256(k, s.Region)
	k = hmacSHA256(k, s.Service)
	k = hmacSHA256(k, s.Terminator)
	return hex.EncodeToString(hmacSHA256(k, sts))
}

// checkScope validates everything in the header that does not need the
// secret: date window, scope date, region, service, terminator and the
// mandatory signed headers. window is ±5 min for KMS, ±15 for STS/IAM.
func checkScope(r *http.Request, s *sigV4, ep endpoint, now time.Time, window time.Duration) (time.Time, error) {
	amz := r.Header.Get("X-Amz-Date")
	if amz == "" {
		return time.Time{}, incomplete("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. Authorization=%s", r.Header.Get("Authorization"))
	}
	t, err := time.Parse(amzDateFmt, amz)
	if err != nil {
		return time.Time{}, incomplete("Date must be in ISO-8601 'basic format'. Got '%s'. See http://en.wikipedia.org/wiki/ISO_8601", amz)
	}
	if !contains(s.SignedHeaders, "host") {
		return t, &authFailure{"signature", "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."}
	}
	if !contains(s.SignedHeaders, "x-amz-date") {
		return t, &authFailure{"signature", "'X-Amz-Date' must be a 'SignedHeader' in the AWS Authorization."}
	}
	if s.Date != amz[:8] {
		return t, &authFailure{"signature", fmt.Sprintf("Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '%s' != '%s', from '%s'.", s.Date, amz[:8], amz)}
	}
	mins := int(window / time.Minute)
	nowS := now.UTC().Format(amzDateFmt)
	if t.Before(now.Add(-window)) {
		return t, &authFailure{"signature", fmt.Sprintf("Signature expired: %s is now earlier than %s (%s - %d min.)", amz, now.Add(-window).UTC().Format(amzDateFmt), nowS, mins)}
	}
	if t.After(now.Add(window)) {
		return t, &authFailure{"signature", fmt.Sprintf("Signature not yet current: %s is still later than %s (%s + %d min.)", amz, now.Add(window).UTC().Format(amzDateFmt), nowS, mins)}
	}
	if s.Terminator != "aws4_request" {
		return t, &authFailure{"signature", fmt.Sprintf("Credential should be scoped with a valid terminator: 'aws4_request', not '%s'.", s.Terminator)}
	}
	if s.Service != serviceNames[ep.svc] {
		return t, &authFailure{"signature", fmt.Sprintf("Credential should be scoped to correct service: '%s'. ", serviceNames[ep.svc])}
	}
	if s.Region != ep.region {
		if ep.svc == svcKMS {
			return t, &authFailure{"signature", fmt.Sprintf("Credential should be scoped to a valid region, not '%s'. ", s.Region)}
		}
		return t, &authFailure{"signature", "Credential should be scoped to a valid region. "}
	}
	return t, nil
}

// verifySignature recomputes and compares the signature in constant time.
func verifySignature(r *http.Request, body []byte, s *sigV4, secret string) error {
	canon, err := canonicalRequest(r, body, s.SignedHeaders)
	if err != nil {
		return err
	}
	want := signature(secret, r.Header.Get("X-Amz-Date"), s, canon)
	if !hmac.Equal([]byte(want), []byte(s.Signature)) {
		return &authFailure{"signature", "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

var errNoAuth = errors.New("no Authorization header")
