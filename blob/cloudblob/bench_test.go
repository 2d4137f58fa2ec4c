package cloudblob_test

// Benchmarks of the Files API on each blob backend beside the local
// directory, in the same run: ekm's data plane over loopback HTTP
// (dataplanetest), the store's server a separate process on loopback.
// They run only with -bench; see docs/PERFORMANCE.md for the command and
// figures. The buckets use the production defaults (cloudblob.Options{}).

import (
	"context"
	"crypto/rand"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/blob"
	"github.com/ekm-dev/ekm/blob/cloudblob"
	"github.com/ekm-dev/ekm/blob/cloudblob/cloudblobtest"
	"github.com/ekm-dev/ekm/dataplane"
	"github.com/ekm-dev/ekm/dataplane/dataplanetest"
	"github.com/ekm-dev/ekm/store"
)

// backends are the stores benchmarked, the local directory first.
var backends = []string{"dir", cloudblobtest.S3, cloudblobtest.Azure, cloudblobtest.GCS}

type benchEnv struct {
	env *dataplanetest.Env
	p   dataplanetest.Project
	st  blob.Store
}

func newBenchEnv(b *testing.B, kind string) *benchEnv {
	var st blob.Store
	if kind != "dir" {
		s := servers.Require(b, kind)
		st = s.Open(b, s.NewBucket(b), "", benchOptions)
	}
	env := dataplanetest.New(b, dataplanetest.Options{
		Blobs: func(d *blob.Dir) blob.Store {
			if st == nil {
				st = d
			}
			return st
		},
		Deps: func(d *dataplane.Deps) { d.MaxFileBytes = 2 << 30 },
	})
	return &benchEnv{env: env, p: env.NewProject(b, "", false), st: st}
}

// drop deletes every file (record and blob), keeping the servers' disks
// small between iterations.
func (e *benchEnv) drop(b *testing.B) {
	ctx := context.Background()
	fs, _ := e.env.Store.ListFiles(ctx, e.p.OrgID, e.p.ID, "", store.Page{})
	for _, f := range fs {
		e.env.Store.DeleteFile(ctx, e.p.OrgID, e.p.ID, f.ID)
		if err := e.st.Delete(ctx, f.BlobKey); err != nil {
			b.Fatal(err)
		}
	}
}

var cycleBuf = func() []byte { b := make([]byte, 1<<20); rand.Read(b); return b }()

// cycleReader yields n bytes cycling over a random 1 MiB buffer.
type cycleReader struct{ n, off int64 }

func (r *cycleReader) Read(p []byte) (int, error) {
	if r.off >= r.n {
		return 0, io.EOF
	}
	k := copy(p[:min(int64(len(p)), r.n-r.off)], cycleBuf[r.off%int64(len(cycleBuf)):])
	r.off += int64(k)
	return k, nil
}

// upload streams size bytes as a multipart upload; the body is generated
// on the fly, never buffered.
func (e *benchEnv) upload(b *testing.B, size int64) string {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		mw.WriteField("purpose", "batch")
		w, _ := mw.CreateFormFile("file", "bench.bin")
		_, err := io.Copy(w, &cycleReader{n: size})
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
	}()
	req, _ := http.NewRequest("POST", e.env.URL+"/v1/files", pr)
	req.Header.Set("Authorization", "Bearer "+e.p.APIKey)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 {
		b.Fatalf("upload: %s %s", res.Status, body)
	}
	s := string(body)
	i := strings.Index(s, `"id":"`) + len(`"id":"`)
	return s[i : i+strings.IndexByte(s[i:], '"')]
}

func (e *benchEnv) download(b *testing.B, id string) int64 {
	req, _ := http.NewRequest("GET", e.env.URL+"/v1/files/"+id+"/content", nil)
	req.Header.Set("Authorization", "Bearer "+e.p.APIKey)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	n, err := io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if err != nil || res.StatusCode != 200 {
		b.Fatal(err, res.Status)
	}
	return n
}

const benchSize = 256 << 20

// BenchmarkFiles256MiB: upload and download of 256 MiB through the Files
// API on each backend, the local directory first.
//
//	go test -run '^$' -bench Files256MiB -benchtime 3x ./blob/cloudblob
func BenchmarkFiles256MiB(b *testing.B) {
	for _, kind := range backends {
		b.Run("upload/"+kind, func(b *testing.B) {
			e := newBenchEnv(b, kind)
			b.SetBytes(benchSize)
			for b.Loop() {
				e.upload(b, benchSize)
				b.StopTimer()
				e.drop(b)
				b.StartTimer()
			}
		})
		b.Run("download/"+kind, func(b *testing.B) {
			e := newBenchEnv(b, kind)
			id := e.upload(b, benchSize)
			b.SetBytes(benchSize)
			for b.Loop() {
				if n := e.download(b, id); n != benchSize {
					b.Fatalf("got %d bytes", n)
				}
			}
			b.StopTimer()
			e.drop(b)
		})
	}
}

// BenchmarkUpload1GiBPeakRSS uploads 1 GiB through the Files API on each
// backend and reports the test process's peak RSS during the upload
// (VmHWM after resetting it through /proc/self/clear_refs): the ekm
// server, the client generating the body, SQLite and the storage SDK; the
// storage server is another process. Run it on its own:
//
//	go test -run '^$' -bench Upload1GiBPeakRSS -benchtime 1x ./blob/cloudblob
func BenchmarkUpload1GiBPeakRSS(b *testing.B) {
	for _, kind := range backends {
		// fake-gcs-server recomputes the checksums of the whole object on
		// every chunk it receives (quadratic): GCS uploads 256 MiB here.
		size := int64(1 << 30)
		if kind == cloudblobtest.GCS {
			size = 256 << 20
		}
		b.Run(kind, func(b *testing.B) {
			e := newBenchEnv(b, kind)
			b.SetBytes(size)
			var peak, base, anonBase, anonPeak int64
			for b.Loop() {
				b.StopTimer()
				runtime.GC()
				debug.FreeOSMemory()
				if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
					b.Skipf("cannot reset peak RSS: %v", err)
				}
				base = max(base, procStatus(b, "VmRSS:"))
				anonBase = max(anonBase, procStatus(b, "RssAnon:"))
				// RssAnon (heap, stacks: what the upload's buffers are
				// made of) has no high-water mark: sample it.
				stop, sampled := make(chan struct{}), make(chan int64)
				go func() {
					var m int64
					t := time.NewTicker(10 * time.Millisecond)
					defer t.Stop()
					for {
						m = max(m, procStatus(b, "RssAnon:"))
						select {
						case <-stop:
							sampled <- m
							return
						case <-t.C:
						}
					}
				}()
				b.StartTimer()
				e.upload(b, size)
				peak = max(peak, procStatus(b, "VmHWM:"))
				close(stop)
				anonPeak = max(anonPeak, <-sampled)
				b.StopTimer()
				e.drop(b)
				b.StartTimer()
			}
			b.ReportMetric(float64(peak)/1024, "peak-RSS-MiB")
			b.ReportMetric(float64(base)/1024, "RSS-before-MiB")
			b.ReportMetric(float64(anonPeak)/1024, "peak-anon-MiB")
			b.ReportMetric(float64(anonBase)/1024, "anon-before-MiB")
		})
	}
}

// procStatus reads a size (kB) from /proc/self/status: VmHWM, the peak
// resident set size since the reset, or VmRSS, the current one.
func procStatus(b *testing.B, field string) int64 {
	s, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Skip("no /proc/self/status")
	}
	for _, l := range strings.Split(string(s), "\n") {
		if v, ok := strings.CutPrefix(l, field); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	b.Skip("no " + field)
	return 0
}

// benchOptions are the buckets' options: the production defaults.
var benchOptions = cloudblob.Options{}
