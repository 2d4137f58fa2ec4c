package envelope_test

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"github.com/ekm-dev/ekm/envelope"
)

const seg = envelope.SegmentSize
const encSeg = seg + envelope.TagSize

func sealStream(t testing.TB, c envelope.Context, pt []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := envelope.NewWriter(&buf, fixedKey(t, 1), c)
	if err != nil {
		t.Fatal(err)
	}
	// Odd write sizes exercise the segment buffering.
	for p := pt; len(p) > 0; {
		n := min(len(p), 1000+len(p)%7777)
		if _, err := w.Write(p[:n]); err != nil {
			t.Fatal(err)
		}
		p = p[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// readStream reads everything it can; it returns the plaintext released
// before the first error.
func readStream(ct []byte, keys envelope.KeyFunc, c envelope.Context) ([]byte, error) {
	r, err := envelope.NewReader(bytes.NewReader(ct), keys, c)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

func TestStreamRoundTrip(t *testing.T) { everyVersion(t, testStreamRoundTrip) }

func testStreamRoundTrip(t *testing.T) {
	keys := keySet{3: fixedKey(t, 1)}.get
	for _, n := range []int{0, 1, seg - 1, seg, seg + 1, 2*seg - 1, 2 * seg, 2*seg + 1, 5<<20 + 3} {
		pt := pattern(n)
		ct := sealStream(t, testCtx(), pt)
		if int64(len(ct)) != envelope.StreamSize(int64(n)) {
			t.Fatalf("%d bytes: ciphertext is %d bytes, StreamSize says %d", n, len(ct), envelope.StreamSize(int64(n)))
		}
		if v, err := envelope.KeyVersion(ct); err != nil || v != 3 {
			t.Fatalf("KeyVersion = %d, %v", v, err)
		}
		got, err := readStream(ct, keys, testCtx())
		if err != nil {
			t.Fatalf("%d bytes: read err = %v", n, err)
		}
		if !bytes.Equal(got, pt) {
			t.Fatalf("%d bytes: plaintext differs", n)
		}
		// One-byte reads from a one-byte-at-a-time source give the same.
		r, err := envelope.NewReader(iotest.OneByteReader(bytes.NewReader(ct)), keys, testCtx())
		if err != nil {
			t.Fatal(err)
		}
		if n < 3*seg {
			got, err = io.ReadAll(iotest.OneByteReader(r))
			if err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("%d bytes: one-byte reads: %v", n, err)
			}
		}
	}
}

func TestStreamOverhead(t *testing.T) {
	for _, tc := range []struct{ n, want int64 }{
		{0, envelope.HeaderSize + 16},
		{1, envelope.HeaderSize + 16},
		{seg, envelope.HeaderSize + 16},
		{seg + 1, envelope.HeaderSize + 32},
		{512 << 20, envelope.HeaderSize + 8192*16},
		{-1, -1},
		{1<<63 - 1, -1},
	} {
		if got := envelope.StreamOverhead(tc.n); got != tc.want {
			t.Errorf("StreamOverhead(%d) = %d, want %d", tc.n, got, tc.want)
		}
	}
	if got := envelope.StreamSize(seg + 1); got != seg+1+envelope.HeaderSize+32 {
		t.Errorf("StreamSize(seg+1) = %d", got)
	}
	if got := envelope.StreamSize(-5); got != -1 {
		t.Errorf("StreamSize(-5) = %d", got)
	}
}

func TestStreamWrongContextOrKey(t *testing.T) { everyVersion(t, testStreamWrongContextOrKey) }

func testStreamWrongContextOrKey(t *testing.T) {
	ct := sealStream(t, testCtx(), pattern(2*seg+5))
	for name, c := range contextVariants() {
		if _, err := envelope.NewReader(bytes.NewReader(ct), keySet{3: fixedKey(t, 1)}.get, c); !errors.Is(err, envelope.ErrAuth) {
			t.Errorf("NewReader with other %s err = %v, want ErrAuth", name, err)
		}
	}
	if _, err := envelope.NewReader(bytes.NewReader(ct), keySet{3: fixedKey(t, 2)}.get, testCtx()); !errors.Is(err, envelope.ErrAuth) {
		t.Errorf("NewReader with wrong key err = %v, want ErrAuth", err)
	}
}

// Truncation at every segment boundary and inside segments is an error, and
// the reader releases exactly the plaintext of the complete segments before
// the cut that it could authenticate as non-final.
func TestStreamTruncation(t *testing.T) { everyVersion(t, testStreamTruncation) }

func testStreamTruncation(t *testing.T) {
	keys := keySet{3: fixedKey(t, 1)}.get
	pt := pattern(3*seg + 100)
	ct := sealStream(t, testCtx(), pt)
	h := envelope.HeaderSize
	cuts := []int{0, 1, h - 1, h, h + 1, h + 15, h + 16, h + encSeg/2}
	for i := 1; i <= 3; i++ {
		b := h + i*encSeg
		cuts = append(cuts, b-1, b, b+1, b+16, b+17)
	}
	cuts = append(cuts, len(ct)-1)
	for _, cut := range cuts {
		got, err := readStream(ct[:cut], keys, testCtx())
		if err == nil {
			t.Fatalf("cut at %d of %d: no error", cut, len(ct))
		}
		if !errors.Is(err, envelope.ErrAuth) {
			t.Fatalf("cut at %d: err = %v, want ErrAuth/ErrTruncated", cut, err)
		}
		full := max(0, (cut-h)/encSeg) // complete segments before the cut
		// The last complete segment before EOF cannot be shown to be
		// non-final, so it is not released either.
		wantSegs := full
		if (cut-h)%encSeg == 0 && full > 0 {
			wantSegs = full - 1
		}
		if !bytes.Equal(got, pt[:wantSegs*seg]) {
			t.Fatalf("cut at %d: released %d bytes, want %d", cut, len(got), wantSegs*seg)
		}
		onBoundary := cut >= h && (cut-h)%encSeg == 0
		shortTail := cut >= h && (cut-h)%encSeg < envelope.TagSize
		if (onBoundary || shortTail || cut < h) && !errors.Is(err, envelope.ErrTruncated) {
			t.Fatalf("cut at %d: err = %v, want ErrTruncated", cut, err)
		}
	}
}

func TestStreamReorderAndSwap(t *testing.T) { everyVersion(t, testStreamReorderAndSwap) }

func testStreamReorderAndSwap(t *testing.T) {
	keys := keySet{3: fixedKey(t, 1)}.get
	h := envelope.HeaderSize
	a := sealStream(t, testCtx(), pattern(3*seg+10))
	b := sealStream(t, testCtx(), bytes.Repeat([]byte{'b'}, 3*seg+10)) // same key and context
	segA := func(ct []byte, i int) []byte { return ct[h+i*encSeg : min(len(ct), h+(i+1)*encSeg)] }

	join := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	pt := pattern(3*seg + 10)
	for name, tc := range map[string]struct {
		ct       []byte
		wantSegs int // authentic plaintext segments released before the error
	}{
		"swap 0,1":           {join(a[:h], segA(a, 1), segA(a, 0), segA(a, 2), segA(a, 3)), 0},
		"swap 1,2":           {join(a[:h], segA(a, 0), segA(a, 2), segA(a, 1), segA(a, 3)), 1},
		"duplicate 0":        {join(a[:h], segA(a, 0), segA(a, 0), segA(a, 2), segA(a, 3)), 1},
		"drop 1":             {join(a[:h], segA(a, 0), segA(a, 2), segA(a, 3)), 1},
		"segment from b":     {join(a[:h], segA(a, 0), segA(b, 1), segA(a, 2), segA(a, 3)), 1},
		"final from b":       {join(a[:h], segA(a, 0), segA(a, 1), segA(a, 2), segA(b, 3)), 3},
		"header from b":      {join(b[:h], segA(a, 0), segA(a, 1), segA(a, 2), segA(a, 3)), 0},
		"final moved early":  {join(a[:h], segA(a, 0), segA(a, 3)), 1},
		"garbage appended":   {join(a, []byte("garbage")), 3},
		"one byte appended":  {join(a, []byte{0}), 3},
		"stream appended":    {join(a, b), 3},
		"segment appended":   {join(a, segA(a, 1)), 3},
		"final dropped, end": {join(a[:h], segA(a, 0), segA(a, 1), segA(a, 2)), 2},
	} {
		got, err := readStream(tc.ct, keys, testCtx())
		if !errors.Is(err, envelope.ErrAuth) {
			t.Errorf("%s: err = %v, want ErrAuth", name, err)
		}
		if !bytes.Equal(got, pt[:tc.wantSegs*seg]) {
			t.Errorf("%s: released %d bytes, want %d", name, len(got), tc.wantSegs*seg)
		}
	}
}

// A full-size final segment followed by extra data is reported as trailing
// data (ErrAuth), not truncation.
func TestStreamTrailingAfterFullFinal(t *testing.T) {
	everyVersion(t, testStreamTrailingAfterFullFinal)
}

func testStreamTrailingAfterFullFinal(t *testing.T) {
	keys := keySet{3: fixedKey(t, 1)}.get
	ct := sealStream(t, testCtx(), pattern(2*seg))
	got, err := readStream(append(bytes.Clone(ct), 'x'), keys, testCtx())
	if !errors.Is(err, envelope.ErrAuth) || errors.Is(err, envelope.ErrTruncated) {
		t.Fatalf("err = %v, want ErrAuth (not truncated)", err)
	}
	if len(got) != seg {
		t.Fatalf("released %d bytes, want %d", len(got), seg)
	}
}

// The reader never hands out plaintext of a segment that fails: tamper with
// the last byte of each segment in turn.
func TestStreamNoPlaintextFromFailedSegment(t *testing.T) {
	everyVersion(t, testStreamNoPlaintextFromFailedSegment)
}

func testStreamNoPlaintextFromFailedSegment(t *testing.T) {
	keys := keySet{3: fixedKey(t, 1)}.get
	pt := pattern(3*seg + 10)
	ct := sealStream(t, testCtx(), pt)
	for i := range 4 {
		mod := bytes.Clone(ct)
		mod[min(len(mod)-1, envelope.HeaderSize+(i+1)*encSeg-1)] ^= 0x80
		r, err := envelope.NewReader(bytes.NewReader(mod), keys, testCtx())
		if i == 0 {
			// NewReader authenticates the first segment itself.
			if r != nil || !errors.Is(err, envelope.ErrAuth) {
				t.Fatalf("segment 0 tampered: NewReader = %v, %v; want ErrAuth", r, err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		var got []byte
		buf := make([]byte, 4096)
		for {
			n, err := r.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				if !errors.Is(err, envelope.ErrAuth) {
					t.Fatalf("segment %d tampered: err = %v", i, err)
				}
				break
			}
		}
		if !bytes.Equal(got, pt[:i*seg]) {
			t.Fatalf("segment %d tampered: released %d bytes, want %d", i, len(got), i*seg)
		}
		// The error is sticky.
		if n, err := r.Read(buf); n != 0 || !errors.Is(err, envelope.ErrAuth) {
			t.Fatalf("Read after error = %d, %v", n, err)
		}
	}
}

func TestStreamIOErrors(t *testing.T) { everyVersion(t, testStreamIOErrors) }

func testStreamIOErrors(t *testing.T) {
	keys := keySet{3: fixedKey(t, 1)}.get
	ct := sealStream(t, testCtx(), pattern(2*seg))
	boom := errors.New("boom")
	// A source error is passed through, not reported as ErrAuth: by
	// NewReader inside the first segment (which it reads), by Read later.
	_, err := envelope.NewReader(io.MultiReader(bytes.NewReader(ct[:envelope.HeaderSize+100]), iotest.ErrReader(boom)), keys, testCtx())
	if !errors.Is(err, boom) || errors.Is(err, envelope.ErrAuth) {
		t.Fatalf("NewReader err = %v, want boom", err)
	}
	r, err := envelope.NewReader(io.MultiReader(bytes.NewReader(ct[:envelope.HeaderSize+encSeg+100]), iotest.ErrReader(boom)), keys, testCtx())
	if err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(r); !errors.Is(err, boom) || errors.Is(err, envelope.ErrAuth) || len(got) != seg {
		t.Fatalf("read %d bytes, err = %v; want %d, boom", len(got), err, seg)
	}
	if _, err := envelope.NewReader(iotest.ErrReader(boom), keys, testCtx()); !errors.Is(err, boom) {
		t.Fatalf("NewReader err = %v, want boom", err)
	}
	// Destination errors are sticky and reported by Write and Close.
	if _, err := envelope.NewWriter(failWriter{boom, 0}.w(), fixedKey(t, 1), testCtx()); !errors.Is(err, boom) {
		t.Fatalf("NewWriter err = %v, want boom", err)
	}
	w, err := envelope.NewWriter(failWriter{boom, 1}.w(), fixedKey(t, 1), testCtx())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(pattern(seg + 1)); !errors.Is(err, boom) {
		t.Fatalf("Write err = %v, want boom", err)
	}
	if err := w.Close(); !errors.Is(err, boom) {
		t.Fatalf("Close err = %v, want boom", err)
	}
}

func TestWriterClose(t *testing.T) { everyVersion(t, testWriterClose) }

func testWriterClose(t *testing.T) {
	var buf bytes.Buffer
	w, _ := envelope.NewWriter(&buf, fixedKey(t, 1), testCtx())
	w.Write([]byte("abc"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	n := buf.Len()
	if err := w.Close(); err != nil {
		t.Fatalf("second Close err = %v, want nil", err)
	}
	if _, err := w.Write([]byte("more")); err == nil {
		t.Fatal("Write after Close succeeded")
	}
	if buf.Len() != n {
		t.Fatal("writer wrote after Close")
	}
}

type failWriter struct {
	err error
	ok  int // writes that succeed before failing
}

func (f failWriter) w() io.Writer { return &f }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.ok == 0 {
		return 0, f.err
	}
	f.ok--
	return len(p), nil
}
