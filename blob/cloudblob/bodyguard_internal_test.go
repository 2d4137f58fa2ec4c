package cloudblob

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
)

// lateTransport answers every request with status after reading only part
// of its body, and reads the rest later, in its own goroutine — what
// net/http's transports may do (http.RoundTripper: the body may be read and
// closed after RoundTrip returns; the HTTP/1 write loop and the HTTP/2
// body writer do). It reads when release is closed, or at once if nil.
type lateTransport struct {
	status  int
	release chan struct{}

	mu    sync.Mutex
	tries int
	errs  []error // what each late read of a body ended with
	late  sync.WaitGroup
}

func (t *lateTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodDelete {
		return t.answer(req, http.StatusNotFound), nil
	}
	if req.Body == nil {
		return t.answer(req, http.StatusBadRequest), nil
	}
	t.mu.Lock()
	t.tries++
	t.mu.Unlock()
	// Mid-write: part of the body is read before the answer.
	if _, err := io.CopyN(io.Discard, req.Body, 64<<10); err != nil {
		return nil, err
	}
	body := req.Body
	t.late.Add(1)
	go func() {
		defer t.late.Done()
		if t.release != nil {
			<-t.release
		}
		_, err := io.Copy(io.Discard, body)
		_ = body.Close()
		t.mu.Lock()
		t.errs = append(t.errs, err)
		t.mu.Unlock()
	}()
	return t.answer(req, t.status), nil
}

func (t *lateTransport) answer(req *http.Request, status int) *http.Response {
	code := "AuthorizationFailure"
	switch status {
	case http.StatusServiceUnavailable:
		code = "ServerBusy"
	case http.StatusNotFound:
		code = "BlobNotFound"
	}
	doc := `<?xml version="1.0" encoding="utf-8"?><Error><Code>` + code + `</Code><Message>early answer</Message></Error>`
	h := http.Header{}
	h.Set("x-ms-error-code", code)
	h.Set("Content-Type", "application/xml")
	h.Set("Content-Length", strconv.Itoa(len(doc)))
	return &http.Response{
		Status: strconv.Itoa(status) + " " + http.StatusText(status), StatusCode: status,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Body: io.NopCloser(bytes.NewReader([]byte(doc))), ContentLength: int64(len(doc)),
		Request: req,
	}
}

// TestGuardLateBodyReads drives an upload through the Azure bucket Open
// makes (openAzure, with its guard) over a transport that reads request
// bodies after answering. Without the guard this crashes the test binary
// (SIGSEGV: the SDK has unmapped its block buffer when the late read runs)
// or, for the retried 503 whose late reads run at once, is a data race
// with the SDK's rewind of the same reader (go test -race).
func TestGuardLateBodyReads(t *testing.T) {
	t.Setenv("AZURE_STORAGE_ACCOUNT", "devstoreaccount1")
	t.Setenv("AZURE_STORAGE_KEY", "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")
	for _, c := range []struct {
		name     string
		status   int
		attempts int
		wait     bool // late reads after the upload returned, else at once
	}{
		{"403-after-return", http.StatusForbidden, 1, true},
		{"503-retried-after-return", http.StatusServiceUnavailable, 3, true},
		{"503-retried-concurrent", http.StatusServiceUnavailable, 3, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			lt := &lateTransport{status: c.status}
			if c.wait {
				lt.release = make(chan struct{})
			}
			b := &Bucket{kind: "azblob", opts: Options{PartSize: 1 << 20, MaxAttempts: c.attempts, MaxBackoff: 5 * time.Millisecond}}
			b.opts.defaults()
			u, _ := url.Parse("azblob://ekm-late?localemu=true&protocol=http&domain=127.0.0.1:9")
			if err := b.openAzure(context.Background(), u, &http.Client{Transport: lt}); err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			w, err := b.Create(context.Background(), "org-1/proj_1/file-1")
			if err != nil {
				t.Fatal(err)
			}
			data := bytes.Repeat([]byte{7}, 3<<20) // three blocks
			_, werr := w.Write(data)
			err = w.Commit()
			if werr != nil {
				err = werr
			}
			var re *azcore.ResponseError
			if !errors.As(err, &re) || re.StatusCode != c.status {
				t.Fatalf("upload: %v, want the %d", err, c.status)
			}
			// The upload has returned: its buffers are gone.
			if lt.release != nil {
				close(lt.release)
			}
			lt.late.Wait()
			lt.mu.Lock()
			defer lt.mu.Unlock()
			if lt.tries < c.attempts {
				t.Fatalf("%d tries, want at least %d", lt.tries, c.attempts)
			}
			for i, err := range lt.errs {
				// A read at once may finish while RoundTrip waits for it.
				if !errors.Is(err, errBodyCut) && (c.wait || err != nil) {
					t.Errorf("late read %d: %v, want errBodyCut", i, err)
				}
			}
		})
	}
}
