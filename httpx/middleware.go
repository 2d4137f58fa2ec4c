// Package httpx has the HTTP plumbing every ekm endpoint shares: request ids,
// structured access logs, metrics, panic recovery, and connection hygiene
// (deadlines on bodies, bounded connections; conn.go).
package httpx

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/ekm-dev/ekm/apierr"
	"github.com/ekm-dev/ekm/metrics"
)

type reqIDKey struct{}

// clientIDKey marks a request id the client chose (X-Request-Id).
type clientIDKey struct{}

type routeKey struct{}

// route holds the most specific pattern a mux matched for a request. Inner
// muxes (the Admin API's, the data plane's) record theirs through Route, so
// metrics and logs name "POST /v1/crypto/encrypt", not just "/v1/crypto/".
type route struct{ pattern string }

// Route wraps a package's own mux so that the pattern it matched is what
// Wrap reports for the request.
func Route(mux http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if rt, ok := r.Context().Value(routeKey{}).(*route); ok && r.Pattern != "" {
				rt.pattern = r.Pattern
			}
		}()
		mux.ServeHTTP(w, r)
	})
}

// RequestID returns the request id of ctx ("" if none).
func RequestID(ctx context.Context) string {
	s, _ := ctx.Value(reqIDKey{}).(string)
	return s
}

// WithRequestID returns ctx carrying request id id (work done outside an
// HTTP request, or tests).
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, reqIDKey{}, id)
}

// RequestIDFromClient reports whether ctx's request id is one the client
// chose (its X-Request-Id) rather than one ekm generated.
func RequestIDFromClient(ctx context.Context) bool {
	b, _ := ctx.Value(clientIDKey{}).(bool)
	return b
}

var clientReqID = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "req_" + hex.EncodeToString(b[:])
}

type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
	// body is the request's body when it has one.
	body *eofBody
}

// closeIfUnread marks the answer as the connection's last when it is sent
// before the request body was read to its end. The rest of the body is
// then never read (see Wrap); were the connection kept, the server would
// first wait for it.
func (r *recorder) closeIfUnread() {
	if r.body != nil && !r.body.sawEOF() {
		r.Header().Set("Connection", "close")
	}
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
		r.closeIfUnread()
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
		r.closeIfUnread()
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach Flush and trailers.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Wrap adds a request id (the caller's X-Request-Id if well-formed, else a
// fresh one, echoed back), an access log line, metrics by route pattern, and
// recovery from panics as a generic 500. Bodies are never logged.
func Wrap(h http.Handler, log *slog.Logger, m *metrics.Metrics) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-Id")
		fromClient := clientReqID.MatchString(id)
		if !fromClient {
			id = newID()
		}
		w.Header().Set("X-Request-Id", id)
		rt := &route{}
		ctx := context.WithValue(WithRequestID(r.Context(), id), routeKey{}, rt)
		if fromClient {
			ctx = context.WithValue(ctx, clientIDKey{}, true)
		}
		r = r.WithContext(ctx)
		rec := &recorder{ResponseWriter: w}
		if hasBody(r) {
			rec.body = &eofBody{ReadCloser: r.Body}
			r.Body = rec.body
		}
		start := time.Now()
		defer func() {
			if rec.body != nil && !rec.body.sawEOF() {
				// The handler left part of the body unread: answer without
				// waiting for it, and close the connection (its answer
				// carries Connection: close, closeIfUnread) once the rest
				// has been read for at most CloseGrace.
				if rec.status == 0 {
					rec.Header().Set("Connection", "close")
				}
				expireBody(w)
			}
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler { //nolint:errorlint // sentinel compared by identity, as net/http does
					log.Warn("request aborted", "request_id", id, "method", r.Method, "route", r.Pattern)
					panic(v)
				}
				log.Error("panic serving request", "request_id", id, "method", r.Method, "route", r.Pattern, "panic", v)
				if rec.status == 0 {
					apierr.Write(rec, apierr.Internal())
				}
			}
			status := rec.status
			if status == 0 {
				status = http.StatusOK
			}
			route := rt.pattern
			if route == "" {
				route = r.Pattern
			}
			if route == "" {
				route = "unmatched"
			}
			d := time.Since(start)
			if m != nil {
				m.HTTPRequests.WithLabelValues(route, r.Method, strconv.Itoa(status)).Observe(d.Seconds())
			}
			log.Info("http request", "request_id", id, "method", r.Method, "route", route, "status", status,
				"bytes", rec.bytes, "duration_ms", float64(d.Microseconds())/1000)
		}()
		h.ServeHTTP(rec, r)
	})
}

// IsClientGone reports whether err means the client went away mid-request.
func IsClientGone(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, http.ErrBodyReadAfterClose)
}
