package local

import (
	"bytes"
	"context"
	"crypto/rand"
	"testing"

	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/secret"
)

// Keys wrapped before wraps were bound to a kms.AAD (algorithm A256GCM,
// only the version id as associated data) stay readable, and a wrap of the
// current form never opens as one of the old form.
func TestLegacyWrapsStayReadable(t *testing.T) {
	d := NewDriver(secret.New())
	prov, err := d.Open("org-a", kms.Params{ParamKeyID: "k", ParamKeyVersion: "1"})
	if err != nil {
		t.Fatal(err)
	}
	p := prov.(*Provider)
	vid := p.versionID("1")
	a, err := p.kek("1")
	if err != nil {
		t.Fatal(err)
	}
	pt := make([]byte, 32)
	_, _ = rand.Read(pt)
	nonce := make([]byte, a.NonceSize())
	_, _ = rand.Read(nonce)
	legacy := kms.Wrapped{KeyVersion: vid, Algorithm: LegacyAlgorithm, Ciphertext: a.Seal(bytes.Clone(nonce), nonce, pt, []byte(vid))}
	got, err := p.Unwrap(context.Background(), legacy, kms.AAD{OrgID: "org-a", ProjectID: "proj_x", Version: 1})
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("legacy unwrap: %v", err)
	}
	// A current wrap relabelled as legacy fails: the AAD is in its tag.
	w, err := p.Wrap(context.Background(), pt, kms.AAD{OrgID: "org-a"})
	if err != nil {
		t.Fatal(err)
	}
	w.Algorithm = LegacyAlgorithm
	if _, err := p.Unwrap(context.Background(), w, kms.AAD{OrgID: "org-a"}); err == nil {
		t.Fatal("a bound wrap opened as a legacy one")
	}
}
