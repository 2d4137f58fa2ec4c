package client_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/client"
	"github.com/ekm-dev/ekm/dataplane"
	"github.com/ekm-dev/ekm/dataplane/dataplanetest"
	"github.com/ekm-dev/ekm/envelope"
	"github.com/ekm-dev/ekm/kms"
)

func setup(t *testing.T, external bool) (*dataplanetest.Env, dataplanetest.Project, *client.Client) {
	t.Helper()
	env := dataplanetest.New(t, dataplanetest.Options{})
	p := env.NewProject(t, "", external)
	c, err := client.New(env.URL, p.APIKey)
	if err != nil {
		t.Fatal(err)
	}
	return env, p, c
}

func TestNewValidates(t *testing.T) {
	for _, c := range [][2]string{{"ftp://x", "sk-proj-a"}, {"not a url", "sk-proj-a"}, {"http://x", "sk-admin-a"}, {"http://", "sk-proj-a"}} {
		if _, err := client.New(c[0], c[1]); err == nil {
			t.Errorf("New(%q, %q) accepted", c[0], c[1])
		}
	}
}

func TestCrypto(t *testing.T) {
	env, p, c := setup(t, false)
	ctx := context.Background()
	ct, err := c.Encrypt(ctx, []byte("secret"), []byte("aad"))
	if err != nil || ct.KeyVersion != 1 {
		t.Fatal(err, ct)
	}
	pt, err := c.Decrypt(ctx, ct.Ciphertext, []byte("aad"))
	if err != nil || string(pt) != "secret" {
		t.Fatal(err, pt)
	}
	_, err = c.Decrypt(ctx, ct.Ciphertext, []byte("other"))
	var ae *client.APIError
	if !errors.Is(err, client.ErrDecrypt) || !errors.As(err, &ae) || ae.Status != 400 || ae.Param != "ciphertext" {
		t.Fatalf("wrong context: %v", err)
	}

	res, err := c.EncryptBatch(ctx, []client.Item{{Data: []byte("a")}, {Data: []byte("b"), Context: []byte("x")}})
	if err != nil || len(res) != 2 || res[0].Err != nil || res[1].Err != nil {
		t.Fatal(err, res)
	}
	dec, err := c.DecryptBatch(ctx, []client.Item{{Data: res[0].Data}, {Data: res[1].Data}, {Data: []byte("junk")}})
	if err != nil || string(dec[0].Data) != "a" || dec[1].Err == nil || !errors.Is(dec[2].Err, client.ErrDecrypt) {
		t.Fatalf("batch decrypt: %v %+v", err, dec)
	}

	dk, err := c.DataKey(ctx, []byte("k"))
	if err != nil || dk.Plaintext.IsZero() || len(dk.Wrapped) == 0 {
		t.Fatal(err)
	}
	raw, err := c.Decrypt(ctx, dk.Wrapped, []byte("k"))
	if err != nil || !bytes.Equal(raw, dk.Plaintext.Bytes()) {
		t.Fatal("wrapped data key does not decrypt to the key")
	}
	wk, err := c.WrappedDataKey(ctx, nil)
	if err != nil || !wk.Plaintext.IsZero() || len(wk.Wrapped) == 0 {
		t.Fatal(err)
	}

	env.Rotate(t, p)
	rw, err := c.Rewrap(ctx, ct.Ciphertext, []byte("aad"))
	if err != nil || rw.KeyVersion != 2 {
		t.Fatal(err, rw)
	}
	if v, _ := envelope.KeyVersion(rw.Ciphertext); v != 2 {
		t.Fatalf("rewrapped header version %d", v)
	}
	rb, err := c.RewrapBatch(ctx, []client.Item{{Data: ct.Ciphertext, Context: []byte("aad")}})
	if err != nil || rb[0].KeyVersion != 2 {
		t.Fatal(err, rb)
	}
}

func TestErrors(t *testing.T) {
	env, p, c := setup(t, true)
	ctx := context.Background()
	bad, _ := client.New(env.URL, "sk-proj-wrong")
	if _, err := bad.Encrypt(ctx, nil, nil); !errors.Is(err, client.ErrUnauthorized) {
		t.Fatalf("bad key: %v", err)
	}
	if _, err := c.GetFile(ctx, "file-00000000000000000000000000"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("missing file: %v", err)
	}
	if _, err := c.EncryptBatch(ctx, nil); err == nil {
		t.Fatal("empty batch accepted")
	}
	ct, err := c.Encrypt(ctx, []byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}

	env.Revoke(t, p, kms.Outage)
	_, err = c.Decrypt(ctx, ct.Ciphertext, nil)
	var ae *client.APIError
	if !errors.Is(err, client.ErrKeyUnavailable) || !errors.As(err, &ae) || !ae.Retryable() || ae.RetryAfter <= 0 || ae.Status != 503 {
		t.Fatalf("outage: %v", err)
	}
	env.Revoke(t, p, kms.Revoked)
	_, err = c.Decrypt(ctx, ct.Ciphertext, nil)
	if !errors.Is(err, client.ErrKeyUnavailable) || !errors.As(err, &ae) || ae.Retryable() || ae.Code != "customer_key_unavailable" {
		t.Fatalf("revoked: %v", err)
	}
}

// patternReader yields n bytes of a pattern without holding them in memory.
type patternReader struct{ n, off int64 }

func (r *patternReader) Read(p []byte) (int, error) {
	if r.off >= r.n {
		return 0, io.EOF
	}
	k := min(int64(len(p)), r.n-r.off)
	for i := range k {
		p[i] = byte((r.off + i) * 7)
	}
	r.off += k
	return int(k), nil
}

func TestFiles(t *testing.T) {
	env, p, c := setup(t, false)
	ctx := context.Background()
	const size = 5*envelope.SegmentSize + 3
	f, err := c.UploadFile(ctx, "report.csv", &patternReader{n: size}, "user_data")
	if err != nil || f.Bytes != size || f.Filename != "report.csv" || f.Purpose != "user_data" || f.Status != "processed" || time.Since(f.CreatedAt) > time.Minute {
		t.Fatalf("upload: %v %+v", err, f)
	}
	got, err := c.GetFile(ctx, f.ID)
	if err != nil || *got != *f {
		t.Fatalf("get: %v %+v", err, got)
	}
	var buf bytes.Buffer
	n, err := c.DownloadFile(ctx, f.ID, &buf)
	want, _ := io.ReadAll(&patternReader{n: size})
	if err != nil || n != size || !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("download: %v %d", err, n)
	}
	f2, err := c.UploadFile(ctx, "b.txt", bytes.NewReader([]byte("b")), "batch")
	if err != nil {
		t.Fatal(err)
	}
	l, err := c.ListFiles(ctx, listAsc(1))
	if err != nil || len(l.Files) != 1 || !l.HasMore || l.Files[0].ID != f.ID {
		t.Fatalf("list: %v %+v", err, l)
	}
	l, err = c.ListFiles(ctx, client.ListOptions{Asc: true, After: f.ID})
	if err != nil || len(l.Files) != 1 || l.HasMore || l.Files[0].ID != f2.ID {
		t.Fatalf("list page 2: %v %+v", err, l)
	}
	if _, err := c.UploadFile(ctx, "x", bytes.NewReader(nil), "nonsense"); err == nil {
		t.Fatal("bad purpose accepted")
	}

	// A file damaged mid-stream: the reader reports ErrIncomplete.
	path := filepath.Join(env.DataDir, "blobs", "objects", p.OrgID, p.ID, f.ID)
	b, _ := os.ReadFile(path)
	b[len(b)-5] ^= 1
	os.WriteFile(path, b, 0o600)
	buf.Reset()
	n, err = c.DownloadFile(ctx, f.ID, &buf)
	if !errors.Is(err, client.ErrIncomplete) || n >= size {
		t.Fatalf("damaged download: %v after %d bytes", err, n)
	}

	if err := c.DeleteFile(ctx, f.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteFile(ctx, f.ID); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

func listAsc(limit int) client.ListOptions { return client.ListOptions{Asc: true, Limit: limit} }

func TestUploadTooLarge(t *testing.T) {
	env := dataplanetest.New(t, dataplanetest.Options{Deps: func(d *depsT) { d.MaxFileBytes = 100 << 10 }})
	p := env.NewProject(t, "", false)
	c, _ := client.New(env.URL, p.APIKey)
	_, err := c.UploadFile(context.Background(), "big", &patternReader{n: 10 << 20}, "batch")
	if !errors.Is(err, client.ErrTooLarge) {
		t.Fatalf("got %v", err)
	}
}

type depsT = dataplane.Deps
