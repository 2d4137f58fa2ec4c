package gcpcloud

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

var b64url = base64.RawURLEncoding

const maxJWTSize = 64 << 10

// jwtToken is a parsed (not yet verified) compact JWS.
type jwtToken struct {
	Header  jwtHeader
	Claims  map[string]any
	signed  string // header.payload
	sig     []byte
	payload []byte
}

type jwtHeader struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	Typ string `json:"typ"`
}

// parseJWT splits and decodes a compact JWT. Claims must be a JSON object;
// numbers are kept as float64 (as Google exposes them to CEL).
func parseJWT(tok string) (*jwtToken, error) {
	if len(tok) > maxJWTSize {
		return nil, errors.New("token too large")
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, errors.New("not a compact JWS")
	}
	hb, err := b64url.DecodeString(parts[0])
	if err != nil {
		return nil, errors.New("header is not base64url")
	}
	pb, err := b64url.DecodeString(parts[1])
	if err != nil {
		return nil, errors.New("payload is not base64url")
	}
	sig, err := b64url.DecodeString(parts[2])
	if err != nil {
		return nil, errors.New("signature is not base64url")
	}
	t := &jwtToken{signed: parts[0] + "." + parts[1], sig: sig, payload: pb}
	if err := json.Unmarshal(hb, &t.Header); err != nil {
		return nil, errors.New("header is not a JSON object")
	}
	d := json.NewDecoder(bytes.NewReader(pb))
	if err := d.Decode(&t.Claims); err != nil || t.Claims == nil || d.More() {
		return nil, errors.New("payload is not a JSON object")
	}
	return t, nil
}

// jwk is one JSON Web Key (RSA or EC P-256/P-384).
type jwk struct {
	Kty string   `json:"kty"`
	Kid string   `json:"kid,omitempty"`
	Alg string   `json:"alg,omitempty"`
	Use string   `json:"use,omitempty"`
	N   string   `json:"n,omitempty"`
	E   string   `json:"e,omitempty"`
	Crv string   `json:"crv,omitempty"`
	X   string   `json:"x,omitempty"`
	Y   string   `json:"y,omitempty"`
	X5c []string `json:"x5c,omitempty"`
	X5t string   `json:"x5t,omitempty"`
}

type jwkSet struct {
	Keys []jwk `json:"keys"`
}

// publicKey is a parsed verification key.
type publicKey struct {
	kid string
	key crypto.PublicKey
}

const maxJWKSKeys = 100

// parseJWKS parses a JWK Set. uploaded applies the rules Google applies to
// a provider's jwksJson: only RSA and EC keys, and no x5c/x5t members.
func parseJWKS(b []byte, uploaded bool) ([]publicKey, error) {
	var set jwkSet
	if err := json.Unmarshal(b, &set); err != nil || set.Keys == nil {
		return nil, errors.New("not a JWK set")
	}
	if len(set.Keys) == 0 || len(set.Keys) > maxJWKSKeys {
		return nil, errors.New("a JWK set needs 1 to 100 keys")
	}
	var out []publicKey
	for _, k := range set.Keys {
		if uploaded && (len(k.X5c) > 0 || k.X5t != "") {
			return nil, errors.New("x5c and x5t are not allowed")
		}
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		pk, err := k.public()
		if err != nil {
			return nil, err
		}
		out = append(out, publicKey{kid: k.Kid, key: pk})
	}
	if len(out) == 0 {
		return nil, errors.New("no signing keys")
	}
	return out, nil
}

func (k jwk) public() (crypto.PublicKey, error) {
	switch k.Kty {
	case "RSA":
		nb, err1 := b64url.DecodeString(strings.TrimRight(k.N, "="))
		eb, err2 := b64url.DecodeString(strings.TrimRight(k.E, "="))
		if err1 != nil || err2 != nil || len(nb) < 256 || len(nb) > 1024 || len(eb) == 0 || len(eb) > 4 {
			return nil, errors.New("invalid RSA key (at least 2048 bits)")
		}
		e := new(big.Int).SetBytes(eb)
		if !e.IsInt64() || e.Int64() < 3 || e.Int64()%2 == 0 {
			return nil, errors.New("invalid RSA exponent")
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(nb), E: int(e.Int64())}, nil
	case "EC":
		var curve elliptic.Curve
		switch k.Crv {
		case "P-256":
			curve = elliptic.P256()
		case "P-384":
			curve = elliptic.P384()
		default:
			return nil, errors.New("unsupported EC curve")
		}
		xb, err1 := b64url.DecodeString(k.X)
		yb, err2 := b64url.DecodeString(k.Y)
		size := (curve.Params().BitSize + 7) / 8
		if err1 != nil || err2 != nil || len(xb) != size || len(yb) != size {
			return nil, errors.New("invalid EC key")
		}
		// Build the uncompressed point and let ecdh-backed parsing check
		// that it lies on the curve.
		pt := append([]byte{4}, append(xb, yb...)...)
		pub, err := ecdsaFromPoint(curve, pt)
		if err != nil {
			return nil, err
		}
		return pub, nil
	}
	return nil, fmt.Errorf("unsupported key type %q", k.Kty)
}

func ecdsaFromPoint(curve elliptic.Curve, pt []byte) (*ecdsa.PublicKey, error) {
	switch curve {
	case elliptic.P256():
		return ecdsa.ParseUncompressedPublicKey(elliptic.P256(), pt)
	case elliptic.P384():
		return ecdsa.ParseUncompressedPublicKey(elliptic.P384(), pt)
	}
	return nil, errors.New("unsupported curve")
}

var errBadSignature = errors.New("signature verification failed")

// verifyJWT checks t's signature with the key named by its kid. Only
// RS256 and ES256 are accepted (what STS accepts).
func verifyJWT(t *jwtToken, keys []publicKey) error {
	var k crypto.PublicKey
	for _, pk := range keys {
		if pk.kid == t.Header.Kid {
			k = pk.key
			break
		}
	}
	if k == nil {
		return errors.New("no key matches the token's kid")
	}
	h := sha256.Sum256([]byte(t.signed))
	switch t.Header.Alg {
	case "RS256":
		rk, ok := k.(*rsa.PublicKey)
		if !ok || rsa.VerifyPKCS1v15(rk, crypto.SHA256, h[:], t.sig) != nil {
			return errBadSignature
		}
	case "ES256":
		ek, ok := k.(*ecdsa.PublicKey)
		if !ok || ek.Curve != elliptic.P256() || len(t.sig) != 64 {
			return errBadSignature
		}
		r, s := new(big.Int).SetBytes(t.sig[:32]), new(big.Int).SetBytes(t.sig[32:])
		if !ecdsa.Verify(ek, h[:], r, s) {
			return errBadSignature
		}
	default:
		return errBadSignature
	}
	return nil
}

// signRS256 makes a compact JWT.
func signRS256(key *rsa.PrivateKey, kid string, claims any) (string, error) {
	hb, err := json.Marshal(jwtHeader{Alg: "RS256", Kid: kid, Typ: "JWT"})
	if err != nil {
		return "", err
	}
	pb, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	signed := b64url.EncodeToString(hb) + "." + b64url.EncodeToString(pb)
	h := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, h[:])
	if err != nil {
		return "", err
	}
	return signed + "." + b64url.EncodeToString(sig), nil
}

// rsaJWK is the public JWK of an RSA key.
func rsaJWK(pub *rsa.PublicKey, kid string) jwk {
	return jwk{Kty: "RSA", Kid: kid, Alg: "RS256", Use: "sig", N: b64url.EncodeToString(pub.N.Bytes()),
		E: b64url.EncodeToString(big.NewInt(int64(pub.E)).Bytes())}
}

// claimString returns a string claim.
func claimString(c map[string]any, k string) (string, bool) {
	s, ok := c[k].(string)
	return s, ok
}

// claimTime returns a NumericDate claim in whole seconds.
func claimTime(c map[string]any, k string) (int64, bool) {
	f, ok := c[k].(float64)
	if !ok || f < 0 || f > 1e11 {
		return 0, false
	}
	return int64(f), true
}

// claimAudiences returns aud as a list (a string or an array of strings).
func claimAudiences(c map[string]any) []string {
	switch a := c["aud"].(type) {
	case string:
		return []string{a}
	case []any:
		var out []string
		for _, v := range a {
			if s, ok := v.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}
