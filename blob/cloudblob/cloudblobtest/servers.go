// Package cloudblobtest starts real storage servers for the cloudblob
// tests and benchmarks, each a separate process on a free loopback port:
//
//   - Azurite (Microsoft's Azure Storage emulator, npm "azurite") for Azure
//     Blob: $EKM_TEST_AZURITE, the azurite-blob program;
//   - Versity S3 Gateway (github.com/versity/versitygw, posix backend) for
//     S3: $EKM_TEST_VERSITYGW, the versitygw program;
//   - fake-gcs-server (github.com/fsouza/fake-gcs-server) for Cloud
//     Storage: $EKM_TEST_FAKE_GCS, the fake-gcs-server program.
//
// Each variable falls back to the program's name on $PATH. .ci/run installs
// the three and sets the variables; README.md says how to do it locally.
// A server that is missing makes its tests skip, saying how to install it,
// unless EKM_CI is set: then they fail.
package cloudblobtest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/ekm-dev/ekm/blob"
	"github.com/ekm-dev/ekm/blob/blobtest"
	"github.com/ekm-dev/ekm/blob/cloudblob"
)

// Kinds of server.
const (
	Azure = "azblob"
	S3    = "s3"
	GCS   = "gs"
)

// Credentials the tests use. Azurite's is its documented development
// account; the S3 gateway's root user is set by the test.
const (
	AzuriteAccount = "devstoreaccount1"
	AzuriteKey     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
	S3AccessKey    = "ekmtestaccess"
	S3SecretKey    = "ekmtestsecret0123456789"
	S3Region       = "us-east-1"
)

type program struct{ env, name, install string }

var programs = map[string]program{
	Azure: {"EKM_TEST_AZURITE", "azurite-blob", "npm install --prefix DIR azurite@3.37.0, then EKM_TEST_AZURITE=DIR/node_modules/.bin/azurite-blob"},
	S3:    {"EKM_TEST_VERSITYGW", "versitygw", "GOBIN=DIR go install github.com/versity/versitygw/cmd/versitygw@v1.8.0, then EKM_TEST_VERSITYGW=DIR/versitygw"},
	GCS:   {"EKM_TEST_FAKE_GCS", "fake-gcs-server", "GOBIN=DIR go install github.com/fsouza/fake-gcs-server@v1.56.1, then EKM_TEST_FAKE_GCS=DIR/fake-gcs-server"},
}

// Server is a running storage server.
type Server struct {
	Kind string
	// Addr is the server's host:port.
	Addr string
	// Err is why the server is not running (then nothing else is set).
	Err error

	cmd  *exec.Cmd
	dir  string
	logs *os.File
}

// Servers are the servers a test binary started, by kind.
type Servers map[string]*Server

// Start starts every server whose program is installed, in a temporary
// directory, and sets the credentials the SDKs read from the environment
// (Azure's shared key, the S3 root user's keys). Call it from TestMain and
// Stop the result after the tests.
func Start() Servers {
	os.Setenv("AZURE_STORAGE_ACCOUNT", AzuriteAccount)
	os.Setenv("AZURE_STORAGE_KEY", AzuriteKey)
	os.Setenv("AWS_ACCESS_KEY_ID", S3AccessKey)
	os.Setenv("AWS_SECRET_ACCESS_KEY", S3SecretKey)
	os.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	ss := Servers{}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, k := range []string{Azure, S3, GCS} {
		wg.Go(func() {
			s := start(k)
			mu.Lock()
			ss[k] = s
			mu.Unlock()
		})
	}
	wg.Wait()
	return ss
}

// Stop stops the servers and removes their data.
func (ss Servers) Stop() {
	for _, s := range ss {
		s.stop()
	}
}

// Require returns the server of kind, or ends t: fails it under EKM_CI,
// skips it otherwise, saying how to install the program.
func (ss Servers) Require(t testing.TB, kind string) *Server {
	t.Helper()
	s := ss[kind]
	if s != nil && s.Err == nil {
		return s
	}
	var err error = errors.New("not started")
	if s != nil {
		err = s.Err
	}
	p := programs[kind]
	msg := fmt.Sprintf("%s server unavailable: %v; install it with: %s (.ci/run does)", kind, err, p.install)
	if os.Getenv("EKM_CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return nil
}

func lookup(kind string) (string, error) {
	p := programs[kind]
	if v := os.Getenv(p.env); v != "" {
		if _, err := os.Stat(v); err != nil {
			return "", fmt.Errorf("$%s: %w", p.env, err)
		}
		return v, nil
	}
	path, err := exec.LookPath(p.name)
	if err != nil {
		return "", fmt.Errorf("$%s is not set and %s is not on $PATH", p.env, p.name)
	}
	return path, nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func start(kind string) *Server {
	s := &Server{Kind: kind}
	prog, err := lookup(kind)
	if err != nil {
		s.Err = err
		return s
	}
	for attempt := 0; attempt < 3; attempt++ {
		if s.Err = s.run(prog); s.Err == nil {
			return s
		}
		s.stop()
	}
	return s
}

func (s *Server) run(prog string) error {
	dir, err := os.MkdirTemp("", "ekm-"+s.Kind+"-")
	if err != nil {
		return err
	}
	s.dir = dir
	port, err := freePort()
	if err != nil {
		return err
	}
	s.Addr = fmt.Sprintf("127.0.0.1:%d", port)
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		return err
	}
	var args []string
	switch s.Kind {
	case Azure:
		args = []string{"--blobHost", "127.0.0.1", "--blobPort", fmt.Sprint(port), "--location", data,
			"--silent", "--skipApiVersionCheck", "--loose", "--disableTelemetry", "--disableProductStyleUrl"}
	case S3:
		args = []string{"--access", S3AccessKey, "--secret", S3SecretKey, "--region", S3Region,
			"--port", s.Addr, "--quiet", "posix", data}
	case GCS:
		args = []string{"-scheme", "http", "-host", "127.0.0.1", "-port", fmt.Sprint(port),
			"-backend", "memory", "-public-host", s.Addr,
			"-external-url", "http://" + s.Addr, "-log-level", "error"}
	}
	s.logs, err = os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		return err
	}
	s.cmd = exec.Command(prog, args...)
	s.cmd.Dir = dir
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	dieWithParent(s.cmd)
	if err := s.cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- s.cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case err := <-exited:
			s.cmd = nil
			b, _ := os.ReadFile(s.logs.Name())
			return fmt.Errorf("%s exited (%v): %s", prog, err, tail(b))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not listen on %s within 60s", prog, s.Addr)
		}
	}
}

func tail(b []byte) string {
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

func (s *Server) stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		s.cmd = nil
	}
	if s.logs != nil {
		s.logs.Close()
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}

// URL returns the --blob-url of bucket on this server reached at addr (the
// server's, or a proxy's in front of it), and the Options it needs beside
// the environment Start set.
func (s *Server) URL(bucket, addr string) (string, cloudblob.Options) {
	switch s.Kind {
	case Azure:
		return "azblob://" + bucket + "?localemu=true&protocol=http&domain=" + addr, cloudblob.Options{}
	case S3:
		return "s3://" + bucket + "?region=" + S3Region + "&use_path_style=true&endpoint=" + url.QueryEscape("http://"+addr), cloudblob.Options{}
	default:
		return "gs://" + bucket, cloudblob.Options{GCSEmulatorHost: addr}
	}
}

// NewBucket creates an empty bucket (container) with a fresh name.
func (s *Server) NewBucket(t testing.TB) string {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := fmt.Sprintf("ekm-%x", b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var err error
	switch s.Kind {
	case Azure:
		var c *azblob.Client
		cred, cerr := azblob.NewSharedKeyCredential(AzuriteAccount, AzuriteKey)
		if cerr == nil {
			c, cerr = azblob.NewClientWithSharedKeyCredential("http://"+s.Addr+"/"+AzuriteAccount, cred, nil)
		}
		if err = cerr; err == nil {
			_, err = c.CreateContainer(ctx, name, nil)
		}
	case S3:
		c := s3.New(s3.Options{Region: S3Region, BaseEndpoint: aws.String("http://" + s.Addr), UsePathStyle: true,
			Credentials: credentials.NewStaticCredentialsProvider(S3AccessKey, S3SecretKey, "")})
		_, err = c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)})
	case GCS:
		var req *http.Request
		req, err = http.NewRequestWithContext(ctx, "POST", "http://"+s.Addr+"/storage/v1/b?project=ekm-test",
			strings.NewReader(`{"name":"`+name+`"}`))
		if err == nil {
			req.Header.Set("Content-Type", "application/json")
			var res *http.Response
			if res, err = http.DefaultClient.Do(req); err == nil {
				res.Body.Close()
				if res.StatusCode != 200 {
					err = errors.New(res.Status)
				}
			}
		}
	}
	if err != nil {
		t.Fatalf("creating %s bucket: %v", s.Kind, err)
	}
	return name
}

// TestOptions are the options of the tests' buckets: small parts, so that
// multipart paths run on small data, and few retries, so that fault cases
// end quickly. StallOptions is TestOptions with a short idle timeout, for
// stores that the tests stall on purpose.
func TestOptions() cloudblob.Options {
	return cloudblob.Options{
		PartSize:     5 << 20,
		Concurrency:  2,
		IdleTimeout:  15 * time.Second,
		MaxAttempts:  2,
		MaxBackoff:   100 * time.Millisecond,
		RestampAfter: time.Second,
	}
}

// StallOptions: see TestOptions.
func StallOptions() cloudblob.Options {
	o := TestOptions()
	o.IdleTimeout = 2 * time.Second
	return o
}

// Open opens bucket on this server (through addr, "" = directly) with o
// merged over the URL's options.
func (s *Server) Open(t testing.TB, bucket, addr string, o cloudblob.Options) *cloudblob.Bucket {
	t.Helper()
	if addr == "" {
		addr = s.Addr
	}
	u, uo := s.URL(bucket, addr)
	if uo.GCSEmulatorHost != "" {
		o.GCSEmulatorHost = uo.GCSEmulatorHost
	}
	st, err := cloudblob.Open(context.Background(), u, "", o)
	if err != nil {
		t.Fatalf("open %s: %v", u, err)
	}
	b := st.(*cloudblob.Bucket)
	t.Cleanup(func() { b.Close() })
	return b
}

// IsCommit tells the requests that complete an upload on this kind of
// server: S3 PutObject and CompleteMultipartUpload, Azure Put Blob and Put
// Block List, GCS a multipart upload or the last chunk of a resumable one.
func (s *Server) IsCommit(r *http.Request) bool {
	q := r.URL.Query()
	switch s.Kind {
	case S3:
		if r.Method == "POST" && q.Has("uploadId") {
			return true
		}
		return r.Method == "PUT" && !q.Has("uploadId") && !q.Has("partNumber") && r.Header.Get("X-Amz-Copy-Source") == "" && strings.Count(r.URL.Path, "/") > 1
	case Azure:
		return r.Method == "PUT" && (q.Get("comp") == "blocklist" || q.Get("comp") == "" && r.Header.Get("X-Ms-Blob-Type") != "")
	default:
		if r.Method == "POST" && q.Get("uploadType") == "multipart" {
			return true
		}
		cr := r.Header.Get("Content-Range")
		session := q.Has("upload_id") || strings.HasPrefix(r.URL.Path, "/upload/")
		return r.Method != "DELETE" && session && strings.HasPrefix(cr, "bytes ") && !strings.HasSuffix(cr, "/*") && !strings.HasPrefix(cr, "bytes */")
	}
}

// Suite is the blobtest suite of this server's backend.
func (s *Server) Suite() blobtest.Suite {
	o := TestOptions()
	return blobtest.Suite{
		New: func(t *testing.T) blob.Store {
			return s.Open(t, s.NewBucket(t), "", o)
		},
		PartSize: o.PartSize,
		Faults: func(t *testing.T) (blob.Store, *blobtest.Proxy) {
			p := blobtest.NewProxy(t, "http://"+s.Addr, s.IsCommit)
			return s.Open(t, s.NewBucket(t), p.Addr, o), p
		},
		Stalled: func(t *testing.T) (blob.Store, *blobtest.Proxy) {
			p := blobtest.NewProxy(t, "http://"+s.Addr, s.IsCommit)
			return s.Open(t, s.NewBucket(t), p.Addr, StallOptions()), p
		},
		FaultBound: 30 * time.Second,
	}
}
