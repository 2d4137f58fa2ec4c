package dataplane

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// recBlob records the writes an alignedWriter makes.
type recBlob struct {
	bytes.Buffer
	writes    []int
	failAfter int // fail the write that would pass this many bytes (0: never)
}

var errDisk = errors.New("disk failed")

func (r *recBlob) Write(p []byte) (int, error) {
	if r.failAfter > 0 && r.Len()+len(p) > r.failAfter {
		return 0, errDisk
	}
	r.writes = append(r.writes, len(p))
	return r.Buffer.Write(p)
}

func TestAlignedWriter(t *testing.T) {
	data := make([]byte, 5*writeBlock+12345)
	rand.Read(data)
	for _, sizes := range [][]int{{41, 65552}, {1}, {writeBlock}, {3 * writeBlock}, {7, 2 * writeBlock, 100000}} {
		rb := &recBlob{}
		aw := newAlignedWriter(rb)
		for off, i := 0, 0; off < len(data); i++ {
			k := min(sizes[i%len(sizes)], len(data)-off)
			if n, err := aw.Write(data[off : off+k]); n != k || err != nil {
				t.Fatalf("%v: Write %d: %d %v", sizes, k, n, err)
			}
			off += k
		}
		if err := aw.Flush(); err != nil {
			t.Fatalf("%v: Flush %v", sizes, err)
		}
		if !bytes.Equal(rb.Bytes(), data) {
			t.Fatalf("%v: blob differs from what was written", sizes)
		}
		for i, w := range rb.writes[:len(rb.writes)-1] {
			if w%writeBlock != 0 {
				t.Fatalf("%v: write %d of %d bytes is not whole blocks (%v)", sizes, i, w, rb.writes)
			}
		}
	}
}

func TestAlignedWriterErrors(t *testing.T) {
	// A failed write is reported (by Write or Flush) and sticks.
	rb := &recBlob{failAfter: writeBlock + 10}
	aw := newAlignedWriter(rb)
	var err error
	for i := 0; i < 4 && err == nil; i++ {
		_, err = aw.Write(make([]byte, 40000))
	}
	if !errors.Is(err, errDisk) {
		t.Fatalf("Write: %v", err)
	}
	if _, err := aw.Write([]byte("x")); !errors.Is(err, errDisk) {
		t.Fatalf("Write after failure: %v", err)
	}
	if err := aw.Flush(); !errors.Is(err, errDisk) {
		t.Fatalf("Flush after failure: %v", err)
	}

	// The final partial block fails at Flush.
	rb = &recBlob{failAfter: 10}
	aw = newAlignedWriter(rb)
	if _, err := aw.Write(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	if err := aw.Flush(); !errors.Is(err, errDisk) || rb.Len() != 0 {
		t.Fatalf("Flush: %v", err)
	}
}

func TestReadBuffer(t *testing.T) {
	data := make([]byte, 3*bodyBuffer+77)
	rand.Read(data)
	for _, r := range []io.Reader{bytes.NewReader(data), iotest.OneByteReader(bytes.NewReader(data)), iotest.DataErrReader(bytes.NewReader(data)), iotest.HalfReader(bytes.NewReader(data))} {
		rb := newReadBuffer(r)
		got, err := io.ReadAll(iotest.HalfReader(rb))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%T: %d bytes, %v", r, len(got), err)
		}
		rb.wipe()
		if !bytes.Equal(rb.buf, make([]byte, bodyBuffer)) {
			t.Fatal("buffer not wiped")
		}
	}
	// Errors come after the buffered bytes, and stick.
	rb := newReadBuffer(iotest.TimeoutReader(bytes.NewReader(data)))
	got, err := io.ReadAll(rb)
	if !errors.Is(err, iotest.ErrTimeout) || !bytes.Equal(got, data[:bodyBuffer]) {
		t.Fatalf("%d bytes, %v", len(got), err)
	}
	if _, err := rb.Read(make([]byte, 1)); !errors.Is(err, iotest.ErrTimeout) {
		t.Fatalf("after the error: %v", err)
	}
	if err := iotest.TestReader(newReadBuffer(bytes.NewReader(data)), data); err != nil {
		t.Fatal(err)
	}
}
