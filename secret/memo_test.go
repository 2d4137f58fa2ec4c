package secret

import (
	"bytes"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
	"weak"
)

// derived counts derivations and returns a copy of the key bytes, so a
// test can tell which key a cached value was derived from.
type derived struct {
	n atomic.Int64
}

func (d *derived) f(key []byte) []byte {
	d.n.Add(1)
	return bytes.Clone(key)
}

// One derivation per key, shared by its clones (however deep); keys with
// the same bytes in storage of their own (not clones) have entries of
// their own; a key is never served another key's value.
func TestMemoSharesAcrossClones(t *testing.T) {
	var m Memo[[]byte]
	var d derived
	k := New()
	if got := m.Get(k, d.f); !bytes.Equal(got, k.Bytes()) {
		t.Fatal("value not derived from the key")
	}
	c1 := k.Clone()
	c2 := c1.Clone()
	for _, c := range []Key{k, c1, c2} {
		if got := m.Get(c, d.f); !bytes.Equal(got, k.Bytes()) {
			t.Fatal("a clone was served another value")
		}
	}
	if n := d.n.Load(); n != 1 {
		t.Fatalf("%d derivations for a key and its clones, want 1", n)
	}
	c1.Zero()
	if k.IsZero() || c2.IsZero() {
		t.Fatal("zeroing a clone zeroed another copy")
	}
	same, _ := FromBytes(k.Bytes())
	other := New()
	m.Get(same, d.f)
	if got := m.Get(other, d.f); !bytes.Equal(got, other.Bytes()) {
		t.Fatal("a key was served another key's value")
	}
	if n := d.n.Load(); n != 3 {
		t.Fatalf("%d derivations, want 3 (one per key storage that is not a clone)", n)
	}
	runtime.KeepAlive(k)
}

// An entry is served only for the bytes it was derived from and only to
// its own origin: a stale entry at a key's address (the storage of a dead
// key reused before its cleanup ran) or a clone whose bytes differ (one
// torn by a concurrent Zero) gets a fresh derivation.
func TestMemoChecksOriginAndBytes(t *testing.T) {
	var m Memo[[]byte]
	var d derived
	k := New()
	addr := uintptr(unsafe.Pointer(k.b))
	dead := new([Size]byte)
	stale := &memoEntry[[]byte]{origin: weak.Make(dead), v: []byte("stale")}
	stale.key = *k.b // even with the same bytes: another origin
	m.m.Store(addr, stale)
	if got := m.Get(k, d.f); !bytes.Equal(got, k.Bytes()) {
		t.Fatal("an entry of another origin was served")
	}
	live, _ := m.m.Load(addr)
	torn := k.Clone()
	torn.b[0] ^= 1
	for range 3 {
		if got := m.Get(torn, d.f); !bytes.Equal(got, torn.Bytes()) {
			t.Fatal("an entry derived from other bytes was served")
		}
	}
	if now, _ := m.m.Load(addr); now != live {
		t.Fatal("a torn clone replaced its live origin's entry")
	}
	if got := m.Get(k, d.f); !bytes.Equal(got, k.Bytes()) {
		t.Fatal("the key was served the torn clone's value")
	}
	n := m.Len()
	var zero Key
	zeroed := New()
	zeroed.Zero()
	for _, z := range []Key{zero, zeroed, zeroed.Clone()} {
		if got := m.Get(z, d.f); !bytes.Equal(got, make([]byte, Size)) {
			t.Fatal("a zero key was not derived from zero bytes")
		}
	}
	if m.Len() != n {
		t.Fatal("a zero key was cached")
	}
	runtime.KeepAlive(dead)
}

// Entries of keys that are garbage are removed, and their copy of the key
// bytes wiped; concurrent callers of one key agree on one value.
func TestMemoForgetsGarbageKeys(t *testing.T) {
	var m Memo[[]byte]
	var d derived
	keep := New()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { m.Get(keep.Clone(), d.f) })
	}
	wg.Wait()
	if !bytes.Equal(m.Get(keep, d.f), keep.Bytes()) {
		t.Fatal("wrong value under concurrency")
	}
	var entries []*memoEntry[[]byte]
	for range 50 {
		k := New()
		m.Get(k, d.f)
		v, _ := m.m.Load(uintptr(unsafe.Pointer(k.b)))
		entries = append(entries, v.(*memoEntry[[]byte]))
	}
	deadline := time.Now().Add(10 * time.Second)
	for m.Len() > 1 && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if n := m.Len(); n != 1 {
		t.Fatalf("%d entries, want 1 (the live key's)", n)
	}
	for _, e := range entries {
		if e.key != ([Size]byte{}) {
			t.Fatal("a forgotten entry's copy of the key was not wiped")
		}
	}
	runtime.KeepAlive(keep)
}

func TestCloneOfZeroKey(t *testing.T) {
	if c := (Key{}).Clone(); !c.IsZero() || c.Bytes() != nil {
		t.Fatal("a zero key cloned to a non-zero one")
	}
}

// equalKeys and IsZero work word by word: every byte of the key counts,
// whichever word it is in.
func TestWordwiseChecksSeeEveryByte(t *testing.T) {
	var a, b [Size]byte
	for i := range Size {
		a[i] = byte(i + 1)
	}
	b = a
	if !equalKeys(&a, &b) {
		t.Fatal("equal keys compare unequal")
	}
	for i := range Size {
		for bit := range 8 {
			c := a
			c[i] ^= 1 << bit
			if equalKeys(&a, &c) || equalKeys(&c, &a) {
				t.Fatalf("keys differing in byte %d bit %d compare equal", i, bit)
			}
			var z [Size]byte
			z[i] = 1 << bit
			if (Key{b: &z}).IsZero() {
				t.Fatalf("a key with byte %d bit %d set is zero", i, bit)
			}
		}
	}
	if !(Key{b: new([Size]byte)}).IsZero() {
		t.Fatal("a zero key is not zero")
	}
}
