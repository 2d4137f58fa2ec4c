package envelope

import (
	"bytes"
	"crypto/aes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/ekm-dev/ekm/secret"
)

// This file builds the attack that key commitment exists to stop: one
// AES-GCM ciphertext that authenticates under two different keys
// ("invisible salamanders"). GCM alone accepts it under both data keys; the
// envelope opens it only under the project key its commitment names.

// gf is an element of GF(2^128) in GCM's bit order: hi holds bytes 0-7,
// lo bytes 8-15, big-endian; the most significant bit of byte 0 is x^0.
type gf struct{ hi, lo uint64 }

func gfLoad(b []byte) gf {
	var p [16]byte
	copy(p[:], b) // zero-pads a short final block
	return gf{binary.BigEndian.Uint64(p[:8]), binary.BigEndian.Uint64(p[8:])}
}

func (a gf) bytes() []byte {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], a.hi)
	binary.BigEndian.PutUint64(b[8:], a.lo)
	return b[:]
}

func (a gf) add(b gf) gf { return gf{a.hi ^ b.hi, a.lo ^ b.lo} }

// mul is NIST SP 800-38D algorithm 1.
func (a gf) mul(b gf) gf {
	var z gf
	v := b
	for i := range 128 {
		var bit uint64
		if i < 64 {
			bit = a.hi >> (63 - i) & 1
		} else {
			bit = a.lo >> (127 - i) & 1
		}
		if bit == 1 {
			z = z.add(v)
		}
		carry := v.lo & 1
		v.lo = v.lo>>1 | v.hi<<63
		v.hi >>= 1
		if carry == 1 {
			v.hi ^= 0xe1 << 56
		}
	}
	return z
}

func (a gf) pow(e int) gf {
	r := gf{hi: 1 << 63} // the multiplicative identity (x^0)
	for range e {
		r = r.mul(a)
	}
	return r
}

// inv is a^(2^128-2).
func (a gf) inv() gf {
	r, sq := gf{hi: 1 << 63}, a
	for i := range 128 {
		if i > 0 { // exponent bits 1..127 are set, bit 0 is clear
			r = r.mul(sq)
		}
		sq = sq.mul(sq)
	}
	return r
}

// ghash over ad and ciphertext blocks (ct is whole blocks), with the
// length block.
func ghash(h gf, ad []byte, ct []gf) gf {
	var blocks []gf
	for i := 0; i < len(ad); i += 16 {
		blocks = append(blocks, gfLoad(ad[i:min(i+16, len(ad))]))
	}
	blocks = append(blocks, ct...)
	blocks = append(blocks, gf{uint64(len(ad)) * 8, uint64(len(ct)) * 16 * 8})
	var y gf
	for _, x := range blocks {
		y = y.add(x).mul(h)
	}
	return y
}

func TestKeyCommitmentStopsMultiKeyCiphertext(t *testing.T) {
	for _, v := range []struct {
		version byte
		salt    []byte
	}{{formatV1, goldenSalt()}, {formatV2, goldenNonce()}, {formatV3, goldenNonce()}} {
		t.Run(fmt.Sprintf("v%d", v.version), func(t *testing.T) {
			testMultiKeyCiphertext(t, v.version, v.salt)
		})
	}
}

func testMultiKeyCiphertext(t *testing.T, version byte, salt []byte) {
	k1 := goldenKey(t)
	k2, _ := secret.FromBytes(bytes.Repeat([]byte{0x42}, secret.Size))
	c := goldenCtx()
	h := newHeader(version, modeSingle, c.KeyVersion, salt)

	// The data key and commitment each project key gives this header.
	keyAndCommit := func(k secret.Key) ([]byte, []byte) {
		if version == formatV1 {
			var okm [okmSize]byte
			derive(&okm, k.Bytes(), &h, c)
			return okm[:32], okm[32:]
		}
		dk := v2DataKey(t, k, &h)
		return dk, commitmentOf(t, k, &h, dk)
	}
	dk1, cm1 := keyAndCommit(k1)
	dk2, cm2 := keyAndCommit(k2)
	copy(h.raw[offCommit:], cm1) // the header names k1
	_, nonce, aadOf := bodyParams(t, k1, &h, c)

	type gcmKey struct{ h, ej0 gf }
	keyOf := func(dk []byte) gcmKey {
		b, err := aes.NewCipher(dk)
		if err != nil {
			t.Fatal(err)
		}
		var hb, j0 [16]byte
		b.Encrypt(hb[:], hb[:])
		copy(j0[:], nonce)
		j0[15] = 1
		b.Encrypt(j0[:], j0[:])
		return gcmKey{gfLoad(hb[:]), gfLoad(j0[:])}
	}
	g1, g2 := keyOf(dk1), keyOf(dk2)

	// Three ciphertext blocks; the middle one is solved for so that both
	// keys give the same tag.
	ct := []gf{gfLoad([]byte("attacker-chosen.")), {}, gfLoad([]byte("more chosen data"))}
	const free = 1
	ad := aadOf(&h)
	s1, s2 := ghash(g1.h, ad, ct), ghash(g2.h, ad, ct)
	// The free block is multiplied by H^p, p = blocks after it incl. length.
	p := len(ct) - free + 1
	rhs := g1.ej0.add(g2.ej0).add(s1).add(s2)
	ct[free] = rhs.mul(g1.h.pow(p).add(g2.h.pow(p)).inv())
	tag1 := ghash(g1.h, ad, ct).add(g1.ej0)
	tag2 := ghash(g2.h, ad, ct).add(g2.ej0)
	if tag1 != tag2 {
		t.Fatal("failed to build the two-key ciphertext")
	}
	body := append(append(append(append([]byte{}, ct[0].bytes()...), ct[1].bytes()...), ct[2].bytes()...), tag1.bytes()...)
	forged := append(bytes.Clone(h.raw[:]), body...)

	// Plain AES-GCM (no commitment) accepts it under both data keys...
	for i, dk := range [][]byte{dk1, dk2} {
		if _, err := dataAEAD(dk).Open(nil, nonce, body, ad); err != nil {
			t.Fatalf("GCM with data key %d rejected the two-key ciphertext: %v", i+1, err)
		}
	}
	// ... the envelope opens it only under the key its commitment names.
	if _, err := Open(func(uint32) (secret.Key, error) { return k1, nil }, *c, forged); err != nil {
		t.Fatalf("Open with k1 err = %v, want nil", err)
	}
	if _, err := Open(func(uint32) (secret.Key, error) { return k2, nil }, *c, forged); !errors.Is(err, ErrAuth) {
		t.Fatalf("Open with k2 err = %v, want ErrAuth", err)
	}
	// Putting k2's commitment in the header instead changes the associated
	// data, so the tag no longer verifies under either key.
	copy(forged[offCommit:], cm2)
	for _, k := range []secret.Key{k1, k2} {
		if _, err := Open(func(uint32) (secret.Key, error) { return k, nil }, *c, forged); !errors.Is(err, ErrAuth) {
			t.Fatalf("Open with swapped commitment err = %v, want ErrAuth", err)
		}
	}
}
