package files_test

import (
	"strings"
	"testing"

	"github.com/ekm-dev/ekm/blob"
	"github.com/ekm-dev/ekm/files"
	"github.com/ekm-dev/ekm/store"
)

func TestBlobKeys(t *testing.T) {
	f := &store.File{ID: "file-0123456789abcdefghjkmnpqrs", OrgID: "org-a", ProjectID: "proj_b"}
	k0 := files.BlobKey(f.OrgID, f.ProjectID, f.ID)
	k1, k2 := files.RewriteBlobKey(f, 2), files.RewriteBlobKey(f, 2)
	if k1 == k2 || k1 == k0 || !strings.HasPrefix(k1, k0+"_k2-") {
		t.Fatalf("rewrite keys %q %q from %q", k1, k2, k0)
	}
	for _, k := range []string{k0, k1} {
		if !blob.ValidKey(k) {
			t.Fatalf("%q is not a valid blob key", k)
		}
		org, proj, id, ok := files.ParseBlobKey(k)
		if !ok || org != f.OrgID || proj != f.ProjectID || id != f.ID {
			t.Fatalf("ParseBlobKey(%q) = %q %q %q %v", k, org, proj, id, ok)
		}
	}
	for _, bad := range []string{"a/b", "a/b/c/d", "a//c", "a/b/_x", "whatever"} {
		if _, _, _, ok := files.ParseBlobKey(bad); ok {
			t.Errorf("ParseBlobKey(%q) ok", bad)
		}
	}
}

// rewrite moves f's content to a fresh key as re-encryption does (same key
// version here: the ciphertext is bound to the file, not to the blob key).
