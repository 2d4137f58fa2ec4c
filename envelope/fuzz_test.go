package envelope

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/ekm-dev/ekm/secret"
)

// The seed corpus lives in testdata/fuzz/<FuzzName>/ (see TestFuzzCorpus).
// Run a fuzzer with e.g.: go test -run '^$' -fuzz '^FuzzOpen$' -fuzztime 30s ./envelope

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the seed corpus in testdata/fuzz")

var errFuzzNoKey = errors.New("no such key version")

func fuzzKeys(t testing.TB) KeyFunc {
	key := goldenKey(t)
	return func(v uint32) (secret.Key, error) {
		if v != goldenCtx().KeyVersion {
			return secret.Key{}, errFuzzNoKey
		}
		return key, nil
	}
}

// expectedErr reports whether err is one of the errors parsing untrusted
// input may produce.
func expectedErr(err error) bool {
	return errors.Is(err, ErrFormat) || errors.Is(err, ErrAuth) || errors.Is(err, errFuzzNoKey)
}

func FuzzOpen(f *testing.F) {
	keys := fuzzKeys(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		pt, err := Open(keys, *goldenCtx(), data)
		if err != nil {
			if pt != nil || !expectedErr(err) {
				t.Fatalf("Open = %d bytes, %v", len(pt), err)
			}
			return
		}
		if len(pt) != len(data)-SingleOverhead {
			t.Fatalf("opened %d bytes from %d", len(pt), len(data))
		}
	})
}

func FuzzKeyVersion(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := KeyVersion(data)
		if err != nil {
			if !errors.Is(err, ErrFormat) && !errors.Is(err, ErrTruncated) {
				t.Fatalf("KeyVersion err = %v", err)
			}
			return
		}
		if len(data) < HeaderSize || v != binary.BigEndian.Uint32(data[offKeyVersion:]) {
			t.Fatalf("KeyVersion(%d bytes) = %d", len(data), v)
		}
	})
}

func FuzzNewReader(f *testing.F) {
	keys := fuzzKeys(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := NewReader(bytes.NewReader(data), keys, *goldenCtx())
		if err != nil {
			if !expectedErr(err) {
				t.Fatalf("NewReader err = %v", err)
			}
			return
		}
		pt, err := io.ReadAll(r)
		if err != nil {
			if !expectedErr(err) {
				t.Fatalf("Read err = %v", err)
			}
			// Only whole authenticated segments are ever released.
			if len(pt)%SegmentSize != 0 {
				t.Fatalf("released %d bytes before failing", len(pt))
			}
			return
		}
		if int64(len(data)) != StreamSize(int64(len(pt))) {
			t.Fatalf("read %d bytes from a %d-byte stream", len(pt), len(data))
		}
	})
}

// seedCorpus returns deterministic seeds: valid ciphertexts of every format
// version under the fuzz key and context, and the edge cases around them.
func seedCorpus(t testing.TB) map[string]map[string][]byte {
	v1 := versionSeeds(t, formatV1, goldenSalt(), "")
	v2 := versionSeeds(t, formatV2, goldenNonce(), "v2-")
	v3 := versionSeeds(t, formatV3, goldenNonce(), "v3-")
	single, _, _ := goldenVectors(t)
	single2, emptyStream2, _ := goldenVectorsV2(t)
	single3, _, _ := goldenVectorsV3(t)
	edit := func(b []byte, i int, v byte) []byte {
		b = bytes.Clone(b)
		b[i] = v
		return b
	}
	common := map[string][]byte{
		"empty":        {},
		"magic":        []byte(magic),
		"header-short": single[:HeaderSize-1],
		// A version 1 ciphertext relabelled 2 and 3 (its salt fills the
		// reserved bytes) and 4 (unknown); a version 2 one relabelled 1 and
		// 3, a version 3 one relabelled 2 (same data key, other commitment).
		"version-2":       edit(single, 4, 2),
		"version-3":       edit(single, 4, 3),
		"version-4":       edit(single, 4, 4),
		"v2-as-v1":        edit(single2, 4, 1),
		"v2-as-v3":        edit(single2, 4, 3),
		"v3-as-v2":        edit(single3, 4, 2),
		"mode-3":          edit(single, 5, 3),
		"v2-reserved-set": edit(single2, offReserved, 1),
		"v3-reserved-set": edit(single3, offReserved, 1),
		"v2-reserved-end": edit(emptyStream2, offCommit-1, 0x80),
	}
	merge := func(ms ...map[string][]byte) map[string][]byte {
		out := map[string][]byte{}
		for _, m := range ms {
			for k, v := range m {
				out[k] = v
			}
		}
		return out
	}
	return map[string]map[string][]byte{
		"FuzzOpen":       merge(common, v1["common"], v1["singles"], v2["common"], v2["singles"], v3["common"], v3["singles"]),
		"FuzzKeyVersion": merge(common, v1["common"], v1["singles"], v2["common"], v2["singles"], v3["common"], v3["singles"], v1["stream-empty"], v2["stream-empty"], v3["stream-empty"]),
		"FuzzNewReader":  merge(common, v1["common"], v1["streams"], v2["common"], v2["streams"], v3["common"], v3["streams"]),
	}
}

// versionSeeds returns one version's seeds, named with prefix, in groups:
// "common", "singles", "streams" and "stream-empty".
func versionSeeds(t testing.TB, version byte, salt []byte, prefix string) map[string]map[string][]byte {
	single, emptyStream, stream := goldenVectorsOf(t, version, salt)
	short, err := seal(version, goldenKey(t), goldenCtx(), nil, salt)
	if err != nil {
		t.Fatal(err)
	}
	otherCtx := goldenCtx()
	otherCtx.ObjectID = "file-other"
	moved, err := seal(version, goldenKey(t), otherCtx, []byte("hello, ekm"), salt)
	if err != nil {
		t.Fatal(err)
	}
	edit := func(b []byte, i int, v byte) []byte {
		b = bytes.Clone(b)
		b[i] = v
		return b
	}
	named := func(m map[string][]byte) map[string][]byte {
		out := map[string][]byte{}
		for k, v := range m {
			out[prefix+k] = v
		}
		return out
	}
	return map[string]map[string][]byte{
		"common": named(map[string][]byte{
			"header-only":       single[:HeaderSize],
			"key-version-other": edit(single, offKeyVersion+3, 8),
			"commitment-flip":   edit(single, offCommit, single[offCommit]^1),
		}),
		"singles": named(map[string][]byte{
			"single":           single,
			"single-empty":     short,
			"single-moved":     moved,
			"single-truncated": single[:len(single)-1],
			"single-trailing":  append(bytes.Clone(single), 0),
			"single-tag-short": single[:HeaderSize+TagSize-1],
			"stream-as-single": emptyStream,
		}),
		"streams": named(map[string][]byte{
			"stream-empty":          emptyStream,
			"stream-2seg":           stream,
			"stream-cut-boundary":   stream[:HeaderSize+encSegmentSize],
			"stream-cut-mid":        stream[:HeaderSize+encSegmentSize/2],
			"stream-final-only":     append(bytes.Clone(stream[:HeaderSize]), stream[HeaderSize+encSegmentSize:]...),
			"stream-empty-trailing": append(bytes.Clone(emptyStream), 0),
			"stream-last-bit-flip":  edit(stream, len(stream)-1, stream[len(stream)-1]^1),
			"single-as-stream":      single,
		}),
		"stream-empty": named(map[string][]byte{"stream-empty": emptyStream}),
	}
}

func corpusFile(b []byte) []byte {
	return fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b)
}

// TestFuzzCorpus keeps the committed seed corpus in step with the format:
// it fails if a seed file is missing or stale. Rewrite with
// go test -run TestFuzzCorpus ./envelope -update-corpus
func TestFuzzCorpus(t *testing.T) {
	for target, seeds := range seedCorpus(t) {
		dir := filepath.Join("testdata", "fuzz", target)
		if *updateCorpus {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for name, data := range seeds {
			path := filepath.Join(dir, "seed-"+name)
			want := corpusFile(data)
			if *updateCorpus {
				if err := os.WriteFile(path, want, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Errorf("missing seed (run with -update-corpus): %v", err)
				continue
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s is stale (run with -update-corpus)", path)
			}
		}
	}
}
