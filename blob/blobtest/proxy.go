package blobtest

import (
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var debugProxy = os.Getenv("EKM_BLOBTEST_DEBUG") != ""

// Mode is what a Proxy does to the requests it receives.
type Mode int

const (
	// Up forwards every request.
	Up Mode = iota
	// Down cuts every connection, those in use included, and drops every
	// new request without an answer: the store went away.
	Down
	// Fail503OnCommit answers 503 to the requests that complete an upload
	// (Proxy.IsCommit) and forwards the others.
	Fail503OnCommit
	// Stall holds every request without reading or answering it until the
	// mode changes: an overloaded store.
	Stall
)

// Proxy is an HTTP proxy in front of a store's server that injects faults.
// The server stays a separate process; only the proxy is in the test.
type Proxy struct {
	// URL is the proxy's address (http://127.0.0.1:port).
	URL string
	// Addr is its host:port.
	Addr string
	// IsCommit tells the requests that complete an upload.
	IsCommit func(*http.Request) bool

	mode  atomic.Int32
	hits  atomic.Int64
	srv   *http.Server
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	// changed is closed and replaced on every Set, waking stalled requests.
	changed chan struct{}
}

// NewProxy starts a proxy to target (http://host:port) for t's duration.
// Requests keep their Host header, so signatures that cover it (S3's
// SigV4) stay valid: clients must address the proxy.
func NewProxy(t testing.TB, target string, isCommit func(*http.Request) bool) *Proxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Addr: ln.Addr().String(), IsCommit: isCommit, conns: map[net.Conn]struct{}{}, changed: make(chan struct{})}
	p.URL = "http://" + p.Addr
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = pr.In.Host
		},
		// Upload sessions (GCS) are addressed by a Location the server
		// made from its own address: keep them going through the proxy.
		ModifyResponse: func(res *http.Response) error {
			if debugProxy {
				log.Printf("proxy: %s %s -> %s", res.Request.Method, res.Request.URL, res.Status)
			}
			if l := res.Header.Get("Location"); l != "" {
				res.Header.Set("Location", strings.Replace(l, u.Host, p.Addr, 1))
			}
			return nil
		},
		FlushInterval: -1,
		Transport:     &http.Transport{MaxIdleConnsPerHost: 32, DisableCompression: true},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if Mode(p.mode.Load()) == Down {
				panic(http.ErrAbortHandler)
			}
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	p.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if debugProxy {
				log.Printf("proxy %v: %s %s %s", Mode(p.mode.Load()), r.Method, r.URL, r.Header.Get("Content-Range"))
			}
			switch Mode(p.mode.Load()) {
			case Down:
				p.hits.Add(1)
				panic(http.ErrAbortHandler) // closes the connection unanswered
			case Fail503OnCommit:
				if p.IsCommit(r) {
					p.hits.Add(1)
					w.Header().Set("Retry-After", "1")
					w.WriteHeader(http.StatusServiceUnavailable)
					return
				}
			case Stall:
				p.hits.Add(1)
				p.mu.Lock()
				ch := p.changed
				p.mu.Unlock()
				select {
				case <-ch:
				case <-r.Context().Done():
					return
				case <-time.After(5 * time.Minute):
				}
				// The client has given up by now: drop the request.
				panic(http.ErrAbortHandler)
			}
			rp.ServeHTTP(w, r)
		}),
		ConnState: func(c net.Conn, s http.ConnState) {
			p.mu.Lock()
			defer p.mu.Unlock()
			switch s {
			case http.StateNew:
				p.conns[c] = struct{}{}
			case http.StateClosed, http.StateHijacked:
				delete(p.conns, c)
			}
		},
		ErrorLog: nil,
	}
	go p.srv.Serve(ln)
	t.Cleanup(func() { p.Set(Up); p.srv.Close() })
	return p
}

// Set changes the mode; Down also cuts the connections open now.
func (p *Proxy) Set(m Mode) {
	p.mode.Store(int32(m))
	p.hits.Store(0)
	p.mu.Lock()
	close(p.changed)
	p.changed = make(chan struct{})
	var cut []net.Conn
	if m == Down {
		for c := range p.conns {
			cut = append(cut, c)
		}
	}
	p.mu.Unlock()
	for _, c := range cut {
		c.Close()
	}
}

// Hits counts the requests the current mode acted on.
func (p *Proxy) Hits() int64 { return p.hits.Load() }
