package awscloud

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"sort"
	"time"
)

// Ciphertext blob layout (the emulator's own; clients treat blobs as
// opaque, and real KMS blobs also carry a reference to the key and its
// material):
//
//	0x01 | uint16 len | key ARN | 32-byte key material id | 12-byte nonce | AES-256-GCM ciphertext+tag
//
// The additional data is everything before the nonce followed by the
// encryption context (sorted by key, each key and value length-prefixed),
// so a blob decrypts only under its key, material and exact context.
const blobVersion = 0x01

var errBadBlob = errors.New("invalid ciphertext")

type blobHeader struct {
	keyARN     string
	materialID []byte // 32 bytes
	headerLen  int    // bytes up to and including the material id
}

func parseBlob(b []byte) (*blobHeader, error) {
	if len(b) < 3 || b[0] != blobVersion {
		return nil, errBadBlob
	}
	n := int(binary.BigEndian.Uint16(b[1:3]))
	if n == 0 || n > 2048 || len(b) < 3+n+32+12+16 {
		return nil, errBadBlob
	}
	h := &blobHeader{keyARN: string(b[3 : 3+n]), materialID: b[3+n : 3+n+32], headerLen: 3 + n + 32}
	return h, nil
}

// encodeContext is the canonical, unambiguous encoding of an encryption
// context.
func encodeContext(ec map[string]string) []byte {
	keys := make([]string, 0, len(ec))
	for k := range ec {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var buf bytes.Buffer
	binary.Write(&buf, binary.BigEndian, uint32(len(keys)))
	for _, k := range keys {
		for _, s := range []string{k, ec[k]} {
			binary.Write(&buf, binary.BigEndian, uint32(len(s)))
			buf.WriteString(s)
		}
	}
	return buf.Bytes()
}

func sealBlob(keyARN string, m *keyMaterial, plaintext []byte, ec map[string]string) ([]byte, error) {
	mid, err := hex.DecodeString(m.ID)
	if err != nil || len(mid) != 32 {
		return nil, errors.New("bad material id")
	}
	head := make([]byte, 0, 3+len(keyARN)+32+12+len(plaintext)+16)
	head = append(head, blobVersion, byte(len(keyARN)>>8), byte(len(keyARN)))
	head = append(head, keyARN...)
	head = append(head, mid...)
	gcm, err := newGCM(m.Secret)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, 12)
	rand.Read(nonce)
	aad := append(append([]byte{}, head...), encodeContext(ec)...)
	out := append(head, nonce...)
	return gcm.Seal(out, nonce, plaintext, aad), nil
}

func openBlob(b []byte, h *blobHeader, m *keyMaterial, ec map[string]string) ([]byte, error) {
	gcm, err := newGCM(m.Secret)
	if err != nil {
		return nil, err
	}
	nonce := b[h.headerLen : h.headerLen+12]
	aad := append(append([]byte{}, b[:h.headerLen]...), encodeContext(ec)...)
	return gcm.Open(nil, nonce, b[h.headerLen+12:], aad)
}

func newGCM(key []byte) (cipher.AEAD, error) {
	blk, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(blk)
}

func newMaterial(now time.Time) keyMaterial {
	secret := make([]byte, 32)
	rand.Read(secret)
	return keyMaterial{ID: randHexN(32), Secret: secret, Created: now}
}
