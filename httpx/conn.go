package httpx

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// Connection hygiene. net/http answers a request only after reading up to
// 256 KiB of a body the handler left unread, for as long as the client
// takes; and it puts no deadline on reading a body at all. A client that
// declares a body and never sends it would hold a goroutine and a
// descriptor for as long as it likes, authenticated or not. So:
//
//   - CloseAfterReply answers without waiting for an unread body and closes
//     the connection (authentication failures, refused bodies);
//   - Wrap does the same, without the Connection header, for any handler
//     that returns leaving a body unread;
//   - ReadBody gives a bounded body a deadline;
//   - IdleReader gives a streamed body a no-progress deadline;
//   - LimitListener bounds the connections of a listener.

// hasBody reports whether r comes with a body that may still be unread.
func hasBody(r *http.Request) bool {
	return r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
}

// CloseGrace is how long, after an answer that ends the connection, the
// server still reads (and discards) a body the client is sending, so that a
// client busy writing it reads the answer rather than a reset. The server
// reads at most 256 KiB of it in any case.
const CloseGrace = time.Second

// CloseAfterReply makes the answer to r the last on its connection, sent
// without waiting for the rest of r's body, which is then read for at most
// CloseGrace. Call it before writing the answer.
func CloseAfterReply(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Connection", "close")
	if hasBody(r) {
		expireBody(w)
	}
}

// expireBody bounds what is left of reading the request body to
// CloseGrace. It is only safe on a connection that closes after the
// answer: a deadline left on a reused connection would cancel its next
// request.
func expireBody(w http.ResponseWriter) {
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(CloseGrace))
}

// eofBody records whether a request body was read to its end.
type eofBody struct {
	io.ReadCloser
	mu  sync.Mutex
	eof bool
}

func (b *eofBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.mu.Lock()
		b.eof = true
		b.mu.Unlock()
	}
	return n, err
}

func (b *eofBody) sawEOF() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.eof
}

// ErrBodyTooLarge and ErrBodyTimeout are ReadBody's failures besides the
// client's own read errors.
var (
	ErrBodyTooLarge = errors.New("request body too large")
	ErrBodyTimeout  = errors.New("request body not received in time")
)

// ReadBody reads r's whole body, at most max bytes, within timeout (0: no
// deadline). On any failure the connection is closed after the answer
// (CloseAfterReply), since the rest of the body is still on the wire.
func ReadBody(w http.ResponseWriter, r *http.Request, max int64, timeout time.Duration) ([]byte, error) {
	rc := http.NewResponseController(w)
	if timeout > 0 {
		_ = rc.SetReadDeadline(time.Now().Add(timeout))
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
	if err == nil {
		if timeout > 0 {
			_ = rc.SetReadDeadline(time.Time{})
		}
		return b, nil
	}
	CloseAfterReply(w, r)
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return nil, ErrBodyTooLarge
	case IsTimeout(err):
		return nil, ErrBodyTimeout
	}
	return nil, err
}

// IsTimeout reports whether err is a read deadline passing.
func IsTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, ErrBodyTimeout) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// IdleReader is a streamed request body that fails with a timeout error
// when no byte arrives for idle. Close it when done with the body: it
// clears the deadline after a complete body and otherwise closes the
// connection after the answer.
type IdleReader struct {
	r     io.Reader
	rc    *http.ResponseController
	w     http.ResponseWriter
	req   *http.Request
	idle  time.Duration
	last  time.Time
	eof   bool
	timed bool
}

// NewIdleReader wraps r's body (idle 0: no deadline).
func NewIdleReader(w http.ResponseWriter, r *http.Request, idle time.Duration) *IdleReader {
	return &IdleReader{r: r.Body, rc: http.NewResponseController(w), w: w, req: r, idle: idle}
}

func (ir *IdleReader) Read(p []byte) (int, error) {
	if ir.idle > 0 {
		// Moving the deadline is a syscall-free timer update, but still not
		// free: move it when an eighth of idle has passed, so the
		// no-progress bound is between 7/8 of idle and idle.
		if now := time.Now(); now.Sub(ir.last) > ir.idle/8 {
			_ = ir.rc.SetReadDeadline(now.Add(ir.idle))
			ir.last = now
		}
	}
	n, err := ir.r.Read(p)
	if err == io.EOF {
		ir.eof = true
	} else if err != nil && IsTimeout(err) {
		ir.timed = true
	}
	return n, err
}

// TimedOut reports whether the body stalled for idle.
func (ir *IdleReader) TimedOut() bool { return ir.timed }

// Close ends the deadline: cleared after a complete body, else the
// connection is closed after the answer.
func (ir *IdleReader) Close() {
	if ir.eof {
		if ir.idle > 0 {
			_ = ir.rc.SetReadDeadline(time.Time{})
		}
		return
	}
	CloseAfterReply(ir.w, ir.req)
}

// LimitListener accepts at most n connections at a time from l; further
// clients wait in the kernel's accept queue until one closes.
func LimitListener(l net.Listener, n int) net.Listener {
	if n <= 0 {
		return l
	}
	return &limitListener{Listener: l, sem: make(chan struct{}, n), done: make(chan struct{})}
}

type limitListener struct {
	net.Listener
	sem       chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
