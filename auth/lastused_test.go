package auth

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// recToucher records TouchAPIKeys statements.
type recToucher struct {
	mu    sync.Mutex
	calls []touch
	fail  bool
}

type touch struct {
	at  time.Time
	ids []string
}

func (r *recToucher) TouchAPIKeys(_ context.Context, at time.Time, ids []string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail {
		return errors.New("database down")
	}
	r.calls = append(r.calls, touch{at, append([]string(nil), ids...)})
	return nil
}

func TestLastUsedBatches(t *testing.T) {
	now := time.Date(2030, 1, 1, 10, 0, 5, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	rt := &recToucher{}
	lu := NewLastUsed(rt, time.Minute, clock, nil)
	ctx := context.Background()

	// A thousand requests of three keys within a minute: one statement.
	var wg sync.WaitGroup
	for i := range 1000 {
		wg.Go(func() { lu.Seen(fmt.Sprintf("key_%d", i%3)) })
	}
	wg.Wait()
	if len(rt.calls) != 0 {
		t.Fatal("Seen wrote to the store")
	}
	if err := lu.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	minute := time.Date(2030, 1, 1, 10, 0, 0, 0, time.UTC)
	if len(rt.calls) != 1 || len(rt.calls[0].ids) != 3 || !rt.calls[0].at.Equal(minute) {
		t.Fatalf("flush: %+v, want one statement for 3 keys at %v", rt.calls, minute)
	}
	// Same minute again: nothing new to write.
	lu.Seen("key_0")
	if err := lu.Flush(ctx); err != nil || len(rt.calls) != 1 {
		t.Fatalf("re-use within the minute wrote again: %+v %v", rt.calls, err)
	}
	// Next minute: written again, at the new minute.
	advance(time.Minute)
	lu.Seen("key_0")
	if err := lu.Flush(ctx); err != nil || len(rt.calls) != 2 || !rt.calls[1].at.Equal(minute.Add(time.Minute)) {
		t.Fatalf("next minute: %+v %v", rt.calls, err)
	}
	// A failed flush is retried by the next.
	rt.fail = true
	lu.Seen("key_9")
	if err := lu.Flush(ctx); err == nil {
		t.Fatal("flush error swallowed")
	}
	rt.fail = false
	if err := lu.Flush(ctx); err != nil || len(rt.calls) != 3 || rt.calls[2].ids[0] != "key_9" {
		t.Fatalf("retry: %+v %v", rt.calls, err)
	}
	// 1200 keys: batches of at most 500 ids.
	for i := range 1200 {
		lu.Seen(fmt.Sprintf("key_b%04d", i))
	}
	rt.calls = nil
	if err := lu.Flush(ctx); err != nil || len(rt.calls) != 3 || len(rt.calls[0].ids) != 500 || len(rt.calls[2].ids) != 200 {
		t.Fatalf("large flush: %d statements, %v", len(rt.calls), err)
	}
	// Old marks are forgotten: the map holds only the current minute's keys.
	advance(2 * time.Minute)
	if err := lu.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	n := 0
	lu.seen.Range(func(any, any) bool { n++; return true })
	if n != 0 {
		t.Fatalf("%d stale marks kept", n)
	}
}

func TestLastUsedRunFlushesOnStop(t *testing.T) {
	rt := &recToucher{}
	lu := NewLastUsed(rt, time.Minute, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { lu.Run(ctx, time.Hour); close(done) }()
	lu.Seen("key_x")
	cancel()
	<-done
	if len(rt.calls) != 1 || rt.calls[0].ids[0] != "key_x" {
		t.Fatalf("stop did not flush: %+v", rt.calls)
	}
}

func BenchmarkLastUsedSeen(b *testing.B) {
	lu := NewLastUsed(&recToucher{}, time.Minute, nil, nil)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			lu.Seen("key_hot")
		}
	})
}
