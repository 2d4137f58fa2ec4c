package files

import (
	"crypto/rand"
	"encoding/base32"
	"strconv"
	"strings"

	"github.com/ekm-dev/ekm/store"
)

// BlobKey is where an upload stores a file's content:
// <org>/<project>/<file id>.
func BlobKey(orgID, projectID, fileID string) string {
	return orgID + "/" + projectID + "/" + fileID
}

// rewriteSep separates the file id from the suffix of a rewritten blob's
// key. It never occurs in ids (lower-case base32 after a "file-" prefix).
const rewriteSep = "_"

var suffixEnc = base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").WithPadding(base32.NoPadding)

// RewriteBlobKey returns a fresh key for new content of f (re-encryption):
// <org>/<project>/<file id>_k<version>-<random>. Content is never rewritten
// in place, and every attempt gets its own key, so two concurrent rewrites
// (or a crashed one and its retry) never touch each other's blob; the
// compare-and-set on the record decides which one wins.
func RewriteBlobKey(f *store.File, version int) string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	return BlobKey(f.OrgID, f.ProjectID, f.ID) + rewriteSep + "k" + strconv.Itoa(version) + "-" + suffixEnc.EncodeToString(b[:])
}

// ParseBlobKey returns the file a content blob key belongs to, for keys
// made by BlobKey or RewriteBlobKey; ok is false for anything else.
func ParseBlobKey(key string) (orgID, projectID, fileID string, ok bool) {
	parts := strings.Split(key, "/")
	if len(parts) != 3 {
		return "", "", "", false
	}
	fileID, _, _ = strings.Cut(parts[2], rewriteSep)
	if parts[0] == "" || parts[1] == "" || fileID == "" {
		return "", "", "", false
	}
	return parts[0], parts[1], fileID, true
}
