package envelope_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/ekm-dev/ekm/envelope"
	"github.com/ekm-dev/ekm/secret"
)

// keySet is a fake project key store: version -> key.
type keySet map[uint32]secret.Key

var errNoVersion = errors.New("no such key version")

func (ks keySet) get(v uint32) (secret.Key, error) {
	k, ok := ks[v]
	if !ok {
		return secret.Key{}, errNoVersion
	}
	return k, nil
}

func fixedKey(t testing.TB, b byte) secret.Key {
	t.Helper()
	k, err := secret.FromBytes(bytes.Repeat([]byte{b}, secret.Size))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func testCtx() envelope.Context {
	return envelope.Context{OrgID: "org_1", ProjectID: "proj_1", ObjectID: "file-1", KeyVersion: 3, Caller: []byte("caller ctx")}
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

// everyVersion runs a test once per format version written (Seal and
// NewWriter follow envelope.SetWriteVersion; every version is always read).
func everyVersion(t *testing.T, test func(t *testing.T)) {
	defer envelope.SetWriteVersion(envelope.WriteVersion())
	for _, v := range []int{envelope.Version1, envelope.Version2, envelope.Version3} {
		if err := envelope.SetWriteVersion(v); err != nil {
			t.Fatal(err)
		}
		t.Run(fmt.Sprintf("v%d", v), test)
	}
}

func TestSealOpenRoundTrip(t *testing.T) { everyVersion(t, testSealOpenRoundTrip) }

func testSealOpenRoundTrip(t *testing.T) {
	key := fixedKey(t, 1)
	keys := keySet{3: key}.get
	for _, n := range []int{0, 1, 15, 16, 17, 1000, envelope.SegmentSize, envelope.SegmentSize + 1, 3 << 20} {
		pt := pattern(n)
		ct, err := envelope.Seal(key, testCtx(), pt)
		if err != nil {
			t.Fatalf("Seal(%d bytes) err = %v", n, err)
		}
		if len(ct) != n+envelope.SingleOverhead {
			t.Fatalf("Seal(%d bytes) = %d bytes, want %d", n, len(ct), n+envelope.SingleOverhead)
		}
		got, err := envelope.Open(keys, testCtx(), ct)
		if err != nil {
			t.Fatalf("Open(%d bytes) err = %v", n, err)
		}
		if !bytes.Equal(got, pt) {
			t.Fatalf("Open(%d bytes) returned different plaintext", n)
		}
		if v, err := envelope.KeyVersion(ct); err != nil || v != 3 {
			t.Fatalf("KeyVersion = %d, %v; want 3, nil", v, err)
		}
	}
}

func TestSealIsRandomized(t *testing.T) { everyVersion(t, testSealIsRandomized) }

func testSealIsRandomized(t *testing.T) {
	key := fixedKey(t, 1)
	a, _ := envelope.Seal(key, testCtx(), []byte("same"))
	b, _ := envelope.Seal(key, testCtx(), []byte("same"))
	if bytes.Equal(a, b) {
		t.Fatal("two Seals of the same plaintext are identical")
	}
}

// contextVariants are contexts that each differ from testCtx in one way,
// including shifts of bytes between adjacent fields.
func contextVariants() map[string]envelope.Context {
	base := testCtx()
	v := map[string]envelope.Context{}
	mod := func(name string, f func(c *envelope.Context)) {
		c := base
		c.Caller = bytes.Clone(base.Caller)
		f(&c)
		v[name] = c
	}
	mod("org", func(c *envelope.Context) { c.OrgID = "org_2" })
	mod("project", func(c *envelope.Context) { c.ProjectID = "proj_2" })
	mod("object", func(c *envelope.Context) { c.ObjectID = "file-2" })
	mod("no object", func(c *envelope.Context) { c.ObjectID = "" })
	mod("caller", func(c *envelope.Context) { c.Caller = []byte("caller ctY") })
	mod("no caller", func(c *envelope.Context) { c.Caller = nil })
	mod("org/project shift", func(c *envelope.Context) { c.OrgID, c.ProjectID = "org_1p", "roj_1" })
	mod("project/object shift", func(c *envelope.Context) { c.ProjectID, c.ObjectID = "proj_1f", "ile-1" })
	mod("object/caller shift", func(c *envelope.Context) { c.ObjectID, c.Caller = "file-1c", []byte("aller ctx") })
	return v
}

func TestOpenWrongContextFails(t *testing.T) { everyVersion(t, testOpenWrongContextFails) }

func testOpenWrongContextFails(t *testing.T) {
	key := fixedKey(t, 1)
	keys := keySet{3: key}.get
	ct, err := envelope.Seal(key, testCtx(), []byte("secret data"))
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range contextVariants() {
		if pt, err := envelope.Open(keys, c, ct); !errors.Is(err, envelope.ErrAuth) || pt != nil {
			t.Errorf("Open with other %s: %q, %v; want ErrAuth", name, pt, err)
		}
	}
	// c.KeyVersion is not used by Open.
	c := testCtx()
	c.KeyVersion = 99
	if _, err := envelope.Open(keys, c, ct); err != nil {
		t.Fatalf("Open with different Context.KeyVersion err = %v, want nil", err)
	}
}

func TestEmptyAndNilCallerAreEqual(t *testing.T) { everyVersion(t, testEmptyAndNilCallerAreEqual) }

func testEmptyAndNilCallerAreEqual(t *testing.T) {
	key := fixedKey(t, 1)
	c := testCtx()
	c.Caller = nil
	ct, _ := envelope.Seal(key, c, []byte("x"))
	c.Caller = []byte{}
	if _, err := envelope.Open(keySet{3: key}.get, c, ct); err != nil {
		t.Fatalf("Open with empty caller of a nil-caller ciphertext err = %v", err)
	}
}

func TestOpenWrongKey(t *testing.T) { everyVersion(t, testOpenWrongKey) }

func testOpenWrongKey(t *testing.T) {
	ct, _ := envelope.Seal(fixedKey(t, 1), testCtx(), []byte("secret data"))
	_, err := envelope.Open(keySet{3: fixedKey(t, 2)}.get, testCtx(), ct)
	if !errors.Is(err, envelope.ErrAuth) {
		t.Fatalf("Open with wrong key err = %v, want ErrAuth", err)
	}
	if strings.Contains(err.Error(), "secret data") {
		t.Fatalf("error leaks plaintext: %v", err)
	}
	// Missing version: the KeyFunc error is wrapped, not turned into ErrAuth.
	_, err = envelope.Open(keySet{4: fixedKey(t, 1)}.get, testCtx(), ct)
	if !errors.Is(err, errNoVersion) || errors.Is(err, envelope.ErrAuth) {
		t.Fatalf("Open with missing key version err = %v, want errNoVersion", err)
	}
	// A zero key is refused.
	_, err = envelope.Open(keySet{3: {}}.get, testCtx(), ct)
	if !errors.Is(err, secret.ErrEmpty) {
		t.Fatalf("Open with zero key err = %v, want secret.ErrEmpty", err)
	}
	if _, err := envelope.Seal(secret.Key{}, testCtx(), nil); !errors.Is(err, secret.ErrEmpty) {
		t.Fatalf("Seal with zero key err = %v, want secret.ErrEmpty", err)
	}
	if _, err := envelope.Open(nil, testCtx(), ct); err == nil {
		t.Fatal("Open with nil KeyFunc succeeded")
	}
}

// The header's key version is authenticated: relabelling a ciphertext with
// another version fails even if that version maps to the same key bytes.
func TestKeyVersionIsBound(t *testing.T) { everyVersion(t, testKeyVersionIsBound) }

func testKeyVersionIsBound(t *testing.T) {
	key := fixedKey(t, 1)
	ct, _ := envelope.Seal(key, testCtx(), []byte("data"))
	ct[9] ^= 0x01 // key version 3 -> 2
	if v, _ := envelope.KeyVersion(ct); v != 2 {
		t.Fatalf("KeyVersion after edit = %d, want 2", v)
	}
	_, err := envelope.Open(keySet{2: key, 3: key}.get, testCtx(), ct)
	if !errors.Is(err, envelope.ErrAuth) {
		t.Fatalf("Open of relabelled version err = %v, want ErrAuth", err)
	}
}

func TestKeyVersionLookup(t *testing.T) { everyVersion(t, testKeyVersionLookup) }

func testKeyVersionLookup(t *testing.T) {
	var asked []uint32
	keys := func(v uint32) (secret.Key, error) {
		asked = append(asked, v)
		return fixedKey(t, byte(v)+1), nil
	}
	for _, v := range []uint32{0, 1, 7, 1 << 31} {
		c := testCtx()
		c.KeyVersion = v
		ct, err := envelope.Seal(fixedKey(t, byte(v)+1), c, []byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		asked = nil
		c.KeyVersion = 12345 // ignored on open
		if _, err := envelope.Open(keys, c, ct); err != nil {
			t.Fatalf("Open v%d err = %v", v, err)
		}
		if len(asked) != 1 || asked[0] != v {
			t.Fatalf("Open v%d asked KeyFunc for %v", v, asked)
		}
	}
}

func TestEveryBitFlipFails(t *testing.T) { everyVersion(t, testEveryBitFlipFails) }

func testEveryBitFlipFails(t *testing.T) {
	key := fixedKey(t, 1)
	keys := keySet{3: key}.get
	ct, _ := envelope.Seal(key, testCtx(), []byte("hello, world"))
	for i := range len(ct) * 8 {
		mod := bytes.Clone(ct)
		mod[i/8] ^= 1 << (i % 8)
		pt, err := envelope.Open(keys, testCtx(), mod)
		if err == nil || pt != nil {
			t.Fatalf("bit %d flipped: Open = %q, %v; want error", i, pt, err)
		}
		if !errors.Is(err, envelope.ErrAuth) && !errors.Is(err, envelope.ErrFormat) && !errors.Is(err, errNoVersion) {
			t.Fatalf("bit %d flipped: unexpected error %v", i, err)
		}
	}
	// Same for a stream.
	var buf bytes.Buffer
	w, _ := envelope.NewWriter(&buf, key, testCtx())
	w.Write([]byte("hello, world"))
	w.Close()
	sct := buf.Bytes()
	for i := range len(sct) * 8 {
		mod := bytes.Clone(sct)
		mod[i/8] ^= 1 << (i % 8)
		got, err := readStream(mod, keys, testCtx())
		if err == nil || len(got) != 0 {
			t.Fatalf("stream bit %d flipped: read %q, %v; want error and no plaintext", i, got, err)
		}
	}
}

func TestTruncatedAndMalformedSingle(t *testing.T) { everyVersion(t, testTruncatedAndMalformedSingle) }

func testTruncatedAndMalformedSingle(t *testing.T) {
	key := fixedKey(t, 1)
	keys := keySet{3: key}.get
	ct, _ := envelope.Seal(key, testCtx(), []byte("hello"))
	for n := range len(ct) {
		if _, err := envelope.Open(keys, testCtx(), ct[:n]); !errors.Is(err, envelope.ErrAuth) && !errors.Is(err, envelope.ErrFormat) {
			t.Fatalf("Open(ct[:%d]) err = %v, want ErrAuth/ErrTruncated", n, err)
		}
	}
	if _, err := envelope.Open(keys, testCtx(), ct[:envelope.HeaderSize+envelope.TagSize-1]); !errors.Is(err, envelope.ErrTruncated) {
		t.Fatalf("Open of short body err = %v, want ErrTruncated", err)
	}
	if _, err := envelope.Open(keys, testCtx(), append(bytes.Clone(ct), 0)); !errors.Is(err, envelope.ErrAuth) {
		t.Fatalf("Open with appended byte err = %v, want ErrAuth", err)
	}
	for name, in := range map[string][]byte{
		"not envelope": []byte("PK\x03\x04 zip file, not an envelope......"),
		"version 4":    append([]byte("ekme\x04"), ct[5:]...),
		"version 0":    append([]byte("ekme\x00"), ct[5:]...),
		"mode 9":       append([]byte("ekme\x01\x09"), ct[6:]...),
	} {
		if _, err := envelope.Open(keys, testCtx(), in); !errors.Is(err, envelope.ErrFormat) {
			t.Errorf("Open(%s) err = %v, want ErrFormat", name, err)
		}
		if _, err := envelope.KeyVersion(in); !errors.Is(err, envelope.ErrFormat) {
			t.Errorf("KeyVersion(%s) err = %v, want ErrFormat", name, err)
		}
		if _, err := envelope.NewReader(bytes.NewReader(in), keys, testCtx()); !errors.Is(err, envelope.ErrFormat) {
			t.Errorf("NewReader(%s) err = %v, want ErrFormat", name, err)
		}
	}
	if _, err := envelope.KeyVersion(ct[:envelope.HeaderSize-1]); !errors.Is(err, envelope.ErrTruncated) {
		t.Fatalf("KeyVersion(short header) err = %v, want ErrTruncated", err)
	}
}

func TestModesAreNotInterchangeable(t *testing.T) { everyVersion(t, testModesAreNotInterchangeable) }

func testModesAreNotInterchangeable(t *testing.T) {
	key := fixedKey(t, 1)
	keys := keySet{3: key}.get
	single, _ := envelope.Seal(key, testCtx(), []byte("x"))
	if _, err := envelope.NewReader(bytes.NewReader(single), keys, testCtx()); !errors.Is(err, envelope.ErrFormat) {
		t.Fatalf("NewReader(single-shot) err = %v, want ErrFormat", err)
	}
	var buf bytes.Buffer
	w, _ := envelope.NewWriter(&buf, key, testCtx())
	w.Write([]byte("x"))
	w.Close()
	if _, err := envelope.Open(keys, testCtx(), buf.Bytes()); !errors.Is(err, envelope.ErrFormat) {
		t.Fatalf("Open(stream) err = %v, want ErrFormat", err)
	}
	// Forcing the mode byte does not help: the mode is authenticated.
	forged := bytes.Clone(buf.Bytes())
	forged[5] = 0x01
	if _, err := envelope.Open(keys, testCtx(), forged); !errors.Is(err, envelope.ErrAuth) {
		t.Fatalf("Open(stream relabelled single) err = %v, want ErrAuth", err)
	}
}

func TestContextValidation(t *testing.T) { everyVersion(t, testContextValidation) }

func testContextValidation(t *testing.T) {
	key := fixedKey(t, 1)
	long := strings.Repeat("a", envelope.MaxIDLen+1)
	for name, c := range map[string]envelope.Context{
		"no org":      {ProjectID: "p"},
		"no project":  {OrgID: "o"},
		"long org":    {OrgID: long, ProjectID: "p"},
		"long object": {OrgID: "o", ProjectID: "p", ObjectID: long},
		"long caller": {OrgID: "o", ProjectID: "p", Caller: make([]byte, envelope.MaxCallerLen+1)},
	} {
		if _, err := envelope.Seal(key, c, nil); !errors.Is(err, envelope.ErrContext) {
			t.Errorf("Seal(%s) err = %v, want ErrContext", name, err)
		}
		if _, err := envelope.Open(keySet{}.get, c, nil); !errors.Is(err, envelope.ErrContext) {
			t.Errorf("Open(%s) err = %v, want ErrContext", name, err)
		}
		if _, err := envelope.NewWriter(io.Discard, key, c); !errors.Is(err, envelope.ErrContext) {
			t.Errorf("NewWriter(%s) err = %v, want ErrContext", name, err)
		}
		if _, err := envelope.NewReader(bytes.NewReader(nil), keySet{}.get, c); !errors.Is(err, envelope.ErrContext) {
			t.Errorf("NewReader(%s) err = %v, want ErrContext", name, err)
		}
	}
	// Maximum sizes are fine.
	c := envelope.Context{OrgID: long[1:], ProjectID: long[1:], ObjectID: long[1:], Caller: make([]byte, envelope.MaxCallerLen)}
	ct, err := envelope.Seal(key, c, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := envelope.Open(keySet{0: key}.get, c, ct); err != nil {
		t.Fatal(err)
	}
}

func TestErrorsDoNotLeak(t *testing.T) { everyVersion(t, testErrorsDoNotLeak) }

func testErrorsDoNotLeak(t *testing.T) {
	key := fixedKey(t, 0xAB)
	ct, _ := envelope.Seal(key, testCtx(), []byte("TOPSECRET"))
	var errs []error
	_, err := envelope.Open(keySet{3: fixedKey(t, 0xCD)}.get, testCtx(), ct)
	errs = append(errs, err)
	ct[len(ct)-1] ^= 1
	_, err = envelope.Open(keySet{3: key}.get, testCtx(), ct)
	errs = append(errs, err)
	for _, err := range errs {
		s := fmt.Sprintf("%v %+v", err, err)
		if strings.Contains(s, "TOPSECRET") || strings.Contains(strings.ToLower(s), "abab") || strings.Contains(strings.ToLower(s), "cdcd") {
			t.Fatalf("error leaks secrets: %s", s)
		}
	}
}
