package secret

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestKeyNeverPrints(t *testing.T) {
	k, err := FromBytes(bytes.Repeat([]byte{0xAB}, Size))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %s %x %q", k, k, k, k, k, k),
		fmt.Sprintf("%v", struct{ K Key }{k}), fmt.Sprintf("%+v", &struct{ K Key }{k}),
	} {
		if strings.Contains(strings.ToLower(s), "ab") && !strings.Contains(s, "REDACTED") {
			t.Fatalf("key material printed: %q", s)
		}
		if strings.Contains(s, "abab") || strings.Contains(s, "171") {
			t.Fatalf("key material printed: %q", s)
		}
	}
	if _, err := json.Marshal(struct{ K Key }{k}); err == nil {
		t.Fatal("json.Marshal of a key succeeded")
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "key", k)
	if strings.Contains(buf.String(), "abab") || !strings.Contains(buf.String(), "REDACTED") {
		t.Fatalf("slog leaked: %s", buf.String())
	}
}

func TestZero(t *testing.T) {
	k := New()
	if k.IsZero() {
		t.Fatal("new key is zero")
	}
	alias := k.Bytes()
	k.Zero()
	if !k.IsZero() || !bytes.Equal(alias, make([]byte, Size)) {
		t.Fatal("Zero did not wipe the material")
	}
	if _, err := FromBytes(make([]byte, 31)); err == nil {
		t.Fatal("short key accepted")
	}
}
