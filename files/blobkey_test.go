package files_test

import (
	"strings"
	"testing"

	"github.com/ekm-dev/ekm/blob"
	"github.com/ekm-dev/ekm/files"
	"github.com/ekm-dev/ekm/ids"
	"github.com/ekm-dev/ekm/store"
)

func TestBlobKeys(t *testing.T) {
	f := &store.File{ID: ids.New("file-"), OrgID: ids.New("org-"), ProjectID: ids.New("proj_")}
	k0 := files.BlobKey(f.OrgID, f.ProjectID, f.ID)
	k1, k2 := files.RewriteBlobKey(f, 2), files.RewriteBlobKey(f, 2)
	k3 := files.RewriteBlobKey(f, 1<<31)
	if k1 == k2 || k1 == k0 || !strings.HasPrefix(k1, k0+"_k2-") {
		t.Fatalf("rewrite keys %q %q from %q", k1, k2, k0)
	}
	for _, k := range []string{k0, k1, k3} {
		if !blob.ValidKey(k) {
			t.Fatalf("%q is not a valid blob key", k)
		}
		org, proj, id, ok := files.ParseBlobKey(k)
		if !ok || org != f.OrgID || proj != f.ProjectID || id != f.ID || !files.IsBlobKey(k) {
			t.Fatalf("ParseBlobKey(%q) = %q %q %q %v", k, org, proj, id, ok)
		}
	}
	o, p, fi := f.OrgID, f.ProjectID, f.ID
	for _, bad := range []string{
		// path-ish, but not ekm's ids
		"a/b", "a/b/c/d", "a//c", "a/b/_x", "whatever", "org-a/proj_b/file-c",
		"backups/2024/db", "org-1/proj_2/file-3",
		// one segment off
		"x" + o + "/" + p + "/" + fi, o + "/proj-" + p[5:] + "/" + fi, o + "/" + p + "/file_" + fi[5:],
		o + "/" + p + "/" + fi + "x", o + "/" + p + "/" + fi[:len(fi)-1], o + "/" + p + "/" + strings.ToUpper(fi),
		o + "/" + p + "/" + fi[:len(fi)-1] + "i", // i, l, o, u are not in the alphabet
		o + "/" + p + "/" + fi + "/x", "x/" + o + "/" + p + "/" + fi, o + "/" + p, "/" + o + "/" + p + "/" + fi,
		o + "/" + p + "/" + fi + "/", p + "/" + o + "/" + fi,
		// rewrite suffixes ekm never makes
		k0 + "_", k0 + "_k", k0 + "_k2", k0 + "_k2-", k0 + "_k0-" + k1[len(k1)-16:], k0 + "_k02-" + k1[len(k1)-16:],
		k0 + "_k2-" + k1[len(k1)-15:], k0 + "_k2-" + k1[len(k1)-16:] + "0", k0 + "_x2-" + k1[len(k1)-16:],
		k0 + "_k-2-" + k1[len(k1)-16:], k0 + "_k99999999999-" + k1[len(k1)-16:], k0 + "_k4294967296-" + k1[len(k1)-16:],
		k1 + "_k2-" + k1[len(k1)-16:], k0 + "_k2-" + strings.ToUpper(k1[len(k1)-16:]),
	} {
		if _, _, _, ok := files.ParseBlobKey(bad); ok {
			t.Errorf("ParseBlobKey(%q) ok", bad)
		}
	}
}

// FuzzParseBlobKey: ParseBlobKey accepts only keys that BlobKey or
// RewriteBlobKey could have made, and gives back the ids they were made
// from. Seeds: testdata/fuzz/FuzzParseBlobKey.
func FuzzParseBlobKey(f *testing.F) {
	fl := &store.File{ID: ids.New("file-"), OrgID: ids.New("org-"), ProjectID: ids.New("proj_")}
	f.Add(files.BlobKey(fl.OrgID, fl.ProjectID, fl.ID))
	f.Add(files.RewriteBlobKey(fl, 7))
	f.Add("org-a/proj_b/file-c")
	f.Fuzz(func(t *testing.T, key string) {
		org, proj, id, ok := files.ParseBlobKey(key)
		if ok != files.IsBlobKey(key) {
			t.Fatalf("IsBlobKey(%q) != ParseBlobKey's ok", key)
		}
		if !ok {
			if org != "" || proj != "" || id != "" {
				t.Fatalf("ParseBlobKey(%q) refused but returned %q %q %q", key, org, proj, id)
			}
			return
		}
		if !ids.Valid("org-", org) || !ids.Valid("proj_", proj) || !ids.Valid("file-", id) {
			t.Fatalf("ParseBlobKey(%q) = %q %q %q: not ekm's ids", key, org, proj, id)
		}
		if !blob.ValidKey(key) {
			t.Fatalf("ParseBlobKey accepted %q, not a valid blob key", key)
		}
		base := files.BlobKey(org, proj, id)
		if key != base {
			rest, found := strings.CutPrefix(key, base+"_k")
			v, random, dash := strings.Cut(rest, "-")
			if !found || !dash || len(random) != 16 || v == "" || v[0] == '0' || strings.ContainsAny(random, "ilou_-/") {
				t.Fatalf("ParseBlobKey accepted %q: not BlobKey or RewriteBlobKey of %q", key, base)
			}
		}
	})
}
