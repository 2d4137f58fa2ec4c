package dataplane

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/ekm-dev/ekm/apierr"
)

func str(s string) *string { return &s }

// The fast path takes only bodies the general decoder decodes to the same
// item, and declines the rest.
func TestParseFlatItem(t *testing.T) {
	for _, c := range []struct {
		body string
		ok   bool
	}{
		{`{"plaintext":"aGVsbG8="}`, true},
		{" \t\r\n{ \"plaintext\" : \"aGVsbG8=\" , \"context\":\"Y3R4\" }\n", true},
		{`{"ciphertext":"AAAA","context":""}`, true},
		{`{"plaintext":"a","ciphertext":"b"}`, true}, // the endpoint refuses the other field later
		{`{}`, false},
		{`{"plaintext":"a",}`, false},
		{`{"plaintext":"a"}x`, false},
		{`{"plaintext":"a"}{}`, false},
		{`{"plaintext":"a","plaintext":"b"}`, false},
		{`{"Plaintext":"a"}`, false}, // encoding/json matches names case-insensitively: its business
		{`{"plaintext":"a\/b"}`, false},
		{`{"plaintext":null}`, false},
		{`{"plaintext":1}`, false},
		{`{"plaintext":"é"}`, false},
		{`{"batch_input":[]}`, false},
		{`{"unknown":"a"}`, false},
		{`["plaintext"]`, false},
		{`{"plaintext":"a"`, false},
		{``, false},
	} {
		it, ok := parseFlatItem([]byte(c.body))
		if ok != c.ok {
			t.Errorf("%q: ok = %v, want %v", c.body, ok, c.ok)
			continue
		}
		if ok {
			checkSameAsGeneral(t, []byte(c.body), it)
		}
	}
}

func checkSameAsGeneral(t *testing.T, body []byte, it cryptoItem) {
	t.Helper()
	var req cryptoRequest
	if err := decodeStrict(body, &req); err != nil {
		t.Fatalf("%q: fast path accepted what the general decoder refuses: %v", body, err)
	}
	if req.BatchInput != nil || !reflect.DeepEqual(req.cryptoItem, it) {
		t.Fatalf("%q: fast path %+v, general %+v", body, it, req)
	}
}

func FuzzFlatItem(f *testing.F) {
	for _, s := range []string{`{"plaintext":"aGVsbG8="}`, `{"ciphertext":"AAAA","context":"Y3R4"}`, ` {"context":"","plaintext":"x"} `,
		`{"plaintext":"a","plaintext":"a"}`, `{"PLAINTEXT":"a"}`, `{"plaintext":"\u0041"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if it, ok := parseFlatItem(body); ok {
			checkSameAsGeneral(t, body, it)
		}
	})
}

// appendResult writes exactly what encoding/json's Encoder writes, or
// declines.
func TestAppendResult(t *testing.T) {
	for _, res := range []cryptoResult{
		{Ciphertext: "AAEC+/8=", KeyVersion: 1},
		{Plaintext: str("aGVsbG8="), KeyVersion: 4294967295},
		{Plaintext: str(""), KeyVersion: 2},
		{Ciphertext: "AAAA"},
		{},
		{Plaintext: str("a"), Ciphertext: "b", KeyVersion: 3},
		{Plaintext: str("<&>")},
		{Ciphertext: `a"b`},
		{Ciphertext: "é"},
		{Error: apierr.BadRequest("x", "bad")},
	} {
		var want bytes.Buffer
		if err := json.NewEncoder(&want).Encode(res); err != nil {
			t.Fatal(err)
		}
		got, ok := appendResult(nil, &res)
		if ok && string(got) != want.String() {
			t.Errorf("%+v: got %s, want %s", res, got, want.String())
		}
		if !ok && res.Error == nil && plainJSON(res.Ciphertext) && (res.Plaintext == nil || plainJSON(*res.Plaintext)) {
			t.Errorf("%+v declined", res)
		}
	}
}
