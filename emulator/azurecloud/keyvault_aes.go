// Managed HSM symmetric keys (oct-HSM): AES-GCM, AES-CBC (with and
// without PKCS #7 padding) and AES key wrap (RFC 3394), plus AES key wrap
// with padding (RFC 5649) used by key release.

package azurecloud

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// aesAlg parses an AES algorithm name: A{128,192,256}{GCM,CBC,CBCPAD,KW}.
func aesAlg(alg string) (bits int, mode string, ok bool) {
	if len(alg) < 6 || alg[0] != 'A' {
		return 0, "", false
	}
	switch alg[1:4] {
	case "128":
		bits = 128
	case "192":
		bits = 192
	case "256":
		bits = 256
	default:
		return 0, "", false
	}
	mode = alg[4:]
	switch mode {
	case "GCM", "CBC", "CBCPAD", "KW":
		return bits, mode, true
	}
	return 0, "", false
}

// aesOp runs encrypt/decrypt (GCM, CBC, CBCPAD) or wrapkey/unwrapkey (KW)
// with an oct-HSM key. For GCM the HSM chooses the 12-byte IV and returns
// it with the 16-byte tag; for CBC the caller's 16-byte IV is used (one is
// generated when absent) and returned.
func aesOp(key []byte, op string, req cryptoReq, val []byte) (cryptoOut, error) {
	bits, mode, ok := aesAlg(req.Alg)
	if !ok {
		return cryptoOut{}, fmt.Errorf("Algorithm %s is not supported for oct-HSM keys. Supported algorithms are A128/A192/A256 GCM, CBC, CBCPAD and KW.", truncate(req.Alg, 32))
	}
	if bits != 8*len(key) {
		return cryptoOut{}, fmt.Errorf("Algorithm %s needs a %d-bit key; this key has %d bits.", req.Alg, bits, 8*len(key))
	}
	wrapOp := op == "wrapkey" || op == "unwrapkey"
	if wrapOp != (mode == "KW") {
		return cryptoOut{}, fmt.Errorf("Algorithm %s is not valid for %s.", req.Alg, op)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return cryptoOut{}, err
	}
	dec := func(field, s string) ([]byte, error) {
		if s == "" {
			return nil, nil
		}
		b, err := decodeB64URL(s)
		if err != nil {
			return nil, fmt.Errorf("The property %s must be base64url.", field)
		}
		return b, nil
	}
	iv, err := dec("iv", req.IV)
	if err != nil {
		return cryptoOut{}, err
	}
	aad, err := dec("aad", req.AAD)
	if err != nil {
		return cryptoOut{}, err
	}
	tag, err := dec("tag", req.Tag)
	if err != nil {
		return cryptoOut{}, err
	}
	enc := b64url.EncodeToString
	switch mode {
	case "KW":
		var out []byte
		if op == "wrapkey" {
			out, err = aesKeyWrap(block, val)
		} else {
			out, err = aesKeyUnwrap(block, val)
		}
		if err != nil {
			return cryptoOut{}, err
		}
		return cryptoOut{Value: enc(out)}, nil
	case "GCM":
		g, err := cipher.NewGCM(block)
		if err != nil {
			return cryptoOut{}, err
		}
		if op == "encrypt" {
			if iv != nil {
				return cryptoOut{}, errors.New("The iv must not be set for AES-GCM encryption: Managed HSM generates it.")
			}
			iv = make([]byte, g.NonceSize())
			if _, err := rand.Read(iv); err != nil {
				return cryptoOut{}, err
			}
			sealed := g.Seal(nil, iv, val, aad)
			ct, t := sealed[:len(val)], sealed[len(val):]
			out := cryptoOut{Value: enc(ct), IV: enc(iv), Tag: enc(t)}
			if aad != nil {
				out.AAD = enc(aad)
			}
			return out, nil
		}
		if len(iv) != g.NonceSize() || len(tag) != g.Overhead() {
			return cryptoOut{}, errors.New("AES-GCM decryption needs the 12-byte iv and the 16-byte tag.")
		}
		pt, err := g.Open(nil, iv, append(bytes.Clone(val), tag...), aad)
		if err != nil {
			return cryptoOut{}, errors.New("Decryption failed: the tag does not authenticate the ciphertext.")
		}
		return cryptoOut{Value: enc(pt)}, nil
	default: // CBC, CBCPAD
		if aad != nil || tag != nil {
			return cryptoOut{}, errors.New("aad and tag are only valid for AES-GCM.")
		}
		if iv == nil && op == "encrypt" {
			iv = make([]byte, aes.BlockSize)
			if _, err := rand.Read(iv); err != nil {
				return cryptoOut{}, err
			}
		}
		if len(iv) != aes.BlockSize {
			return cryptoOut{}, errors.New("AES-CBC needs a 16-byte iv.")
		}
		pad := strings.HasSuffix(mode, "PAD")
		if op == "encrypt" {
			pt := val
			if pad {
				n := aes.BlockSize - len(val)%aes.BlockSize
				pt = append(bytes.Clone(val), bytes.Repeat([]byte{byte(n)}, n)...)
			}
			if len(pt) == 0 || len(pt)%aes.BlockSize != 0 {
				return cryptoOut{}, errors.New("For AES-CBC without padding the value must be a non-empty multiple of 16 bytes.")
			}
			ct := make([]byte, len(pt))
			cipher.NewCBCEncrypter(block, iv).CryptBlocks(ct, pt)
			return cryptoOut{Value: enc(ct), IV: enc(iv)}, nil
		}
		if len(val) == 0 || len(val)%aes.BlockSize != 0 {
			return cryptoOut{}, errors.New("The AES-CBC ciphertext must be a non-empty multiple of 16 bytes.")
		}
		pt := make([]byte, len(val))
		cipher.NewCBCDecrypter(block, iv).CryptBlocks(pt, val)
		if pad {
			n := int(pt[len(pt)-1])
			if n == 0 || n > aes.BlockSize || subtle.ConstantTimeCompare(pt[len(pt)-n:], bytes.Repeat([]byte{byte(n)}, n)) != 1 {
				return cryptoOut{}, errors.New("Decryption failed: bad padding.")
			}
			pt = pt[:len(pt)-n]
		}
		return cryptoOut{Value: enc(pt)}, nil
	}
}

// defaultIV is RFC 3394's initial value.
var defaultIV = []byte{0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6}

// aesKeyWrap is RFC 3394 key wrap: the key to wrap is a multiple of 8
// bytes, at least 16.
func aesKeyWrap(block cipher.Block, pt []byte) ([]byte, error) {
	if len(pt) < 16 || len(pt)%8 != 0 {
		return nil, errors.New("The key to wrap must be a multiple of 8 bytes and at least 16 bytes.")
	}
	return wrapCore(block, defaultIV, pt), nil
}

func aesKeyUnwrap(block cipher.Block, ct []byte) ([]byte, error) {
	if len(ct) < 24 || len(ct)%8 != 0 {
		return nil, errors.New("The wrapped key must be a multiple of 8 bytes and at least 24 bytes.")
	}
	a, p := unwrapCore(block, ct)
	if subtle.ConstantTimeCompare(a, defaultIV) != 1 {
		return nil, errors.New("Unwrap failed: the integrity check did not pass.")
	}
	return p, nil
}

// aesKeyWrapPad is RFC 5649 key wrap with padding (CKM_AES_KEY_WRAP_KWP),
// what key release uses for the released key.
func aesKeyWrapPad(block cipher.Block, pt []byte) ([]byte, error) {
	if len(pt) == 0 || uint64(len(pt)) > 1<<32-1 {
		return nil, errors.New("invalid key length for wrapping")
	}
	aiv := make([]byte, 8)
	copy(aiv, []byte{0xA6, 0x59, 0x59, 0xA6})
	binary.BigEndian.PutUint32(aiv[4:], uint32(len(pt)))
	padded := make([]byte, (len(pt)+7)/8*8)
	copy(padded, pt)
	if len(padded) == 8 {
		out := make([]byte, 16)
		block.Encrypt(out, append(aiv, padded...))
		return out, nil
	}
	return wrapCore(block, aiv, padded), nil
}

// aesKeyUnwrapPad is the inverse of aesKeyWrapPad.
func aesKeyUnwrapPad(block cipher.Block, ct []byte) ([]byte, error) {
	if len(ct) < 16 || len(ct)%8 != 0 {
		return nil, errors.New("invalid wrapped length")
	}
	var a, p []byte
	if len(ct) == 16 {
		b := make([]byte, 16)
		block.Decrypt(b, ct)
		a, p = b[:8], b[8:]
	} else {
		a, p = unwrapCore(block, ct)
	}
	if !bytes.Equal(a[:4], []byte{0xA6, 0x59, 0x59, 0xA6}) {
		return nil, errors.New("integrity check failed")
	}
	n := int(binary.BigEndian.Uint32(a[4:]))
	if n > len(p) || n <= len(p)-8 {
		return nil, errors.New("integrity check failed")
	}
	for _, c := range p[n:] {
		if c != 0 {
			return nil, errors.New("integrity check failed")
		}
	}
	return p[:n], nil
}

// wrapCore is RFC 3394 section 2.2.1 (index-based).
func wrapCore(block cipher.Block, iv, pt []byte) []byte {
	n := len(pt) / 8
	a := bytes.Clone(iv)
	r := bytes.Clone(pt)
	b := make([]byte, 16)
	for j := 0; j < 6; j++ {
		for i := 0; i < n; i++ {
			copy(b, a)
			copy(b[8:], r[i*8:i*8+8])
			block.Encrypt(b, b)
			t := uint64(n*j + i + 1)
			binary.BigEndian.PutUint64(a, binary.BigEndian.Uint64(b[:8])^t)
			copy(r[i*8:], b[8:])
		}
	}
	return append(a, r...)
}

// unwrapCore is RFC 3394 section 2.2.2; it returns the recovered integrity
// value and key data.
func unwrapCore(block cipher.Block, ct []byte) (a, r []byte) {
	n := len(ct)/8 - 1
	a = bytes.Clone(ct[:8])
	r = bytes.Clone(ct[8:])
	b := make([]byte, 16)
	for j := 5; j >= 0; j-- {
		for i := n - 1; i >= 0; i-- {
			t := uint64(n*j + i + 1)
			binary.BigEndian.PutUint64(b, binary.BigEndian.Uint64(a)^t)
			copy(b[8:], r[i*8:i*8+8])
			block.Decrypt(b, b)
			copy(a, b[:8])
			copy(r[i*8:], b[8:])
		}
	}
	return a, r
}
