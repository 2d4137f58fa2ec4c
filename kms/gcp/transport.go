package gcp

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/ekm-dev/ekm/kms"
)

// UserAgent starts the User-Agent of every request ekm sends to Google.
// Each request's id follows it ("ekm request-id/<uuid>"): Cloud Audit Logs
// record the User-Agent (protoPayload.requestMetadata.callerSuppliedUserAgent),
// so a customer finds ekm's calls in its own logs by the ids ekm reports.
const UserAgent = "ekm"

// RequestIDHeader carries the same id as the User-Agent.
const RequestIDHeader = "X-Request-Id"

// maxResponseBytes bounds every response body read from Google.
const maxResponseBytes = 1 << 20

// maxErrorBody bounds how much of an error body is kept for diagnosis.
const maxErrorBody = 64 << 10

var errBodyTooLarge = errors.New("response body exceeds the size limit")

// transport sends one request to Google: it gives it a fresh request id
// (header and User-Agent), reports the id to the operation's kms.CallInfo
// when the request is one the customer can see in its own logs (record),
// bounds the response body, and keeps the failed answers of token
// endpoints for diagnosis (their Go clients flatten them into strings).
type transport struct {
	base   http.RoundTripper
	record bool
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	id := newRequestID()
	r := req.Clone(ctx) // a RoundTripper must not modify the caller's request
	r.Header.Set(RequestIDHeader, id)
	r.Header.Set("User-Agent", UserAgent+" request-id/"+id)
	if t.record {
		if ci := kms.CallInfoFrom(ctx); ci != nil {
			ci.Record(id)
		}
	}
	tr := traceFrom(ctx)
	if tr != nil && t.record {
		tr.sent(id)
	}
	resp, err := t.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	if resp.ContentLength > maxResponseBytes {
		resp.Body.Close()
		return nil, errBodyTooLarge
	}
	resp.Body = &limitedBody{rc: resp.Body, left: maxResponseBytes}
	if tr != nil && resp.StatusCode/100 != 2 {
		if kind := failureKind(r); kind != "" {
			b, rerr := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
			resp.Body.Close()
			if rerr != nil && !errors.Is(rerr, errBodyTooLarge) {
				return nil, rerr
			}
			tr.failed(kind, resp.StatusCode, b)
			resp.Body = io.NopCloser(bytes.NewReader(b))
		}
	}
	return resp, nil
}

// Kinds of token-endpoint failures kept for diagnosis.
const (
	failSTS         = "sts"         // sts.googleapis.com token exchange
	failImpersonate = "impersonate" // generateAccessToken for the customer's service account
	failIDToken     = "idtoken"     // generateIdToken for ekm's own service account
	failOAuth       = "oauth"       // oauth2.googleapis.com (ekm's own credential)
)

func failureKind(r *http.Request) string {
	host := strings.ToLower(r.URL.Hostname())
	switch {
	case host == "sts.googleapis.com":
		return failSTS
	case host == "iamcredentials.googleapis.com" && strings.HasSuffix(r.URL.Path, ":generateAccessToken"):
		return failImpersonate
	case host == "iamcredentials.googleapis.com":
		return failIDToken
	case host == "oauth2.googleapis.com" || host == "www.googleapis.com" && strings.HasPrefix(r.URL.Path, "/oauth2/"):
		return failOAuth
	}
	return ""
}

// httpFailure is a failed answer of a token endpoint.
type httpFailure struct {
	status int
	body   []byte
}

// trace follows one provider operation: the last request id sent, and
// the failed answers of token endpoints.
type trace struct {
	mu       sync.Mutex
	lastID   string
	failures map[string]httpFailure
}

type traceKey struct{}

func withTrace(ctx context.Context) (context.Context, *trace) {
	if tr := traceFrom(ctx); tr != nil {
		return ctx, tr
	}
	tr := &trace{}
	return context.WithValue(ctx, traceKey{}, tr), tr
}

func traceFrom(ctx context.Context) *trace {
	tr, _ := ctx.Value(traceKey{}).(*trace)
	return tr
}

func (tr *trace) sent(id string) {
	tr.mu.Lock()
	tr.lastID = id
	tr.mu.Unlock()
}

func (tr *trace) failed(kind string, status int, body []byte) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.failures == nil {
		tr.failures = map[string]httpFailure{}
	}
	tr.failures[kind] = httpFailure{status: status, body: body}
}

// failure returns (and forgets) the last failure of kind.
func (tr *trace) failure(kind string) (httpFailure, bool) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	f, ok := tr.failures[kind]
	delete(tr.failures, kind)
	return f, ok
}

func (tr *trace) requestID() string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.lastID
}

type limitedBody struct {
	rc   io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// Probe one byte: a body of exactly the limit is fine.
		var one [1]byte
		n, err := b.rc.Read(one[:])
		if n > 0 {
			return 0, errBodyTooLarge
		}
		return 0, err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }

// newRequestID returns a random (version 4) UUID.
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// newHTTPClient returns a client over base that never follows redirects
// (a redirect would carry a token somewhere nobody validated).
func newHTTPClient(base http.RoundTripper, record bool) *http.Client {
	return &http.Client{
		Transport:     &transport{base: base, record: record},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
