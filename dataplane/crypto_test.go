package dataplane_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/ekm-dev/ekm/dataplane"
	"github.com/ekm-dev/ekm/dataplane/dataplanetest"
	"github.com/ekm-dev/ekm/envelope"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func call(t *testing.T, env *dataplanetest.Env, key, path string, body any) (int, map[string]any) {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case string:
		r = strings.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		r = bytes.NewReader(j)
	}
	req, _ := http.NewRequest("POST", env.URL+path, r)
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(res.Body).Decode(&m); err != nil {
		t.Fatalf("%s: undecodable answer: %v", path, err)
	}
	return res.StatusCode, m
}

func callOK(t *testing.T, env *dataplanetest.Env, key, path string, body any) map[string]any {
	t.Helper()
	st, m := call(t, env, key, path, body)
	if st != 200 {
		t.Fatalf("status %d: %v", st, m)
	}
	return m
}

func TestCryptoRoundTrip(t *testing.T) {
	env := dataplanetest.New(t, dataplanetest.Options{})
	p := env.NewProject(t, "", true)
	other := env.NewProject(t, p.OrgID, true)
	k := p.APIKey

	for _, ctxv := range []any{nil, b64("tenant=42")} {
		req := map[string]any{"plaintext": b64("hello world")}
		if ctxv != nil {
			req["context"] = ctxv
		}
		enc := callOK(t, env, k, "/v1/crypto/encrypt", req)
		if enc["key_version"] != 1.0 {
			t.Fatalf("key_version %v", enc["key_version"])
		}
		dreq := map[string]any{"ciphertext": enc["ciphertext"]}
		if ctxv != nil {
			dreq["context"] = ctxv
		}
		dec := callOK(t, env, k, "/v1/crypto/decrypt", dreq)
		if dec["plaintext"] != b64("hello world") {
			t.Fatalf("decrypt: %v", dec)
		}
		// Wrong context, missing context, other project: all fail the same way.
		bad := []struct {
			key string
			req map[string]any
		}{
			{k, map[string]any{"ciphertext": enc["ciphertext"], "context": b64("tenant=43")}},
			{other.APIKey, dreq},
		}
		if ctxv != nil {
			bad = append(bad, struct {
				key string
				req map[string]any
			}{k, map[string]any{"ciphertext": enc["ciphertext"]}})
		}
		for i, b := range bad {
			st, m := call(t, env, b.key, "/v1/crypto/decrypt", b.req)
			if st != 400 || errCode(m) != "decryption_failed" {
				t.Fatalf("bad decrypt %d: %d %v", i, st, m)
			}
		}
	}
	// Empty plaintext is a valid item.
	enc := callOK(t, env, k, "/v1/crypto/encrypt", map[string]any{"plaintext": ""})
	dec := callOK(t, env, k, "/v1/crypto/decrypt", map[string]any{"ciphertext": enc["ciphertext"]})
	if v, ok := dec["plaintext"]; !ok || v != "" {
		t.Fatalf("empty plaintext: %v", dec)
	}
	// Tampered ciphertext.
	ct, _ := base64.StdEncoding.DecodeString(enc["ciphertext"].(string))
	ct[len(ct)-1] ^= 1
	st, m := call(t, env, k, "/v1/crypto/decrypt", map[string]any{"ciphertext": base64.StdEncoding.EncodeToString(ct)})
	if st != 400 || errCode(m) != "decryption_failed" {
		t.Fatalf("tampered: %d %v", st, m)
	}
}

func TestCryptoBatch(t *testing.T) {
	env := dataplanetest.New(t, dataplanetest.Options{})
	p := env.NewProject(t, "", false)
	k := p.APIKey
	enc := callOK(t, env, k, "/v1/crypto/encrypt", map[string]any{"batch_input": []map[string]any{
		{"plaintext": b64("one")},
		{"plaintext": "not base64!"},
		{"plaintext": b64("three"), "context": b64("ctx")},
		{"ciphertext": b64("x")},
	}})
	res := enc["batch_results"].([]any)
	if len(res) != 4 {
		t.Fatalf("results: %v", res)
	}
	e1 := res[1].(map[string]any)["error"].(map[string]any)
	if e1["param"] != "batch_input[1].plaintext" || e1["code"] != "invalid_value" {
		t.Fatalf("item 1: %v", e1)
	}
	e3 := res[3].(map[string]any)["error"].(map[string]any)
	if e3["param"] != "batch_input[3].ciphertext" {
		t.Fatalf("item 3: %v", e3)
	}
	c0 := res[0].(map[string]any)["ciphertext"]
	c2 := res[2].(map[string]any)["ciphertext"]
	dec := callOK(t, env, k, "/v1/crypto/decrypt", map[string]any{"batch_input": []map[string]any{
		{"ciphertext": c0},
		{"ciphertext": c2, "context": b64("ctx")},
		{"ciphertext": c2},
	}})
	dr := dec["batch_results"].([]any)
	if dr[0].(map[string]any)["plaintext"] != b64("one") || dr[1].(map[string]any)["plaintext"] != b64("three") {
		t.Fatalf("batch decrypt: %v", dr)
	}
	if e := dr[2].(map[string]any)["error"].(map[string]any); e["code"] != "decryption_failed" || e["param"] != "batch_input[2].ciphertext" {
		t.Fatalf("item 2: %v", e)
	}
}

func TestCryptoDataKeyAndRewrap(t *testing.T) {
	env := dataplanetest.New(t, dataplanetest.Options{})
	p := env.NewProject(t, "", false)
	k := p.APIKey
	dk := callOK(t, env, k, "/v1/crypto/datakey/plaintext", map[string]any{"context": b64("c")})
	raw, err := base64.StdEncoding.DecodeString(dk["plaintext"].(string))
	if err != nil || len(raw) != 32 {
		t.Fatalf("plaintext key: %v %d", err, len(raw))
	}
	dec := callOK(t, env, k, "/v1/crypto/decrypt", map[string]any{"ciphertext": dk["ciphertext"], "context": b64("c")})
	if dec["plaintext"] != dk["plaintext"] {
		t.Fatal("wrapped key does not decrypt to the plaintext key")
	}
	wr := callOK(t, env, k, "/v1/crypto/datakey/wrapped", map[string]any{})
	if _, ok := wr["plaintext"]; ok || wr["ciphertext"] == nil {
		t.Fatalf("wrapped: %v", wr)
	}
	if st, m := call(t, env, k, "/v1/crypto/datakey/plaintext", map[string]any{"bits": 128}); st != 400 || m["error"].(map[string]any)["param"] != "bits" {
		t.Fatalf("bits: %d %v", st, m)
	}

	enc := callOK(t, env, k, "/v1/crypto/encrypt", map[string]any{"plaintext": b64("rotate me"), "context": b64("c")})
	// Rewrap on the current version: authenticated, unchanged.
	same := callOK(t, env, k, "/v1/crypto/rewrap", map[string]any{"ciphertext": enc["ciphertext"], "context": b64("c")})
	if same["ciphertext"] != enc["ciphertext"] || same["key_version"] != 1.0 {
		t.Fatalf("rewrap current: %v", same)
	}
	env.Rotate(t, p)
	rw := callOK(t, env, k, "/v1/crypto/rewrap", map[string]any{"batch_input": []map[string]any{
		{"ciphertext": enc["ciphertext"], "context": b64("c")},
		{"ciphertext": enc["ciphertext"]},
	}})
	items := rw["batch_results"].([]any)
	r0 := items[0].(map[string]any)
	if r0["key_version"] != 2.0 || r0["ciphertext"] == enc["ciphertext"] || r0["plaintext"] != nil {
		t.Fatalf("rewrap: %v", r0)
	}
	if items[1].(map[string]any)["error"] == nil {
		t.Fatal("rewrap with wrong context succeeded")
	}
	ct, _ := base64.StdEncoding.DecodeString(r0["ciphertext"].(string))
	if v, _ := envelope.KeyVersion(ct); v != 2 {
		t.Fatalf("header version %d", v)
	}
	dec = callOK(t, env, k, "/v1/crypto/decrypt", map[string]any{"ciphertext": r0["ciphertext"], "context": b64("c")})
	if dec["plaintext"] != b64("rotate me") {
		t.Fatal("rewrapped ciphertext does not decrypt")
	}
	// Old ciphertexts still decrypt after rotation.
	dec = callOK(t, env, k, "/v1/crypto/decrypt", map[string]any{"ciphertext": enc["ciphertext"], "context": b64("c")})
	if dec["plaintext"] != b64("rotate me") || dec["key_version"] != 1.0 {
		t.Fatalf("old ciphertext: %v", dec)
	}
	// New encryptions use version 2.
	if e := callOK(t, env, k, "/v1/crypto/encrypt", map[string]any{"plaintext": ""}); e["key_version"] != 2.0 {
		t.Fatalf("after rotation: %v", e)
	}
}

func TestCryptoBadInput(t *testing.T) {
	env := dataplanetest.New(t, dataplanetest.Options{Deps: func(d *dataplane.Deps) { d.MaxBodyBytes = 3 << 20 }})
	p := env.NewProject(t, "", false)
	k := p.APIKey
	many := make([]map[string]any, dataplane.MaxBatchItems+1)
	for i := range many {
		many[i] = map[string]any{"plaintext": ""}
	}
	cases := []struct {
		name, path string
		body       any
		status     int
		param      string
	}{
		{"empty body", "/v1/crypto/encrypt", "", 400, ""},
		{"not json", "/v1/crypto/encrypt", "{", 400, ""},
		{"trailing data", "/v1/crypto/encrypt", `{"plaintext":""} {}`, 400, ""},
		{"duplicate field", "/v1/crypto/encrypt", `{"plaintext":"YQ==","plaintext":"Yg=="}`, 400, "plaintext"},
		{"duplicate field in batch", "/v1/crypto/decrypt", `{"batch_input":[{"ciphertext":"YQ=="},{"ciphertext":"YQ==","context":"","ciphertext":"Yg=="}]}`, 400, "batch_input[1].ciphertext"},
		{"unknown field", "/v1/crypto/encrypt", map[string]any{"plaintext": "", "colour": 1}, 400, "colour"},
		{"wrong type", "/v1/crypto/encrypt", map[string]any{"plaintext": 5}, 400, "plaintext"},
		{"missing plaintext", "/v1/crypto/encrypt", map[string]any{}, 400, "plaintext"},
		{"ciphertext on encrypt", "/v1/crypto/encrypt", map[string]any{"plaintext": "", "ciphertext": ""}, 400, "ciphertext"},
		{"plaintext on decrypt", "/v1/crypto/decrypt", map[string]any{"plaintext": ""}, 400, "plaintext"},
		{"url base64", "/v1/crypto/encrypt", map[string]any{"plaintext": "-_-_"}, 400, "plaintext"},
		{"unpadded", "/v1/crypto/encrypt", map[string]any{"plaintext": "YQ"}, 400, "plaintext"},
		{"newline", "/v1/crypto/encrypt", map[string]any{"plaintext": "YWJj\nZGVm"}, 400, "plaintext"},
		{"non-canonical", "/v1/crypto/encrypt", map[string]any{"plaintext": "YR=="}, 400, "plaintext"},
		{"bad context", "/v1/crypto/encrypt", map[string]any{"plaintext": "", "context": "%%"}, 400, "context"},
		{"context too long", "/v1/crypto/encrypt", map[string]any{"plaintext": "", "context": b64(strings.Repeat("c", dataplane.MaxContextBytes+1))}, 400, "context"},
		{"item too large", "/v1/crypto/encrypt", map[string]any{"plaintext": b64(strings.Repeat("p", dataplane.MaxItemBytes+1))}, 400, "plaintext"},
		{"garbage ciphertext", "/v1/crypto/decrypt", map[string]any{"ciphertext": b64("garbage")}, 400, "ciphertext"},
		{"batch and single", "/v1/crypto/encrypt", map[string]any{"plaintext": "", "batch_input": []any{}}, 400, "batch_input"},
		{"empty batch", "/v1/crypto/encrypt", map[string]any{"batch_input": []any{}}, 400, "batch_input"},
		{"batch too big", "/v1/crypto/encrypt", map[string]any{"batch_input": many}, 400, "batch_input"},
		{"body too big", "/v1/crypto/encrypt", map[string]any{"batch_input": []map[string]any{{"plaintext": b64(strings.Repeat("p", 1<<20))}, {"plaintext": b64(strings.Repeat("p", 1<<20))}, {"plaintext": b64(strings.Repeat("p", 1<<20))}}}, 413, ""},
		{"unknown route", "/v1/crypto/sign", map[string]any{}, 404, ""},
	}
	for _, c := range cases {
		st, m := call(t, env, k, c.path, c.body)
		e, _ := m["error"].(map[string]any)
		param, _ := e["param"].(string)
		if st != c.status || e == nil || param != c.param {
			t.Errorf("%s: %d %v, want %d param %q", c.name, st, m, c.status, c.param)
		}
	}
	// Unauthenticated.
	if st, _ := call(t, env, "sk-proj-nope", "/v1/crypto/encrypt", map[string]any{"plaintext": ""}); st != 401 {
		t.Errorf("bad key: %d", st)
	}
}

func TestCryptoKeyUnavailable(t *testing.T) {
	env := dataplanetest.New(t, dataplanetest.Options{})
	p := env.NewProject(t, "", true)
	enc := callOK(t, env, p.APIKey, "/v1/crypto/encrypt", map[string]any{"plaintext": b64("SECRETVALUE")})
	env.Revoke(t, p, "revoked")
	for _, c := range []struct {
		path string
		body any
	}{
		{"/v1/crypto/decrypt", map[string]any{"ciphertext": enc["ciphertext"]}},
		{"/v1/crypto/decrypt", map[string]any{"batch_input": []any{map[string]any{"ciphertext": enc["ciphertext"]}}}},
		{"/v1/crypto/encrypt", map[string]any{"plaintext": b64("x")}},
		{"/v1/crypto/rewrap", map[string]any{"ciphertext": enc["ciphertext"]}},
		{"/v1/crypto/datakey/wrapped", map[string]any{}},
	} {
		st, m := call(t, env, p.APIKey, c.path, c.body)
		if st != 403 || errCode(m) != dataplane.CodeKeyUnavailable || strings.Contains(fmt.Sprint(m), b64("SECRETVALUE")) {
			t.Errorf("%s: %d %v", c.path, st, m)
		}
	}
}

// TestRefusalsDoNotWarnEach: while a key is revoked every request is
// refused; the refusals are not a WARN each (the state change is logged
// once, by lifecycle), only debug lines.
func TestRefusalsDoNotWarnEach(t *testing.T) {
	var logs syncBuffer
	env := dataplanetest.New(t, dataplanetest.Options{Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	p := env.NewProject(t, "", true)
	env.Revoke(t, p, "revoked")
	for range 5 {
		if st, m := call(t, env, p.APIKey, "/v1/crypto/encrypt", map[string]any{"plaintext": b64("x")}); st != 403 {
			t.Fatalf("%d %v", st, m)
		}
	}
	if n := strings.Count(logs.String(), `"level":"WARN"`); n != 0 {
		t.Fatalf("%d WARN lines for 5 refused requests:\n%s", n, logs.String())
	}
	if n := strings.Count(logs.String(), `"msg":"customer key unavailable"`); n != 5 {
		t.Fatalf("%d debug lines for 5 refused requests, want 5", n)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
