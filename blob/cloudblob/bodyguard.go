package cloudblob

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// guardBodies wraps the transport of the Azure client so that nothing reads
// a request body once RoundTrip has returned.
//
// net/http allows a RoundTripper to read and close the request body after
// RoundTrip returns (an answer that came before the whole body was sent:
// the HTTP/1 write loop, or the HTTP/2 body writer, may still be sending
// it). The Azure SDK's UploadStream (azblob v1.8.x) does not wait for that:
// when it returns it unmaps its block buffers (anonymous mmap on Linux),
// which a late read of the body turns into a SIGSEGV of the whole process;
// between retries its retry policy rewinds the same reader the previous
// try's transport may still be reading. An early answer — 403
// AuthorizationFailure, 413, a throttling 503 from Azure or from a proxy in
// front of it — followed by a peer that keeps reading is all it takes.
//
// So each request body is wrapped in a reader guarded by a mutex (also
// what GetBody returns, for the transport's own retries). When the inner
// RoundTrip returns, the guard waits briefly for the transport to finish
// the body it is sending (as net/http itself waits before reusing a
// connection); if it has not, the answer came early: its body is read into
// memory first (bounded), so that the SDK still sees the store's own error,
// not a connection cut short. Then the guard takes the mutex — waiting for
// a read in progress — closes the bodies and forgets them: a later read
// gets an error, never the SDK's memory. Retries are unaffected: azcore
// rewinds the reader it keeps itself (the transport is handed a wrapper of
// it whose Close does nothing, and a GetBody that rewinds the same reader,
// wrapped here too), and each try is a new RoundTrip with a new guard.
//
// A read holds the body's mutex while it reads, so the bodies must be in
// memory (the SDK's are bytes.Readers over its buffers): a body whose Read
// blocks would make the cut wait for it.
func guardBodies(next http.RoundTripper) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	return &bodyGuardTransport{next: next}
}

type bodyGuardTransport struct{ next http.RoundTripper }

// errBodyCut is what a read of a request body gets after RoundTrip returned.
var errBodyCut = errors.New("cloudblob: request body read after the request's answer")

// Bounds of the answer's handling when its request body is still being sent.
const (
	bodyWriteWait  = 50 * time.Millisecond // net/http's maxWriteWaitBeforeConnReuse
	earlyAnswerMax = 1 << 20               // an error document is a few hundred bytes
)

func (t *bodyGuardTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return t.next.RoundTrip(req)
	}
	g := &bodyGuard{done: make(chan struct{}, 1)}
	out := req.WithContext(req.Context()) // a shallow copy: RoundTrip must not change req
	out.Body = g.add(req.Body)
	if req.GetBody != nil {
		getBody := req.GetBody
		out.GetBody = func() (io.ReadCloser, error) {
			b, err := getBody()
			if err != nil {
				return nil, err
			}
			return g.add(b), nil
		}
	}
	resp, err := t.next.RoundTrip(out)
	if err == nil && resp.Body != nil && resp.Body != http.NoBody && g.sending(bodyWriteWait) {
		resp.Body = keepEarlyAnswer(resp.Body)
	}
	g.cut()
	return resp, err
}

// bodyGuard holds the request bodies handed to one inner RoundTrip.
type bodyGuard struct {
	mu     sync.Mutex
	bodies []*guardedBody
	isCut  bool
	open   atomic.Int32
	done   chan struct{} // a body was closed by the transport
}

func (g *bodyGuard) add(rc io.ReadCloser) io.ReadCloser {
	b := &guardedBody{g: g, rc: rc}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.isCut { // GetBody called after RoundTrip returned
		_ = rc.Close()
		b.rc = nil
		return b
	}
	g.bodies = append(g.bodies, b)
	g.open.Add(1)
	return b
}

// sending reports whether a body is still open after waiting up to d for
// the transport to close it (it does once the body is sent).
func (g *bodyGuard) sending(d time.Duration) bool {
	if g.open.Load() == 0 {
		return false
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	for g.open.Load() > 0 {
		select {
		case <-g.done:
		case <-timer.C:
			return g.open.Load() > 0
		}
	}
	return false
}

// cut closes every body (waiting for a read in progress): the Close the
// transport owes the caller happens before RoundTrip returns.
func (g *bodyGuard) cut() {
	g.mu.Lock()
	bodies := g.bodies
	g.isCut = true
	g.mu.Unlock()
	for _, b := range bodies {
		_ = b.Close()
	}
}

type guardedBody struct {
	g  *bodyGuard
	mu sync.Mutex
	rc io.ReadCloser // nil once closed
}

func (b *guardedBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rc == nil {
		return 0, errBodyCut
	}
	return b.rc.Read(p)
}

func (b *guardedBody) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rc == nil {
		return nil
	}
	err := b.rc.Close()
	b.rc = nil
	b.g.open.Add(-1)
	select {
	case b.g.done <- struct{}{}:
	default:
	}
	return err
}

// keepEarlyAnswer reads an answer's body (up to earlyAnswerMax) before its
// request body is cut, which may end the connection: the SDK then reads the
// store's error from memory. What does not fit is lost: cutting the
// request body makes HTTP/1 close the connection, so an early answer over
// earlyAnswerMax arrives truncated (an error document never is that long).
func keepEarlyAnswer(body io.ReadCloser) io.ReadCloser {
	buf, err := io.ReadAll(io.LimitReader(body, earlyAnswerMax))
	if err == nil && len(buf) < earlyAnswerMax {
		_ = body.Close()
		return io.NopCloser(bytes.NewReader(buf))
	}
	if err != nil {
		return struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(buf), errReader{err}), body}
	}
	return struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(buf), body), body}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }
