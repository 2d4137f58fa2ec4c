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
	if got, err := unbind(bytes.Clone(key), aad); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("legacy: %v", err)
	}
	bound := append(bytes.Clone(key), aadTag(aad)...)
	if got, err := unbind(bytes.Clone(bound), aad); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("bound: %v", err)
	}
	other := aad
	other.Version = 3
	if _, err := unbind(bytes.Clone(bound), other); kms.ClassOf(err) != kms.Invalid {
		t.Fatalf("other AAD: %v", err)
	}
	if _, err := unbind(make([]byte, 20), aad); err == nil {
		t.Fatal("a plaintext shorter than a tag accepted")
	}
	if _, err := unbind(append([]byte{1}, make([]byte, aadTagSize)...), aad); err == nil {
		t.Fatal("a zero tag accepted")
	}
}
