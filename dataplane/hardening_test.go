package dataplane_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/dataplane"
	"github.com/ekm-dev/ekm/dataplane/dataplanetest"
	"github.com/ekm-dev/ekm/kms"
)

func rawUpload(t *testing.T, env *dataplanetest.Env, key string, body io.Reader, ctype string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest("POST", env.URL+"/v1/files", body)
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", ctype)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, b
}

func TestHugePartHeadersRefused(t *testing.T) {
	env := dataplanetest.New(t, dataplanetest.Options{})
	p := env.NewProject(t, "", false)
	var body bytes.Buffer
	body.WriteString("--b\r\nContent-Disposition: form-data; name=\"purpose\"\r\n")
	for range 20000 { // ~1 MiB of header lines
		body.WriteString("X-Padding: " + strings.Repeat("a", 40) + "\r\n")
	}
	body.WriteString("\r\nbatch\r\n--b--\r\n")
	res, b := rawUpload(t, env, p.APIKey, &body, "multipart/form-data; boundary=b")
	if res.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "headers are too large") {
		t.Fatalf("got %d %s", res.StatusCode, b)
	}
	assertClean(t, env, p)
}

func TestUploadRefusedWhenKeyRevokedMidStream(t *testing.T) {
	env := dataplanetest.New(t, dataplanetest.Options{})
	p := env.NewProject(t, "", true)
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	type result struct {
		status int
		body   []byte
	}
	done := make(chan result, 1)
	go func() {
		res, b := rawUpload(t, env, p.APIKey, pr, mw.FormDataContentType())
		done <- result{res.StatusCode, b}
	}()
	_ = mw.WriteField("purpose", "batch")
	w, _ := mw.CreateFormFile("file", "big.bin")
	chunk := make([]byte, 256<<10)
	for range 8 { // 2 MiB while the key is available
		if _, err := w.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	env.Revoke(t, p, kms.Revoked)
	go func() { // keep sending until the server gives up on the body
		for {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}()
	r := <-done
	pw.CloseWithError(errors.New("test done"))
	if r.status != http.StatusForbidden || !strings.Contains(string(r.body), "customer_key_unavailable") {
		t.Fatalf("got %d %s", r.status, r.body)
	}
	assertClean(t, env, p)
}

func TestDownloadAbortedWhenKeyRevokedMidStream(t *testing.T) {
	env := dataplanetest.New(t, dataplanetest.Options{})
	p := env.NewProject(t, "", true)
	content := bytes.Repeat([]byte("0123456789abcdef"), 4<<20/16) // 4 MiB
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	_ = mw.WriteField("purpose", "batch")
	fw, _ := mw.CreateFormFile("file", "big.bin")
	_, _ = fw.Write(content)
	mw.Close()
	res, b := rawUpload(t, env, p.APIKey, &body, mw.FormDataContentType())
	if res.StatusCode != 200 {
		t.Fatalf("upload: %d %s", res.StatusCode, b)
	}
	var f struct{ ID string }
	_ = json.Unmarshal(b, &f)

	req, _ := http.NewRequestWithContext(context.Background(), "GET", env.URL+"/v1/files/"+f.ID+"/content", nil)
	req.Header.Set("Authorization", "Bearer "+p.APIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("file content may be cached: Cache-Control %q", resp.Header.Get("Cache-Control"))
	}
	first := make([]byte, 64<<10)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}
	env.Revoke(t, p, kms.Revoked)
	rest, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Fatalf("download completed after revocation (%d more bytes)", len(rest))
	}
	if got := int64(len(first) + len(rest)); got >= int64(len(content)) {
		t.Fatalf("received %d of %d bytes after revocation", got, len(content))
	}
}

func TestCorruptStoredProjectKeyIsNamed(t *testing.T) {
	env := dataplanetest.New(t, dataplanetest.Options{})
	p := env.NewProject(t, "", true)
	ctx := context.Background()
	rec, err := env.Store.GetProjectKey(ctx, p.OrgID, p.ID, 1)
	if err != nil {
		t.Fatal(err)
	}
	rec.Wrapped[len(rec.Wrapped)-1] ^= 1
	if err := env.Store.PutProjectKey(ctx, rec); err != nil {
		t.Fatal(err)
	}
	env.Keyring.EvictProject(p.ID)
	req, _ := http.NewRequest("POST", env.URL+"/v1/crypto/encrypt", strings.NewReader(`{"plaintext":"aGVsbG8="}`))
	req.Header.Set("Authorization", "Bearer "+p.APIKey)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusBadGateway || !strings.Contains(string(b), "customer_key_invalid") {
		t.Fatalf("got %d %s, want 502 customer_key_invalid", res.StatusCode, b)
	}
}

// TestStalledBodies (raw sockets): a crypto API body that never comes is
// answered 408 when BodyTimeout passes, and an upload that stops sending is
// cut off with 408 after UploadIdleTimeout; both connections are closed and
// nothing is stored.
func TestStalledBodies(t *testing.T) {
	env := dataplanetest.New(t, dataplanetest.Options{Deps: func(d *dataplane.Deps) {
		d.BodyTimeout = 300 * time.Millisecond
		d.UploadIdleTimeout = 300 * time.Millisecond
	}})
	p := env.NewProject(t, "", false)
	addr := strings.TrimPrefix(env.URL, "http://")
	send := func(head, body string) (*http.Response, string, time.Duration) {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		_, _ = io.WriteString(c, head+body)
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		b, _ := io.ReadAll(res.Body)
		took := time.Since(start)
		if _, err := br.ReadByte(); err != io.EOF {
			t.Errorf("connection not closed after the answer: %v", err)
		}
		return res, string(b), took
	}
	res, b, took := send("POST /v1/crypto/encrypt HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+p.APIKey+
		"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n", `{"plaintext":`)
	if res.StatusCode != http.StatusRequestTimeout || !strings.Contains(b, "request_timeout") || took > 3*time.Second {
		t.Fatalf("stalled JSON body: %d %s after %v", res.StatusCode, b, took)
	}
	part := "--b\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n" +
		"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.bin\"\r\n\r\n" + strings.Repeat("x", 100<<10)
	res, b, took = send("POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+p.APIKey+
		"\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 10000000\r\n\r\n", part)
	if res.StatusCode != http.StatusRequestTimeout || !strings.Contains(b, "request_timeout") || took > 3*time.Second {
		t.Fatalf("stalled upload: %d %s after %v", res.StatusCode, b, took)
	}
	assertClean(t, env, p)
}
