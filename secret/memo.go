package secret

import (
	"crypto/subtle"
	"encoding/binary"
	"runtime"
	"sync"
	"unsafe"
	"weak"
)

// Memo caches one value derived from each key in use (an expanded cipher,
// say), so that it is computed once per key rather than once per call.
//
// Entries are per key origin: a key and every [Key.Clone] of it share
// one. An entry is served only to a key whose bytes equal, in constant
// time, the bytes it was derived from, and only while the origin's storage
// is alive (the entry holds a weak pointer to it, and is found by its
// address: storage freed and reused by another key is a different object,
// which no live weak pointer of the old one leads to). Once the origin is
// garbage, a cleanup wipes the entry's copy of the key bytes and removes
// the entry. The derived value itself cannot be wiped from Go (an AES key
// schedule, for one), so it lives, unreachable, until the collector takes
// it: one such copy per key instead of one per call.
//
// The zero Memo is ready to use; a Memo must not be copied after first use.
type Memo[T any] struct {
	m sync.Map // uintptr (origin's address) -> *memoEntry[T]
}

type memoEntry[T any] struct {
	origin weak.Pointer[[Size]byte]
	key    [Size]byte // the bytes v was derived from
	v      T
}

// Get returns derive(k's bytes), from the cache when k's origin has an
// entry for these bytes. A zero key is never cached (callers refuse zero
// keys first; Get does not rely on it). derive must not keep its argument,
// which aliases k.
func (m *Memo[T]) Get(k Key, derive func(key []byte) T) T {
	if k.IsZero() {
		return derive(make([]byte, Size))
	}
	o := k.originOf()
	addr := uintptr(unsafe.Pointer(o))
	v, found := m.m.Load(addr)
	if found {
		e := v.(*memoEntry[T])
		if e.origin.Value() == o {
			if equalKeys(&e.key, k.b) {
				return e.v
			}
			// This origin's entry, other bytes: a clone torn by a Zero
			// that raced its copy. Served, never cached: replacing a live
			// origin's entry would pin the old one (its cleanup holds it)
			// and let alternating callers grow the pinned set.
			return derive(k.b[:])
		}
	}
	// derive runs before the bytes are copied into the entry, and a key's
	// bytes only ever go from its value to zero: an entry's bytes are
	// exactly those its value was derived from.
	e := &memoEntry[T]{origin: weak.Make(o), v: derive(k.b[:])}
	e.key = *k.b
	stored := false
	if found {
		// A dead origin's entry at this address, its cleanup not run yet.
		stored = m.m.CompareAndSwap(addr, v, e)
	} else {
		var prev any
		prev, found = m.m.LoadOrStore(addr, e)
		if stored = !found; found {
			if p := prev.(*memoEntry[T]); p.origin.Value() == o && equalKeys(&p.key, k.b) {
				Wipe(e.key[:])
				return p.v
			}
		}
	}
	if !stored { // raced with another caller: served, not cached
		Wipe(e.key[:])
		return e.v
	}
	runtime.AddCleanup(o, m.forget, memoRef[T]{addr, e})
	return e.v
}

// equalKeys reports whether a and b are equal in time independent of their
// contents: a word-wise subtle.ConstantTimeCompare (which goes byte by
// byte and is a third of a cache hit's cost).
func equalKeys(a, b *[Size]byte) bool {
	var acc uint64
	for i := 0; i < Size; i += 8 {
		acc |= binary.LittleEndian.Uint64(a[i:]) ^ binary.LittleEndian.Uint64(b[i:])
	}
	return subtle.ConstantTimeEq(int32(acc>>32|acc&0xffffffff), 0) == 1
}

type memoRef[T any] struct {
	addr uintptr
	e    *memoEntry[T]
}

// forget removes an entry whose origin is garbage, unless another has
// taken its place, and wipes its copy of the key bytes.
func (m *Memo[T]) forget(r memoRef[T]) {
	Wipe(r.e.key[:]) // first: whoever sees the entry gone sees it wiped
	m.m.CompareAndDelete(r.addr, r.e)
}

// Len is the number of entries (for tests and metrics).
func (m *Memo[T]) Len() int {
	n := 0
	m.m.Range(func(any, any) bool { n++; return true })
	return n
}
