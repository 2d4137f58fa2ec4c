package cloudblob_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/ekm-dev/ekm/blob"
	"github.com/ekm-dev/ekm/blob/cloudblob"
	"github.com/ekm-dev/ekm/blob/cloudblob/cloudblobtest"
)

// earlyAzure stands in for an Azure Blob endpoint (or a proxy in front of
// one) that answers a Put Block before reading its body — 403
// AuthorizationFailure, or a throttling 503 — and reads (drains) the rest
// of the body only afterwards, slowly, as a server's lingering close does.
type earlyAzure struct {
	status int

	mu       sync.Mutex
	blocks   int   // Put Block requests answered
	drained  []int // bytes of each Put Block's body read after the answer
	sizes    []int // their Content-Length
	handlers sync.WaitGroup
}

func (s *earlyAzure) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.handlers.Add(1)
	defer s.handlers.Done()
	switch {
	case r.Method == http.MethodPut && r.URL.Query().Get("comp") == "block":
		// Answer first; the body stays unread (the client is mid-write).
		_ = http.NewResponseController(w).EnableFullDuplex()
		code := "AuthorizationFailure"
		if s.status == http.StatusServiceUnavailable {
			code = "ServerBusy"
		}
		w.Header().Set("x-ms-error-code", code)
		body := `<?xml version="1.0" encoding="utf-8"?><Error><Code>` + code + `</Code><Message>early answer</Message></Error>`
		w.Header().Set("Content-Type", "application/xml")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(s.status)
		_, _ = io.WriteString(w, body)
		_ = http.NewResponseController(w).Flush()
		s.mu.Lock()
		s.blocks++
		s.mu.Unlock()
		// Then read the rest slowly, as a lingering close does: the
		// client's transport keeps reading the body to send it.
		n := 0
		buf := make([]byte, 32<<10)
		for {
			m, err := r.Body.Read(buf)
			n += m
			if err != nil {
				break
			}
			time.Sleep(time.Millisecond)
		}
		s.mu.Lock()
		s.drained = append(s.drained, n)
		s.sizes = append(s.sizes, int(r.ContentLength))
		s.mu.Unlock()
	case r.Method == http.MethodDelete:
		w.Header().Set("x-ms-error-code", "BlobNotFound")
		w.WriteHeader(http.StatusNotFound)
	default:
		w.WriteHeader(http.StatusBadRequest)
	}
}

// smallBuffers makes the server's receive buffer small, so that a large
// block cannot sit whole in the sockets' buffers: the client's transport
// is still writing the body when the answer comes.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(32 << 10)
	}
	return c, err
}

// TestAzureEarlyAnswer: an Azure endpoint, over a real socket, answers a
// Put Block before reading its body, then reads the rest slowly. The
// Azure SDK's UploadStream unmaps its block buffers when it returns, and
// its retry policy rewinds a body between tries, while net/http may still
// be reading that body (it may, after RoundTrip has returned). Without
// ekm's guard on request bodies (bodyguard.go) this test, run repeatedly,
// sometimes kills the test binary with SIGSEGV (the 403 case, about one run
// in twenty on a 2-core machine) and, under -race, reports a data race on
// the SDK's body reader in most runs of the retried 503.
// TestGuardLateBodyReads makes both happen every time. With the guard the
// upload fails with the endpoint's own error and the rest of the body is
// never sent.
func TestAzureEarlyAnswer(t *testing.T) {
	for _, c := range []struct {
		name     string
		status   int
		attempts int
	}{
		{"403", http.StatusForbidden, 1},
		// Retried: each try's body is rewound by the SDK while the
		// previous try's transport may still be reading it.
		{"503-retried", http.StatusServiceUnavailable, 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("AZURE_STORAGE_ACCOUNT", cloudblobtest.AzuriteAccount)
			t.Setenv("AZURE_STORAGE_KEY", cloudblobtest.AzuriteKey)
			fake := &earlyAzure{status: c.status}
			srv := httptest.NewUnstartedServer(fake)
			srv.Listener = smallBuffers{srv.Listener}
			srv.Start()
			defer srv.Close()

			const block = 16 << 20
			u := "azblob://ekm-early?localemu=true&protocol=http&domain=" + strings.TrimPrefix(srv.URL, "http://")
			st, err := cloudblob.Open(context.Background(), u, "", cloudblob.Options{
				PartSize: block, MaxAttempts: c.attempts, MaxBackoff: 10 * time.Millisecond, IdleTimeout: 10 * time.Second,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer st.(*cloudblob.Bucket).Close()

			w, err := st.Create(context.Background(), "org-1/proj_1/file-1")
			if err != nil {
				t.Fatal(err)
			}
			// More than one block: the first is staged (Put Block) while
			// the rest is still being written.
			data := make([]byte, block+1)
			for i := range data {
				data[i] = byte(i)
			}
			_, werr := w.Write(data)
			err = w.Commit()
			if werr != nil {
				err = werr
			}
			var re *azcore.ResponseError
			if !errors.As(err, &re) || re.StatusCode != c.status {
				t.Fatalf("upload: %v, want the endpoint's %d", err, c.status)
			}
			if unavailable := errors.Is(err, blob.ErrUnavailable); unavailable != (c.status >= 500) {
				t.Fatalf("upload: %v: unavailable %v", err, unavailable)
			}

			done := make(chan struct{})
			go func() { fake.handlers.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("the endpoint's handlers did not finish")
			}
			fake.mu.Lock()
			defer fake.mu.Unlock()
			if fake.blocks != c.attempts {
				t.Fatalf("%d Put Block requests, want %d", fake.blocks, c.attempts)
			}
			for i, n := range fake.drained {
				t.Logf("Put Block %d: %d of %d body bytes read after the answer", i, n, fake.sizes[i])
				if n >= fake.sizes[i] {
					t.Errorf("Put Block %d: the whole body (%d bytes) was sent after the answer", i, n)
				}
			}
		})
	}
}
