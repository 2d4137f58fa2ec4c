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
	"sync/atomic"
	"syscall"
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
// buffering the body: the multipart framing (the purpose field and the file
// part's header, then the closing boundary) around the generated content,
// as one reader. (An io.Pipe fed by a multipart.Writer would give the same
// bytes at the cost of a copy and a goroutine hand-off per 32 KiB on the
// client, which shares the CPU with the server here and which the plain
// baseline's client does not pay.)
func streamUpload(tb testing.TB, url, key string, size int64) {
	var framing bytes.Buffer
	mw := multipart.NewWriter(&framing)
	mw.WriteField("purpose", "batch")
	mw.CreateFormFile("file", "bench.bin")
	head := bytes.Clone(framing.Bytes())
	framing.Reset()
	mw.Close()
	pr := io.MultiReader(bytes.NewReader(head), newCycle(size), bytes.NewReader(framing.Bytes()))
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
// write, fsync, rename, record) vs. a plain handler copying the raw body to
// a file and fsyncing it, interleaved (each iteration uploads once to each,
// in alternating order) so that both see the same machine load. It reports
// the rate of each and ekm/plain-%.
func BenchmarkUpload256MiB(b *testing.B) {
	env, p := benchEnv(b)
	srv := plainServer(b)
	var ekm, plain, ekmCPU, plainCPU time.Duration
	i := 0
	for b.Loop() {
		one := func(ekmSide bool) {
			t0, c0 := time.Now(), processCPU()
			if ekmSide {
				streamUpload(b, env.URL, p.APIKey, benchFileSize)
				ekm += time.Since(t0)
				ekmCPU += processCPU() - c0
				b.StopTimer()
				dropFiles(b, env, p)
				b.StartTimer()
				return
			}
			plainPost(b, srv.URL, benchFileSize)
			plain += time.Since(t0)
			plainCPU += processCPU() - c0
		}
		one(i%2 == 0)
		one(i%2 != 0)
		i++
	}
	reportStreams(b, i, ekm, plain, ekmCPU, plainCPU)
}

// BenchmarkDownload256MiB: Files API content (read, authenticate, decrypt,
// stream) vs. a plain handler copying a file to the response, interleaved
// like BenchmarkUpload256MiB.
func BenchmarkDownload256MiB(b *testing.B) {
	env, p := benchEnv(b)
	streamUpload(b, env.URL, p.APIKey, benchFileSize)
	fs, _ := env.Store.ListFiles(context.Background(), p.OrgID, p.ID, "", store.Page{})
	url := env.URL + "/v1/files/" + fs[0].ID + "/content"
	srv := plainServer(b)
	plainPost(b, srv.URL, benchFileSize)
	var ekm, plain, ekmCPU, plainCPU time.Duration
	i := 0
	for b.Loop() {
		one := func(ekmSide bool) {
			t0, c0 := time.Now(), processCPU()
			u, key, d, c := url, p.APIKey, &ekm, &ekmCPU
			if !ekmSide {
				u, key, d, c = srv.URL, "", &plain, &plainCPU
			}
			if n := get(b, u, key); n != benchFileSize {
				b.Fatalf("got %d bytes", n)
			}
			*d += time.Since(t0)
			*c += processCPU() - c0
		}
		one(i%2 == 0)
		one(i%2 != 0)
		i++
	}
	reportStreams(b, i, ekm, plain, ekmCPU, plainCPU)
}

// reportStreams reports each side's rate, their ratio, and each side's
// process CPU time per 256 MiB (client and server together).
func reportStreams(b *testing.B, n int, ekm, plain, ekmCPU, plainCPU time.Duration) {
	mb := float64(n) * benchFileSize / 1e6
	b.ReportMetric(mb/ekm.Seconds(), "ekm-MB/s")
	b.ReportMetric(mb/plain.Seconds(), "plain-MB/s")
	b.ReportMetric(100*plain.Seconds()/ekm.Seconds(), "ekm/plain-%")
	b.ReportMetric(float64(ekmCPU.Milliseconds())/float64(n), "ekm-cpu-ms/op")
	b.ReportMetric(float64(plainCPU.Milliseconds())/float64(n), "plain-cpu-ms/op")
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
// items against a plain JSON echo handler (decode the same body, encode it
// back) on the same net/http server stack over loopback, at concurrency 1
// and 32 (keep-alive clients, one item per request). The two are
// interleaved in one run: each sub-benchmark alternates rounds of requests
// to ekm and to the echo, so load from elsewhere on a shared machine falls
// on both alike, and it reports both request rates, their ratio
// (ekm/echo-%), the latency percentiles of each, and the process CPU time
// per request of each with the ratio of those (ekm/echo-cpu-%; client and
// server share the process, so both include the client's cost). ns/op covers one ekm
// request and one echo request.
func BenchmarkCrypto1KiB(b *testing.B) {
	pt := make([]byte, 1024)
	rand.Read(pt)
	encBody, _ := json.Marshal(map[string]string{"plaintext": base64.StdEncoding.EncodeToString(pt)})

	env, p := benchEnv(b)
	res := callRaw(b, env.URL+"/v1/crypto/encrypt", p.APIKey, encBody)
	var enc struct{ Ciphertext string }
	json.Unmarshal(res, &enc)
	decBody, _ := json.Marshal(map[string]string{"ciphertext": enc.Ciphertext})

	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m map[string]string
		if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(m)
	}))
	b.Cleanup(echo.Close)

	for _, conc := range []int{1, 32} {
		for _, op := range []struct {
			name string
			body []byte
		}{{"encrypt", encBody}, {"decrypt", decBody}} {
			b.Run(fmt.Sprintf("%s/c=%d", op.name, conc), func(b *testing.B) {
				ekm := &series{url: env.URL + "/v1/crypto/" + op.name, key: p.APIKey, body: op.body}
				base := &series{url: echo.URL, body: op.body}
				interleave(b, conc, ekm, base)
				ekm.report(b, "")
				base.report(b, "echo-")
				b.ReportMetric(100*ekm.rate()/base.rate(), "ekm/echo-%")
				// The same ratio from CPU time per request: what the rates'
				// ratio would be with the machine to ourselves and CPU-bound.
				b.ReportMetric(100*base.cpu.Seconds()/float64(len(base.lat))/(ekm.cpu.Seconds()/float64(len(ekm.lat))), "ekm/echo-cpu-%")
			})
		}
	}
}

// series accumulates the requests of one side of an interleaved benchmark.
type series struct {
	url, key string
	body     []byte
	lat      []time.Duration
	elapsed  time.Duration
	cpu      time.Duration // process CPU time (user + system) during this side's rounds
}

func (s *series) rate() float64 { return float64(len(s.lat)) / s.elapsed.Seconds() }

// run sends n requests from conc concurrent clients.
func (s *series) run(b *testing.B, conc, n int) {
	var next atomic.Int64
	lats := make([][]time.Duration, conc)
	var wg sync.WaitGroup
	cpu0 := processCPU()
	start := time.Now()
	for c := range conc {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				t0 := time.Now()
				callRaw(b, s.url, s.key, s.body)
				lats[c] = append(lats[c], time.Since(t0))
			}
		})
	}
	wg.Wait()
	s.elapsed += time.Since(start)
	s.cpu += processCPU() - cpu0
	for _, l := range lats {
		s.lat = append(s.lat, l...)
	}
}

func (s *series) report(b *testing.B, prefix string) {
	slices.Sort(s.lat)
	b.ReportMetric(s.rate(), prefix+"req/s")
	b.ReportMetric(float64(s.lat[len(s.lat)/2].Microseconds()), prefix+"p50-µs")
	b.ReportMetric(float64(s.lat[len(s.lat)*99/100].Microseconds()), prefix+"p99-µs")
	b.ReportMetric(float64(s.cpu.Microseconds())/float64(len(s.lat)), prefix+"cpu-µs/req")
}

// processCPU is the CPU time (user + system) this process has used: client
// and server together. On a machine shared with other work it varies far
// less than wall-clock rates.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// interleave runs b.N requests on each side in alternating rounds (which
// side goes first alternates too).
func interleave(b *testing.B, conc int, x, y *series) {
	const rounds = 10
	per := max(b.N/rounds, conc)
	b.ResetTimer()
	for i, done := 0, 0; done < b.N; i++ {
		n := min(per, b.N-done)
		if i%2 == 0 {
			x.run(b, conc, n)
			y.run(b, conc, n)
		} else {
			y.run(b, conc, n)
			x.run(b, conc, n)
		}
		done += n
	}
}

var benchClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128}}

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
