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

// idAlphabet is the base32 alphabet of ids (package ids) and of the random
// part of a rewrite suffix.
const idAlphabet = "0123456789abcdefghjkmnpqrstvwxyz"

var suffixEnc = base32.NewEncoding(idAlphabet).WithPadding(base32.NoPadding)

// The id prefixes of a blob key's three segments, as package ids mints
// them: org ids (adminapi), project ids (adminapi, lifecycle), file ids
// (dataplane). An id is its prefix and 26 characters of idAlphabet.
const (
	orgPrefix     = "org-"
	projectPrefix = "proj_"
	filePrefix    = "file-"
	idBodyLen     = 26
	// suffixLen is the length of a rewrite suffix's random part: 10
	// bytes in base32 without padding.
	suffixLen = 16
	// maxVersionDigits bounds the key version of a rewrite suffix (a
	// uint32, as envelopes carry it, has at most 10 decimal digits).
	maxVersionDigits = 10
)

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

// ParseBlobKey returns the file a content blob key belongs to. It accepts
// exactly the keys BlobKey and RewriteBlobKey make from ekm's ids —
//
//	org-<26>/proj_<26>/file-<26>
//	org-<26>/proj_<26>/file-<26>_k<version>-<16>
//
// (<n>: n characters of the ids' base32 alphabet; <version>: a decimal
// key version from 1, no leading zero) — and ok is false for anything
// else. The sweep deletes only what this accepts, so an object in the
// bucket that is not ekm's (a shared bucket, a prefix set wrong) is never
// judged an orphan, however path-like its name.
func ParseBlobKey(key string) (orgID, projectID, fileID string, ok bool) {
	org, rest, _ := strings.Cut(key, "/")
	proj, last, _ := strings.Cut(rest, "/")
	fileID, suffix, rewritten := strings.Cut(last, rewriteSep)
	if !validID(orgPrefix, org) || !validID(projectPrefix, proj) || !validID(filePrefix, fileID) {
		return "", "", "", false
	}
	if rewritten && !validRewriteSuffix(suffix) {
		return "", "", "", false
	}
	return org, proj, fileID, true
}

// IsBlobKey reports whether key is a content blob key ekm makes
// (ParseBlobKey accepts it).
func IsBlobKey(key string) bool {
	_, _, _, ok := ParseBlobKey(key)
	return ok
}

// validID reports whether s is prefix and idBodyLen characters of
// idAlphabet (ids.Valid, restated here so that this file alone says what
// the sweep may touch).
func validID(prefix, s string) bool {
	body, ok := strings.CutPrefix(s, prefix)
	return ok && len(body) == idBodyLen && inAlphabet(body)
}

// validRewriteSuffix reports whether s is k<version>-<random>.
func validRewriteSuffix(s string) bool {
	v, ok := strings.CutPrefix(s, "k")
	if !ok {
		return false
	}
	v, random, ok := strings.Cut(v, "-")
	if !ok || len(v) == 0 || len(v) > maxVersionDigits || v[0] == '0' || len(random) != suffixLen || !inAlphabet(random) {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return false
		}
	}
	_, err := strconv.ParseUint(v, 10, 32)
	return err == nil
}

func inAlphabet(s string) bool {
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(idAlphabet, s[i]) < 0 {
			return false
		}
	}
	return true
}
