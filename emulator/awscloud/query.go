package awscloud

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// queryOp is one Query-protocol operation: its parameters (list
// parameters by their prefix, e.g. "PolicyArns") and handler. Parameters
// the emulator accepts but does not honour are not listed: they are
// refused, never ignored.
type queryOp struct {
	params  []string
	lists   []string // list parameters: Name.member.N[.Field]
	handler func(c *call) (any, error)
	// anonymous operations are not signed (AssumeRoleWithWebIdentity).
	anonymous bool
}

var (
	stsOps map[string]*queryOp
	iamOps map[string]*queryOp
)

// unsupportedParams are modelled parameters the emulator refuses.
var unsupportedParams = map[string]bool{
	"SerialNumber": true, "TokenCode": true, "Tags": true, "TransitiveTagKeys": true, "ProvidedContexts": true,
	"ProviderId": true, "PermissionsBoundary": true,
}

// parseQueryForm parses a form strictly: every key once, well-formed
// escapes.
func parseQueryForm(raw string) (url.Values, error) {
	out := url.Values{}
	if raw == "" {
		return out, nil
	}
	for _, part := range strings.Split(raw, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		key, err1 := url.QueryUnescape(k)
		val, err2 := url.QueryUnescape(v)
		if err1 != nil || err2 != nil || key == "" {
			return nil, errf(400, "MalformedQueryString", "The query string is malformed.")
		}
		if _, dup := out[key]; dup {
			return nil, errf(400, "MalformedQueryString", "The parameter %s appears more than once.", truncate(key, 64))
		}
		out[key] = []string{val}
	}
	return out, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

var listParamRE = regexp.MustCompile(`^([A-Za-z]+)\.member\.([1-9][0-9]{0,2})(?:\.([A-Za-z]+))?$`)

func (c *call) serveQuery() error {
	var raw string
	switch c.r.Method {
	case http.MethodPost:
		mt, _, err := mime.ParseMediaType(c.r.Header.Get("Content-Type"))
		if err != nil || mt != "application/x-www-form-urlencoded" {
			return errf(400, "UnsupportedMediaType", "Query requests must be application/x-www-form-urlencoded.")
		}
		if c.r.URL.RawQuery != "" {
			return errf(400, "MalformedQueryString", "Send the parameters either in the query string or in the body, not both.")
		}
		raw = string(c.body)
	case http.MethodGet:
		raw = c.r.URL.RawQuery
	default:
		return errf(405, "MethodNotAllowed", "The method %s is not allowed.", truncate(c.r.Method, 16))
	}
	if c.r.URL.Path != "/" {
		return errf(404, "NotFound", "Not Found")
	}
	form, err := parseQueryForm(raw)
	if err != nil {
		return err
	}
	c.form = form
	ops, version := stsOps, "2011-06-15"
	if c.ep.svc == svcIAM {
		ops, version = iamOps, "2010-05-08"
	}
	action := form.Get("Action")
	v := form.Get("Version")
	if v == "" {
		v = "NO_VERSION_SPECIFIED"
	}
	op := ops[action]
	if op == nil || v != version {
		return errf(400, "InvalidAction", "Could not find operation %s for version %s", truncate(action, 64), truncate(v, 32))
	}
	c.op = action
	if !c.begin() {
		return nil
	}
	for k := range form {
		if k == "Action" || k == "Version" {
			continue
		}
		name := k
		if m := listParamRE.FindStringSubmatch(k); m != nil {
			name = m[1]
			if !contains(op.lists, name) && !unsupportedParams[name] {
				return errf(400, "ValidationError", "The parameter %s is not recognized by %s.", truncate(k, 64), action)
			}
		} else if strings.Contains(k, ".") || !contains(op.params, k) && !contains(op.lists, k) && !unsupportedParams[k] {
			return errf(400, "ValidationError", "The parameter %s is not recognized by %s.", truncate(k, 64), action)
		}
		if unsupportedParams[name] && !contains(op.lists, name) && !contains(op.params, name) {
			return errf(400, "ValidationError", "The AWS emulator does not support the %s parameter of %s.", name, action)
		}
	}
	c.e.mu.Lock()
	res, err := func() (any, error) {
		defer c.e.mu.Unlock()
		if !op.anonymous {
			if err := c.authenticateLocked(); err != nil {
				return nil, err
			}
		}
		return op.handler(c)
	}()
	if err != nil {
		return err
	}
	c.writeQueryResult(res)
	return nil
}

// writeQueryResult writes <OpResponse><OpResult>res</OpResult><ResponseMetadata>.
func (c *call) writeQueryResult(res any) {
	var inner bytes.Buffer
	if res != nil {
		enc := xml.NewEncoder(&inner)
		if err := enc.EncodeElement(res, xml.StartElement{Name: xml.Name{Local: c.op + "Result"}}); err != nil {
			c.fail(err)
			return
		}
	}
	v := struct {
		XMLName xml.Name
		NS      string `xml:"xmlns,attr"`
		Inner   string `xml:",innerxml"`
		Meta    struct {
			RequestID string `xml:"RequestId"`
		} `xml:"ResponseMetadata"`
	}{XMLName: xml.Name{Local: c.op + "Response"}, NS: c.xmlns(), Inner: inner.String()}
	v.Meta.RequestID = c.reqID
	c.writeXML(http.StatusOK, v)
}

// ---- parameter helpers ----

func (c *call) param(name string) (string, bool) {
	v, ok := c.form[name]
	if !ok {
		return "", false
	}
	return v[0], true
}

// required returns a required string parameter, checked for length and
// pattern (nil: none), with AWS's validation message.
func (c *call) required(name string, minLen, maxLen int, re *regexp.Regexp) (string, error) {
	v, ok := c.param(name)
	if !ok {
		return "", errf(400, "ValidationError", "1 validation error detected: Value null at '%s' failed to satisfy constraint: Member must not be null", lowerFirst(name))
	}
	return v, checkString(name, v, minLen, maxLen, re)
}

// optional returns an optional string parameter ("" when absent).
func (c *call) optional(name string, minLen, maxLen int, re *regexp.Regexp) (string, bool, error) {
	v, ok := c.param(name)
	if !ok {
		return "", false, nil
	}
	return v, true, checkString(name, v, minLen, maxLen, re)
}

func checkString(name, v string, minLen, maxLen int, re *regexp.Regexp) error {
	n := len([]rune(v))
	switch {
	case n < minLen:
		return errf(400, "ValidationError", "1 validation error detected: Value '%s' at '%s' failed to satisfy constraint: Member must have length greater than or equal to %d", truncate(v, 128), lowerFirst(name), minLen)
	case n > maxLen:
		return errf(400, "ValidationError", "1 validation error detected: Value at '%s' failed to satisfy constraint: Member must have length less than or equal to %d", lowerFirst(name), maxLen)
	case re != nil && !re.MatchString(v):
		return errf(400, "ValidationError", "1 validation error detected: Value '%s' at '%s' failed to satisfy constraint: Member must satisfy regular expression pattern: %s", truncate(v, 128), lowerFirst(name), strings.Trim(re.String(), "^$"))
	}
	return nil
}

func (c *call) optionalInt(name string, lo, hi int) (int, bool, error) {
	v, ok := c.param(name)
	if !ok {
		return 0, false, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, false, errf(400, "ValidationError", "1 validation error detected: Value '%s' at '%s' failed to satisfy constraint: Member must be an integer", truncate(v, 32), lowerFirst(name))
	}
	if n < lo {
		return 0, false, errf(400, "ValidationError", "1 validation error detected: Value '%d' at '%s' failed to satisfy constraint: Member must have value greater than or equal to %d", n, lowerFirst(name), lo)
	}
	if n > hi {
		return 0, false, errf(400, "ValidationError", "1 validation error detected: Value '%d' at '%s' failed to satisfy constraint: Member must have value less than or equal to %d", n, lowerFirst(name), hi)
	}
	return n, true, nil
}

// list returns Name.member.1..N (field "" for scalar members); members
// must be numbered 1..N without gaps.
func (c *call) list(name, field string, maxItems int) ([]string, error) {
	idx := map[int]string{}
	for k, v := range c.form {
		m := listParamRE.FindStringSubmatch(k)
		if m == nil || m[1] != name {
			continue
		}
		if m[3] != field {
			return nil, errf(400, "ValidationError", "The parameter %s is not recognized.", truncate(k, 64))
		}
		n, _ := strconv.Atoi(m[2])
		idx[n] = v[0]
	}
	if v, ok := c.form[name]; ok && v[0] == "" && len(idx) == 0 {
		return []string{}, nil // the SDK's encoding of an empty list
	}
	if len(idx) > maxItems {
		return nil, errf(400, "ValidationError", "1 validation error detected: Value at '%s' failed to satisfy constraint: Member must have length less than or equal to %d", lowerFirst(name), maxItems)
	}
	out := make([]string, len(idx))
	for i := range out {
		v, ok := idx[i+1]
		if !ok {
			return nil, errf(400, "ValidationError", "The members of %s must be numbered from 1 without gaps.", name)
		}
		out[i] = v
	}
	return out, nil
}

// tagList reads Tags.member.N.Key/Value pairs.
func (c *call) tags() ([]tag, error) {
	keys := map[int]string{}
	vals := map[int]string{}
	for k, v := range c.form {
		m := listParamRE.FindStringSubmatch(k)
		if m == nil || m[1] != "Tags" {
			continue
		}
		n, _ := strconv.Atoi(m[2])
		switch m[3] {
		case "Key":
			keys[n] = v[0]
		case "Value":
			vals[n] = v[0]
		default:
			return nil, errf(400, "ValidationError", "The parameter %s is not recognized.", truncate(k, 64))
		}
	}
	if len(keys) > 50 {
		return nil, errf(400, "LimitExceeded", "Cannot exceed quota for TagsPerRole: 50")
	}
	out := make([]tag, 0, len(keys))
	for i := 1; i <= len(keys); i++ {
		k, ok := keys[i]
		v, vok := vals[i]
		if !ok || !vok {
			return nil, errf(400, "ValidationError", "Each tag needs Key and Value, numbered from 1 without gaps.")
		}
		if err := checkString("tags.member.key", k, 1, 128, nil); err != nil {
			return nil, err
		}
		if err := checkString("tags.member.value", v, 0, 256, nil); err != nil {
			return nil, err
		}
		out = append(out, tag{k, v})
	}
	if len(vals) != len(keys) {
		return nil, errf(400, "ValidationError", "Each tag needs Key and Value.")
	}
	return out, nil
}

func lowerFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToLower(s[:1]) + s[1:]
}

func isoTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05Z") }

// urlEncodeDoc percent-encodes a policy document as IAM returns it.
func urlEncodeDoc(doc string) string { return uriEncode(doc, false) }

func fmtInt(n int) string { return fmt.Sprint(n) }
