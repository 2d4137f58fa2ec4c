package azure

import (
	"bytes"
	"testing"

	"github.com/ekm-dev/ekm/kms"
)

// The AAD tag inside the RSA plaintext: a legacy (32-byte) plaintext is
// returned as is; a bound one only with its own AAD.
func TestUnbind(t *testing.T) {
	aad := kms.AAD{OrgID: "org-a", ProjectID: "proj_b", Version: 2}
	key := bytes.Repeat([]byte{7}, 32)
	if got, err := unbind(bytes.Clone(key), aad, true); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("legacy: %v", err)
	}
	bound := append(bytes.Clone(key), aadTag(aad)...)
	if got, err := unbind(bytes.Clone(bound), aad, false); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("bound: %v", err)
	}
	other := aad
	other.Version = 3
	if _, err := unbind(bytes.Clone(bound), other, false); kms.ClassOf(err) != kms.Invalid {
		t.Fatalf("other AAD: %v", err)
	}
	// A legacy label never passes off a bound plaintext, nor the reverse.
	if _, err := unbind(bytes.Clone(bound), aad, true); err == nil {
		t.Fatal("a bound plaintext accepted as legacy")
	}
	if _, err := unbind(bytes.Clone(key), aad, false); err == nil {
		t.Fatal("a bare key accepted under the bound label")
	}
	if _, err := unbind(make([]byte, 20), aad, false); err == nil {
		t.Fatal("a plaintext shorter than a tag accepted")
	}
	if _, err := unbind(append([]byte{1}, make([]byte, aadTagSize)...), aad, false); err == nil {
		t.Fatal("a zero tag accepted")
	}
}
