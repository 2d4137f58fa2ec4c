package dataplane

// The crypto API's common case — one item, fields holding base64 — spends
// most of its handler time in encoding/json's reflection when decoded like
// any other body (CPU profiles: docs/PERFORMANCE.md). These fast paths take
// exactly that case and nothing else; every other body goes through the
// strict general decoder, so errors and edge cases (case-insensitive names,
// escapes, null, duplicates, unknown fields, batches) behave as they always
// did. FuzzFlatItem checks the fast path against the general decoder, and
// TestAppendResult the encoder against encoding/json.

import (
	"bytes"
	"strconv"
)

// parseFlatItem parses b if it is one JSON object whose members are among
// "plaintext", "ciphertext" and "context", each at most once and each a
// string of printable ASCII with no escape (a '\\') — what base64 is —,
// with JSON whitespace anywhere between tokens and nothing after the
// object. For such a body the result is what the general decoder gives
// (and the general decoder refuses nothing of it: no unknown or duplicate
// member, no trailing data). ok is false for anything else, which the
// caller decodes the general way.
func parseFlatItem(b []byte) (it cryptoItem, ok bool) {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return it, false
	}
	i = skipWS(b, i+1)
	for {
		name, j, ok := flatString(b, i)
		if !ok {
			return cryptoItem{}, false
		}
		i = skipWS(b, j)
		if i >= len(b) || b[i] != ':' {
			return cryptoItem{}, false
		}
		val, j, ok := flatString(b, skipWS(b, i+1))
		if !ok {
			return cryptoItem{}, false
		}
		var field **string
		switch string(name) {
		case "plaintext":
			field = &it.Plaintext
		case "ciphertext":
			field = &it.Ciphertext
		case "context":
			field = &it.Context
		default:
			return cryptoItem{}, false
		}
		if *field != nil {
			return cryptoItem{}, false // duplicate: the general path refuses it
		}
		v := string(val)
		*field = &v
		i = skipWS(b, j)
		if i >= len(b) {
			return cryptoItem{}, false
		}
		switch b[i] {
		case ',':
			i = skipWS(b, i+1)
			continue
		case '}':
			return it, skipWS(b, i+1) == len(b)
		}
		return cryptoItem{}, false
	}
}

// skipWS skips JSON whitespace from i.
func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// flatString reads a JSON string at i made only of printable ASCII without
// escapes; it returns its contents and the index after its closing quote.
func flatString(b []byte, i int) ([]byte, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, 0, false
	}
	end := bytes.IndexByte(b[i+1:], '"')
	if end < 0 {
		return nil, 0, false
	}
	s := b[i+1 : i+1+end]
	for _, c := range s {
		if !flatByte[c] {
			return nil, 0, false
		}
	}
	return s, i + 2 + end, true
}

// flatByte: the bytes flatString accepts (printable ASCII but '\\'; '"'
// ends the string).
var flatByte = func() (t [256]bool) {
	for c := 0x20; c < 0x7f; c++ {
		t[c] = c != '\\' && c != '"'
	}
	return t
}()

// appendResult appends res as encoding/json's Encoder writes it (newline
// included), when every string in it is printable ASCII that JSON writes
// as is — as base64 is. ok is false otherwise (errors included): the
// caller encodes it the general way.
func appendResult(dst []byte, res *cryptoResult) ([]byte, bool) {
	if res.Error != nil || (res.Plaintext != nil && !plainJSON(*res.Plaintext)) || !plainJSON(res.Ciphertext) {
		return dst, false
	}
	dst = append(dst, '{')
	sep := false
	if res.Plaintext != nil {
		dst = append(dst, `"plaintext":"`...)
		dst = append(dst, *res.Plaintext...)
		dst = append(dst, '"')
		sep = true
	}
	if res.Ciphertext != "" {
		if sep {
			dst = append(dst, ',')
		}
		dst = append(dst, `"ciphertext":"`...)
		dst = append(dst, res.Ciphertext...)
		dst = append(dst, '"')
		sep = true
	}
	if res.KeyVersion != 0 {
		if sep {
			dst = append(dst, ',')
		}
		dst = append(dst, `"key_version":`...)
		dst = strconv.AppendUint(dst, uint64(res.KeyVersion), 10)
	}
	return append(dst, '}', '\n'), true
}

// plainJSON reports whether encoding/json writes s unchanged inside quotes
// (printable ASCII, no quote, backslash or HTML-escaped character).
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		if !plainByte[s[i]] {
			return false
		}
	}
	return true
}

// plainByte: the bytes plainJSON accepts.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < 0x7f; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()
