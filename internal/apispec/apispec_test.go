package apispec

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
)

// The description is a valid OpenAPI 3.1 document (the library's
// meta-schema validation), every operation is named, and every route the
// server registers is documented.
func TestDocument(t *testing.T) {
	s, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if problems := s.ValidateDocument(); len(problems) > 0 {
		t.Fatalf("docs/openapi.yaml is not a valid OpenAPI document:\n%s", strings.Join(problems, "\n"))
	}
	ids := map[string]string{}
	for p, item := range s.model.Paths.PathItems.FromOldest() {
		for m, op := range item.GetOperations().FromOldest() {
			if op.OperationId == "" {
				t.Errorf("%s %s has no operationId", m, p)
			} else if prev, dup := ids[op.OperationId]; dup {
				t.Errorf("operationId %s is used by %s and %s %s", op.OperationId, prev, m, p)
			}
			ids[op.OperationId] = m + " " + p
			if op.Responses == nil || op.Responses.Codes == nil || op.Responses.Codes.GetOrZero("200") == nil {
				t.Errorf("%s %s documents no 200", m, p)
				continue
			}
			// Every API operation can be refused (a query that does not
			// decode, a bad key) or fail; docs/redocly.yaml leans on this.
			for _, code := range []string{"400", "401", "500"} {
				if strings.HasPrefix(p, "/v1/") && op.Responses.Codes.GetOrZero(code) == nil {
					t.Errorf("%s %s documents no %s", m, p, code)
				}
			}
		}
	}
	documented := map[string]bool{}
	for _, op := range s.Operations() {
		documented[normRoute(op)] = true
	}
	for _, r := range serverRoutes(t) {
		if !documented[normRoute(r)] {
			t.Errorf("the server serves %s, which docs/openapi.yaml does not document", r)
		}
	}
}

var paramRE = regexp.MustCompile(`\{[^}]*\}`)

func normRoute(r string) string { return paramRE.ReplaceAllString(r, "{}") }

// serverRoutes reads the method patterns the API packages register.
func serverRoutes(t *testing.T) []string {
	t.Helper()
	root := filepath.Join("..", "..")
	re := regexp.MustCompile(`"((?:GET|POST|DELETE|PUT|PATCH) /(?:v1|healthz|readyz)[^"]*)"`)
	var out []string
	for _, f := range []string{"adminapi/adminapi.go", "adminapi/console_reads.go", "dataplane/dataplane.go", "app/app.go"} {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			if !slices.Contains(out, m[1]) {
				out = append(out, m[1])
			}
		}
	}
	// ekm's OIDC issuer builds its patterns from the issuer URL's path.
	b, err := os.ReadFile(filepath.Join(root, "issuer", "issuer.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`"(/\.well-known/[^"]+)"`).FindAllStringSubmatch(string(b), -1) {
		out = append(out, "GET "+m[1])
	}
	if len(out) < 30 {
		t.Fatalf("found only %d routes in the server's sources: %v", len(out), out)
	}
	return out
}

// fakeT records failures instead of failing.
type fakeT struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (f *fakeT) Helper() {}
func (f *fakeT) Errorf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs = append(f.errs, fmt.Sprintf(format, args...))
}
func (f *fakeT) Fatalf(format string, args ...any) { f.Errorf(format, args...); panic("fatal") }

func (f *fakeT) take() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.errs
	f.errs = nil
	return e
}

// stub answers every request with a fixed response.
type stub struct {
	status int
	header map[string]string
	body   string
	got    []byte
}

func (s *stub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.got, _ = io.ReadAll(r.Body)
	for k, v := range s.header {
		w.Header().Set(k, v)
	}
	w.WriteHeader(s.status)
	io.WriteString(w, s.body)
}

const projectJSON = `{"id":"proj_1","object":"organization.project","name":"p","created_at":1,"archived_at":null,"status":"active","external_key_id":null,"current_key_version":1}`

// The transport fails a test on each kind of mismatch and passes
// conforming traffic, including invalid requests the server refuses.
func TestTransportVerdicts(t *testing.T) {
	st := &stub{}
	srv := httptest.NewServer(st)
	defer srv.Close()
	ft := &fakeT{TB: t}
	hc := Client(ft, nil)
	jsonH := map[string]string{"Content-Type": "application/json", "X-Request-Id": "req_1"}
	errBody := `{"error":{"message":"m","type":"invalid_request_error","param":null,"code":"not_found"}}`
	do := func(method, path, ct, body string) {
		t.Helper()
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, _ := http.NewRequest(method, srv.URL+path, rd)
		req.Header.Set("Authorization", "Bearer sk-admin-x")
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != st.body {
			t.Fatalf("the transport changed the body: %q", b)
		}
		if body != "" && string(st.got) != body {
			t.Fatalf("the transport changed the request body: %q", st.got)
		}
	}
	for _, c := range []struct {
		name                      string
		status                    int
		header                    map[string]string
		respBody                  string
		method, path, ct, reqBody string
		want                      string // "" = no failure, else a substring of it
	}{
		{"conforming", 200, jsonH, projectJSON, "GET", "/v1/organization/projects/proj_1", "", "", ""},
		{"missing field", 200, jsonH, strings.Replace(projectJSON, `"current_key_version":1`, `"x":1`, 1), "GET", "/v1/organization/projects/proj_1", "", "", "current_key_version"},
		{"undocumented field", 200, jsonH, strings.Replace(projectJSON, `}`, `,"extra":true}`, 1), "GET", "/v1/organization/projects/proj_1", "", "", "extra"},
		{"wrong type", 200, jsonH, strings.Replace(projectJSON, `"current_key_version":1`, `"current_key_version":"1"`, 1), "GET", "/v1/organization/projects/proj_1", "", "", "current_key_version"},
		{"undocumented status", 418, jsonH, errBody, "GET", "/v1/organization/projects/proj_1", "", "", "418"},
		{"missing X-Request-Id", 200, map[string]string{"Content-Type": "application/json"}, projectJSON, "GET", "/v1/organization/projects/proj_1", "", "", "X-Request-Id"},
		{"503 without Retry-After", 503, jsonH, errBody, "POST", "/v1/organization/projects", "application/json", `{"name":"p"}`, "Retry-After"},
		{"unknown path answered 200", 200, jsonH, `{}`, "GET", "/v1/organization/nope", "", "", "no documented operation"},
		{"unknown path refused", 404, jsonH, errBody, "GET", "/v1/organization/nope", "", "", ""},
		{"unknown path refused, not an error body", 404, jsonH, `{"oops":1}`, "GET", "/v1/organization/nope", "", "", "error"},
		{"invalid request accepted", 200, jsonH, projectJSON, "POST", "/v1/organization/projects", "application/json", `{"name":"p","geography":"eu"}`, "forbids"},
		{"invalid request refused", 400, jsonH, errBody, "POST", "/v1/organization/projects", "application/json", `{"name":"p","geography":"eu"}`, ""},
		{"undocumented query parameter accepted", 200, jsonH, `{"object":"list","data":[],"first_id":null,"last_id":null,"has_more":false}`, "GET", "/v1/organization/projects?foo=1", "", "", `"foo"`},
		{"deepObject query", 200, jsonH, `{"object":"list","data":[],"first_id":null,"last_id":null,"has_more":false}`, "GET", "/v1/organization/audit_logs?effective_at%5Bgt%5D=5&event_types%5B%5D=kms.call&limit=3", "", "", ""},
		{"bad deepObject member accepted", 200, jsonH, `{"object":"list","data":[],"first_id":null,"last_id":null,"has_more":false}`, "GET", "/v1/organization/audit_logs?effective_at%5Bzz%5D=5", "", "", "forbids"},
	} {
		st.status, st.header, st.body = c.status, c.header, c.respBody
		do(c.method, c.path, c.ct, c.reqBody)
		errs := ft.take()
		switch {
		case c.want == "" && len(errs) > 0:
			t.Errorf("%s: unexpected failure: %v", c.name, errs)
		case c.want != "" && (len(errs) != 1 || !strings.Contains(errs[0], c.want)):
			t.Errorf("%s: want one failure mentioning %q, got %v", c.name, c.want, errs)
		}
	}
}

// An audit log event's payload is checked by its type.
func TestAuditPayloads(t *testing.T) {
	s, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	schema := s.model.Components.Schemas.GetOrZero("AuditLog").Schema()
	ok := func(ev string) bool {
		good, _ := s.schemas.ValidateSchemaString(schema, ev)
		return good
	}
	base := `"id":"audit_log-1","object":"organization.audit_log","effective_at":1,"actor":null`
	for ev, want := range map[string]bool{
		`{` + base + `,"type":"kms.call","kms.call":{"external_key_id":"k","operation":"wrap","outcome":"ok","latency_ms":1.5,"request_id":"r"}}`:                                                        true,
		`{` + base + `,"type":"kms.call","kms.call":{"external_key_id":"k","operation":"wrap","outcome":"ok"}}`:                                                                                          false, // latency_ms missing
		`{` + base + `,"type":"kms.call","project.created":{"id":"p"}}`:                                                                                                                                  false, // payload under another type
		`{` + base + `,"type":"project.archived","project.archived":{"id":"p"},"project":{"id":"p","name":"n"}}`:                                                                                         true,
		`{` + base + `,"type":"project.archived","project.archived":{"id":"p","x":1}}`:                                                                                                                   false,
		`{` + base + `,"type":"no.such","no.such":{}}`:                                                                                                                                                   false,
		`{"id":"a","object":"organization.audit_log","effective_at":1,"type":"api_key.deleted","api_key.deleted":{"id":"k"},"actor":{"type":"api_key","api_key":{"id":"key_1","type":"admin_api_key"}}}`: true,
		`{"id":"a","object":"organization.audit_log","effective_at":1,"type":"api_key.deleted","api_key.deleted":{"id":"k"},"actor":{"type":"operator"}}`:                                                true,
	} {
		if got := ok(ev); got != want {
			t.Errorf("%s: valid=%v, want %v", ev, got, want)
		}
	}
}

// Multipart uploads are followed as they stream: part names, required
// parts, enum values and file parts are checked without keeping contents.
func TestMultipart(t *testing.T) {
	st := &stub{status: 200, header: map[string]string{"Content-Type": "application/json", "X-Request-Id": "r", "Cache-Control": "no-store"},
		body: `{"id":"file-1","object":"file","bytes":5,"created_at":1,"expires_at":null,"filename":"a.txt","purpose":"assistants","status":"processed","status_details":null}`}
	srv := httptest.NewServer(st)
	defer srv.Close()
	ft := &fakeT{TB: t}
	hc := Client(ft, nil)
	upload := func(fields [][2]string, file bool, stream bool) []string {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		mw.SetBoundary("b0und4ry-" + strings.Repeat("x", 30))
		for _, f := range fields {
			mw.WriteField(f[0], f[1])
		}
		if file {
			w, _ := mw.CreateFormFile("file", "a.txt")
			w.Write(bytes.Repeat([]byte("content\r\n--b0und"), 100000)) // 1.6 MB, boundary-like bytes inside
		}
		mw.Close()
		var body io.Reader = &buf
		if stream {
			body = io.MultiReader(&buf) // no GetBody, no length: chunked
		}
		req, _ := http.NewRequest("POST", srv.URL+"/v1/files", body)
		req.Header.Set("Authorization", "Bearer sk-proj-x")
		req.Header.Set("Content-Type", mw.FormDataContentType())
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return ft.take()
	}
	for _, stream := range []bool{false, true} {
		if errs := upload([][2]string{{"purpose", "assistants"}}, true, stream); len(errs) > 0 {
			t.Errorf("stream=%v: conforming upload: %v", stream, errs)
		}
		if errs := upload([][2]string{{"purpose", "nonsense"}}, true, stream); len(errs) != 1 || !strings.Contains(errs[0], "purpose") {
			t.Errorf("stream=%v: bad purpose accepted: %v", stream, errs)
		}
		if errs := upload([][2]string{{"purpose", "batch"}, {"expires_after[anchor]", "created_at"}}, true, stream); len(errs) != 1 {
			t.Errorf("stream=%v: undocumented part accepted: %v", stream, errs)
		}
		if errs := upload([][2]string{{"purpose", "batch"}, {"file", "not a file part"}}, false, stream); len(errs) != 1 || !strings.Contains(errs[0], "file part") {
			t.Errorf("stream=%v: text 'file' part accepted: %v", stream, errs)
		}
		if errs := upload([][2]string{{"purpose", "batch"}}, false, stream); len(errs) != 1 || !strings.Contains(errs[0], "file") {
			t.Errorf("stream=%v: upload without file accepted: %v", stream, errs)
		}
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

var _ = context.Background

// Every audit event type the audit package defines is documented, with a
// payload schema.
func TestAuditTypesDocumented(t *testing.T) {
	s, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join("..", "..", "audit", "audit.go"))
	if err != nil {
		t.Fatal(err)
	}
	var documented []string
	for _, n := range s.model.Components.Schemas.GetOrZero("AuditEventType").Schema().Enum {
		documented = append(documented, n.Value)
	}
	auditLog, err := os.ReadFile(filepath.Join("..", "..", "docs", "openapi.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	types := regexp.MustCompile(`(?m)^\s+Type[A-Za-z]+\s*=\s*"([a-z0-9_.]+)"`).FindAllStringSubmatch(string(b), -1)
	if len(types) < 20 {
		t.Fatalf("found %d event types in audit/audit.go", len(types))
	}
	for _, m := range types {
		if !slices.Contains(documented, m[1]) {
			t.Errorf("audit event type %s is not in AuditEventType", m[1])
		}
		if !strings.Contains(string(auditLog), "{const: "+m[1]+"}}}") {
			t.Errorf("audit event type %s has no payload entry in AuditLog.allOf", m[1])
		}
	}
}
