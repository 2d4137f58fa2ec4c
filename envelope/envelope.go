// Package envelope is ekm's ciphertext format for everything encrypted under a
// project key: crypto API payloads, file names, small objects (single-shot,
// [Seal]/[Open]) and Files API content (streaming, [NewWriter]/[NewReader]).
//
// Every ciphertext starts with a fixed-size, versioned header that records the
// project key version, a random per-object value and a key commitment. The
// body is AES-256-GCM under a per-object data key; streams are cut into
// 64 KiB segments using the STREAM construction, so truncation, reordering
// and segment swaps are detected.
//
// Three format versions exist (docs/FORMAT.md); all are always readable, and
// Seal and NewWriter write version 3 unless [SetWriteVersion] says otherwise:
//   - version 3: as version 2, but the commitment is the KC-XAES-256-GCM key
//     commitment (eprint 2025/758: CMAC-AES-256 under the project key over
//     the nonce), three AES blocks instead of a SHA-256 compression;
//   - version 2: the data key is the XAES-256-GCM subkey (c2sp.org/XAES-256-GCM,
//     a NIST SP 800-108r1 CMAC-AES-256 KDF) of the project key and a random
//     192-bit nonce, so every segment is an XAES-256-GCM ciphertext; the
//     commitment is SHA-256 of a label and the data key, and the [Context] is
//     authenticated as associated data after the header;
//   - version 1: the data key and commitment come from HKDF-SHA256 over the
//     header (salt included) and the Context.
//
// Consequences callers can rely on, in every version:
//   - a ciphertext opened with any other org, project, object, caller context
//     or key fails with [ErrAuth] before any plaintext is produced;
//   - a ciphertext cannot be made to open under two different project keys
//     (the commitment is checked in constant time before decryption), and
//     decrypts to at most one plaintext whatever key and context are tried;
//   - errors never contain key material or plaintext.
//
// The byte layout is specified in docs/FORMAT.md. Compatibility promise: a
// ciphertext written by any released version of this package can be opened
// by every later version. Layout changes get a new format version byte; the
// layout of a released version never changes.
package envelope

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/ekm-dev/ekm/secret"
)

// Sentinel errors; test with errors.Is. All integrity failures (wrong key,
// wrong context, tampering, truncation, reordering) match ErrAuth.
var (
	// ErrFormat: the input is not a ciphertext this package can parse
	// (bad magic, unknown format version or mode, wrong API for the mode).
	ErrFormat = errors.New("envelope: malformed ciphertext")
	// ErrAuth: the ciphertext does not authenticate under the key and context
	// given, or has been modified.
	ErrAuth = errors.New("envelope: message authentication failed (wrong key or context, or modified ciphertext)")
	// ErrTruncated: the ciphertext ends before its final segment. It also
	// matches ErrAuth.
	ErrTruncated = fmt.Errorf("%w: ciphertext truncated", ErrAuth)
	// ErrContext: the Context is unusable (missing org or project, or a
	// field over its size bound).
	ErrContext = errors.New("envelope: invalid context")
)

// Size bounds on Context fields, so the key derivation input stays small and
// a caller cannot make it arbitrarily expensive.
const (
	MaxIDLen     = 256
	MaxCallerLen = 64 << 10
)

// Context is bound into every ciphertext: a ciphertext moved to another
// org/project/object, or opened with another caller context, fails.
// OrgID and ProjectID are required; ObjectID and Caller may be empty (a nil
// and an empty Caller are the same context).
type Context struct {
	OrgID, ProjectID, ObjectID string
	// KeyVersion is the project key version used to seal; it is recorded in
	// the header. Open and NewReader ignore it and use the header's version.
	KeyVersion uint32
	// Caller is optional caller-supplied context (e.g. the crypto API
	// "context" field).
	Caller []byte
}

// KeyFunc returns the project key for a version recorded in a ciphertext
// header. The envelope package never zeroes keys it is given: the caller
// (typically a key cache) owns them.
type KeyFunc func(version uint32) (secret.Key, error)

// Sizes in bytes (docs/FORMAT.md).
const (
	// HeaderSize is the size of the header every ciphertext starts with.
	HeaderSize = prefixSize + saltSize + commitSize
	// TagSize is the AES-GCM tag added to every segment.
	TagSize = 16
	// SingleOverhead is the number of bytes Seal adds to a plaintext.
	SingleOverhead = HeaderSize + TagSize
)

// Format versions (docs/FORMAT.md).
const (
	// Version1 is the HKDF-SHA256 format. It is read forever; write it only
	// while readers that do not know Version2 may still read the data.
	Version1 = 1
	// Version2 is the XAES-256-GCM format with a SHA-256 commitment. It is
	// read forever; write it while readers that do not know Version3 may
	// still read the data, or to keep a commitment that rests on SHA-256
	// rather than on AES-256 (docs/FORMAT.md, Version 3, point 2).
	Version2 = 2
	// Version3 is the KC-XAES-256-GCM format, written by default.
	Version3 = 3
)

// Format constants (docs/FORMAT.md).
const (
	magic         = "ekme"
	formatV1      = Version1
	formatV2      = Version2
	formatV3      = Version3
	modeSingle    = 0x01
	modeStream    = 0x02
	prefixSize    = 4 + 1 + 1 + 4 // magic, version, mode, key version
	saltSize      = 32
	commitSize    = 32
	offKeyVersion = 6
	offSalt       = prefixSize
	offCommit     = prefixSize + saltSize
	// Versions 2 and 3 split the salt field into the XAES-256-GCM nonce and
	// reserved bytes that must be zero.
	xnonceSize   = 24
	offReserved  = offSalt + xnonceSize
	reservedSize = saltSize - xnonceSize
	nonceSize    = 12
	finalFlag    = 0x01
	nonFinalFlag = 0x00
	okmSize      = 32 + commitSize // data key || commitment
)

// writeVersion is the format version Seal and NewWriter write.
var writeVersion atomic.Uint32

func init() { writeVersion.Store(Version3) }

// SetWriteVersion sets the format version that Seal and NewWriter write from
// now on, process-wide: [Version3] (the default), [Version2] or [Version1].
// Readers open all three whatever this says. Writing an older version is
// for a rolling upgrade from a release that cannot read the newer one
// (docs/FORMAT.md, "Compatibility promise"), or, for Version2, to keep its
// SHA-256 key commitment.
func SetWriteVersion(v int) error {
	if v != Version1 && v != Version2 && v != Version3 {
		return fmt.Errorf("envelope: cannot write format version %d", v)
	}
	writeVersion.Store(uint32(v))
	return nil
}

// WriteVersion returns the format version Seal and NewWriter write.
func WriteVersion() int { return int(writeVersion.Load()) }

// header is the fixed-size header (the same size and field offsets in every
// version). raw is its exact encoding, used as associated data.
type header struct {
	raw [HeaderSize]byte
}

func (h *header) version() byte      { return h.raw[4] }
func (h *header) keyVersion() uint32 { return binary.BigEndian.Uint32(h.raw[offKeyVersion:]) }
func (h *header) commitment() []byte { return h.raw[offCommit : offCommit+commitSize] }

// newHeader builds a header with an unset commitment. salt is the version 1
// salt (32 bytes) or the version 2 and 3 XAES-256-GCM nonce (24 bytes; the
// reserved bytes after it stay zero).
func newHeader(version, mode byte, keyVersion uint32, salt []byte) header {
	var h header
	writePrefix(h.raw[:], version, mode, keyVersion)
	copy(h.raw[offSalt:], salt)
	return h
}

// writePrefix writes the 10-byte header prefix to b.
func writePrefix(b []byte, version, mode byte, keyVersion uint32) {
	copy(b, magic)
	b[4] = version
	b[5] = mode
	binary.BigEndian.PutUint32(b[offKeyVersion:], keyVersion)
}

// parseHeader validates b's header. It never reads past len(b) and only
// fixed offsets are used: there are no length fields to trust.
func parseHeader(b []byte, wantMode byte) (header, error) {
	var h header
	n := min(len(b), len(magic))
	if string(b[:n]) != magic[:n] {
		return h, fmt.Errorf("%w: not an ekm envelope", ErrFormat)
	}
	if len(b) > len(magic) && b[4] != formatV1 && !isXAES(b[4]) {
		return h, fmt.Errorf("%w: unsupported format version %d", ErrFormat, b[4])
	}
	if len(b) > 5 && b[5] != modeSingle && b[5] != modeStream {
		return h, fmt.Errorf("%w: unknown mode %d", ErrFormat, b[5])
	}
	if len(b) < HeaderSize {
		return h, fmt.Errorf("%w: header is %d bytes, need %d", ErrTruncated, len(b), HeaderSize)
	}
	if isXAES(b[4]) && !allZero(b[offReserved:offCommit]) {
		return h, fmt.Errorf("%w: reserved header bytes are not zero", ErrFormat)
	}
	if wantMode != 0 && b[5] != wantMode {
		if b[5] == modeStream {
			return h, fmt.Errorf("%w: streaming ciphertext, use NewReader", ErrFormat)
		}
		return h, fmt.Errorf("%w: single-shot ciphertext, use Open", ErrFormat)
	}
	copy(h.raw[:], b)
	return h, nil
}

// isXAES reports whether format version v is one of the XAES-256-GCM
// versions (2 and 3), which differ only in their commitment.
func isXAES(v byte) bool { return v == formatV2 || v == formatV3 }

func (c *Context) validate() error {
	switch {
	case c.OrgID == "":
		return fmt.Errorf("%w: org id is required", ErrContext)
	case c.ProjectID == "":
		return fmt.Errorf("%w: project id is required", ErrContext)
	case len(c.OrgID) > MaxIDLen, len(c.ProjectID) > MaxIDLen, len(c.ObjectID) > MaxIDLen:
		return fmt.Errorf("%w: ids are limited to %d bytes", ErrContext, MaxIDLen)
	case len(c.Caller) > MaxCallerLen:
		return fmt.Errorf("%w: caller context is limited to %d bytes", ErrContext, MaxCallerLen)
	}
	return nil
}

func allZero(b []byte) bool {
	var acc byte
	for _, x := range b {
		acc |= x
	}
	return acc == 0
}

// appendEncoding appends the context's fields, each length-prefixed, so no
// two distinct contexts encode alike.
func (c *Context) appendEncoding(dst []byte) []byte {
	for _, f := range [...]string{c.OrgID, c.ProjectID, c.ObjectID} {
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(f)))
		dst = append(dst, f...)
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(c.Caller)))
	return append(dst, c.Caller...)
}

// encodingSize is len(c.appendEncoding(nil)).
func (c *Context) encodingSize() int {
	return 4*4 + len(c.OrgID) + len(c.ProjectID) + len(c.ObjectID) + len(c.Caller)
}

// appendInfo appends the version 1 HKDF info: the header up to the
// commitment (magic, version, mode, key version, salt) and the context.
func appendInfo(dst []byte, h *header, c *Context) []byte {
	return c.appendEncoding(append(dst, h.raw[:offCommit]...))
}

// derive computes the data key and commitment for h and c into okm:
// okm = HKDF-Expand-SHA256(PRK = project key, info, L = 64);
// data key = okm[:32], commitment = okm[32:].
//
// Extract is skipped as RFC 5869 section 3.3 allows for a key that is
// already uniformly random (project keys come from crypto/rand); the
// per-object salt is in the info instead. This saves a third of the hashing
// for small objects.
//
// HMAC is written out (RFC 2104 over one-shot sha256.Sum256) instead of using
// crypto/hkdf because crypto/hmac's allocations cost more than the hashing
// for small objects; every intermediate lives on the stack and is wiped.
// TestHKDFMatchesStdlib checks it against crypto/hkdf.Expand.
func derive(okm *[okmSize]byte, projectKey []byte, h *header, c *Context) {
	// buf holds [pad slot (64) | T1 slot (32) | info | counter]. The T1
	// input is buf[32:] (key^ipad in buf[32:96]); the T2 input is all of
	// buf (key^ipad in buf[:64], T1 after it).
	var stack [512]byte
	buf := append(stack[:0], make([]byte, blockSize+sha256.Size)...)
	buf = appendInfo(buf, h, c)
	buf = append(buf, 1)
	xorPad(buf[sha256.Size:blockSize+sha256.Size], projectKey, ipadBlock)
	t1 := hmacOuter(projectKey, sha256.Sum256(buf[sha256.Size:]))
	copy(okm[:32], t1[:])

	xorPad(buf[:blockSize], projectKey, ipadBlock)
	copy(buf[blockSize:], t1[:])
	buf[len(buf)-1] = 2
	t2 := hmacOuter(projectKey, sha256.Sum256(buf))
	copy(okm[32:], t2[:])

	secret.Wipe(buf)
	secret.Wipe(t1[:])
	secret.Wipe(t2[:])
}

const (
	blockSize = 64 // SHA-256 block size
	ipad      = 0x36
	opad      = 0x5c
)

var (
	ipadBlock = bytes.Repeat([]byte{ipad}, blockSize)
	opadBlock = bytes.Repeat([]byte{opad}, blockSize)
)

// xorPad writes key (at most blockSize bytes) XOR pad, zero-extended, to
// dst (blockSize bytes). padBlock is ipadBlock or opadBlock.
func xorPad(dst, key, padBlock []byte) {
	n := subtle.XORBytes(dst, key, padBlock)
	copy(dst[n:], padBlock[n:])
}

// hmacOuter finishes HMAC-SHA256: H((key^opad) || inner).
func hmacOuter(key []byte, inner [sha256.Size]byte) [sha256.Size]byte {
	var o [blockSize + sha256.Size]byte
	xorPad(o[:blockSize], key, opadBlock)
	copy(o[blockSize:], inner[:])
	sum := sha256.Sum256(o[:])
	secret.Wipe(o[:])
	return sum
}

// dataAEAD returns the AES-256-GCM AEAD for a 32-byte data key. The caller
// wipes the key; the cipher's internal key schedule cannot be wiped from Go.
func dataAEAD(dataKey []byte) cipher.AEAD {
	block, err := aes.NewCipher(dataKey)
	if err != nil {
		panic("envelope: aes.NewCipher: " + err.Error()) // 32-byte key: cannot fail
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic("envelope: cipher.NewGCM: " + err.Error()) // standard nonce/tag: cannot fail
	}
	return aead
}

// commitLabel is the version 2 commitment's domain separation label. With
// the 32-byte data key after it, the commitment input fits in one SHA-256
// block (at most 55 bytes).
const commitLabel = "ekm envelope v2 commit"

// projectCipher is what the version 2 and 3 derivations need of a project
// key: AES-256 under it and the CMAC subkey K1 (c2sp.org/XAES-256-GCM,
// steps 1–2, "precomputed and reused across every operation that uses the
// same input key"). It is read-only once built.
type projectCipher struct {
	block cipher.Block
	k1    [16]byte
	// k1Hi, k1Lo are k1 as big-endian words: the derivation builds its
	// blocks in registers (bytewise stores read back as one block stall
	// the CPU's store forwarding).
	k1Hi, k1Lo uint64
}

// newProjectCipher expands key (32 bytes) and computes K1 in constant time:
// L = AES-256_K(0^128); K1 = L << 1, XOR 0x87 into the last byte if MSB(L)
// was set (a mask, not a branch).
func newProjectCipher(key []byte) *projectCipher {
	b, err := aes.NewCipher(key)
	if err != nil {
		panic("envelope: aes.NewCipher: " + err.Error()) // 32-byte key: cannot fail
	}
	pc := &projectCipher{block: b}
	k1 := pc.k1[:]
	b.Encrypt(k1, k1)
	msb := k1[0] >> 7
	for i := range 15 {
		k1[i] = k1[i]<<1 | k1[i+1]>>7
	}
	k1[15] = k1[15]<<1 ^ 0x87&-msb
	pc.k1Hi, pc.k1Lo = binary.BigEndian.Uint64(k1), binary.BigEndian.Uint64(k1[8:])
	return pc
}

// projectCiphers caches the projectCipher of each project key in use: once
// per key, shared by its clones (the keyring hands each request a clone of
// its cached key), dropped once the key's origin is garbage (secret.Memo).
// The AES key schedule cannot be wiped from Go; caching means one such copy
// per project key instead of one per ciphertext.
var projectCiphers secret.Memo[*projectCipher]

// projectCipherOf returns the (cached) projectCipher of a non-zero key.
func projectCipherOf(key secret.Key) *projectCipher {
	return projectCiphers.Get(key, newProjectCipher)
}

// xaesSubkey computes the XAES-256-GCM subkey Kx (c2sp.org/XAES-256-GCM,
// "Detailed key derivation algorithm", steps 3–5) under pc for the nonce
// whose first 12 bytes are n12, into kx (32 bytes). With steps 1–2 in pc it
// is the NIST SP 800-108r1 counter-mode KDF with CMAC-AES-256, label "X",
// context n12 and no L field: every CMAC input is one complete block, so
// CMAC is one AES call on the block XOR K1. No branch or index depends on
// key material. kx reaches cipher.Block, so it is heap memory (a stack
// buffer would escape anyway); the caller wipes it.
func xaesSubkey(pc *projectCipher, n12, kx []byte) {
	putSubkeyBlocks(pc, n12, kx)
	pc.block.Encrypt(kx[:16], kx[:16])
	pc.block.Encrypt(kx[16:32], kx[16:32])
}

// putSubkeyBlocks writes M_1 ⊕ K1 and M_2 ⊕ K1 to kx, where
// M_i = 00 || i (16 bits) || "X" || 00 || n12.
func putSubkeyBlocks(pc *projectCipher, n12, kx []byte) {
	hi := 'X'<<40 | uint64(binary.BigEndian.Uint32(n12))
	lo := binary.BigEndian.Uint64(n12[4:12]) ^ pc.k1Lo
	putBlock(kx[:16], (hi|1<<48)^pc.k1Hi, lo)
	putBlock(kx[16:32], (hi|2<<48)^pc.k1Hi, lo)
}

// putBlock writes the 16-byte block hi || lo (big-endian) to b.
func putBlock(b []byte, hi, lo uint64) {
	binary.BigEndian.PutUint64(b[:8], hi)
	binary.BigEndian.PutUint64(b[8:16], lo)
}

// commitV2 is the version 2 key commitment: SHA-256(commitLabel || Kx).
func commitV2(kx []byte) [commitSize]byte {
	var buf [len(commitLabel) + 32]byte
	copy(buf[:], commitLabel)
	copy(buf[len(commitLabel):], kx)
	sum := sha256.Sum256(buf[:])
	secret.Wipe(buf[:])
	return sum
}

// kcLabel starts every KC-XAES-256-GCM commitment input.
const kcLabel = "XCMT"

// kcXAES computes the KC-XAES-256-GCM key commitment (Kampanakis, Halevi,
// Ebeid, Campagna, "Blockcipher-Based Key Commitment for Nonce-Derived
// Schemes", eprint 2025/758) of the 24-byte nonce n under pc into kc (32
// bytes), using x (16 bytes) as scratch, which it wipes:
//
//	kc = CMAC(K, "XCMT" || n || 00 01 00 01) || CMAC(K, "XCMT" || n || 00 01 00 02)
//
// Both CMAC inputs are two complete blocks with the same first block, so
// X1 = AES-256(K, "XCMT" || n[0:12]) is computed once and each half of kc
// is AES-256(K, (n[12:24] || 00 01 00 0i) ⊕ X1 ⊕ K1). X1 is secret: the
// scratch holding it is wiped (X1 ⊕ K1 lives only in registers and in kc
// before its encryption; Go cannot wipe registers or spilled locals). Every buffer reaches cipher.Block, so it is heap memory
// supplied by the caller.
func kcXAES(pc *projectCipher, n, kc, x []byte) {
	putKCFirst(n, x)
	pc.block.Encrypt(x, x)
	kcFinish(pc, n, kc, x)
}

// xaesSubkeyKC is xaesSubkey and kcXAES in one: the three AES calls that
// do not depend on each other are issued together, so the CPU overlaps
// them, then the two that depend on X1.
func xaesSubkeyKC(pc *projectCipher, n, kx, kc, x []byte) {
	putSubkeyBlocks(pc, n[:12], kx)
	putKCFirst(n, x)
	pc.block.Encrypt(kx[:16], kx[:16])
	pc.block.Encrypt(kx[16:32], kx[16:32])
	pc.block.Encrypt(x, x)
	kcFinish(pc, n, kc, x)
}

// putKCFirst writes the first block of both commitment inputs,
// "XCMT" || n[0:12], to x.
func putKCFirst(n, x []byte) {
	putBlock(x, uint64(binary.BigEndian.Uint32([]byte(kcLabel)))<<32|uint64(binary.BigEndian.Uint32(n)),
		binary.BigEndian.Uint64(n[4:12]))
}

// kcFinish computes kc from X1 (in x), then wipes x.
func kcFinish(pc *projectCipher, n, kc, x []byte) {
	hi := binary.BigEndian.Uint64(x) ^ pc.k1Hi ^ binary.BigEndian.Uint64(n[12:20])
	lo := binary.BigEndian.Uint64(x[8:]) ^ pc.k1Lo ^ (uint64(binary.BigEndian.Uint32(n[20:24]))<<32 | 1<<16)
	secret.Wipe(x)
	putBlock(kc[:16], hi, lo^1)
	putBlock(kc[16:32], hi, lo^2)
	pc.block.Encrypt(kc[:16], kc[:16])
	pc.block.Encrypt(kc[16:32], kc[16:32])
}

// deriveXAES computes the data AEAD and commitment of a version 2 or 3
// header h under a non-zero project key.
func deriveXAES(projectKey secret.Key, h *header) (cipher.AEAD, [commitSize]byte) {
	buf := make([]byte, 32+commitSize+16) // kx, commitment, scratch
	defer secret.Wipe(buf)
	kx, kc := buf[:32], buf[32:32+commitSize]
	deriveInto(h.version(), projectCipherOf(projectKey), h.raw[offSalt:offReserved], kx, kc, buf[32+commitSize:])
	var commit [commitSize]byte
	copy(commit[:], kc)
	return dataAEAD(kx), commit
}

// deriveInto computes, under pc, the data key of the 24-byte nonce n into
// kx and the commitment of version v (2 or 3) into kc, with x (16 bytes)
// as scratch. The caller wipes kx.
func deriveInto(v byte, pc *projectCipher, n, kx, kc, x []byte) {
	if v == formatV3 {
		xaesSubkeyKC(pc, n, kx, kc, x)
		return
	}
	xaesSubkey(pc, n[:12], kx)
	c := commitV2(kx)
	copy(kc, c[:])
}

// body is what one ciphertext's body is sealed or opened with.
type body struct {
	aead cipher.AEAD
	// aad is every segment's associated data: the header (version 1), or
	// the header followed by the encoded context (versions 2 and 3).
	aad []byte
	// base is XORed into every STREAM nonce: zero in version 1, the last
	// 12 bytes of the XAES-256-GCM nonce in versions 2 and 3.
	base [nonceSize]byte
}

// nonce writes the nonce of segment counter to n.
func (b *body) nonce(n *[nonceSize]byte, counter uint64, final bool) {
	streamNonce(n[:], b.base[:], counter, final)
}

// xaesBody builds the version 2 or 3 body parameters of h, whose commitment
// is set.
func xaesBody(aead cipher.AEAD, h *header, c *Context) *body {
	b := &body{aead: aead, aad: make([]byte, 0, HeaderSize+c.encodingSize())}
	b.aad = c.appendEncoding(append(b.aad, h.raw[:]...))
	copy(b.base[:], h.raw[offSalt+12:offSalt+xnonceSize])
	return b
}

// sealKeys derives the body parameters for a new header and fills in its
// commitment. h must outlive the body (version 1 uses h.raw as the
// associated data).
func sealKeys(key secret.Key, h *header, c *Context) (*body, error) {
	if key.IsZero() {
		return nil, fmt.Errorf("envelope: %w", secret.ErrEmpty)
	}
	if isXAES(h.version()) {
		aead, commit := deriveXAES(key, h)
		copy(h.raw[offCommit:], commit[:])
		return xaesBody(aead, h, c), nil
	}
	return &body{aead: sealKeysV1(key, h, c), aad: h.raw[:]}, nil
}

// sealKeysV1 derives the version 1 data AEAD for a new header and fills in
// its commitment. key is not zero.
func sealKeysV1(key secret.Key, h *header, c *Context) cipher.AEAD {
	var okm [okmSize]byte
	defer secret.Wipe(okm[:])
	derive(&okm, key.Bytes(), h, c)
	copy(h.raw[offCommit:], okm[32:])
	return dataAEAD(okm[:32])
}

// projectKey looks up the header's key version.
func projectKey(keys KeyFunc, h *header) (secret.Key, error) {
	if keys == nil {
		return secret.Key{}, errors.New("envelope: nil KeyFunc")
	}
	v := h.keyVersion()
	key, err := keys(v)
	if err != nil {
		return secret.Key{}, fmt.Errorf("envelope: project key version %d: %w", v, err)
	}
	if key.IsZero() {
		return secret.Key{}, fmt.Errorf("envelope: project key version %d: %w", v, secret.ErrEmpty)
	}
	return key, nil
}

// openKeys looks up the header's key version, derives the data key and
// checks the commitment in constant time before any decryption happens.
// h must outlive the body.
func openKeys(keys KeyFunc, h *header, c *Context) (*body, error) {
	if h.version() == formatV1 {
		aead, err := openKeysV1(keys, h, c)
		if err != nil {
			return nil, err
		}
		return &body{aead: aead, aad: h.raw[:]}, nil
	}
	key, err := projectKey(keys, h)
	if err != nil {
		return nil, err
	}
	aead, commit := deriveXAES(key, h)
	if subtle.ConstantTimeCompare(commit[:], h.commitment()) != 1 {
		return nil, ErrAuth
	}
	return xaesBody(aead, h, c), nil
}

// openKeysV1 is openKeys for version 1, returning the data AEAD.
func openKeysV1(keys KeyFunc, h *header, c *Context) (cipher.AEAD, error) {
	key, err := projectKey(keys, h)
	if err != nil {
		return nil, err
	}
	var okm [okmSize]byte
	defer secret.Wipe(okm[:])
	derive(&okm, key.Bytes(), h, c)
	if subtle.ConstantTimeCompare(okm[32:], h.commitment()) != 1 {
		return nil, ErrAuth
	}
	return dataAEAD(okm[:32]), nil
}

// singleNonce is the version 1 nonce of a single-shot body: the STREAM nonce
// of a lone final segment (counter 0, final flag). It is never written to.
var singleNonce = [nonceSize]byte{nonceSize - 1: finalFlag}

// segmentNonce is the STREAM nonce: 11-byte big-endian counter || flag.
func segmentNonce(n *[nonceSize]byte, counter uint64, final bool) {
	streamNonce(n[:], nil, counter, final)
}

// streamNonce writes (11-byte big-endian counter || flag) XOR base to
// n[:12]; a nil base is zero.
func streamNonce(n, base []byte, counter uint64, final bool) {
	hi, lo := counter>>24, uint32(counter)<<8|nonFinalFlag // 00 00 00 || counter || flag
	if final {
		lo |= finalFlag
	}
	if base != nil {
		hi ^= binary.BigEndian.Uint64(base[:8])
		lo ^= binary.BigEndian.Uint32(base[8:nonceSize])
	}
	binary.BigEndian.PutUint64(n[:8], hi)
	binary.BigEndian.PutUint32(n[8:nonceSize], lo)
}

// Seal encrypts plaintext under a fresh data key derived from key, bound to c,
// in the format version [WriteVersion] returns.
// The result is SingleOverhead bytes longer than plaintext.
func Seal(key secret.Key, c Context, plaintext []byte) ([]byte, error) {
	var salt [saltSize]byte
	n := saltSize
	v := byte(writeVersion.Load())
	if isXAES(v) {
		n = xnonceSize
	}
	if _, err := rand.Read(salt[:n]); err != nil {
		return nil, fmt.Errorf("envelope: reading randomness: %w", err)
	}
	return seal(v, key, &c, plaintext, salt[:n])
}

// seal is Seal with the version and the salt (version 1) or XAES-256-GCM
// nonce (versions 2 and 3) supplied (the golden test vectors use it).
func seal(version byte, key secret.Key, c *Context, plaintext, salt []byte) ([]byte, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	if isXAES(version) {
		return sealXAES(version, key, c, plaintext, salt)
	}
	if key.IsZero() {
		return nil, fmt.Errorf("envelope: %w", secret.ErrEmpty)
	}
	h := newHeader(formatV1, modeSingle, c.KeyVersion, salt)
	aead := sealKeysV1(key, &h, c)
	out := make([]byte, HeaderSize, HeaderSize+len(plaintext)+TagSize)
	copy(out, h.raw[:])
	return aead.Seal(out, singleNonce[:], plaintext, out[:HeaderSize]), nil
}

// singleXAES is the one allocation of a version 2 or 3 single-shot
// operation: the output (ciphertext or plaintext) and, after it, the
// buffers that reach cipher.Block and cipher.AEAD and so would each be a
// heap allocation of their own (the data key, the commitment and its
// scratch block, the nonce, the associated data). Only
// out[:len(out):len(out)] is returned to the caller; kx and x are wiped
// before that, the rest is public.
type singleXAES struct {
	out, kx, kc, x, nonce, aad []byte
}

func newSingleXAES(outLen int, c *Context) singleXAES {
	const fixed = 32 + commitSize + 16 + nonceSize
	b := make([]byte, outLen+fixed, outLen+fixed+HeaderSize+c.encodingSize())
	f := b[outLen:]
	return singleXAES{
		out:   b[:outLen],
		kx:    f[:32],
		kc:    f[32 : 32+commitSize],
		x:     f[32+commitSize : 32+commitSize+16],
		nonce: f[32+commitSize+16 : fixed],
		aad:   f[fixed:fixed],
	}
}

// sealXAES is seal for versions 2 and 3, with xnonce the 24-byte
// XAES-256-GCM nonce.
func sealXAES(version byte, key secret.Key, c *Context, plaintext, xnonce []byte) ([]byte, error) {
	if key.IsZero() {
		return nil, fmt.Errorf("envelope: %w", secret.ErrEmpty)
	}
	n := HeaderSize + len(plaintext) + TagSize
	op := newSingleXAES(n, c)
	ct := op.out
	writePrefix(ct, version, modeSingle, c.KeyVersion)
	copy(ct[offSalt:offReserved], xnonce) // the reserved bytes stay zero
	deriveInto(version, projectCipherOf(key), xnonce, op.kx, op.kc, op.x)
	aead := dataAEAD(op.kx)
	secret.Wipe(op.kx)
	copy(ct[offCommit:], op.kc)
	streamNonce(op.nonce, xnonce[12:], 0, true)
	aad := c.appendEncoding(append(op.aad, ct[:HeaderSize]...))
	aead.Seal(ct[:HeaderSize], op.nonce, plaintext, aad) // fills ct[HeaderSize:n]
	return ct[:n:n], nil
}

// Open decrypts a ciphertext made by Seal (any format version). The key
// version comes from the header (c.KeyVersion is ignored) and is itself
// authenticated.
func Open(keys KeyFunc, c Context, ciphertext []byte) ([]byte, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	h, err := parseHeader(ciphertext, modeSingle)
	if err != nil {
		return nil, err
	}
	body := ciphertext[HeaderSize:]
	if len(body) < TagSize {
		return nil, fmt.Errorf("%w: body is %d bytes, need at least %d", ErrTruncated, len(body), TagSize)
	}
	if isXAES(h.version()) {
		return openXAES(keys, &h, &c, ciphertext)
	}
	aead, err := openKeysV1(keys, &h, &c)
	if err != nil {
		return nil, err
	}
	pt, err := aead.Open(make([]byte, 0, len(body)-TagSize), singleNonce[:], body, ciphertext[:HeaderSize])
	if err != nil {
		return nil, ErrAuth
	}
	return pt, nil
}

// openXAES is Open for versions 2 and 3 once the header is parsed.
func openXAES(keys KeyFunc, h *header, c *Context, ciphertext []byte) ([]byte, error) {
	key, err := projectKey(keys, h)
	if err != nil {
		return nil, err
	}
	ptLen := len(ciphertext) - HeaderSize - TagSize
	op := newSingleXAES(ptLen, c)
	xnonce := h.raw[offSalt:offReserved]
	deriveInto(h.version(), projectCipherOf(key), xnonce, op.kx, op.kc, op.x)
	if subtle.ConstantTimeCompare(op.kc, h.commitment()) != 1 {
		secret.Wipe(op.kx)
		return nil, ErrAuth
	}
	aead := dataAEAD(op.kx)
	secret.Wipe(op.kx)
	streamNonce(op.nonce, xnonce[12:], 0, true)
	aad := c.appendEncoding(append(op.aad, ciphertext[:HeaderSize]...))
	pt, err := aead.Open(op.out[:0], op.nonce, ciphertext[HeaderSize:], aad)
	if err != nil {
		return nil, ErrAuth // GCM has wiped op.out
	}
	return pt[:ptLen:ptLen], nil
}

// FormatVersion returns the format version ([Version1], [Version2] or
// [Version3]) of a ciphertext (single-shot or streaming; the byte after the
// magic, see docs/FORMAT.md) without authenticating anything: use it to
// report or check what was written, never as proof of integrity.
func FormatVersion(ciphertext []byte) (int, error) {
	h, err := parseHeader(ciphertext, 0)
	if err != nil {
		return 0, err
	}
	return int(h.version()), nil
}

// KeyVersion returns the project key version recorded in a ciphertext's
// header (single-shot or streaming) without authenticating anything: use it
// to pick keys or plan rewraps, never as proof of integrity.
func KeyVersion(ciphertext []byte) (uint32, error) {
	h, err := parseHeader(ciphertext, 0)
	if err != nil {
		return 0, err
	}
	return h.keyVersion(), nil
}
