// Package secret holds plaintext key material in a type that cannot leak by
// accident: it never prints, never marshals to JSON or text, and is zeroed
// when its owner is done with it.
//
// The only way to reach the bytes is [Key.Bytes], which makes every use of
// raw key material easy to find in review.
package secret

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
)

// Size is the size in bytes of every symmetric key in ekm (AES-256).
const Size = 32

const redacted = "secret.Key(REDACTED)"

// Key is a 256-bit symmetric key. The zero value is an empty (unusable) key.
// Copying a Key copies the pointer to the same bytes, so Zero on any copy
// destroys them all: keep one owner, and give others a [Key.Clone].
type Key struct {
	b *[Size]byte
	// origin is the storage this key was cloned from (nil: b is its own
	// origin). A [Memo] serves every clone of one key from one entry.
	origin *[Size]byte
}

// ErrEmpty is returned when an empty or zeroed key is used.
var ErrEmpty = errors.New("secret: empty key")

// New returns a fresh random key.
func New() Key {
	var b [Size]byte
	if _, err := rand.Read(b[:]); err != nil {
		// crypto/rand never fails on supported platforms; if it does, nothing
		// else is safe either.
		panic("secret: crypto/rand failed: " + err.Error())
	}
	return Key{b: &b}
}

// FromBytes copies b into a new Key. b must be exactly Size bytes; the caller
// should zero its own copy afterwards (see Wipe).
func FromBytes(b []byte) (Key, error) {
	if len(b) != Size {
		return Key{}, fmt.Errorf("secret: key must be %d bytes, got %d", Size, len(b))
	}
	var k [Size]byte
	copy(k[:], b)
	return Key{b: &k}, nil
}

// Clone returns a copy of k in storage of its own: zeroing either leaves
// the other intact. The copy keeps k's origin, so a value a [Memo] derived
// from k is served to its clones too (the keyring hands every request a
// clone of its cached key). A zero Key clones to a zero Key.
func (k Key) Clone() Key {
	if k.b == nil {
		return Key{}
	}
	c := new([Size]byte)
	*c = *k.b
	return Key{b: c, origin: k.originOf()}
}

// originOf is the storage k was first cloned from.
func (k Key) originOf() *[Size]byte {
	if k.origin != nil {
		return k.origin
	}
	return k.b
}

// Bytes returns the key material. The slice aliases the key: do not keep it
// beyond the key's lifetime and do not modify it.
func (k Key) Bytes() []byte {
	if k.b == nil {
		return nil
	}
	return k.b[:]
}

// IsZero reports whether the key is empty or has been zeroed.
func (k Key) IsZero() bool {
	if k.b == nil {
		return true
	}
	var acc uint64 // word by word: it is on every data-plane request's path
	for i := 0; i < Size; i += 8 {
		acc |= binary.LittleEndian.Uint64(k.b[i:])
	}
	return acc == 0
}

// Zero overwrites the key material. Safe to call more than once.
func (k Key) Zero() {
	if k.b != nil {
		Wipe(k.b[:])
	}
}

// Wipe zeroes b.
func Wipe(b []byte) {
	clear(b)
}

func (Key) String() string               { return redacted }
func (Key) GoString() string             { return redacted }
func (Key) Format(f fmt.State, _ rune)   { _, _ = f.Write([]byte(redacted)) }
func (Key) MarshalJSON() ([]byte, error) { return nil, errors.New("secret: refusing to marshal a key") }
func (Key) MarshalText() ([]byte, error) { return nil, errors.New("secret: refusing to marshal a key") }
func (Key) MarshalBinary() ([]byte, error) {
	return nil, errors.New("secret: refusing to marshal a key")
}
func (Key) LogValue() slog.Value { return slog.StringValue(redacted) }
