package httpx

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// rawRequest sends head (and body) on a fresh connection and returns the
// answer, the time it took, and whether the server then closed the
// connection (read EOF within CloseGrace and two seconds).
func rawRequest(t *testing.T, addr, head, body string) (*http.Response, time.Duration, bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := io.WriteString(c, head+body); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer within 5s: %v", err)
	}
	took := time.Since(start)
	_, _ = io.ReadAll(res.Body)
	res.Body.Close()
	_ = c.SetReadDeadline(time.Now().Add(CloseGrace + 2*time.Second))
	_, err = br.ReadByte()
	return res, took, err == io.EOF
}

// TestWrapAnswersWithoutUnreadBody: a handler that answers without reading
// the body (e.g. a 404) is answered at once, and the connection is closed,
// when the client declared a body and never sent it. Before, net/http
// waited for up to 256 KiB of body, for as long as the client liked.
func TestWrapAnswersWithoutUnreadBody(t *testing.T) {
	h := Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusNotFound)
	}), slog.New(slog.DiscardHandler), nil)
	srv := httptest.NewServer(h)
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	res, took, closed := rawRequest(t, addr, "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", "")
	if res.StatusCode != 404 || took > 2*time.Second || !closed || !res.Close {
		t.Fatalf("status %d after %v, closed %v, Connection: close %v", res.StatusCode, took, closed, res.Close)
	}
}

// TestWrapUnreadBodyKeepsLaterRequestsWorking: a small body sent in full
// but ignored by the handler does not spoil the connection's next request
// (its context must not be cancelled), whether the connection is kept or
// closed.
func TestWrapUnreadBodyKeepsLaterRequestsWorking(t *testing.T) {
	var canceled atomic.Int32
	h := Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(5 * time.Millisecond)
		if r.Context().Err() != nil {
			canceled.Add(1)
		}
		_, _ = io.WriteString(w, "ok")
	}), slog.New(slog.DiscardHandler), nil)
	srv := httptest.NewServer(h)
	defer srv.Close()
	client := srv.Client()
	for range 50 {
		res, err := client.Post(srv.URL+"/archive", "application/json", strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.ReadAll(res.Body)
		res.Body.Close()
		res, err = client.Get(srv.URL + "/next")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("next request: %d", res.StatusCode)
		}
	}
	if n := canceled.Load(); n > 0 {
		t.Fatalf("%d requests ran with a cancelled context", n)
	}
}

// TestReadBodyDeadline: a JSON body that never comes is answered when its
// deadline passes, and the connection closed.
func TestReadBodyDeadline(t *testing.T) {
	h := Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := ReadBody(w, r, 1<<20, 200*time.Millisecond)
		if err == ErrBodyTimeout {
			http.Error(w, "timeout", http.StatusRequestTimeout)
			return
		}
		_, _ = io.WriteString(w, "read")
	}), slog.New(slog.DiscardHandler), nil)
	srv := httptest.NewServer(h)
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	res, took, closed := rawRequest(t, addr, "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", "{")
	if res.StatusCode != http.StatusRequestTimeout || took > 2*time.Second || !closed {
		t.Fatalf("status %d after %v, closed %v", res.StatusCode, took, closed)
	}
	// A body that comes in time is read, and the connection kept.
	res, _, closed = rawRequest(t, addr, "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n", "{}")
	if res.StatusCode != 200 || closed {
		t.Fatalf("prompt body: status %d, closed %v", res.StatusCode, closed)
	}
}

// TestIdleReader: an upload that stops sending is cut off after the idle
// time, however long it has run; one that keeps sending is not.
func TestIdleReader(t *testing.T) {
	const idle = 300 * time.Millisecond
	h := Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ir := NewIdleReader(w, r, idle)
		n, err := io.Copy(io.Discard, ir)
		ir.Close()
		if ir.TimedOut() {
			http.Error(w, "stalled", http.StatusRequestTimeout)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		_, _ = io.WriteString(w, strings.Repeat("x", int(n%10)))
	}), slog.New(slog.DiscardHandler), nil)
	srv := httptest.NewServer(h)
	defer srv.Close()

	// Slow but steady: 10 bytes every 100 ms for 1 s, longer than idle.
	c, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
	for range 10 {
		time.Sleep(100 * time.Millisecond)
		_, _ = io.WriteString(c, "0123456789")
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("steady upload: %v %v", res, err)
	}

	// Stalled after some bytes.
	res, took, closed := rawRequest(t, strings.TrimPrefix(srv.URL, "http://"),
		"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n", "some bytes, then nothing")
	if res.StatusCode != http.StatusRequestTimeout || took > 2*time.Second || !closed {
		t.Fatalf("stalled upload: status %d after %v, closed %v", res.StatusCode, took, closed)
	}
}

// TestLimitListener: at most n connections are served at once; the next
// is served when one closes.
func TestLimitListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })}
	go func() { _ = srv.Serve(LimitListener(ln, 2)) }()
	defer srv.Close()
	addr := ln.Addr().String()
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	time.Sleep(100 * time.Millisecond) // both accepted
	third, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	_, _ = io.WriteString(third, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(third)
	_ = third.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("a third connection was served while two were held")
	}
	held[0].Close()
	_ = third.SetReadDeadline(time.Now().Add(5 * time.Second))
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("after a slot freed: %v %v", res, err)
	}
	held[1].Close()
}
