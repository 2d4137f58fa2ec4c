package gcpcloud

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/crc32"
	"math"
	"strconv"
	"strings"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc32c(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// Ciphertext layout (opaque to clients; Google's is undocumented):
//
//	0x47 'G' | 0x01 | uvarint(version id) | 12-byte nonce | AES-256-GCM(ct||tag)
//
// The GCM additional data binds the key's resource name, the version id
// and the caller's AAD, so a ciphertext only decrypts under the key (and
// with the AAD) it was made for, and it names its version so old versions
// keep decrypting after rotation.
const ctMagic0, ctMagic1 = 0x47, 0x01

func sealAAD(keyName string, version int, aad []byte) []byte {
	var b []byte
	b = binary.AppendUvarint(b, uint64(len(keyName)))
	b = append(b, keyName...)
	b = binary.AppendUvarint(b, uint64(version))
	return append(b, aad...)
}

func sealCiphertext(material []byte, keyName string, version int, plaintext, aad []byte) ([]byte, error) {
	blk, err := aes.NewCipher(material)
	if err != nil {
		return nil, err
	}
	g, err := cipher.NewGCM(blk)
	if err != nil {
		return nil, err
	}
	out := []byte{ctMagic0, ctMagic1}
	out = binary.AppendUvarint(out, uint64(version))
	nonce := make([]byte, g.NonceSize())
	rand.Read(nonce)
	out = append(out, nonce...)
	return g.Seal(out, nonce, plaintext, sealAAD(keyName, version, aad)), nil
}

// ciphertextVersion reads the version id a ciphertext names.
func ciphertextVersion(ct []byte) (version int, body []byte, err error) {
	if len(ct) < 2 || ct[0] != ctMagic0 || ct[1] != ctMagic1 {
		return 0, nil, errors.New("not an emulator ciphertext")
	}
	v, n := binary.Uvarint(ct[2:])
	if n <= 0 || v == 0 || v > math.MaxInt32 {
		return 0, nil, errors.New("bad version")
	}
	return int(v), ct[2+n:], nil
}

func openCiphertext(material []byte, keyName string, version int, body, aad []byte) ([]byte, error) {
	blk, err := aes.NewCipher(material)
	if err != nil {
		return nil, err
	}
	g, err := cipher.NewGCM(blk)
	if err != nil {
		return nil, err
	}
	if len(body) < g.NonceSize()+g.Overhead() {
		return nil, errors.New("short ciphertext")
	}
	return g.Open(nil, body[:g.NonceSize()], body[g.NonceSize():], sealAAD(keyName, version, aad))
}

// ---- proto JSON input helpers ----

// normalizeKeys maps snake_case keys to lowerCamelCase (protojson accepts
// both).
func normalizeKeys(m map[string]json.RawMessage) map[string]json.RawMessage {
	out := make(map[string]json.RawMessage, len(m))
	for k, v := range m {
		out[snakeToCamel(k)] = v
	}
	return out
}

// bytesField decodes a proto bytes field (standard or URL-safe base64).
func bytesField(m map[string]json.RawMessage, name string) ([]byte, bool, *apiError) {
	raw, ok := m[name]
	if !ok || string(raw) == "null" {
		return nil, false, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, true, invalidArg("Invalid value at '%s' (TYPE_BYTES), expected a base64 string.", camelToSnake(name))
	}
	s = strings.TrimRight(s, "=")
	if b, err := b64std.WithPadding(-1).DecodeString(s); err == nil {
		return b, true, nil
	}
	if b, err := b64url.DecodeString(s); err == nil {
		return b, true, nil
	}
	return nil, true, invalidArg("Invalid value at '%s' (TYPE_BYTES), Base64 decoding failed for \"%s\"", camelToSnake(name), truncate(s, 32))
}

// int64Field decodes a google.protobuf.Int64Value holding a CRC32C: a JSON
// string or number in 0..2^32-1.
func crcField(m map[string]json.RawMessage, name string) (uint32, bool, *apiError) {
	raw, ok := m[name]
	if !ok || string(raw) == "null" {
		return 0, false, nil
	}
	s := strings.Trim(string(raw), `"`)
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, true, invalidArg("Invalid value at '%s' (TYPE_INT64), \"%s\"", camelToSnake(name), truncate(s, 32))
	}
	if v < 0 || v > math.MaxUint32 {
		return 0, true, invalidArg("The field %s must be a CRC32C checksum (0 to 4294967295).", camelToSnake(name))
	}
	return uint32(v), true, nil
}

func camelToSnake(s string) string {
	var b strings.Builder
	for _, c := range s {
		if c >= 'A' && c <= 'Z' {
			b.WriteByte('_')
			b.WriteRune(c + 'a' - 'A')
			continue
		}
		b.WriteRune(c)
	}
	return b.String()
}
