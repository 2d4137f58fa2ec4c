package httpx

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ekm-dev/ekm/metrics"
)

func TestInnerMuxRouteIsReported(t *testing.T) {
	inner := http.NewServeMux()
	inner.HandleFunc("POST /v1/crypto/encrypt", func(w http.ResponseWriter, r *http.Request) {})
	outer := http.NewServeMux()
	outer.Handle("/v1/crypto/", Route(inner))
	m := metrics.New()
	h := Wrap(outer, slog.New(slog.NewTextHandler(io.Discard, nil)), m)
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/v1/crypto/encrypt", strings.NewReader("{}")))
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var routes []string
	for _, mf := range mfs {
		if mf.GetName() != "ekm_http_request_duration_seconds" {
			continue
		}
		for _, met := range mf.GetMetric() {
			for _, l := range met.GetLabel() {
				if l.GetName() == "route" {
					routes = append(routes, l.GetValue())
				}
			}
		}
	}
	if len(routes) != 1 || routes[0] != "POST /v1/crypto/encrypt" {
		t.Fatalf("routes %q, want the inner mux's pattern", routes)
	}
}

func TestPanicAnswersJSON500(t *testing.T) {
	h := Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { panic("boom") }), slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != 500 || !strings.Contains(rec.Body.String(), "server_error") || strings.Contains(rec.Body.String(), "boom") {
		t.Fatalf("panic answered %d %s", rec.Code, rec.Body.String())
	}
}
