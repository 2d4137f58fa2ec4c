// Package apispec checks HTTP traffic against docs/openapi.yaml, the
// description of ekm's HTTP API, so that the server and its description
// cannot drift apart unnoticed.
//
// Transport wraps an http.RoundTripper: every request through it and its
// response are checked, and a mismatch fails the test with the method,
// path, status and the schema error. The end-to-end suites send all their
// traffic through it (ekmtest's OpenAI SDK clients, e2e/crash's raw admin
// helper and the Go client everywhere).
//
// What is checked:
//
//   - the response, always: a documented path, method and status; the
//     documented required headers (X-Request-Id, Retry-After on 503 …); a
//     JSON body that matches its schema (ekm's objects allow no
//     undocumented field). A response to a request of no documented
//     operation must be a 4xx in the error shape;
//   - the request: path, method, parameters (undocumented query parameters
//     too), credentials and the JSON or multipart body. Tests send invalid
//     requests on purpose, so a request the description forbids is a
//     failure only when the server accepted it (answered other than 4xx):
//     the server must refuse what the description does not allow.
//
// The library is github.com/pb33f/libopenapi-validator: it implements
// OpenAPI 3.1 with JSON Schema 2020-12 (unevaluatedProperties, if/then,
// type arrays, const), which the description uses, and validates the
// document itself against the OpenAPI 3.1 meta-schema.
package apispec

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	liberrors "github.com/pb33f/libopenapi-validator/errors"
	"github.com/pb33f/libopenapi-validator/paths"
	"github.com/pb33f/libopenapi-validator/schema_validation"
	"github.com/pb33f/libopenapi/datamodel/high/base"
	v3 "github.com/pb33f/libopenapi/datamodel/high/v3"

	"github.com/ekm-dev/ekm/docs"
)

// Spec is a loaded description, safe for concurrent use.
type Spec struct {
	doc       libopenapi.Document
	model     *v3.Document
	v         validator.Validator
	vNoBody   validator.Validator // for requests whose body is checked otherwise, or not at all
	opts      *config.ValidationOptions
	schemas   schema_validation.SchemaValidator
	errSchema *base.Schema
}

var (
	loadOnce sync.Once
	loaded   *Spec
	loadErr  error
)

// Load returns docs/openapi.yaml, parsed once per process.
func Load() (*Spec, error) {
	loadOnce.Do(func() { loaded, loadErr = Parse(docs.OpenAPI) })
	return loaded, loadErr
}

// Parse builds a Spec from an OpenAPI 3.1 document.
func Parse(b []byte) (*Spec, error) {
	doc, err := libopenapi.NewDocument(b)
	if err != nil {
		return nil, fmt.Errorf("apispec: parse: %w", err)
	}
	m, err := doc.BuildV3Model()
	if err != nil {
		return nil, fmt.Errorf("apispec: build model: %w", err)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		return nil, fmt.Errorf("apispec: validator: %v", errs)
	}
	vNoBody, errs := validator.NewValidator(doc, config.WithoutRequestBodyValidation())
	if len(errs) > 0 {
		return nil, fmt.Errorf("apispec: validator: %v", errs)
	}
	s := &Spec{doc: doc, model: &m.Model, v: v, vNoBody: vNoBody, opts: config.NewValidationOptions(), schemas: schema_validation.NewSchemaValidator()}
	if m.Model.Components == nil || m.Model.Components.Schemas == nil {
		return nil, fmt.Errorf("apispec: the document has no components/schemas")
	}
	proxy := m.Model.Components.Schemas.GetOrZero("Error")
	if proxy == nil {
		return nil, fmt.Errorf("apispec: the document has no Error schema")
	}
	if s.errSchema = proxy.Schema(); s.errSchema == nil {
		return nil, fmt.Errorf("apispec: Error schema: %v", proxy.GetBuildError())
	}
	return s, nil
}

// ValidateDocument checks the description itself against the OpenAPI
// meta-schema and reports each problem.
func (s *Spec) ValidateDocument() []string {
	ok, errs := s.v.ValidateDocument()
	if ok {
		return nil
	}
	return describe(errs)
}

// Operations lists "METHOD /path" of every documented operation.
func (s *Spec) Operations() []string {
	var out []string
	for p, item := range s.model.Paths.PathItems.FromOldest() {
		for m := range item.GetOperations().KeysFromOldest() {
			out = append(out, strings.ToUpper(m)+" "+p)
		}
	}
	sort.Strings(out)
	return out
}

// Exchange is one request and its response as a client saw them.
type Exchange struct {
	Request *http.Request
	// RequestBody is the request's body when it was captured whole; nil
	// otherwise (not captured, or too large).
	RequestBody []byte
	// Parts are the parts of a multipart/form-data request, when its body
	// was seen to its closing boundary; Multipart says whether it was.
	Parts     []Part
	Multipart bool
	Response  *http.Response
	// ResponseBody is the JSON response body (nil for other media types,
	// which are not read).
	ResponseBody []byte
}

// Part is one part of a multipart/form-data body.
type Part struct {
	Name     string
	Filename string
	HasFile  bool   // a filename parameter was present
	Value    string // a text part's value (its first 4 KiB)
}

// Check reports how an exchange departs from the description: problems
// of the response, and problems of the request when the server accepted
// it anyway.
func (s *Spec) Check(x Exchange) []string {
	var problems []string
	reqProblems, op := s.checkRequest(x)
	status := x.Response.StatusCode
	if op == nil {
		// No documented operation: the server must have refused it, in the
		// error shape.
		if status < 400 || status >= 500 {
			problems = append(problems, fmt.Sprintf("answered %d to a request of no documented operation (%s)", status, strings.Join(reqProblems, "; ")))
		}
		problems = append(problems, s.checkErrorBody(x)...)
		return problems
	}
	problems = append(problems, s.checkResponse(x)...)
	if len(reqProblems) > 0 && (status < 400 || status >= 500) {
		problems = append(problems, fmt.Sprintf("answered %d to a request the description forbids: %s", status, strings.Join(reqProblems, "; ")))
	}
	return problems
}

// checkRequest validates the request and returns its operation (nil when
// the path or method is not documented).
func (s *Spec) checkRequest(x Exchange) ([]string, *v3.Operation) {
	item, errs, _ := paths.FindPath(x.Request, s.model, s.opts)
	if item == nil {
		return describe(errs), nil
	}
	op := item.GetOperations().GetOrZero(strings.ToLower(x.Request.Method))
	if op == nil {
		return []string{fmt.Sprintf("%s is not documented for this path", x.Request.Method)}, nil
	}
	var problems []string
	mt := mediaType(x.Request.Header.Get("Content-Type"))
	r := x.Request.Clone(x.Request.Context())
	r.Body, r.GetBody = http.NoBody, nil
	v := s.v
	switch {
	case mt == "multipart/form-data":
		// libopenapi-validator does not read multipart bodies: the parts
		// are checked here, the rest without the body.
		problems = append(problems, s.checkMultipart(op, x)...)
		v = s.vNoBody
	case x.RequestBody != nil:
		r.Body = io.NopCloser(bytes.NewReader(x.RequestBody))
		r.ContentLength = int64(len(x.RequestBody))
	case x.Request.ContentLength != 0:
		// A body that was not captured (too large, or still streaming
		// when the answer came): everything but the body.
		v = s.vNoBody
	}
	if ok, errs := v.ValidateHttpRequestSync(r); !ok {
		problems = append(problems, describe(errs)...)
	}
	problems = append(problems, undeclaredQuery(item, op, x.Request.URL.RawQuery)...)
	return problems, op
}

// undeclaredQuery reports query parameters the operation does not declare
// (libopenapi-validator only checks declared ones). A deepObject parameter
// `p` declares `p[…]`.
func undeclaredQuery(item *v3.PathItem, op *v3.Operation, raw string) []string {
	q, err := url.ParseQuery(raw)
	if err != nil {
		return []string{"unparsable query: " + err.Error()}
	}
	var names, prefixes []string
	for _, p := range slices.Concat(item.Parameters, op.Parameters) {
		if p == nil || p.In != "query" {
			continue
		}
		names = append(names, p.Name)
		if p.Style == "deepObject" {
			prefixes = append(prefixes, p.Name+"[")
		}
	}
	var out []string
	for k := range q {
		if slices.Contains(names, k) || slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(k, p) && strings.HasSuffix(k, "]") }) {
			continue
		}
		out = append(out, fmt.Sprintf("query parameter %q is not documented", k))
	}
	sort.Strings(out)
	return out
}

// checkMultipart validates the parts of a multipart/form-data body against
// the operation's schema: part names, required parts, text values, and a
// filename on parts whose schema is a file (contentMediaType).
func (s *Spec) checkMultipart(op *v3.Operation, x Exchange) []string {
	if op.RequestBody == nil || op.RequestBody.Content == nil {
		return []string{"a multipart body is not documented for this operation"}
	}
	media := op.RequestBody.Content.GetOrZero("multipart/form-data")
	if media == nil || media.Schema == nil {
		return []string{"multipart/form-data is not a documented media type of this operation"}
	}
	if !x.Multipart {
		return []string{"the multipart body was not seen to its closing boundary"}
	}
	schema := media.Schema.Schema()
	obj := map[string]any{}
	var problems []string
	for _, p := range x.Parts {
		var prop *base.Schema
		if schema.Properties != nil {
			if sp := schema.Properties.GetOrZero(p.Name); sp != nil {
				prop = sp.Schema()
			}
		}
		file := prop != nil && (prop.ContentMediaType != "" || prop.Format == "binary")
		if file && !p.HasFile {
			problems = append(problems, fmt.Sprintf("multipart part %q must be a file part (with a filename)", p.Name))
		}
		if file {
			obj[p.Name] = "(file)"
		} else {
			obj[p.Name] = p.Value
		}
	}
	if ok, errs := s.schemas.ValidateSchemaObject(schema, obj); !ok {
		problems = append(problems, describe(errs)...)
	}
	return problems
}

// checkResponse validates status, headers and body of a documented
// operation's response.
func (s *Spec) checkResponse(x Exchange) []string {
	r := x.Request.Clone(x.Request.Context())
	r.Body, r.GetBody = http.NoBody, nil
	resp := *x.Response
	resp.Body = io.NopCloser(bytes.NewReader(x.ResponseBody))
	if ok, errs := s.v.ValidateHttpResponse(r, &resp); !ok {
		return describe(errs)
	}
	return nil
}

// checkErrorBody checks that a response is in the error shape.
func (s *Spec) checkErrorBody(x Exchange) []string {
	if mt := mediaType(x.Response.Header.Get("Content-Type")); mt != "application/json" {
		return []string{fmt.Sprintf("error response of media type %q, want application/json", mt)}
	}
	if ok, errs := s.schemas.ValidateSchemaBytes(s.errSchema, x.ResponseBody); !ok {
		return describe(errs)
	}
	return nil
}

func mediaType(ct string) string {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return strings.ToLower(strings.TrimSpace(ct))
	}
	return mt
}

// maxDetails bounds the schema failures shown per error.
const maxDetails = 8

// describe renders validation errors with their schema details.
func describe(errs []*liberrors.ValidationError) []string {
	var out []string
	for _, e := range errs {
		msg := e.Message
		if e.Reason != "" && e.Reason != e.Message {
			msg += ": " + e.Reason
		}
		for i, f := range e.SchemaValidationErrors {
			if i == maxDetails {
				msg += fmt.Sprintf(" [… and %d more]", len(e.SchemaValidationErrors)-i)
				break
			}
			loc := f.FieldPath
			if loc == "" {
				loc = f.KeywordLocation
			}
			msg += fmt.Sprintf(" [%s: %s]", loc, f.Reason)
		}
		out = append(out, msg)
	}
	return out
}

// jsonMedia reports whether a media type carries JSON.
func jsonMedia(mt string) bool { return mt == "application/json" || strings.HasSuffix(mt, "+json") }

// compact shortens a body for a failure message.
func compact(b []byte) string {
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		buf.Reset()
		buf.Write(b)
	}
	s := buf.String()
	if len(s) > 600 {
		s = s[:600] + "…"
	}
	return s
}
