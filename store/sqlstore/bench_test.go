package sqlstore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/ids"
	"github.com/ekm-dev/ekm/store"
	"github.com/ekm-dev/ekm/store/sqlstore/pgtest"
)

// BenchmarkStore measures the hot paths against Ping, a bare round trip to
// the database, as the baseline in the same run:
//
//	go test -run '^$' -bench Store ./store/sqlstore
func BenchmarkStore(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) { benchStore(b, filepath.Join(b.TempDir(), "bench.db")) })
	b.Run("postgres", func(b *testing.B) { benchStore(b, pgtest.DSN(b)) })
}

func benchStore(b *testing.B, dsn string) {
	ctx := context.Background()
	s, err := open(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	o := store.Org{ID: ids.New("org-"), CreatedAt: time.Now()}
	p := store.Project{ID: ids.New("proj_"), OrgID: o.ID, CreatedAt: time.Now(), CurrentKeyVersion: 1}
	k := store.APIKey{ID: ids.New("key_"), OrgID: o.ID, Kind: store.KindAdmin, Hash: make([]byte, 32), CreatedAt: time.Now()}
	for _, err := range []error{s.CreateOrg(ctx, o), s.CreateProject(ctx, p), s.CreateAPIKey(ctx, k)} {
		if err != nil {
			b.Fatal(err)
		}
	}
	run := func(name string, fn func() error) {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if err := fn(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	run("Ping(baseline)", func() error { return s.Ping(ctx) })
	run("APIKeyByHash", func() error { _, err := s.APIKeyByHash(ctx, k.Hash); return err })
	run("GetProject", func() error { _, err := s.GetProject(ctx, o.ID, p.ID); return err })
	run("AppendAudit", func() error {
		return s.AppendAudit(ctx, store.AuditEvent{ID: ids.New("audit_log-"), OrgID: o.ID, Type: "x", EffectiveAt: time.Now(), Data: []byte(`{}`)})
	})
	run("InTxIncrement", func() error { return increment(ctx, s, o.ID, p.ID) })
}

// BenchmarkSQLiteBurst is a burst of 200 concurrent callers (a data plane
// request's two reads, APIKeyByHash and GetProject, nine times in ten; a
// write transaction appending an audit event the tenth) on one SQLite file,
// with the pool bounded at SQLiteMaxConns and, as the baseline in the same
// run, unbounded (what ekm did before). It reports throughput, the peak of
// open file descriptors during the burst and the process's OS threads after
// it. The bounded pool runs first: threads are never released, so the
// baseline's count includes the bounded run's.
//
//	go test -run '^$' -bench SQLiteBurst -benchtime 20000x ./store/sqlstore
func BenchmarkSQLiteBurst(b *testing.B) {
	b.Run(fmt.Sprintf("pool=%d", SQLiteMaxConns), func(b *testing.B) { benchBurst(b, SQLiteMaxConns) })
	b.Run("pool=unbounded(baseline)", func(b *testing.B) { benchBurst(b, 0) })
}

func benchBurst(b *testing.B, maxConns int) {
	ctx := context.Background()
	s, err := openPool(ctx, filepath.Join(b.TempDir(), "burst.db"), maxConns)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	o := store.Org{ID: ids.New("org-"), CreatedAt: time.Now()}
	p := store.Project{ID: ids.New("proj_"), OrgID: o.ID, CreatedAt: time.Now(), CurrentKeyVersion: 1}
	k := store.APIKey{ID: ids.New("key_"), OrgID: o.ID, Kind: store.KindProject, ProjectID: p.ID, Hash: make([]byte, 32), CreatedAt: time.Now()}
	for _, err := range []error{s.CreateOrg(ctx, o), s.CreateProject(ctx, p), s.CreateAPIKey(ctx, k)} {
		if err != nil {
			b.Fatal(err)
		}
	}
	var peakFDs atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			if n := int64(openFDs()); n > peakFDs.Load() {
				peakFDs.Store(n)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	var op atomic.Int64
	b.SetParallelism(max(1, 200/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			var err error
			if op.Add(1)%10 == 0 {
				err = s.InTx(ctx, func(q store.Queries) error {
					return q.AppendAudit(ctx, store.AuditEvent{ID: ids.New("audit_log-"), OrgID: o.ID, Type: "x", EffectiveAt: time.Now(), Data: []byte(`{}`)})
				})
			} else if _, err = s.APIKeyByHash(ctx, k.Hash); err == nil {
				_, err = s.GetProject(ctx, o.ID, p.ID)
			}
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	elapsed := time.Since(start)
	b.StopTimer()
	close(stop)
	<-sampled
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
	b.ReportMetric(float64(peakFDs.Load()), "peak-fds")
	b.ReportMetric(float64(osThreads()), "threads")
}

func openFDs() int {
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(es)
}

func osThreads() int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return -1
}
