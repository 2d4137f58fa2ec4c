package apispec

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/textproto"
	"strings"
	"sync"
	"testing"
)

// Bounds of what the transport keeps of a body to check it. A JSON body
// above them is not checked (it is passed through untouched); multipart
// bodies are parsed as they stream and never kept.
const (
	maxJSONRequest  = 16 << 20
	maxJSONResponse = 64 << 20
	maxPartHeader   = 16 << 10
	maxPartValue    = 4 << 10
)

// Transport returns an http.RoundTripper that sends through base
// (http.DefaultTransport if nil) and checks each exchange against
// docs/openapi.yaml, failing t (t.Errorf) on every mismatch with the
// method, path, status and what does not match.
func Transport(t testing.TB, base http.RoundTripper) http.RoundTripper {
	t.Helper()
	s, err := Load()
	if err != nil {
		t.Fatalf("apispec: %v", err)
	}
	if base == nil {
		base = http.DefaultTransport
	}
	return &transport{t: t, spec: s, base: base}
}

// Client returns a copy of c (a new default client if nil) whose transport
// checks every exchange (Transport).
func Client(t testing.TB, c *http.Client) *http.Client {
	t.Helper()
	var out http.Client
	if c != nil {
		out = *c
	}
	out.Transport = Transport(t, out.Transport)
	return &out
}

type transport struct {
	t    testing.TB
	spec *Spec
	base http.RoundTripper
}

func (tr *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	cap := capture(req)
	out := req
	if cap != nil && req.Body != nil && req.Body != http.NoBody {
		out = req.Clone(req.Context())
		out.Body = &teeBody{rc: req.Body, c: cap}
	}
	resp, err := tr.base.RoundTrip(out)
	if err != nil {
		return resp, err
	}
	x := Exchange{Request: req, Response: resp}
	if cap != nil {
		x.RequestBody, x.Parts, x.Multipart = cap.result(req.ContentLength)
	}
	if jsonMedia(mediaType(resp.Header.Get("Content-Type"))) && resp.Body != nil {
		b, rerr := io.ReadAll(io.LimitReader(resp.Body, maxJSONResponse+1))
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(b))
		if rerr != nil {
			// The connection broke mid-body (a crash test killing the
			// server): nothing to check, the caller sees the error.
			resp.Body = io.NopCloser(io.MultiReader(bytes.NewReader(b), errReader{rerr}))
			return resp, nil
		}
		if len(b) > maxJSONResponse {
			resp.Body = io.NopCloser(io.MultiReader(bytes.NewReader(b), resp.Body))
			return resp, nil
		}
		x.ResponseBody = b
	}
	if problems := tr.spec.Check(x); len(problems) > 0 {
		msg := fmt.Sprintf("apispec: %s %s → %d does not match docs/openapi.yaml:\n  - %s",
			req.Method, req.URL.RequestURI(), resp.StatusCode, strings.Join(problems, "\n  - "))
		if x.ResponseBody != nil {
			msg += "\n  response body: " + compact(x.ResponseBody)
		}
		tr.t.Errorf("%s", msg)
	}
	return resp, nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// capture decides how a request body is kept for checking: JSON whole (up
// to maxJSONRequest), multipart parsed as it streams; nil keeps nothing.
func capture(req *http.Request) *bodyCapture {
	if req.Body == nil || req.Body == http.NoBody {
		return nil
	}
	ct := req.Header.Get("Content-Type")
	mt, params, _ := mime.ParseMediaType(ct)
	switch {
	case mt == "multipart/form-data" && params["boundary"] != "":
		return &bodyCapture{parts: newPartParser(params["boundary"])}
	case jsonMedia(mt) || mt == "":
		if req.ContentLength > maxJSONRequest {
			return nil
		}
		return &bodyCapture{json: true}
	}
	return nil
}

// bodyCapture records the bytes a request body yields as the transport
// reads it (in its own goroutine, hence the lock).
type bodyCapture struct {
	mu    sync.Mutex
	json  bool
	buf   []byte
	over  bool
	eof   bool
	parts *partParser
}

func (c *bodyCapture) write(p []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.parts != nil {
		c.parts.write(p)
		return
	}
	if c.over || len(c.buf)+len(p) > maxJSONRequest {
		c.over, c.buf = true, nil
		return
	}
	c.buf = append(c.buf, p...)
}

func (c *bodyCapture) end() {
	c.mu.Lock()
	c.eof = true
	c.mu.Unlock()
}

// result returns the JSON body if it was seen whole (to EOF, or to its
// declared length), or the parts if the multipart body was seen to its
// closing boundary.
func (c *bodyCapture) result(contentLength int64) ([]byte, []Part, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.parts != nil {
		return nil, c.parts.parts, c.parts.closed && c.parts.err == nil
	}
	if c.over || !(c.eof || (contentLength > 0 && int64(len(c.buf)) == contentLength)) {
		return nil, nil, false
	}
	if c.buf == nil {
		return []byte{}, nil, false
	}
	return c.buf, nil, false
}

// teeBody hands what the transport reads to a capture.
type teeBody struct {
	rc io.ReadCloser
	c  *bodyCapture
}

func (b *teeBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if n > 0 {
		b.c.write(p[:n])
	}
	if err == io.EOF {
		b.c.end()
	}
	return n, err
}

func (b *teeBody) Close() error { return b.rc.Close() }

// partParser follows a multipart/form-data body as it streams, keeping
// each part's headers and the start of text values, never file contents.
type partParser struct {
	delim  []byte // "\r\n--boundary"
	buf    []byte
	head   bool // reading a part's headers (else a body or the preamble)
	cur    *Part
	parts  []Part
	closed bool
	err    error
}

func newPartParser(boundary string) *partParser {
	// The first delimiter has no CRLF before it: pretend it had.
	return &partParser{delim: []byte("\r\n--" + boundary), buf: []byte("\r\n")}
}

func (p *partParser) write(b []byte) {
	if p.closed || p.err != nil {
		return
	}
	p.buf = append(p.buf, b...)
	for p.step() {
	}
}

// step consumes what it can of buf and reports whether it made progress.
func (p *partParser) step() bool {
	if p.head {
		i := bytes.Index(p.buf, []byte("\r\n\r\n"))
		if i < 0 {
			if len(p.buf) > maxPartHeader {
				p.err = errors.New("multipart part headers too large")
			}
			return false
		}
		h, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(p.buf[:i+4]))).ReadMIMEHeader()
		if err != nil {
			p.err = fmt.Errorf("multipart part headers: %w", err)
			return false
		}
		part := Part{}
		if _, params, err := mime.ParseMediaType(h.Get("Content-Disposition")); err == nil {
			part.Name = params["name"]
			part.Filename, part.HasFile = params["filename"]
		}
		p.parts = append(p.parts, part)
		p.cur = &p.parts[len(p.parts)-1]
		p.buf = p.buf[i+4:]
		p.head = false
		return true
	}
	i := bytes.Index(p.buf, p.delim)
	if i < 0 {
		// Keep what could be the start of a delimiter.
		keep := len(p.delim) - 1
		if len(p.buf) > keep {
			p.value(p.buf[:len(p.buf)-keep])
			p.buf = append(p.buf[:0], p.buf[len(p.buf)-keep:]...)
		}
		return false
	}
	after := p.buf[i+len(p.delim):]
	if len(after) < 2 {
		return false
	}
	p.value(p.buf[:i])
	switch {
	case bytes.HasPrefix(after, []byte("--")):
		p.closed = true
		p.buf = nil
		return false
	case bytes.HasPrefix(after, []byte("\r\n")):
		p.buf = append(p.buf[:0], after[2:]...)
		p.head = true
		p.cur = nil
		return true
	}
	p.err = errors.New("multipart delimiter not followed by CRLF or --")
	return false
}

// value keeps the start of a text part's value.
func (p *partParser) value(b []byte) {
	if p.cur == nil || p.cur.HasFile || len(p.cur.Value) >= maxPartValue {
		return
	}
	n := min(len(b), maxPartValue-len(p.cur.Value))
	p.cur.Value += string(b[:n])
}
