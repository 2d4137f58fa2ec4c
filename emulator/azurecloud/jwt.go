package azurecloud

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"math/big"
	"strings"
)

// maxJWTLen bounds tokens and assertions we parse; real ones are a few KB.
const maxJWTLen = 16 << 10

// jwt is a parsed, not yet verified, compact JWS.
type jwt struct {
	header       map[string]any
	claims       map[string]any
	signingInput []byte
	sig          []byte
}

var errMalformedJWT = errors.New("JWT is malformed")

// decodeB64URL accepts base64url with or without padding; some issuers pad.
func decodeB64URL(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

func parseJWT(s string) (*jwt, error) {
	if len(s) > maxJWTLen {
		return nil, errMalformedJWT
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return nil, errMalformedJWT
	}
	t := &jwt{signingInput: []byte(parts[0] + "." + parts[1])}
	for i, dst := range []*map[string]any{&t.header, &t.claims} {
		raw, err := decodeB64URL(parts[i])
		if err != nil {
			return nil, errMalformedJWT
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if err := dec.Decode(dst); err != nil || *dst == nil {
			return nil, errMalformedJWT
		}
	}
	sig, err := decodeB64URL(parts[2])
	if err != nil || len(sig) == 0 {
		return nil, errMalformedJWT
	}
	t.sig = sig
	return t, nil
}

func (t *jwt) hstr(name string) string { s, _ := t.header[name].(string); return s }
func (t *jwt) str(name string) string  { s, _ := t.claims[name].(string); return s }

// num returns an integer NumericDate claim.
func (t *jwt) num(name string) (int64, bool) {
	switch v := t.claims[name].(type) {
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return i, true
		}
		if f, err := v.Float64(); err == nil {
			return int64(f), true
		}
	}
	return 0, false
}

// audiences returns the aud claim as a list (it may be a string or array).
func (t *jwt) audiences() []string {
	switch v := t.claims["aud"].(type) {
	case string:
		return []string{v}
	case []any:
		var out []string
		for _, a := range v {
			if s, ok := a.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// hasCP1 reports whether the xms_cc claim lists client capability CP1 (in
// any letter case).
func (t *jwt) hasCP1() bool {
	v, _ := t.claims["xms_cc"].([]any)
	for _, c := range v {
		if s, ok := c.(string); ok && isCP1(s) {
			return true
		}
	}
	return false
}

// isCP1 matches the client capability name CP1 case-insensitively.
func isCP1(s string) bool { return strings.EqualFold(s, "CP1") }

func hashFor(alg string) (crypto.Hash, func() hash.Hash, bool) {
	switch alg[2:] {
	case "256":
		return crypto.SHA256, sha256.New, true
	case "384":
		return crypto.SHA384, sha512.New384, true
	case "512":
		return crypto.SHA512, sha512.New, true
	}
	return 0, nil, false
}

// verify checks the signature with pub. Only asymmetric algorithms are
// accepted; "none" and HMAC never verify.
func (t *jwt) verify(pub crypto.PublicKey) error {
	alg := t.hstr("alg")
	if len(alg) != 5 {
		return fmt.Errorf("unsupported alg %q", alg)
	}
	h, newHash, ok := hashFor(alg)
	if !ok {
		return fmt.Errorf("unsupported alg %q", alg)
	}
	hh := newHash()
	hh.Write(t.signingInput)
	digest := hh.Sum(nil)
	switch alg[:2] {
	case "RS":
		k, ok := pub.(*rsa.PublicKey)
		if !ok {
			return errors.New("key type does not match alg")
		}
		return rsa.VerifyPKCS1v15(k, h, digest, t.sig)
	case "PS":
		k, ok := pub.(*rsa.PublicKey)
		if !ok {
			return errors.New("key type does not match alg")
		}
		return rsa.VerifyPSS(k, h, digest, t.sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto})
	case "ES":
		k, ok := pub.(*ecdsa.PublicKey)
		if !ok {
			return errors.New("key type does not match alg")
		}
		n := len(t.sig) / 2
		if n == 0 || len(t.sig)%2 != 0 {
			return errors.New("bad ECDSA signature length")
		}
		r, s := new(big.Int).SetBytes(t.sig[:n]), new(big.Int).SetBytes(t.sig[n:])
		if !ecdsa.Verify(k, digest, r, s) {
			return errors.New("ECDSA verification failed")
		}
		return nil
	}
	return fmt.Errorf("unsupported alg %q", alg)
}

// signRS256 produces a compact JWS.
func signRS256(key *rsa.PrivateKey, header, claims map[string]any) (string, error) {
	hb, err := json.Marshal(header)
	if err != nil {
		return "", err
	}
	cb, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	input := b64url.EncodeToString(hb) + "." + b64url.EncodeToString(cb)
	d := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, d[:])
	if err != nil {
		return "", err
	}
	return input + "." + b64url.EncodeToString(sig), nil
}

// jwk is one JSON Web Key as published in JWKS documents.
type jwk struct {
	Kty string   `json:"kty"`
	Use string   `json:"use,omitempty"`
	Kid string   `json:"kid,omitempty"`
	X5t string   `json:"x5t,omitempty"`
	N   string   `json:"n,omitempty"`
	E   string   `json:"e,omitempty"`
	Crv string   `json:"crv,omitempty"`
	X   string   `json:"x,omitempty"`
	Y   string   `json:"y,omitempty"`
	X5c []string `json:"x5c,omitempty"`
	Iss string   `json:"issuer,omitempty"`
}

type jwks struct {
	Keys []jwk `json:"keys"`
}

// publicKey converts an RSA or EC JWK to a Go public key.
func (k jwk) publicKey() (crypto.PublicKey, error) {
	switch k.Kty {
	case "RSA":
		n, err1 := decodeB64URL(k.N)
		e, err2 := decodeB64URL(k.E)
		if err1 != nil || err2 != nil || len(n) < 256 || len(e) == 0 || len(e) > 4 {
			return nil, errors.New("invalid RSA JWK")
		}
		eInt := 0
		for _, b := range e {
			eInt = eInt<<8 | int(b)
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: eInt}, nil
	case "EC":
		curve, ok := curves[k.Crv]
		if !ok {
			return nil, fmt.Errorf("unsupported curve %q", k.Crv)
		}
		x, err1 := decodeB64URL(k.X)
		y, err2 := decodeB64URL(k.Y)
		if err1 != nil || err2 != nil {
			return nil, errors.New("invalid EC JWK")
		}
		pub := &ecdsa.PublicKey{Curve: curve, X: new(big.Int).SetBytes(x), Y: new(big.Int).SetBytes(y)}
		if _, err := pub.ECDH(); err != nil {
			return nil, errors.New("EC point not on curve")
		}
		return pub, nil
	}
	return nil, fmt.Errorf("unsupported kty %q", k.Kty)
}

func rsaJWK(pub *rsa.PublicKey) (n, e string) {
	return b64url.EncodeToString(pub.N.Bytes()), b64url.EncodeToString(big.NewInt(int64(pub.E)).Bytes())
}
