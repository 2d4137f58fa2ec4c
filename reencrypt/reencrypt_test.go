package reencrypt_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/blob"
	"github.com/ekm-dev/ekm/client"
	"github.com/ekm-dev/ekm/dataplane/dataplanetest"
	"github.com/ekm-dev/ekm/files"
	"github.com/ekm-dev/ekm/keyring"
	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/reencrypt"
	"github.com/ekm-dev/ekm/store"
)

type fixture struct {
	env   *dataplanetest.Env
	p     dataplanetest.Project
	c     *client.Client
	files map[string][]byte // id → content
	names map[string]string
}

func setup(t *testing.T, external bool, n int, o dataplanetest.Options) *fixture {
	t.Helper()
	env := dataplanetest.New(t, o)
	p := env.NewProject(t, "", external)
	c, err := client.New(env.URL, p.APIKey)
	if err != nil {
		t.Fatal(err)
	}
	fx := &fixture{env: env, p: p, c: c, files: map[string][]byte{}, names: map[string]string{}}
	for i := range n {
		fx.upload(t, fmt.Sprintf("report-%02d.txt", i), bytes.Repeat([]byte(fmt.Sprintf("file %d secret ", i)), 50*(i+1)))
	}
	return fx
}

func (fx *fixture) upload(t *testing.T, name string, data []byte) string {
	t.Helper()
	f, err := fx.c.UploadFile(context.Background(), name, bytes.NewReader(data), "assistants")
	if err != nil {
		t.Fatal(err)
	}
	fx.files[f.ID], fx.names[f.ID] = data, name
	return f.ID
}

func (fx *fixture) deps() reencrypt.Deps {
	return reencrypt.Deps{Store: fx.env.Store, Keyring: fx.env.Keyring, Blobs: fx.env.Dir, BatchSize: 7}
}

func (fx *fixture) run(t *testing.T, progress func(done, total int)) (reencrypt.Result, error) {
	t.Helper()
	return reencrypt.Run(context.Background(), fx.deps(), fx.p.OrgID, fx.p.ID, progress)
}

// check asserts every file reads back byte-identical with its name, all on
// version, and that the blob store holds exactly the records' blobs.
func (fx *fixture) check(t *testing.T, version int) {
	t.Helper()
	ctx := context.Background()
	for id, want := range fx.files {
		var buf bytes.Buffer
		if _, err := fx.c.DownloadFile(ctx, id, &buf); err != nil {
			t.Fatalf("download %s: %v", id, err)
		}
		if !bytes.Equal(buf.Bytes(), want) {
			t.Fatalf("file %s content differs", id)
		}
		meta, err := fx.c.GetFile(ctx, id)
		if err != nil || meta.Filename != fx.names[id] {
			t.Fatalf("file %s name: %v %v", id, meta, err)
		}
		rec, err := fx.env.Store.GetFile(ctx, fx.p.OrgID, fx.p.ID, id)
		if err != nil || rec.KeyVersion != version {
			t.Fatalf("file %s on version %d, want %d (%v)", id, rec.KeyVersion, version, err)
		}
	}
	if n, err := fx.env.Store.CountFilesBelowKeyVersion(ctx, fx.p.OrgID, fx.p.ID, version); err != nil || n != 0 {
		t.Fatalf("%d files below %d (%v)", n, version, err)
	}
	fx.checkBlobs(t)
}

func (fx *fixture) checkBlobs(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	var want, got []string
	for id := range fx.files {
		rec, err := fx.env.Store.GetFile(ctx, fx.p.OrgID, fx.p.ID, id)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, rec.BlobKey)
	}
	if err := fx.env.Dir.List(ctx, func(i blob.Info) error { got = append(got, i.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	sort.Strings(want)
	sort.Strings(got)
	if !slices.Equal(want, got) {
		t.Fatalf("blobs %v, records point to %v", got, want)
	}
	if tmps, _ := os.ReadDir(fx.env.Dir.TempDir()); len(tmps) != 0 {
		t.Fatalf("%d temporaries left", len(tmps))
	}
}

func TestRunMovesEveryFile(t *testing.T) {
	fx := setup(t, true, 20, dataplanetest.Options{})
	ctx := context.Background()
	before := map[string]string{}
	for id := range fx.files {
		rec, _ := fx.env.Store.GetFile(ctx, fx.p.OrgID, fx.p.ID, id)
		before[id] = rec.BlobKey
	}
	v := fx.env.Rotate(t, fx.p)
	var calls [][2]int
	res, err := fx.run(t, func(done, total int) { calls = append(calls, [2]int{done, total}) })
	if err != nil {
		t.Fatal(err)
	}
	if res.Version != v || res.Reencrypted != 20 || res.Skipped != 0 || len(res.Failed) != 0 {
		t.Fatalf("result %+v", res)
	}
	if len(calls) != 21 || calls[0] != [2]int{0, 20} || calls[20] != [2]int{20, 20} {
		t.Fatalf("progress calls %v", calls)
	}
	fx.check(t, v)
	for id, old := range before {
		rec, _ := fx.env.Store.GetFile(ctx, fx.p.OrgID, fx.p.ID, id)
		if rec.BlobKey == old {
			t.Fatalf("file %s rewritten in place", id)
		}
	}
	// The old version no longer protects anything: a second run is a no-op.
	res, err = fx.run(t, nil)
	if err != nil || res.Reencrypted != 0 {
		t.Fatalf("second run %+v %v", res, err)
	}
	evs, err := fx.env.Store.ListAudit(ctx, fx.p.OrgID, store.AuditFilter{Types: []string{"project.reencrypted"}})
	if err != nil || len(evs) != 1 {
		t.Fatalf("audit events %v %v", evs, err)
	}
	var data map[string]any
	_ = json.Unmarshal(evs[0].Data, &data)
	if data["reencrypted"] != float64(20) || data["version"] != float64(v) || evs[0].ProjectID != fx.p.ID {
		t.Fatalf("audit event %s", evs[0].Data)
	}
}

func TestResumesAfterInterruption(t *testing.T) {
	fx := setup(t, false, 15, dataplanetest.Options{})
	v := fx.env.Rotate(t, fx.p)
	ctx, cancel := context.WithCancel(context.Background())
	res, err := reencrypt.Run(ctx, fx.deps(), fx.p.OrgID, fx.p.ID, func(done, total int) {
		if done == 6 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) || res.Reencrypted != 6 {
		t.Fatalf("interrupted run: %+v %v", res, err)
	}
	n, _ := fx.env.Store.CountFilesBelowKeyVersion(context.Background(), fx.p.OrgID, fx.p.ID, v)
	if n != 9 {
		t.Fatalf("%d files left, want 9", n)
	}
	var first [2]int
	res, err = fx.run(t, func(done, total int) {
		if first == [2]int{} && total > 0 {
			first = [2]int{done, total}
		}
	})
	if err != nil || res.Reencrypted != 9 || first != [2]int{0, 9} {
		t.Fatalf("resumed run %+v %v, first progress %v", res, err, first)
	}
	fx.check(t, v)
}

func TestFollowsRotationDuringRun(t *testing.T) {
	fx := setup(t, true, 10, dataplanetest.Options{})
	fx.env.Rotate(t, fx.p)
	var v3 int
	var last [2]int
	res, err := fx.run(t, func(done, total int) {
		if done == 4 && v3 == 0 {
			v3 = fx.env.Rotate(t, fx.p)
		}
		last = [2]int{done, total}
	})
	if err != nil || res.Version != v3 || v3 != 3 {
		t.Fatalf("run %+v %v (rotated to %d)", res, err, v3)
	}
	// The pass to v2 finishes, then a pass moves all 10 files to v3.
	if res.Reencrypted != 20 || last != [2]int{20, 20} {
		t.Fatalf("run %+v, last progress %v", res, last)
	}
	fx.check(t, 3)
}

func TestKeyUnavailableStopsRun(t *testing.T) {
	fx := setup(t, true, 5, dataplanetest.Options{})
	v := fx.env.Rotate(t, fx.p)
	fx.env.Revoke(t, fx.p, kms.Revoked)
	res, err := fx.run(t, nil)
	var u *keyring.UnavailableError
	if !errors.As(err, &u) || res.Reencrypted != 0 {
		t.Fatalf("run with a revoked key: %+v %v", res, err)
	}
	n, _ := fx.env.Store.CountFilesBelowKeyVersion(context.Background(), fx.p.OrgID, fx.p.ID, v)
	if n != 5 {
		t.Fatalf("%d files below, want 5", n)
	}
	fx.env.Keyring.MarkAvailable(fx.p.ExternalKeyID)
	if _, err := fx.run(t, nil); err != nil {
		t.Fatal(err)
	}
	fx.check(t, v)
}

func TestCorruptFileIsReportedAndSkipped(t *testing.T) {
	fx := setup(t, false, 6, dataplanetest.Options{})
	ctx := context.Background()
	var bad string
	for id := range fx.files {
		bad = id
		break
	}
	rec, _ := fx.env.Store.GetFile(ctx, fx.p.OrgID, fx.p.ID, bad)
	path := filepath.Join(fx.env.DataDir, "blobs", "objects", filepath.FromSlash(rec.BlobKey))
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-20] ^= 1
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	v := fx.env.Rotate(t, fx.p)
	res, err := fx.run(t, nil)
	if !errors.Is(err, reencrypt.ErrFailedFiles) || res.Reencrypted != 5 || !slices.Equal(res.Failed, []string{bad}) {
		t.Fatalf("run %+v %v", res, err)
	}
	after, _ := fx.env.Store.GetFile(ctx, fx.p.OrgID, fx.p.ID, bad)
	if after.BlobKey != rec.BlobKey || after.KeyVersion != 1 {
		t.Fatalf("damaged file's record changed: %+v", after)
	}
	delete(fx.files, bad)
	for id := range fx.files {
		r, _ := fx.env.Store.GetFile(ctx, fx.p.OrgID, fx.p.ID, id)
		if r.KeyVersion != v {
			t.Fatalf("file %s not moved", id)
		}
	}
	fx.files[bad] = nil // only for checkBlobs: its blob must still be there
	fx.checkBlobs(t)
}

// hookBlobs runs a hook when the re-encryption creates a blob for a file.
type hookBlobs struct {
	blob.Store
	mu   sync.Mutex
	hook func(key string)
}

func (h *hookBlobs) Create(ctx context.Context, key string) (blob.Writer, error) {
	h.mu.Lock()
	hook := h.hook
	h.mu.Unlock()
	if hook != nil {
		hook(key)
	}
	return h.Store.Create(ctx, key)
}

func TestConcurrentDeleteAndRewrite(t *testing.T) {
	fx := setup(t, false, 6, dataplanetest.Options{})
	ctx := context.Background()
	v := fx.env.Rotate(t, fx.p)
	ids := make([]string, 0, len(fx.files))
	for id := range fx.files {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	deleted, rewritten := ids[1], ids[3]
	hb := &hookBlobs{Store: fx.env.Dir}
	hb.hook = func(key string) {
		_, _, id, _ := files.ParseBlobKey(key)
		switch id {
		case deleted: // a user deletes the file while it is re-encrypted
			if err := fx.c.DeleteFile(ctx, id); err != nil {
				t.Error(err)
			}
		case rewritten: // another run moves it first
			hb.mu.Lock()
			hb.hook = nil
			hb.mu.Unlock()
			d := fx.deps()
			if _, err := reencrypt.Run(ctx, d, fx.p.OrgID, fx.p.ID, nil); err != nil {
				t.Error(err)
			}
		}
	}
	d := fx.deps()
	d.Blobs = hb
	res, err := reencrypt.Run(ctx, d, fx.p.OrgID, fx.p.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	// This run moves ids[0] and ids[2] and skips the deleted ids[1]; the
	// other run, started at ids[3], moves ids[3..5] first.
	if res.Reencrypted != 2 || res.Skipped != 4 {
		t.Fatalf("result %+v", res)
	}
	delete(fx.files, deleted)
	fx.check(t, v)
}

func TestConcurrentRunsWithServing(t *testing.T) {
	fx := setup(t, true, 30, dataplanetest.Options{})
	ctx := context.Background()
	v := fx.env.Rotate(t, fx.p)
	var wg sync.WaitGroup
	results := make([]reencrypt.Result, 3)
	for i := range results {
		wg.Go(func() {
			var err error
			results[i], err = reencrypt.Run(ctx, fx.deps(), fx.p.OrgID, fx.p.ID, nil)
			if err != nil {
				t.Error(err)
			}
		})
	}
	// Meanwhile: uploads and deletes through the Files API.
	var victims []string
	for id := range fx.files {
		if len(victims) < 8 {
			victims = append(victims, id)
		}
	}
	for i, id := range victims {
		if err := fx.c.DeleteFile(ctx, id); err != nil {
			t.Fatal(err)
		}
		delete(fx.files, id)
		fx.upload(t, fmt.Sprintf("new-%d.txt", i), []byte(fmt.Sprintf("uploaded during the run %d", i)))
	}
	wg.Wait()
	moved := 0
	for _, r := range results {
		moved += r.Reencrypted
	}
	if moved > 30 {
		t.Fatalf("%d re-encryptions of 30 files", moved)
	}
	// A delete racing a swap can leave the new blob behind; Sweep takes it.
	if _, err := files.Sweep(ctx, fx.env.Store, fx.env.Dir, time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	fx.check(t, v)
}

func TestLargeFileStreams(t *testing.T) {
	fx := setup(t, false, 0, dataplanetest.Options{})
	big := make([]byte, 3<<20+12345)
	for i := range big {
		big[i] = byte(i * 7)
	}
	fx.upload(t, "big.bin", big)
	v := fx.env.Rotate(t, fx.p)
	if _, err := fx.run(t, nil); err != nil {
		t.Fatal(err)
	}
	fx.check(t, v)
}

func TestRateLimit(t *testing.T) {
	fx := setup(t, false, 3, dataplanetest.Options{})
	v := fx.env.Rotate(t, fx.p)
	d := fx.deps()
	d.Rate = 1000
	res, err := reencrypt.Run(context.Background(), d, fx.p.OrgID, fx.p.ID, nil)
	if err != nil || res.Reencrypted != 3 {
		t.Fatalf("%+v %v", res, err)
	}
	fx.check(t, v)
	// A rate limited run stops when its context ends while waiting.
	fx.env.Rotate(t, fx.p)
	d.Rate = 0.001
	ctx, cancel := context.WithCancel(context.Background())
	res, err = reencrypt.Run(ctx, d, fx.p.OrgID, fx.p.ID, func(done, total int) {
		if total > 0 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) || res.Reencrypted != 0 {
		t.Fatalf("%+v %v", res, err)
	}
}
