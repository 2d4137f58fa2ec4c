package apierr

import (
	"encoding/json"
	"errors"
	"net/http/httptest"
	"testing"
)

func TestWriteShape(t *testing.T) {
	rec := httptest.NewRecorder()
	Write(rec, Missing("name"))
	if rec.Code != 400 {
		t.Fatalf("status %d", rec.Code)
	}
	var body map[string]map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	e := body["error"]
	if e["param"] != "name" || e["code"] != "missing_required_parameter" || e["type"] != "invalid_request_error" || e["message"] == "" {
		t.Fatalf("bad body %v", body)
	}
}

func TestWriteHidesInternalErrors(t *testing.T) {
	rec := httptest.NewRecorder()
	Write(rec, errors.New("pq: password=hunter2"))
	if rec.Code != 500 || json.Valid(rec.Body.Bytes()) == false {
		t.Fatalf("status %d", rec.Code)
	}
	if s := rec.Body.String(); contains(s, "hunter2") {
		t.Fatalf("internal error leaked: %s", s)
	}
	rec = httptest.NewRecorder()
	e := New(503, "server_error", "x", "", "later")
	e.RetryAfter = 7
	Write(rec, e)
	if rec.Header().Get("Retry-After") != "7" {
		t.Fatal("Retry-After not sent")
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
