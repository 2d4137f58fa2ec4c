package cloudblob_test

// The Files API, re-encryption and the sweep on each cloud backend, against
// its real server behind a fault proxy: the guarantees files and dataplane
// give on a local directory hold on buckets too.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/blob"
	"github.com/ekm-dev/ekm/blob/blobtest"
	"github.com/ekm-dev/ekm/blob/cloudblob/cloudblobtest"
	"github.com/ekm-dev/ekm/client"
	"github.com/ekm-dev/ekm/dataplane/dataplanetest"
	"github.com/ekm-dev/ekm/files"
	ekmids "github.com/ekm-dev/ekm/ids"
	"github.com/ekm-dev/ekm/lifecycle"
	"github.com/ekm-dev/ekm/reencrypt"
	"github.com/ekm-dev/ekm/store"
)

func TestFilesS3(t *testing.T)    { testFiles(t, cloudblobtest.S3) }
func TestFilesAzure(t *testing.T) { testFiles(t, cloudblobtest.Azure) }
func TestFilesGCS(t *testing.T)   { testFiles(t, cloudblobtest.GCS) }

type filesEnv struct {
	env   *dataplanetest.Env
	p     dataplanetest.Project
	c     *client.Client
	st    blob.Store
	proxy *blobtest.Proxy
}

func testFiles(t *testing.T, kind string) {
	s := servers.Require(t, kind)
	proxy := blobtest.NewProxy(t, "http://"+s.Addr, s.IsCommit)
	bucket := s.Open(t, s.NewBucket(t), proxy.Addr, cloudblobtest.TestOptions())
	var st blob.Store = bucket
	env := dataplanetest.New(t, dataplanetest.Options{Blobs: func(*blob.Dir) blob.Store { return st }})
	p := env.NewProject(t, "", false)
	c, err := client.New(env.URL, p.APIKey)
	if err != nil {
		t.Fatal(err)
	}
	fx := &filesEnv{env: env, p: p, c: c, st: st, proxy: proxy}
	ctx := context.Background()

	// Round trip, one file of several parts and one small; object names
	// are ids only.
	big := blobtest.Data(1, 12<<20+321)
	small := []byte("small and secret")
	ids := map[string][]byte{}
	for name, data := range map[string][]byte{"quarterly-report.pdf": big, "secret-plan.txt": small} {
		f, err := c.UploadFile(ctx, name, bytes.NewReader(data), "assistants")
		if err != nil {
			t.Fatalf("upload %s: %v", name, err)
		}
		ids[f.ID] = data
	}
	fx.checkFiles(t, ids)
	for _, k := range blobtest.Keys(t, st) {
		org, proj, id, ok := files.ParseBlobKey(k)
		if !ok || org != p.OrgID || proj != p.ID || ids[id] == nil || strings.Contains(k, "report") || strings.Contains(k, "secret") {
			t.Fatalf("object name %q: want <org>/<project>/<file id> only", k)
		}
	}

	t.Run("InterruptedUpload", func(t *testing.T) { fx.interrupted(t, ids) })
	t.Run("StoreDown", func(t *testing.T) { fx.storeDown(t, ids) })
	t.Run("503OnCommit", func(t *testing.T) { fx.commit503(t, ids) })
	t.Run("Reencrypt", func(t *testing.T) { fx.reencrypt(t, ids) })
	t.Run("Sweep", func(t *testing.T) { fx.sweep(t, ids) })
}

// checkFiles: every file reads back, and the bucket holds exactly the
// records' blobs.
func (fx *filesEnv) checkFiles(t *testing.T, ids map[string][]byte) {
	t.Helper()
	ctx := context.Background()
	var want []string
	for id, data := range ids {
		var buf bytes.Buffer
		if _, err := fx.c.DownloadFile(ctx, id, &buf); err != nil || !bytes.Equal(buf.Bytes(), data) {
			t.Fatalf("download %s: %d bytes, %v", id, buf.Len(), err)
		}
		rec, err := fx.env.Store.GetFile(ctx, fx.p.OrgID, fx.p.ID, id)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, rec.BlobKey)
	}
	fs, err := fx.env.Store.ListFiles(ctx, fx.p.OrgID, fx.p.ID, "", store.Page{})
	if err != nil || len(fs) != len(ids) {
		t.Fatalf("%d records, want %d (%v)", len(fs), len(ids), err)
	}
	slices.Sort(want)
	// An aborted upload may take a moment to be abandoned by the store.
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := blobtest.Keys(t, fx.st)
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("bucket holds %v, records point to %v", got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// post uploads size bytes and returns the answer; cut, if set, is called
// after half of the body went out and its error ends the body.
func (fx *filesEnv) post(t *testing.T, ctx context.Context, size int, cut func() error) (*http.Response, error) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		mw.WriteField("purpose", "batch")
		w, _ := mw.CreateFormFile("file", "interrupted-name.bin")
		data := blobtest.Data(9, size)
		_, err := w.Write(data[:size/2])
		if err == nil && cut != nil {
			err = cut()
		}
		if err == nil {
			if _, err = w.Write(data[size/2:]); err == nil {
				err = mw.Close()
			}
		}
		pw.CloseWithError(err)
	}()
	req, _ := http.NewRequestWithContext(ctx, "POST", fx.env.URL+"/v1/files", pr)
	req.Header.Set("Authorization", "Bearer "+fx.p.APIKey)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	return http.DefaultClient.Do(req)
}

func (fx *filesEnv) interrupted(t *testing.T, ids map[string][]byte) {
	ctx, cancel := context.WithCancel(context.Background())
	res, err := fx.post(t, ctx, 14<<20, func() error {
		time.Sleep(300 * time.Millisecond) // the server is writing parts
		cancel()
		return context.Canceled
	})
	if err == nil {
		res.Body.Close()
		t.Fatalf("interrupted upload answered %s", res.Status)
	}
	fx.checkFiles(t, ids)
}

func want503(t *testing.T, what string, res *http.Response, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 503 || res.Header.Get("Retry-After") == "" || !strings.Contains(string(b), "storage_unavailable") {
		t.Fatalf("%s: %s, Retry-After %q, %s; want 503 storage_unavailable with Retry-After", what, res.Status, res.Header.Get("Retry-After"), b)
	}
}

func (fx *filesEnv) storeDown(t *testing.T, ids map[string][]byte) {
	// Down before the upload, and down in the middle of one.
	fx.proxy.Set(blobtest.Down)
	res, err := fx.post(t, context.Background(), 100<<10, nil)
	want503(t, "upload while the store is down", res, err)
	var id string
	for k := range ids {
		id = k
	}
	req, _ := http.NewRequest("GET", fx.env.URL+"/v1/files/"+id+"/content", nil)
	req.Header.Set("Authorization", "Bearer "+fx.p.APIKey)
	res, err = http.DefaultClient.Do(req)
	want503(t, "download while the store is down", res, err)
	fx.proxy.Set(blobtest.Up)

	res, err = fx.post(t, context.Background(), 14<<20, func() error {
		time.Sleep(200 * time.Millisecond)
		fx.proxy.Set(blobtest.Down)
		return nil
	})
	want503(t, "upload cut by the store going down", res, err)
	fx.proxy.Set(blobtest.Up)
	fx.checkFiles(t, ids)
}

func (fx *filesEnv) commit503(t *testing.T, ids map[string][]byte) {
	for _, size := range []int{1000, 11 << 20} {
		res, err := fx.post(t, context.Background(), size, func() error {
			fx.proxy.Set(blobtest.Fail503OnCommit)
			return nil
		})
		want503(t, "upload whose commit is answered 503", res, err)
		fx.proxy.Set(blobtest.Up)
	}
	fx.checkFiles(t, ids)
}

func (fx *filesEnv) reencrypt(t *testing.T, ids map[string][]byte) {
	ctx := context.Background()
	v, err := fx.env.Service.RotateProjectKey(ctx, "", fx.p.OrgID, fx.p.ID, lifecycle.RotateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := reencrypt.Run(ctx, reencrypt.Deps{Store: fx.env.Store, Keyring: fx.env.Keyring, Blobs: fx.st}, fx.p.OrgID, fx.p.ID, nil)
	if err != nil || res.Reencrypted != len(ids) {
		t.Fatalf("reencrypt: %+v, %v", res, err)
	}
	for id := range ids {
		rec, err := fx.env.Store.GetFile(ctx, fx.p.OrgID, fx.p.ID, id)
		if err != nil || rec.KeyVersion != v || rec.BlobKey == files.BlobKey(rec.OrgID, rec.ProjectID, rec.ID) {
			t.Fatalf("file %s after re-encryption: %+v %v", id, rec, err)
		}
	}
	fx.checkFiles(t, ids)
}

func (fx *filesEnv) sweep(t *testing.T, ids map[string][]byte) {
	ctx := context.Background()
	// A blob whose record never came (a crash between the two).
	orphan := files.BlobKey(fx.p.OrgID, fx.p.ID, ekmids.New("file-"))
	blobtest.Put(t, fx.st, orphan, []byte("orphan"))
	// Young: kept (it may be an upload in flight).
	if res, err := files.Sweep(ctx, fx.env.Store, fx.st, time.Now().Add(-time.Hour)); err != nil || res.OrphanBlobs != 0 {
		t.Fatalf("sweep with an hour of grace: %+v %v", res, err)
	}
	if _, err := blobtest.Get(t, fx.st, orphan); err != nil {
		t.Fatalf("young orphan removed: %v", err)
	}
	res, err := files.Sweep(ctx, fx.env.Store, fx.st, time.Now().Add(time.Minute))
	if err != nil || res.OrphanBlobs != 1 {
		t.Fatalf("sweep: %+v %v", res, err)
	}
	if _, err := blobtest.Get(t, fx.st, orphan); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("orphan after the sweep: %v", err)
	}
	fx.checkFiles(t, ids)
}
