package cloudblob_test

// The sweep of orphan blobs on every backend (the local directory, and
// each bucket against its real server): it never deletes what is not
// ekm's, and never the blob of a write in flight, however slow.

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/ekm-dev/ekm/blob"
	"github.com/ekm-dev/ekm/blob/blobtest"
	"github.com/ekm-dev/ekm/blob/cloudblob"
	"github.com/ekm-dev/ekm/blob/cloudblob/cloudblobtest"
	"github.com/ekm-dev/ekm/dataplane/dataplanetest"
	"github.com/ekm-dev/ekm/files"
	"github.com/ekm-dev/ekm/ids"
	"github.com/ekm-dev/ekm/store"
)

func TestSweepSafetyDir(t *testing.T) {
	testSweepSafety(t, "", func(t *testing.T, o cloudblob.Options) blob.Store {
		d, err := blob.NewDir(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return d
	})
}

func TestSweepSafetyS3(t *testing.T)    { testSweepSafetyOn(t, cloudblobtest.S3) }
func TestSweepSafetyAzure(t *testing.T) { testSweepSafetyOn(t, cloudblobtest.Azure) }
func TestSweepSafetyGCS(t *testing.T)   { testSweepSafetyOn(t, cloudblobtest.GCS) }

func testSweepSafetyOn(t *testing.T, kind string) {
	s := servers.Require(t, kind)
	testSweepSafety(t, kind, func(t *testing.T, o cloudblob.Options) blob.Store {
		bucket := s.NewBucket(t)
		st := s.Open(t, bucket, "", o)
		if kind == cloudblobtest.S3 {
			foreignUploads(t, s, bucket)
		}
		return st
	})
}

// foreignUploads starts, on an S3 bucket, multipart uploads that are not
// ekm's (never completed: another application's, or a crashed one of
// theirs) and checks at the test's end that the sweep left them alone.
func foreignUploads(t *testing.T, s *cloudblobtest.Server, bucket string) {
	c := s3.New(s3.Options{Region: cloudblobtest.S3Region, BaseEndpoint: aws.String("http://" + s.Addr), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(cloudblobtest.S3AccessKey, cloudblobtest.S3SecretKey, "")})
	ctx := context.Background()
	keys := []string{"backups/2024/db", "org-a/proj_b/file-c", files.BlobKey(ids.New("org-"), ids.New("proj_"), ids.New("file-")) + "_copy"}
	for _, k := range keys {
		if _, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String(k)}); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		out, err := c.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(bucket)})
		if err != nil {
			t.Fatal(err)
		}
		var left []string
		for _, u := range out.Uploads {
			left = append(left, aws.ToString(u.Key))
		}
		for _, k := range keys {
			if !slices.Contains(left, k) {
				t.Errorf("the sweep aborted the foreign multipart upload %q (left: %v)", k, left)
			}
		}
	})
}

// sweepingStore runs sweep just before each file record is written: the
// worst moment, the blob committed and its record not yet there.
type sweepingStore struct {
	store.Store
	sweep func()
}

func (s *sweepingStore) CreateFile(ctx context.Context, f store.File) error {
	s.sweep()
	return s.Store.CreateFile(ctx, f)
}

// deployedStore is a database whose deployment id is id.
type deployedStore struct {
	store.Store
	id string
}

func (s *deployedStore) DeploymentID(context.Context) (string, error) { return s.id, nil }

func testSweepSafety(t *testing.T, kind string, open func(*testing.T, cloudblob.Options) blob.Store) {
	env := dataplanetest.New(t, dataplanetest.Options{})
	p := env.NewProject(t, "", false)
	ctx := context.Background()

	// Another deployment's store (its marker names another id), or one
	// whose marker is gone, is never swept: the orphans a database sees
	// there may be the other deployment's files.
	t.Run("OtherDeploymentUntouched", func(t *testing.T) {
		st := open(t, cloudblobtest.TestOptions())
		orphan := files.BlobKey(p.OrgID, p.ID, ids.New("file-"))
		blobtest.Put(t, st, orphan, []byte("another deployment's file"))
		ours, theirs := &deployedStore{Store: env.Store, id: blob.NewDeploymentID()}, blob.NewDeploymentID()
		res, err := files.Sweep(ctx, ours, st, time.Now().Add(time.Minute))
		if !errors.Is(err, files.ErrNotOurStore) || res != (files.SweepResult{}) {
			t.Fatalf("sweep of a store without a marker by a deployed database: %+v, %v; want ErrNotOurStore", res, err)
		}
		if err := st.ClaimDeployment(ctx, theirs); err != nil {
			t.Fatal(err)
		}
		for _, db := range []store.Store{ours, env.Store} { // another id; no id at all
			res, err := files.Sweep(ctx, db, st, time.Now().Add(time.Minute))
			if !errors.Is(err, files.ErrNotOurStore) || res != (files.SweepResult{}) {
				t.Fatalf("sweep of another deployment's store: %+v, %v; want ErrNotOurStore", res, err)
			}
		}
		if got := blobtest.Keys(t, st); !slices.Equal(got, []string{orphan}) {
			t.Fatalf("after refused sweeps the store holds %v, want %v", got, []string{orphan})
		}
		// The deployment the marker names sweeps it.
		res, err = files.Sweep(ctx, &deployedStore{Store: env.Store, id: theirs}, st, time.Now().Add(time.Minute))
		if err != nil || res.OrphanBlobs != 1 {
			t.Fatalf("sweep by the marker's deployment: %+v, %v; want 1 orphan removed", res, err)
		}
		if got, err := st.Deployment(ctx); err != nil || got != theirs {
			t.Fatalf("the sweep touched the marker: %q, %v", got, err)
		}
	})

	t.Run("ForeignKeysSurvive", func(t *testing.T) {
		st := open(t, cloudblobtest.TestOptions())
		org, proj, file := ids.New("org-"), ids.New("proj_"), ids.New("file-")
		foreign := []string{
			"backups/2024/db", "other-app/data", "org-a/proj_b/file-c", "org-1/proj_2/file-3",
			files.BlobKey(org, proj, file) + "_copy", files.BlobKey(org, proj, file) + "_k1-short",
			"x/" + files.BlobKey(org, proj, file), files.BlobKey(org, proj, ids.New("file-")) + "/x",
			files.BlobKey(org, proj, file[:len(file)-1]+"o"),
		}
		for _, k := range foreign {
			blobtest.Put(t, st, k, []byte("not ekm's"))
		}
		// Two orphans of ekm's shape: these go.
		orphans := []string{files.BlobKey(p.OrgID, p.ID, ids.New("file-")), files.BlobKey(org, proj, file)}
		for _, k := range orphans {
			blobtest.Put(t, st, k, []byte("orphan"))
		}
		res, err := files.Sweep(ctx, env.Store, st, time.Now().Add(time.Minute)) // everything counts as old
		if err != nil || res.OrphanBlobs != len(orphans) {
			t.Fatalf("sweep: %+v, %v; want %d orphans removed", res, err, len(orphans))
		}
		slices.Sort(foreign)
		if got := blobtest.Keys(t, st); !slices.Equal(got, foreign) {
			t.Fatalf("after the sweep the store holds %v, want the foreign objects %v", got, foreign)
		}
	})

	// A write that takes longer than a fixed grace would have: on Amazon
	// S3 its blob is dated by its start (an upload over 5 GiB is never
	// restamped; RestampAfter is set beyond the test here), and the sweep
	// runs between its blob's commit and its record's. With the grace
	// derived from the writes' deadline (files.SweepGrace: MaxWrite and a
	// margin, scaled down here) it survives on every backend, whatever
	// date the store gives it, since no store dates an object before its
	// upload started; past its deadline, a write stores nothing at all.
	// (The S3 server of the tests dates a multipart object by its
	// completion, so the loss under a fixed grace cannot be shown on it.)
	// The durations leave room for a loaded machine.
	const slow = 2 * time.Second
	o := cloudblobtest.TestOptions()
	o.RestampAfter = time.Hour
	upload := func(t *testing.T, st blob.Store, maxWrite time.Duration, cutoff func() time.Time, pause time.Duration) (store.File, []byte, error) {
		var swept files.SweepResult
		fs := &files.Store{Blobs: st, MaxWrite: maxWrite, Records: &sweepingStore{Store: env.Store, sweep: func() {
			var err error
			if swept, err = files.Sweep(ctx, env.Store, st, cutoff()); err != nil {
				t.Errorf("sweep: %v", err)
			}
		}}}
		data := blobtest.Data(5, 2*o.PartSize+1234) // several parts on S3
		f := store.File{ID: ids.New("file-"), OrgID: p.OrgID, ProjectID: p.ID, Purpose: "batch", Bytes: int64(len(data)),
			CreatedAt: time.Now(), KeyVersion: 1, NameCiphertext: []byte("name")}
		bw, err := fs.Create(ctx, &f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bw.Write(data[:len(data)/2]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(pause)
		if _, err := bw.Write(data[len(data)/2:]); err != nil {
			bw.Abort()
			return f, data, err
		}
		err = fs.Commit(ctx, f, bw)
		t.Logf("sweep during the commit: %+v", swept)
		return f, data, err
	}

	t.Run("SlowWriteNotSwept", func(t *testing.T) {
		st := open(t, o)
		const maxWrite = time.Minute
		f, data, err := upload(t, st, maxWrite, func() time.Time { return time.Now().Add(-maxWrite - time.Second) }, slow)
		if err != nil {
			t.Fatalf("slow upload within its deadline: %v", err)
		}
		if _, err := env.Store.GetFile(ctx, f.OrgID, f.ProjectID, f.ID); err != nil {
			t.Fatalf("record: %v", err)
		}
		if got, err := blobtest.Get(t, st, f.BlobKey); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("the slow upload's content after a sweep during its commit: %d bytes, %v", len(got), err)
		}
	})

	t.Run("PastDeadlineStoresNothing", func(t *testing.T) {
		st := open(t, o)
		const maxWrite = time.Second
		f, _, err := upload(t, st, maxWrite, func() time.Time { return time.Now().Add(-maxWrite - time.Second) }, maxWrite+500*time.Millisecond)
		if !errors.Is(err, files.ErrWriteTooLong) {
			t.Fatalf("an upload past its deadline: %v, want files.ErrWriteTooLong", err)
		}
		if _, err := env.Store.GetFile(ctx, f.OrgID, f.ProjectID, f.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("record of an upload past its deadline: %v", err)
		}
		blobtest.AssertAbsent(t, st, f.BlobKey)
	})
}
