package httpx

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/ekm-dev/ekm/metrics"
)

// A request id the client chose is marked as the client's, so that records
// of ekm's own (kms.call audit events) never present it as ekm's.
func TestRequestIDFromClient(t *testing.T) {
	var got []bool
	var ids []string
	h := Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, RequestIDFromClient(r.Context()))
		ids = append(ids, RequestID(r.Context()))
	}), slog.New(slog.DiscardHandler), metrics.New())
	for _, hdr := range []string{"client-chosen-1", "", "bad id with spaces"} {
		req := httptest.NewRequest("GET", "/x", nil)
		if hdr != "" {
			req.Header.Set("X-Request-Id", hdr)
		}
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
	if !got[0] || ids[0] != "client-chosen-1" || got[1] || got[2] || ids[2] == "bad id with spaces" {
		t.Fatalf("from client %v, ids %v", got, ids)
	}
}
