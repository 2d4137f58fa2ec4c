package httpx

import (
	"encoding/json"
	"testing"
)

func TestDuplicateKey(t *testing.T) {
	for _, c := range []struct {
		in, path string
		dup      bool
	}{
		{`{"a":1,"b":2}`, "", false},
		{`{"a":1,"a":2}`, "a", true},
		{` { "name" : "x" , "name" : "y" } `, "name", true},
		{`{"a":1,"\u0061":2}`, "a", true},
		{`{"a":{"b":1},"c":{"b":2}}`, "", false},
		{`{"a":{"b":1,"b":2}}`, "a.b", true},
		{`{"batch_input":[{"plaintext":"x"},{"plaintext":"y","context":"c","plaintext":"z"}]}`, "batch_input[1].plaintext", true},
		{`{"s":"a \"quoted\" \\ string with , } ] and \"a\":1","t":[1,2.5e3,true,null,"x"]}`, "", false},
		{`[{"a":1},{"a":1}]`, "", false},
		{`[[],{"x":[{"y":1,"y":1}]}]`, "[1].x[0].y", true},
		{`"just a string"`, "", false},
		{`{}`, "", false},
	} {
		if !json.Valid([]byte(c.in)) {
			t.Fatalf("test input %s is not JSON", c.in)
		}
		path, dup := DuplicateKey([]byte(c.in))
		if path != c.path || dup != c.dup {
			t.Errorf("DuplicateKey(%s) = %q, %v; want %q, %v", c.in, path, dup, c.path, c.dup)
		}
	}
}

func FuzzDuplicateKey(f *testing.F) {
	f.Add(`{"a":1,"b":[{"c":"d"}]}`)
	f.Fuzz(func(t *testing.T, s string) {
		var v any
		if json.Unmarshal([]byte(s), &v) != nil {
			return
		}
		// Re-encoded through a map, a document has no duplicates.
		b, _ := json.Marshal(v)
		if p, dup := DuplicateKey(b); dup {
			t.Fatalf("duplicate %q reported in %s", p, b)
		}
		DuplicateKey([]byte(s)) // must not panic
	})
}

func TestCheckQuery(t *testing.T) {
	for _, c := range []struct{ raw, param string }{
		{"", ""},
		{"limit=10&after=x", ""},
		{"a%20b=c+d", ""},
		{"limit=%zz", "limit"},
		{"li%zzmit=1", "li%zzmit"},
		{"limit=1;after=x", "limit"},
		{"event_types%5B%5D=a&event_types%5B%5D=b", ""},
	} {
		param, err := CheckQuery(c.raw)
		if param != c.param || (err != nil) != (c.param != "") {
			t.Errorf("CheckQuery(%q) = %q, %v; want %q", c.raw, param, err, c.param)
		}
	}
}
