package awscloud

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"strings"
)

// jwt is a parsed (not yet verified) compact JWS.
type jwt struct {
	alg, kid     string
	signingInput string
	sig          []byte
	claims       map[string]any
}

func parseJWT(s string) (*jwt, error) {
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return nil, errors.New("not a compact JWS")
	}
	hb, err1 := base64.RawURLEncoding.DecodeString(parts[0])
	cb, err2 := base64.RawURLEncoding.DecodeString(parts[1])
	sig, err3 := base64.RawURLEncoding.DecodeString(parts[2])
	if err1 != nil || err2 != nil || err3 != nil {
		return nil, errors.New("bad base64url")
	}
	var h struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	t := &jwt{signingInput: parts[0] + "." + parts[1], sig: sig}
	if json.Unmarshal(hb, &h) != nil {
		return nil, errors.New("bad header")
	}
	d := json.NewDecoder(strings.NewReader(string(cb)))
	d.UseNumber()
	if d.Decode(&t.claims) != nil || t.claims == nil {
		return nil, errors.New("bad claims")
	}
	t.alg, t.kid = h.Alg, h.Kid
	return t, nil
}

func (t *jwt) str(k string) string {
	s, _ := t.claims[k].(string)
	return s
}

func (t *jwt) num(k string) (float64, bool) {
	n, ok := t.claims[k].(json.Number)
	if !ok {
		return 0, false
	}
	f, err := n.Float64()
	return f, err == nil
}

func (t *jwt) audiences() []string {
	switch v := t.claims["aud"].(type) {
	case string:
		return []string{v}
	case []any:
		var out []string
		for _, x := range v {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	pub crypto.PublicKey
}

func parseJWKS(b []byte) ([]*jwk, error) {
	var set struct {
		Keys []*jwk `json:"keys"`
	}
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, errors.New("invalid JWKS JSON")
	}
	if len(set.Keys) == 0 || len(set.Keys) > 50 {
		return nil, errors.New("a JWKS needs 1..50 keys")
	}
	for _, k := range set.Keys {
		dec := func(s string) *big.Int {
			b, err := base64.RawURLEncoding.DecodeString(s)
			if err != nil || len(b) == 0 {
				return nil
			}
			return new(big.Int).SetBytes(b)
		}
		switch k.Kty {
		case "RSA":
			n, e := dec(k.N), dec(k.E)
			if n == nil || e == nil || n.BitLen() < 2048 || !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31 {
				return nil, errors.New("invalid RSA key in JWKS (at least 2048 bits)")
			}
			k.pub = &rsa.PublicKey{N: n, E: int(e.Int64())}
		case "EC":
			x, y := dec(k.X), dec(k.Y)
			if k.Crv != "P-256" || x == nil || y == nil {
				return nil, errors.New("invalid EC key in JWKS (P-256 only)")
			}
			pk := &ecdsa.PublicKey{Curve: elliptic.P256(), X: x, Y: y}
			if !pk.Curve.IsOnCurve(x, y) { //nolint:staticcheck // validating a decoded point
				return nil, errors.New("EC point not on curve")
			}
			k.pub = pk
		default:
			return nil, errors.New("JWKS keys must be RSA or EC")
		}
	}
	return set.Keys, nil
}

// verify checks the signature with the key named by kid (or any key when
// the token has no kid). RS256 and ES256 only.
func (t *jwt) verify(keys []*jwk) error {
	h := sha256.Sum256([]byte(t.signingInput))
	for _, k := range keys {
		if t.kid != "" && k.Kid != t.kid {
			continue
		}
		switch pub := k.pub.(type) {
		case *rsa.PublicKey:
			if t.alg == "RS256" && rsa.VerifyPKCS1v15(pub, crypto.SHA256, h[:], t.sig) == nil {
				return nil
			}
		case *ecdsa.PublicKey:
			if t.alg == "ES256" && len(t.sig) == 64 {
				r, s := new(big.Int).SetBytes(t.sig[:32]), new(big.Int).SetBytes(t.sig[32:])
				if ecdsa.Verify(pub, h[:], r, s) {
					return nil
				}
			}
		}
	}
	return errors.New("signature not verified")
}
