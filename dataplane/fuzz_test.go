package dataplane_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/ekm-dev/ekm/dataplane"
	"github.com/ekm-dev/ekm/dataplane/dataplanetest"
	"github.com/ekm-dev/ekm/ids"
	"github.com/ekm-dev/ekm/store"
)

// Seed corpora live in testdata/fuzz/<FuzzName>/. They are written from
// real requests; crypto seeds name ciphertexts of the fuzz environment by
// placeholder (see fuzzCryptoEnv) since keys differ on every run.

// Small limits make the size refusals reachable with small inputs and keep
// every iteration cheap.
const (
	fuzzMaxBody = 16 << 10
	fuzzMaxFile = 4 << 10
)

// serve runs one request through the full handler (auth included), in
// process.
func serve(env *dataplanetest.Env, key, method, path, ctype string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequestWithContext(context.Background(), method, path, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	rec := httptest.NewRecorder()
	env.Handler.ServeHTTP(rec, req)
	return rec
}

// checkAPIError asserts v is an error object in OpenAI's shape:
// {"message":"…","type":"…","param":string|null,"code":string|null}.
func checkAPIError(t *testing.T, v any) {
	t.Helper()
	e, ok := v.(map[string]any)
	if !ok || len(e) != 4 {
		t.Fatalf("error object %v", v)
	}
	msg, ok1 := e["message"].(string)
	typ, ok2 := e["type"].(string)
	if !ok1 || !ok2 || msg == "" || typ != "invalid_request_error" {
		t.Fatalf("error object %v", v)
	}
	for _, k := range []string{"param", "code"} {
		switch s := e[k].(type) {
		case nil:
		case string:
			if s == "" || len(s) > 100 {
				t.Fatalf("error %s %q", k, s)
			}
		default:
			t.Fatalf("error %s %v", k, e[k])
		}
	}
	// A wrong-typed body once reported "'' has the wrong type.".
	if len(msg) > 1000 || !utf8.ValidString(msg) || strings.Contains(msg, "'' has") {
		t.Fatalf("error message %q", msg)
	}
}

// decodeAnswer checks the status, headers and JSON shape every answer of
// the fuzzed endpoints shares and returns the decoded 200 body (nil for
// errors).
func decodeAnswer(t *testing.T, rec *httptest.ResponseRecorder) map[string]any {
	t.Helper()
	switch rec.Code {
	case http.StatusOK, http.StatusBadRequest, http.StatusRequestEntityTooLarge:
	default: // the documented 5xx are for an unavailable key or a full disk
		t.Fatalf("status %d: %s", rec.Code, rec.Body.Bytes())
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("Cache-Control %q", cc)
	}
	dec := json.NewDecoder(rec.Body)
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("answer is not a JSON object: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		t.Fatalf("trailing data after the JSON answer")
	}
	if rec.Code != http.StatusOK {
		if len(m) != 1 {
			t.Fatalf("error answer %v", m)
		}
		checkAPIError(t, m["error"])
		return nil
	}
	if _, ok := m["error"]; ok {
		t.Fatalf("200 with an error: %v", m)
	}
	return m
}

type fuzzCryptoEnv struct {
	env *dataplanetest.Env
	key string
	// placeholders in seeds, replaced before each request
	repl *strings.Replacer
}

var cryptoPaths = []string{"/v1/crypto/encrypt", "/v1/crypto/decrypt", "/v1/crypto/rewrap", "/v1/crypto/datakey/plaintext", "/v1/crypto/datakey/wrapped"}

// newFuzzCryptoEnv makes a project with key versions 1 and 2 (current) and
// two real ciphertexts: @CT1@ under version 1 with context @CTX@, @CT2@
// under version 2 without context.
func newFuzzCryptoEnv(f *testing.F) *fuzzCryptoEnv {
	env := dataplanetest.New(f, dataplanetest.Options{Deps: func(d *dataplane.Deps) { d.MaxBodyBytes = fuzzMaxBody }})
	p := env.NewProject(f, "", true)
	ctx := base64.StdEncoding.EncodeToString([]byte("tenant=42"))
	seal := func(body string) string {
		rec := serve(env, p.APIKey, "POST", "/v1/crypto/encrypt", "application/json", []byte(body))
		var r struct{ Ciphertext string }
		if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &r) != nil {
			f.Fatalf("encrypt: %d %s", rec.Code, rec.Body)
		}
		return r.Ciphertext
	}
	ct1 := seal(`{"plaintext":"aGVsbG8=","context":"` + ctx + `"}`)
	env.Rotate(f, p)
	ct2 := seal(`{"plaintext":"d29ybGQ="}`)
	return &fuzzCryptoEnv{env: env, key: p.APIKey, repl: strings.NewReplacer("@CT1@", ct1, "@CT2@", ct2, "@CTX@", ctx)}
}

// fuzzItem mirrors the request item's JSON fields to read back what the
// server accepted (same decoder, same field matching).
type fuzzItem struct {
	Plaintext  *string `json:"plaintext,omitempty"`
	Ciphertext *string `json:"ciphertext,omitempty"`
	Context    *string `json:"context,omitempty"`
}

// checkResult asserts one result of path: an item error, or a success
// whose new ciphertexts are under the current key version (2).
func checkResult(t *testing.T, path string, r map[string]any) {
	t.Helper()
	if e, ok := r["error"]; ok {
		checkAPIError(t, e)
		return
	}
	for k := range r {
		if k != "plaintext" && k != "ciphertext" && k != "key_version" {
			t.Fatalf("result field %q: %v", k, r)
		}
	}
	v, _ := r["key_version"].(float64)
	ct, hasCT := r["ciphertext"].(string)
	pt, hasPT := r["plaintext"].(string)
	decodes := func(s string) bool { _, err := base64.StdEncoding.Strict().DecodeString(s); return err == nil }
	switch path {
	case "/v1/crypto/decrypt":
		if !hasPT || hasCT || !decodes(pt) || (v != 1 && v != 2) {
			t.Fatalf("decrypt result %v", r)
		}
	case "/v1/crypto/datakey/plaintext", "/v1/crypto/datakey/wrapped":
		if hasPT != (path == "/v1/crypto/datakey/plaintext") {
			t.Fatalf("datakey result %v", r)
		}
		if k, err := base64.StdEncoding.DecodeString(pt); hasPT && (err != nil || len(k) != 32) {
			t.Fatalf("datakey plaintext %q", pt)
		}
		fallthrough
	default: // encrypt, rewrap: new data is always under the current version
		if !hasCT || ct == "" || !decodes(ct) || v != 2 || (hasPT && path != "/v1/crypto/datakey/plaintext") {
			t.Fatalf("%s result %v", path, r)
		}
	}
}

// FuzzCryptoRequest drives the crypto API's single and batch bodies
// through the full handler. Every answer is 200, 400 or 413 with a JSON body
// in OpenAI's error shape or the endpoint's success shape; a single encrypt
// that succeeds decrypts back to its plaintext.
func FuzzCryptoRequest(f *testing.F) {
	fe := newFuzzCryptoEnv(f)
	f.Fuzz(func(t *testing.T, endpoint uint8, body []byte) {
		path := cryptoPaths[int(endpoint)%len(cryptoPaths)]
		body = []byte(fe.repl.Replace(string(body)))
		m := decodeAnswer(t, serve(fe.env, fe.key, "POST", path, "application/json", body))
		if m == nil {
			return
		}
		if br, ok := m["batch_results"]; ok {
			items, ok := br.([]any)
			if !ok || len(m) != 1 || len(items) == 0 || len(items) > dataplane.MaxBatchItems || strings.HasPrefix(path, "/v1/crypto/datakey/") {
				t.Fatalf("batch answer %v", m)
			}
			for _, it := range items {
				r, ok := it.(map[string]any)
				if !ok {
					t.Fatalf("batch item %v", it)
				}
				checkResult(t, path, r)
			}
			return
		}
		checkResult(t, path, m)
		if path != "/v1/crypto/encrypt" && path != "/v1/crypto/datakey/plaintext" {
			return
		}
		// Round trip: what was sealed opens with the same context.
		var req fuzzItem
		if err := json.Unmarshal(body, &req); err != nil {
			t.Fatalf("server accepted a body the same decoder refuses: %v", err)
		}
		want := m["plaintext"]
		if path == "/v1/crypto/encrypt" {
			want = *req.Plaintext
		}
		dreq, _ := json.Marshal(fuzzItem{Ciphertext: new(m["ciphertext"].(string)), Context: req.Context})
		if len(dreq) > fuzzMaxBody {
			return // the ciphertext of a plaintext near the body limit does not fit in one
		}
		d := decodeAnswer(t, serve(fe.env, fe.key, "POST", "/v1/crypto/decrypt", "application/json", dreq))
		if d == nil || d["plaintext"] != canonicalB64(want.(string)) {
			t.Fatalf("round trip of %s gave %v", body, d)
		}
	})
}

// canonicalB64 re-encodes s (accepted strict base64) canonically.
func canonicalB64(s string) string {
	b, _ := base64.StdEncoding.Strict().DecodeString(s)
	return base64.StdEncoding.EncodeToString(b)
}

// FuzzUpload sends arbitrary multipart bodies (and Content-Type headers)
// to POST /v1/files. Whatever happens, there is never a file record without
// its blob or a blob (or temporary) without its record: a refused upload
// leaves nothing, an accepted one leaves exactly its record and blob, whose
// content reads back as the uploaded file part.
func FuzzUpload(f *testing.F) {
	env := dataplanetest.New(f, dataplanetest.Options{Deps: func(d *dataplane.Deps) { d.MaxFileBytes = fuzzMaxFile }})
	p := env.NewProject(f, "", false)
	f.Fuzz(func(t *testing.T, ctype string, body []byte) {
		m := decodeAnswer(t, serve(env, p.APIKey, "POST", "/v1/files", ctype, body))
		if m == nil {
			assertClean(t, env, p)
			return
		}
		id, _ := m["id"].(string)
		name, _ := m["filename"].(string)
		n, _ := m["bytes"].(float64)
		if !ids.Valid("file-", id) || m["object"] != "file" || m["status"] != "processed" || name == "" || !utf8.ValidString(name) || n < 0 || n > fuzzMaxFile {
			t.Fatalf("file object %v", m)
		}
		files, err := env.Store.ListFiles(context.Background(), p.OrgID, p.ID, "", store.Page{Limit: 10})
		if err != nil || len(files) != 1 || files[0].ID != id || int64(n) != files[0].Bytes {
			t.Fatalf("records after upload: %v %+v", err, files)
		}
		rec := serve(env, p.APIKey, "GET", "/v1/files/"+id+"/content", "", nil)
		if rec.Code != 200 {
			t.Fatalf("content: %d %s", rec.Code, rec.Body)
		}
		if want, ok := filePart(ctype, body); !ok || !bytes.Equal(rec.Body.Bytes(), want) {
			t.Fatalf("content %q, uploaded %q (found: %v)", rec.Body.Bytes(), want, ok)
		}
		if rec := serve(env, p.APIKey, "DELETE", "/v1/files/"+id, "", nil); rec.Code != 200 {
			t.Fatalf("delete: %d %s", rec.Code, rec.Body)
		}
		assertClean(t, env, p)
	})
}

// filePart returns the contents of the first "file" part of an accepted
// upload, read with the same multipart reader as the server.
func filePart(ctype string, body []byte) ([]byte, bool) {
	_, params, err := mime.ParseMediaType(ctype)
	if err != nil {
		return nil, false
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	for {
		p, err := mr.NextPart()
		if err != nil {
			return nil, false
		}
		if p.FormName() == "file" {
			b, err := io.ReadAll(p)
			return b, err == nil
		}
	}
}

// Regression (FuzzCryptoRequest seed encrypt-array): a body that is valid
// JSON but not an object got a message naming an empty parameter as having
// the wrong type.
func TestCryptoBodyNotAnObject(t *testing.T) {
	env := dataplanetest.New(t, dataplanetest.Options{})
	p := env.NewProject(t, "", false)
	for _, path := range []string{"/v1/crypto/encrypt", "/v1/crypto/datakey/wrapped"} {
		for _, body := range []string{`[{"plaintext":"aGk="}]`, `"aGk="`, `42`} {
			st, m := call(t, env, p.APIKey, path, body)
			e, _ := m["error"].(map[string]any)
			if st != 400 || e["message"] != "The request body must be a JSON object." || e["param"] != nil {
				t.Errorf("%s %s: %d %v", path, body, st, m)
			}
		}
	}
}
