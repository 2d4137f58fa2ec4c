package envelope

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/ekm-dev/ekm/secret"
)

// SegmentSize is the plaintext size of every streaming segment but the last.
const SegmentSize = 64 << 10

const encSegmentSize = SegmentSize + TagSize

// StreamOverhead returns the number of bytes a streaming ciphertext adds to
// a plaintext of plaintextSize bytes: the header plus one tag per segment
// (an empty plaintext still has one, empty, final segment). It returns -1
// for a negative size or one whose ciphertext size would overflow int64.
func StreamOverhead(plaintextSize int64) int64 {
	if plaintextSize < 0 {
		return -1
	}
	// Computed without plaintextSize+SegmentSize-1, which could overflow.
	segments := max(1, plaintextSize/SegmentSize+min(1, plaintextSize%SegmentSize))
	overhead := int64(HeaderSize) + segments*TagSize
	if plaintextSize > math.MaxInt64-overhead {
		return -1
	}
	return overhead
}

// StreamSize returns the exact size of the streaming ciphertext of a
// plaintext of plaintextSize bytes (for Content-Length), or -1 (see
// StreamOverhead).
func StreamSize(plaintextSize int64) int64 {
	o := StreamOverhead(plaintextSize)
	if o < 0 {
		return -1
	}
	return plaintextSize + o
}

// writer buffers at most one segment: a full segment cannot be sealed until
// the writer knows whether more data follows (the final flag is in the nonce).
type writer struct {
	dst     io.Writer
	body    *body
	buf     []byte // len = buffered plaintext, cap = encSegmentSize (sealed in place)
	counter uint64
	nonce   [nonceSize]byte
	err     error // sticky
}

var errClosed = errors.New("envelope: write to closed writer")

// NewWriter returns a WriteCloser that encrypts to dst in streaming mode,
// bound to c and sealed with key (version c.KeyVersion), in the format
// version [WriteVersion] returns. The header is written to dst immediately.
// Close must be called to write the final segment; it does not close dst.
// Memory use is one segment, whatever the stream length.
func NewWriter(dst io.Writer, key secret.Key, c Context) (io.WriteCloser, error) {
	var salt [saltSize]byte
	n := saltSize
	v := byte(writeVersion.Load())
	if isXAES(v) {
		n = xnonceSize
	}
	if _, err := rand.Read(salt[:n]); err != nil {
		return nil, fmt.Errorf("envelope: reading randomness: %w", err)
	}
	return newWriter(v, dst, key, &c, salt[:n])
}

// newWriter is NewWriter with the version and the salt or XAES-256-GCM
// nonce supplied (the golden test vectors use it).
func newWriter(version byte, dst io.Writer, key secret.Key, c *Context, salt []byte) (*writer, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	h := newHeader(version, modeStream, c.KeyVersion, salt)
	b, err := sealKeys(key, &h, c)
	if err != nil {
		return nil, err
	}
	if _, err := dst.Write(h.raw[:]); err != nil {
		return nil, fmt.Errorf("envelope: writing header: %w", err)
	}
	return &writer{
		dst:  dst,
		body: b,
		buf:  make([]byte, 0, encSegmentSize),
	}, nil
}

func (w *writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	n := 0
	for len(p) > 0 {
		if len(w.buf) == SegmentSize {
			// More data follows a full segment, so it is not the last.
			if err := w.flush(false); err != nil {
				return n, err
			}
		}
		k := min(len(p), SegmentSize-len(w.buf))
		w.buf = append(w.buf, p[:k]...)
		p = p[k:]
		n += k
	}
	return n, nil
}

// Close seals and writes the final segment (empty if nothing was written).
func (w *writer) Close() error {
	if w.err != nil {
		if w.err == errClosed {
			return nil
		}
		return w.err
	}
	err := w.flush(true)
	secret.Wipe(w.buf[:cap(w.buf)])
	if err == nil {
		w.err = errClosed
	}
	return err
}

func (w *writer) flush(final bool) error {
	w.body.nonce(&w.nonce, w.counter, final)
	sealed := w.body.aead.Seal(w.buf[:0], w.nonce[:], w.buf, w.body.aad)
	if _, err := w.dst.Write(sealed); err != nil {
		w.err = fmt.Errorf("envelope: writing segment %d: %w", w.counter, err)
		return w.err
	}
	w.counter++
	w.buf = w.buf[:0]
	return nil
}

// reader decrypts one segment at a time. It holds the raw segment (plus one
// look-ahead byte that tells whether the segment is the last) and its
// plaintext in separate buffers, so a failed decryption leaves the ciphertext
// intact for classifying the error.
type reader struct {
	src     io.Reader
	body    *body
	in      []byte // encSegmentSize+1 bytes
	carry   bool   // in[0] holds the look-ahead byte of the previous read
	out     []byte // plaintext buffer, cap SegmentSize
	pending []byte // authenticated plaintext not yet returned (slice of out)
	counter uint64
	nonce   [nonceSize]byte
	err     error // sticky; io.EOF after the final segment
}

// NewReader returns a Reader of the plaintext of a streaming ciphertext (any
// format version) read from src. Before returning it reads and checks the
// header (format, key version lookup, key commitment) and reads and
// authenticates the first segment, so a wrong key or context and a stream
// damaged in its first segment fail here, with no plaintext released. Read
// never returns plaintext of a segment before that segment authenticates in
// its position; a missing final segment, reordered or swapped segments and
// trailing data after the first segment are reported by Read (as ErrAuth,
// ErrTruncated for a stream that stops early) after the plaintext of every
// authentic segment before them. c.KeyVersion is ignored.
func NewReader(src io.Reader, keys KeyFunc, c Context) (io.Reader, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	var raw [HeaderSize]byte
	n, err := io.ReadFull(src, raw[:])
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return nil, fmt.Errorf("envelope: reading header: %w", err)
	}
	h, err := parseHeader(raw[:n], modeStream)
	if err != nil {
		return nil, err
	}
	b, err := openKeys(keys, &h, &c)
	if err != nil {
		return nil, err
	}
	r := &reader{
		src:  src,
		body: b,
		in:   make([]byte, encSegmentSize+1),
		out:  make([]byte, 0, SegmentSize),
	}
	// The first segment: in versions 2 and 3 the context is authenticated
	// by GCM (as associated data), not by the commitment, so this is where
	// a wrong context shows; in every version it keeps NewReader's errors
	// the same.
	if r.err = r.next(); r.err != nil && r.err != io.EOF {
		err := r.err
		r.release()
		return nil, err
	}
	return r, nil
}

func (r *reader) Read(p []byte) (int, error) {
	for len(r.pending) == 0 {
		if r.err != nil {
			r.release()
			return 0, r.err
		}
		r.err = r.next()
	}
	n := copy(p, r.pending)
	r.pending = r.pending[n:]
	return n, nil
}

// release wipes the buffers (they held plaintext) once the stream is over,
// and lets the garbage collector have them.
func (r *reader) release() {
	if r.in != nil {
		secret.Wipe(r.in)
		secret.Wipe(r.out[:cap(r.out)])
		r.in, r.out = nil, nil
	}
}

// next reads, authenticates and decrypts one segment into r.pending. After
// the final segment it returns io.EOF (with r.pending possibly non-empty).
func (r *reader) next() error {
	start := 0
	if r.carry {
		start = 1
	}
	n, err := io.ReadFull(r.src, r.in[start:])
	n += start
	atEOF := false
	switch err {
	case nil:
	case io.EOF, io.ErrUnexpectedEOF:
		atEOF = true
	default:
		return fmt.Errorf("envelope: reading segment %d: %w", r.counter, err)
	}

	if atEOF {
		// The remaining bytes must be the final segment.
		if n < TagSize {
			return fmt.Errorf("%w: stream ends inside or before segment %d", ErrTruncated, r.counter)
		}
		seg := r.in[:n]
		pt, err := r.open(seg, true)
		if err != nil {
			if n == encSegmentSize {
				// A full segment at EOF that opens as non-final means the
				// stream was cut at a segment boundary.
				if _, err2 := r.open(seg, false); err2 == nil {
					r.out = r.out[:0]
					return fmt.Errorf("%w: final segment missing after segment %d", ErrTruncated, r.counter)
				}
			}
			return fmt.Errorf("%w: segment %d", ErrAuth, r.counter)
		}
		if len(pt) == 0 && r.counter > 0 {
			// Writers only emit an empty final segment for an empty stream.
			return fmt.Errorf("%w: empty final segment after segment %d", ErrFormat, r.counter)
		}
		r.pending = pt
		return io.EOF
	}

	// A full segment with at least one more byte after it: not the last.
	seg := r.in[:encSegmentSize]
	pt, err := r.open(seg, false)
	if err != nil {
		if _, err2 := r.open(seg, true); err2 == nil {
			return fmt.Errorf("%w: data after final segment %d", ErrAuth, r.counter)
		}
		return fmt.Errorf("%w: segment %d", ErrAuth, r.counter)
	}
	r.in[0] = r.in[encSegmentSize]
	r.carry = true
	r.counter++
	r.pending = pt
	return nil
}

func (r *reader) open(seg []byte, final bool) ([]byte, error) {
	r.body.nonce(&r.nonce, r.counter, final)
	return r.body.aead.Open(r.out[:0], r.nonce[:], seg, r.body.aad)
}
