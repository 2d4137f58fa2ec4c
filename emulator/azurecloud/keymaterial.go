// Key material: RSA and NIST EC keys (crypto/rsa, crypto/ecdsa), secp256k1
// (curve P-256K, github.com/decred/dcrd/dcrec/secp256k1/v4, ISC licence)
// and AES keys (oct, oct-HSM). How each is generated, persisted, parsed,
// shown as a JWK and exported as PKCS #8.

package azurecloud

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strings"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	k1ecdsa "github.com/decred/dcrd/dcrec/secp256k1/v4/ecdsa"
)

// curveP256K is Key Vault's name for secp256k1 (the JWK "crv" value).
const curveP256K = "P-256K"

// k1Key is a secp256k1 private key. It signs a digest with RFC 6979
// deterministic nonces and answers Key Vault's signature format (R || S,
// 32 bytes each).
type k1Key struct{ d *secp256k1.PrivateKey }

// k1Public is a secp256k1 public key.
type k1Public struct{ p *secp256k1.PublicKey }

func (k *k1Key) Public() crypto.PublicKey { return &k1Public{k.d.PubKey()} }

// Sign ignores rand (RFC 6979) and opts: the digest is signed as given.
func (k *k1Key) Sign(_ io.Reader, digest []byte, _ crypto.SignerOpts) ([]byte, error) {
	if len(digest) != 32 {
		return nil, errors.New("ES256K signs a 32-byte SHA-256 digest")
	}
	sig := k1ecdsa.Sign(k.d, digest)
	r, s := sig.R(), sig.S()
	rb, sb := r.Bytes(), s.Bytes()
	return append(rb[:], sb[:]...), nil
}

// xy returns the public point's coordinates, 32 bytes each.
func (p *k1Public) xy() (x, y []byte) {
	u := p.p.SerializeUncompressed() // 0x04 || x || y
	return u[1:33], u[33:65]
}

// verify checks an R || S signature of a 32-byte digest.
func (p *k1Public) verify(digest, sig []byte) bool {
	if len(digest) != 32 || len(sig) != 64 {
		return false
	}
	var r, s secp256k1.ModNScalar
	if r.SetByteSlice(sig[:32]) || s.SetByteSlice(sig[32:]) || r.IsZero() || s.IsZero() {
		return false // overflow (>= N) or zero
	}
	return k1ecdsa.NewSignature(&r, &s).Verify(digest, p.p)
}

func newK1Key(rand io.Reader) (*k1Key, error) {
	d, err := secp256k1.GeneratePrivateKeyFromRand(rand)
	if err != nil {
		return nil, err
	}
	return &k1Key{d}, nil
}

// parseK1Scalar parses a 32-byte private scalar in [1, N-1].
func parseK1Scalar(b []byte) (*k1Key, error) {
	if len(b) == 0 || len(b) > 32 {
		return nil, errors.New("secp256k1 private key must be at most 32 bytes")
	}
	var s secp256k1.ModNScalar
	if s.SetByteSlice(b) || s.IsZero() {
		return nil, errors.New("secp256k1 private key out of range")
	}
	return &k1Key{secp256k1.NewPrivateKey(&s)}, nil
}

// parseK1Public parses x and y (32 bytes each, big-endian) of a point on
// secp256k1.
func parseK1Public(x, y []byte) (*k1Public, error) {
	if len(x) > 32 || len(y) > 32 {
		return nil, errors.New("secp256k1 coordinates must be at most 32 bytes")
	}
	u := make([]byte, 65)
	u[0] = 4
	copy(u[33-len(x):33], x)
	copy(u[65-len(y):], y)
	p, err := secp256k1.ParsePubKey(u)
	if err != nil {
		return nil, err
	}
	return &k1Public{p}, nil
}

func (k *k1Key) scalar() []byte { b := k.d.Key.Bytes(); return b[:] }

// OIDs for PKCS #8 / SEC 1 encoding of secp256k1 keys, which crypto/x509
// does not know.
var (
	oidECPublicKey = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	oidSecp256k1   = asn1.ObjectIdentifier{1, 3, 132, 0, 10}
)

// pkcs8 is RFC 5208's PrivateKeyInfo.
type pkcs8 struct {
	Version    int
	Algo       pkix.AlgorithmIdentifier
	PrivateKey []byte
}

// sec1 is RFC 5915's ECPrivateKey.
type sec1 struct {
	Version    int
	PrivateKey []byte
	PublicKey  asn1.BitString `asn1:"optional,explicit,tag:1"`
}

// pkcs8Of exports a private key as PKCS #8 DER (what a key release
// carries for RSA and EC keys).
func pkcs8Of(priv crypto.Signer) ([]byte, error) {
	k1, ok := priv.(*k1Key)
	if !ok {
		return x509.MarshalPKCS8PrivateKey(priv)
	}
	pub := k1.d.PubKey().SerializeUncompressed()
	inner, err := asn1.Marshal(sec1{Version: 1, PrivateKey: k1.scalar(), PublicKey: asn1.BitString{Bytes: pub, BitLength: 8 * len(pub)}})
	if err != nil {
		return nil, err
	}
	param, err := asn1.Marshal(oidSecp256k1)
	if err != nil {
		return nil, err
	}
	return asn1.Marshal(pkcs8{Algo: pkix.AlgorithmIdentifier{Algorithm: oidECPublicKey, Parameters: asn1.RawValue{FullBytes: param}}, PrivateKey: inner})
}

// parsePKCS8K1 is the inverse of pkcs8Of for secp256k1 (for tests and
// backups).
func parsePKCS8K1(der []byte) (*k1Key, error) {
	var p pkcs8
	if rest, err := asn1.Unmarshal(der, &p); err != nil || len(rest) != 0 {
		return nil, errors.New("not PKCS #8")
	}
	var curve asn1.ObjectIdentifier
	if !p.Algo.Algorithm.Equal(oidECPublicKey) {
		return nil, errors.New("not an EC key")
	}
	if _, err := asn1.Unmarshal(p.Algo.Parameters.FullBytes, &curve); err != nil || !curve.Equal(oidSecp256k1) {
		return nil, errors.New("not a secp256k1 key")
	}
	var s sec1
	if _, err := asn1.Unmarshal(p.PrivateKey, &s); err != nil {
		return nil, errors.New("bad SEC 1 key")
	}
	return parseK1Scalar(s.PrivateKey)
}

// curves are the NIST curves Key Vault supports; P-256K is handled apart.
var curves = map[string]elliptic.Curve{"P-256": elliptic.P256(), "P-384": elliptic.P384(), "P-521": elliptic.P521()}

// curveBits is the size of a curve's field, for signature lengths.
func curveBits(crv string) int {
	switch crv {
	case "P-384":
		return 384
	case "P-521":
		return 521
	}
	return 256
}

// isOct reports whether a key type is symmetric (AES).
func isOct(kty string) bool { return kty == "oct" || kty == "oct-HSM" }

// baseKty strips the -HSM suffix.
func baseKty(kty string) string { return strings.TrimSuffix(kty, "-HSM") }

// encodeMaterial fills PrivDER (RSA, NIST EC: PKCS #8) or Raw (secp256k1
// scalar, AES key) from the parsed material.
func (kv *keyVersion) encodeMaterial() error {
	switch {
	case isOct(kv.Kty):
		kv.PrivDER, kv.Raw = nil, kv.sym
		return nil
	case kv.Curve == curveP256K:
		k1, ok := kv.priv.(*k1Key)
		if !ok {
			return errors.New("P-256K key without secp256k1 material")
		}
		kv.PrivDER, kv.Raw = nil, k1.scalar()
		return nil
	}
	der, err := x509.MarshalPKCS8PrivateKey(kv.priv)
	if err != nil {
		return err
	}
	kv.PrivDER, kv.Raw = der, nil
	return nil
}

// decodeMaterial is the inverse of encodeMaterial (state reload, restore).
func (kv *keyVersion) decodeMaterial() error {
	switch {
	case isOct(kv.Kty):
		if n := len(kv.Raw); n != 16 && n != 24 && n != 32 {
			return fmt.Errorf("AES key of %d bytes", n)
		}
		kv.sym = kv.Raw
		return nil
	case kv.Curve == curveP256K:
		k, err := parseK1Scalar(kv.Raw)
		if err != nil {
			return err
		}
		kv.priv = k
		return nil
	}
	p, err := x509.ParsePKCS8PrivateKey(kv.PrivDER)
	if err != nil {
		return err
	}
	s, ok := p.(crypto.Signer)
	if !ok {
		return errors.New("unsupported key type")
	}
	switch s.(type) {
	case *rsa.PrivateKey, *ecdsa.PrivateKey:
	default:
		return errors.New("unsupported key type")
	}
	kv.priv = s
	return nil
}

// exportMaterial is the key a release hands out: PKCS #8 for RSA and EC,
// the raw bytes for AES.
func (kv *keyVersion) exportMaterial() ([]byte, error) {
	if isOct(kv.Kty) {
		return kv.sym, nil
	}
	return pkcs8Of(kv.priv)
}

// ecJWK returns x and y of an EC public key, padded to the field size.
func ecJWK(pub crypto.PublicKey) (x, y []byte) {
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		size := (p.Curve.Params().BitSize + 7) / 8
		return p.X.FillBytes(make([]byte, size)), p.Y.FillBytes(make([]byte, size))
	case *k1Public:
		return p.xy()
	}
	return nil, nil
}

// bigBytes is a helper for import: a JWK field as a big integer.
func bigBytes(b []byte) *big.Int { return new(big.Int).SetBytes(b) }
