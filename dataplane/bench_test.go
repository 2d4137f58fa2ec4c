package dataplane_test

// Benchmarks of the data plane through real HTTP (httptest servers on
// loopback), each beside a plain Go handler doing the same I/O without ekm,
// in the same run. They only run with -bench; see docs/PERFORMANCE.md.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/dataplane"
	"github.com/ekm-dev/ekm/dataplane/dataplanetest"
	"github.com/ekm-dev/ekm/store"
)

// cycleReader yields n bytes by cycling over a random 1 MiB buffer, so
// large bodies cost no memory and little CPU to produce.
type cycleReader struct {
	buf    []byte
	n, off int64
}

var cycleBuf = func() []byte { b := make([]byte, 1<<20); rand.Read(b); return b }()

func newCycle(n int64) *cycleReader { return &cycleReader{buf: cycleBuf, n: n} }

func (r *cycleReader) Read(p []byte) (int, error) {
	if r.off >= r.n {
		return 0, io.EOF
	}
	k := copy(p[:min(int64(len(p)), r.n-r.off)], r.buf[r.off%int64(len(r.buf)):])
	r.off += int64(k)
	return k, nil
}

// streamUpload posts size bytes as a multipart file upload without
// buffering the body.
func streamUpload(tb testing.TB, url, key string, size int64) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		mw.WriteField("purpose", "batch")
		w, _ := mw.CreateFormFile("file", "bench.bin")
		_, err := io.Copy(w, newCycle(size))
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
	}()
	req, _ := http.NewRequest("POST", url+"/v1/files", pr)
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != 200 {
		tb.Fatalf("upload: %s", res.Status)
	}
}

// plainServer stores request bodies to files (written, fsynced, like ekm's
// blobs) and serves them back with io.Copy from the file.
func plainServer(tb testing.TB) *httptest.Server {
	dir := tb.TempDir()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := filepath.Join(dir, "blob")
		if r.Method == "POST" {
			f, err := os.Create(p)
			if err == nil {
				_, err = io.Copy(f, r.Body)
			}
			if err == nil {
				err = f.Sync()
			}
			f.Close()
			if err != nil {
				http.Error(w, err.Error(), 500)
			}
			return
		}
		f, err := os.Open(p)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer f.Close()
		st, _ := f.Stat()
		w.Header().Set("Content-Length", strconv.FormatInt(st.Size(), 10))
		io.Copy(w, f)
	}))
	tb.Cleanup(srv.Close)
	return srv
}

func plainPost(tb testing.TB, url string, size int64) {
	req, _ := http.NewRequest("POST", url, newCycle(size))
	res, err := http.DefaultClient.Do(req)
	if err != nil || res.StatusCode != 200 {
		tb.Fatal(err, res)
	}
	res.Body.Close()
}

func get(tb testing.TB, url, key string) int64 {
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	n, err := io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if err != nil || res.StatusCode != 200 {
		tb.Fatal(err, res.Status)
	}
	return n
}

const benchFileSize = 256 << 20

func benchEnv(b *testing.B) (*dataplanetest.Env, dataplanetest.Project) {
	env := dataplanetest.New(b, dataplanetest.Options{Deps: func(d *dataplane.Deps) { d.MaxFileBytes = 2 << 30 }})
	return env, env.NewProject(b, "", false)
}

func dropFiles(b *testing.B, env *dataplanetest.Env, p dataplanetest.Project) {
	ctx := context.Background()
	fs, _ := env.Store.ListFiles(ctx, p.OrgID, p.ID, "", store.Page{})
	for _, f := range fs {
		env.Store.DeleteFile(ctx, p.OrgID, p.ID, f.ID)
		env.Dir.Delete(ctx, f.BlobKey)
	}
}

// BenchmarkUpload256MiB: multipart upload through the Files API (encrypt,
// write, fsync, rename, record) vs. a plain handler copying the body to a
// file and fsyncing it.
func BenchmarkUpload256MiB(b *testing.B) {
	b.Run("ekm", func(b *testing.B) {
		env, p := benchEnv(b)
		b.SetBytes(benchFileSize)
		for b.Loop() {
			streamUpload(b, env.URL, p.APIKey, benchFileSize)
			b.StopTimer()
			dropFiles(b, env, p)
			b.StartTimer()
		}
	})
	b.Run("plain", func(b *testing.B) {
		srv := plainServer(b)
		b.SetBytes(benchFileSize)
		for b.Loop() {
			plainPost(b, srv.URL, benchFileSize)
		}
	})
}

// BenchmarkDownload256MiB: Files API content (read, authenticate, decrypt,
// stream) vs. a plain handler copying a file to the response.
func BenchmarkDownload256MiB(b *testing.B) {
	b.Run("ekm", func(b *testing.B) {
		env, p := benchEnv(b)
		streamUpload(b, env.URL, p.APIKey, benchFileSize)
		fs, _ := env.Store.ListFiles(context.Background(), p.OrgID, p.ID, "", store.Page{})
		url := env.URL + "/v1/files/" + fs[0].ID + "/content"
		b.SetBytes(benchFileSize)
		b.ResetTimer()
		for b.Loop() {
			if n := get(b, url, p.APIKey); n != benchFileSize {
				b.Fatalf("got %d bytes", n)
			}
		}
	})
	b.Run("plain", func(b *testing.B) {
		srv := plainServer(b)
		plainPost(b, srv.URL, benchFileSize)
		b.SetBytes(benchFileSize)
		b.ResetTimer()
		for b.Loop() {
			if n := get(b, srv.URL, ""); n != benchFileSize {
				b.Fatalf("got %d bytes", n)
			}
		}
	})
}

// vmHWM reads the process's peak resident set size (kB) from
// /proc/self/status.
func vmHWM(b *testing.B) int64 {
	s, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Skip("no /proc/self/status")
	}
	for _, l := range strings.Split(string(s), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	b.Skip("no VmHWM")
	return 0
}

// BenchmarkUpload1GiBPeakRSS uploads 1 GiB through the Files API, server
// and client in this process, and reports the process's peak RSS during
// the upload (VmHWM after resetting it through /proc/self/clear_refs).
// Run it on its own: -run '^$' -bench Upload1GiBPeakRSS -benchtime 1x.
func BenchmarkUpload1GiBPeakRSS(b *testing.B) {
	env, p := benchEnv(b)
	b.SetBytes(1 << 30)
	var peak int64
	for b.Loop() {
		if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
			b.Skipf("cannot reset peak RSS: %v", err)
		}
		streamUpload(b, env.URL, p.APIKey, 1<<30)
		peak = max(peak, vmHWM(b))
		b.StopTimer()
		dropFiles(b, env, p)
		b.StartTimer()
	}
	b.ReportMetric(float64(peak)/1024, "peak-RSS-MiB")
}

// BenchmarkCrypto1KiB measures crypto API encrypt and decrypt of 1 KiB
// items with 8 concurrent keep-alive clients, reporting requests/s and
// latency percentiles, beside a plain handler that decodes the same JSON
// and echoes it.
func BenchmarkCrypto1KiB(b *testing.B) {
	pt := make([]byte, 1024)
	rand.Read(pt)
	encBody, _ := json.Marshal(map[string]string{"plaintext": base64.StdEncoding.EncodeToString(pt)})

	env, p := benchEnv(b)
	res := callRaw(b, env.URL+"/v1/crypto/encrypt", p.APIKey, encBody)
	var enc struct{ Ciphertext string }
	json.Unmarshal(res, &enc)
	decBody, _ := json.Marshal(map[string]string{"ciphertext": enc.Ciphertext})

	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m map[string]string
		if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"ciphertext": m["plaintext"]})
	}))
	b.Cleanup(plain.Close)

	for _, c := range []struct {
		name, url string
		body      []byte
	}{
		{"encrypt", env.URL + "/v1/crypto/encrypt", encBody},
		{"decrypt", env.URL + "/v1/crypto/decrypt", decBody},
		{"plain-echo", plain.URL, encBody},
	} {
		b.Run(c.name, func(b *testing.B) {
			var mu sync.Mutex
			var all []time.Duration
			b.SetParallelism(4) // 4 × GOMAXPROCS clients
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				var lat []time.Duration
				for pb.Next() {
					t0 := time.Now()
					callRaw(b, c.url, p.APIKey, c.body)
					lat = append(lat, time.Since(t0))
				}
				mu.Lock()
				all = append(all, lat...)
				mu.Unlock()
			})
			el := time.Since(start)
			slices.Sort(all)
			b.ReportMetric(float64(len(all))/el.Seconds(), "req/s")
			b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
		})
	}
}

var benchClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

func callRaw(b *testing.B, url, key string, body []byte) []byte {
	req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	res, err := benchClient.Do(req)
	if err != nil {
		b.Error(err)
		return nil
	}
	out, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || res.StatusCode != 200 {
		b.Error(fmt.Sprint(err, res.Status, string(out)))
	}
	return out
}
