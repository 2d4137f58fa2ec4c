package dataplane

import "io"

// bodyBuffer is the size of the read buffer under an upload's multipart
// reader.
//
// mime/multipart reads through its own 4 KiB buffer; straight from the
// request body, that is one read from the connection (a syscall) per
// 4 KiB of file. A bodyBuffer in between makes it one per chunk the
// client sent (up to bodyBuffer), for one user-space copy more.
const bodyBuffer = 64 << 10

// readBuffer is a buffered reader whose buffer can be wiped (bufio's
// cannot): it holds file plaintext. Errors are sticky and returned once
// the buffered bytes are read; a read of an empty buffer asks src once.
type readBuffer struct {
	src  io.Reader
	buf  []byte
	r, w int
	err  error
}

func newReadBuffer(src io.Reader) *readBuffer {
	return &readBuffer{src: src, buf: make([]byte, bodyBuffer)}
}

func (b *readBuffer) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if b.r == b.w {
		if b.err != nil {
			return 0, b.err
		}
		n, err := b.src.Read(b.buf)
		b.r, b.w, b.err = 0, n, err
		if n == 0 {
			return 0, err
		}
	}
	n := copy(p, b.buf[b.r:b.w])
	b.r += n
	return n, nil
}

// wipe clears the buffer.
func (b *readBuffer) wipe() { clear(b.buf) }

// writeBlock is the size of the writes an upload makes to its blob.
//
// The envelope writes 64 KiB + 16-byte segments after a header, so,
// unbuffered, every write to a local blob file starts and ends inside a
// page; each then costs the kernel about 40 % more CPU than a write of
// whole pages (measured: docs/PERFORMANCE.md). An alignedWriter turns
// them into writes of writeBlock bytes at multiples of writeBlock.
const writeBlock = 64 << 10

// alignedWriter buffers an upload's blob writes so that the blob receives
// whole writeBlocks at multiples of writeBlock, the last write excepted.
// Flush writes what is buffered: the upload flushes after the envelope's
// final segment and before the blob is committed, so nothing is
// acknowledged before every byte has reached the blob. Errors are sticky.
// It holds ciphertext only.
type alignedWriter struct {
	w   io.Writer
	buf []byte // len = buffered bytes, cap = writeBlock
	err error
}

func newAlignedWriter(w io.Writer) *alignedWriter {
	return &alignedWriter{w: w, buf: make([]byte, 0, writeBlock)}
}

func (a *alignedWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		if a.err != nil {
			return n, a.err
		}
		if len(a.buf) == 0 && len(p) >= writeBlock {
			// Whole blocks go straight through: every earlier write was
			// whole blocks too, so the offset is still a multiple.
			k := len(p) - len(p)%writeBlock
			m, err := a.w.Write(p[:k])
			n += m
			if err != nil {
				a.err = err
				return n, err
			}
			p = p[k:]
			continue
		}
		k := copy(a.buf[len(a.buf):cap(a.buf)], p)
		a.buf = a.buf[:len(a.buf)+k]
		p = p[k:]
		n += k
		if len(a.buf) == cap(a.buf) {
			a.Flush()
		}
	}
	return n, a.err
}

// Flush writes the buffered bytes.
func (a *alignedWriter) Flush() error {
	if a.err != nil || len(a.buf) == 0 {
		return a.err
	}
	if _, err := a.w.Write(a.buf); err != nil {
		a.err = err
		return err
	}
	a.buf = a.buf[:0]
	return nil
}
