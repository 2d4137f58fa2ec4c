// Package envelope is ekm's ciphertext format for everything encrypted under a
// project key: crypto API payloads, file names, small objects (single-shot,
// [Seal]/[Open]) and Files API content (streaming, [NewWriter]/[NewReader]).
//
// Every ciphertext starts with a fixed-size, versioned header that records the
// project key version, a random per-object salt and a key commitment. The
// per-object data key and the commitment are derived together from the
// project key with HKDF-SHA256 over the header (salt included) and the
// [Context] (org, project, object and optional caller context, each
// length-prefixed).
// The body is AES-256-GCM with the whole header as associated data; streams
// are cut into 64 KiB segments using the STREAM construction, so truncation,
// reordering and segment swaps are detected.
//
// Consequences callers can rely on:
//   - a ciphertext opened with any other org, project, object, caller context
//     or key fails with [ErrAuth] before any plaintext is produced;
//   - a ciphertext cannot be made to open under two different project keys
//     (the commitment is checked in constant time before decryption);
//   - errors never contain key material or plaintext.
//
// The byte layout is specified in docs/FORMAT.md. Compatibility promise: a
// ciphertext written by any released version of this package can be opened
// by every later version. Layout changes get a new format version byte; the
// version 1 layout never changes.
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

// Format constants (docs/FORMAT.md).
const (
	magic         = "ekme"
	formatV1      = 0x01
	modeSingle    = 0x01
	modeStream    = 0x02
	prefixSize    = 4 + 1 + 1 + 4 // magic, version, mode, key version
	saltSize      = 32
	commitSize    = 32
	offKeyVersion = 6
	offSalt       = prefixSize
	offCommit     = prefixSize + saltSize
	nonceSize     = 12
	finalFlag     = 0x01
	nonFinalFlag  = 0x00
	okmSize       = 32 + commitSize // data key || commitment
)

// header is the fixed-size v1 header. raw is its exact encoding, used as
// associated data.
type header struct {
	raw [HeaderSize]byte
}

func (h *header) keyVersion() uint32 { return binary.BigEndian.Uint32(h.raw[offKeyVersion:]) }
func (h *header) commitment() []byte { return h.raw[offCommit : offCommit+commitSize] }

// newHeader builds a header with the given salt and an unset commitment.
func newHeader(mode byte, keyVersion uint32, salt []byte) header {
	var h header
	copy(h.raw[:], magic)
	h.raw[4] = formatV1
	h.raw[5] = mode
	binary.BigEndian.PutUint32(h.raw[offKeyVersion:], keyVersion)
	copy(h.raw[offSalt:], salt)
	return h
}

// parseHeader validates b's header. It never reads past len(b) and only
// fixed offsets are used: there are no length fields to trust.
func parseHeader(b []byte, wantMode byte) (header, error) {
	var h header
	n := min(len(b), len(magic))
	if string(b[:n]) != magic[:n] {
		return h, fmt.Errorf("%w: not an ekm envelope", ErrFormat)
	}
	if len(b) > len(magic) && b[4] != formatV1 {
		return h, fmt.Errorf("%w: unsupported format version %d", ErrFormat, b[4])
	}
	if len(b) > 5 && b[5] != modeSingle && b[5] != modeStream {
		return h, fmt.Errorf("%w: unknown mode %d", ErrFormat, b[5])
	}
	if len(b) < HeaderSize {
		return h, fmt.Errorf("%w: header is %d bytes, need %d", ErrTruncated, len(b), HeaderSize)
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

// appendInfo appends the HKDF info: the header up to the commitment (magic,
// version, mode, key version, salt) and the length-prefixed context fields,
// so no two distinct headers or contexts encode alike.
func appendInfo(dst []byte, h *header, c *Context) []byte {
	dst = append(dst, h.raw[:offCommit]...)
	for _, f := range [...]string{c.OrgID, c.ProjectID, c.ObjectID} {
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(f)))
		dst = append(dst, f...)
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(c.Caller)))
	return append(dst, c.Caller...)
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

// dataAEAD returns the AES-256-GCM AEAD for okm's data key. The caller wipes
// okm; the cipher's internal key schedule cannot be wiped from Go.
func dataAEAD(okm *[okmSize]byte) cipher.AEAD {
	block, err := aes.NewCipher(okm[:32])
	if err != nil {
		panic("envelope: aes.NewCipher: " + err.Error()) // 32-byte key: cannot fail
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic("envelope: cipher.NewGCM: " + err.Error()) // standard nonce/tag: cannot fail
	}
	return aead
}

// sealKeys derives the data AEAD for a new header and fills in its commitment.
func sealKeys(key secret.Key, h *header, c *Context) (cipher.AEAD, error) {
	if key.IsZero() {
		return nil, fmt.Errorf("envelope: %w", secret.ErrEmpty)
	}
	var okm [okmSize]byte
	defer secret.Wipe(okm[:])
	derive(&okm, key.Bytes(), h, c)
	copy(h.raw[offCommit:], okm[32:])
	return dataAEAD(&okm), nil
}

// openKeys looks up the header's key version, derives the data key and
// checks the commitment in constant time before any decryption happens.
func openKeys(keys KeyFunc, h *header, c *Context) (cipher.AEAD, error) {
	if keys == nil {
		return nil, errors.New("envelope: nil KeyFunc")
	}
	v := h.keyVersion()
	key, err := keys(v)
	if err != nil {
		return nil, fmt.Errorf("envelope: project key version %d: %w", v, err)
	}
	if key.IsZero() {
		return nil, fmt.Errorf("envelope: project key version %d: %w", v, secret.ErrEmpty)
	}
	var okm [okmSize]byte
	defer secret.Wipe(okm[:])
	derive(&okm, key.Bytes(), h, c)
	if subtle.ConstantTimeCompare(okm[32:], h.commitment()) != 1 {
		return nil, ErrAuth
	}
	return dataAEAD(&okm), nil
}

// singleNonce is the nonce of a single-shot body: the STREAM nonce of a lone
// final segment (counter 0, final flag). It is never written to.
var singleNonce = [nonceSize]byte{nonceSize - 1: finalFlag}

// segmentNonce is the STREAM nonce: 11-byte big-endian counter || flag.
func segmentNonce(n *[nonceSize]byte, counter uint64, final bool) {
	*n = [nonceSize]byte{}
	binary.BigEndian.PutUint64(n[3:11], counter)
	if final {
		n[11] = finalFlag
	} else {
		n[11] = nonFinalFlag
	}
}

// Seal encrypts plaintext under a fresh data key derived from key, bound to c.
// The result is SingleOverhead bytes longer than plaintext.
func Seal(key secret.Key, c Context, plaintext []byte) ([]byte, error) {
	var salt [saltSize]byte
	if _, err := rand.Read(salt[:]); err != nil {
		return nil, fmt.Errorf("envelope: reading randomness: %w", err)
	}
	return seal(key, &c, plaintext, salt[:])
}

// seal is Seal with the salt supplied (the golden test vectors use it).
func seal(key secret.Key, c *Context, plaintext, salt []byte) ([]byte, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	h := newHeader(modeSingle, c.KeyVersion, salt)
	aead, err := sealKeys(key, &h, c)
	if err != nil {
		return nil, err
	}
	out := make([]byte, HeaderSize, HeaderSize+len(plaintext)+TagSize)
	copy(out, h.raw[:])
	return aead.Seal(out, singleNonce[:], plaintext, out[:HeaderSize]), nil
}

// Open decrypts a ciphertext made by Seal. The key version comes from the
// header (c.KeyVersion is ignored) and is itself authenticated.
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
	aead, err := openKeys(keys, &h, &c)
	if err != nil {
		return nil, err
	}
	pt, err := aead.Open(make([]byte, 0, len(body)-TagSize), singleNonce[:], body, ciphertext[:HeaderSize])
	if err != nil {
		return nil, ErrAuth
	}
	return pt, nil
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
