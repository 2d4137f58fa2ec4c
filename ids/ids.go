// Package ids makes object identifiers. An id is a type prefix followed by 26
// characters of lower-case base32: 48 bits of millisecond time then 80 random
// bits, so ids of one type sort in creation order (list cursors rely on it).
// Ids are not secrets: ids made by one process in the same millisecond are
// consecutive, and every access is checked against the caller's org.
package ids

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"strings"
	"sync"
	"time"
)

var enc = base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").WithPadding(base32.NoPadding)

var (
	mu   sync.Mutex
	last [16]byte
)

// New returns prefix followed by a fresh time-ordered id. Ids made in the same
// millisecond by this process still increase.
func New(prefix string) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(time.Now().UnixMilli())<<16)
	_, _ = rand.Read(b[6:])
	mu.Lock()
	if string(b[:6]) == string(last[:6]) && string(b[:]) <= string(last[:]) {
		b = last
		for i := 15; i >= 6; i-- { // increment the random part
			b[i]++
			if b[i] != 0 {
				break
			}
		}
	}
	last = b
	mu.Unlock()
	return prefix + enc.EncodeToString(b[:])[:26]
}

// Valid reports whether s is prefix followed by a well-formed id body.
func Valid(prefix, s string) bool {
	body, ok := strings.CutPrefix(s, prefix)
	if !ok || len(body) != 26 {
		return false
	}
	for _, c := range body {
		if !strings.ContainsRune("0123456789abcdefghjkmnpqrstvwxyz", c) {
			return false
		}
	}
	return true
}
