package emukit

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/ekm-dev/ekm/internal/dialoverride"
)

// ServerConfig describes one emulator's TLS listener.
type ServerConfig struct {
	// Addr is the TCP listen address; "" means 127.0.0.1:0 (any free port).
	Addr string
	// Name prefixes errors ("azure emulator").
	Name string
	// CommonName of the server certificate; "" means Name.
	CommonName string
	// CA signs the server certificate.
	CA *CA
	// DNSNames are the production host names served (see ValidateDNSNames);
	// the listener's IP addresses and loopback are added as IP SANs.
	DNSNames []string
	Handler  http.Handler
	// Logger receives the http.Server's own errors at debug level.
	Logger *slog.Logger
	// BeforeServe runs after the listener and certificate exist and before
	// the first request is served (e.g. to write ca.pem); an error closes
	// the listener.
	BeforeServe func() error
}

// Server is a running TLS listener for an emulator.
type Server struct {
	name   string
	srv    *http.Server
	ln     net.Listener
	done   chan struct{}
	caPEM  []byte
	once   sync.Once
	client *http.Client
}

// Serve listens on cfg.Addr, issues a server certificate and serves in the
// background until Close.
func Serve(cfg ServerConfig) (*Server, error) {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.CA == nil || cfg.Handler == nil {
		return nil, errors.New("emukit: ServerConfig needs CA and Handler")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("%s: listen: %w", cfg.Name, err)
	}
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	if ta, ok := ln.Addr().(*net.TCPAddr); ok && !ta.IP.IsUnspecified() && !ta.IP.IsLoopback() {
		ips = append(ips, ta.IP)
	}
	cn := cfg.CommonName
	if cn == "" {
		cn = cfg.Name
	}
	// Certificates are checked by real clocks, not the emulator's.
	certDER, certKey, err := NewServerCert(cfg.CA, cn, cfg.DNSNames, ips, time.Now())
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("%s: server certificate: %w", cfg.Name, err)
	}
	if cfg.BeforeServe != nil {
		if err := cfg.BeforeServe(); err != nil {
			ln.Close()
			return nil, err
		}
	}
	s := &Server{name: cfg.Name, ln: ln, done: make(chan struct{}), caPEM: cfg.CA.PEM()}
	s.srv = &http.Server{
		Handler: cfg.Handler,
		TLSConfig: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{{Certificate: [][]byte{certDER, cfg.CA.Cert.Raw}, PrivateKey: certKey}},
		},
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error(cfg.Name+": serve", "err", err)
		}
	}()
	return s, nil
}

// Close stops serving and waits for the serve loop to end.
func (s *Server) Close() error {
	if s == nil {
		return nil
	}
	err := s.srv.Close()
	<-s.done
	return err
}

// Addr is the listener address ("127.0.0.1:port").
func (s *Server) Addr() string {
	if s == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// DialAddr is Addr with an unspecified IP replaced by loopback: the
// address clients dial and the control URL's host.
func (s *Server) DialAddr() string { return DialAddr(s.Addr()) }

// DialAddr replaces an unspecified listen IP in addr by 127.0.0.1.
func DialAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// HTTPClient returns a client that dials the emulator for every host and
// trusts its CA: the client production code builds with
// dialoverride.NewClient(addr, caFile). It is created once, so connections
// are reused.
func (s *Server) HTTPClient() *http.Client {
	s.once.Do(func() {
		c, err := dialoverride.NewClientFromPEM(s.DialAddr(), s.caPEM)
		if err != nil {
			panic(s.name + ": " + err.Error()) // our own address and CA are always valid
		}
		s.client = c
	})
	return s.client
}

// Files is the directory where an emulator writes files for CLI users
// (ca.pem, credentials): the state directory, or a temporary directory
// removed by Cleanup.
type Files struct {
	dir string
	tmp string
}

// NewFiles uses dir when not empty; otherwise Prepare creates a temporary
// directory named after tempPrefix.
func NewFiles(dir string) *Files { return &Files{dir: dir} }

// Prepare makes sure the directory exists (creating the temporary one).
func (f *Files) Prepare(tempPrefix string) error {
	if f.dir != "" {
		return nil
	}
	d, err := os.MkdirTemp("", tempPrefix)
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	f.dir, f.tmp = d, d
	return nil
}

// Dir is the directory ("" before Prepare in memory mode).
func (f *Files) Dir() string { return f.dir }

// Path is dir/name, or "" when there is no directory yet.
func (f *Files) Path(name string) string {
	if f.dir == "" {
		return ""
	}
	return filepath.Join(f.dir, name)
}

// Write writes dir/name atomically.
func (f *Files) Write(name string, data []byte, perm os.FileMode) error {
	if f.dir == "" {
		return errors.New("no file directory")
	}
	if err := WriteFileAtomic(filepath.Join(f.dir, name), data, perm); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// Cleanup removes the temporary directory, if one was made.
func (f *Files) Cleanup() {
	if f.tmp != "" {
		os.RemoveAll(f.tmp)
	}
}
