// Key Vault cryptographic operations on keys.

package azurecloud

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"slices"
)

// ---- cryptography ----

type cryptoReq struct {
	Alg    string `json:"alg"`
	Value  string `json:"value"`
	Digest string `json:"digest"`
	IV     string `json:"iv"`
	AAD    string `json:"aad"`
	Tag    string `json:"tag"`
}

// cryptoOut is KeyOperationResult; iv, tag and aad only for AES.
type cryptoOut struct {
	Kid   string `json:"kid"`
	Value string `json:"value"`
	IV    string `json:"iv,omitempty"`
	Tag   string `json:"tag,omitempty"`
	AAD   string `json:"aad,omitempty"`
}

func (e *Emulator) kvCrypto(w http.ResponseWriter, r *http.Request, host string, v *vault, rt kvRoute) {
	var req cryptoReq
	if err := readJSON(r, &req); err != nil {
		badParam(w, err.Error())
		return
	}
	now := e.clock.Now().Unix()
	e.mu.RLock()
	k, kv := v.lookup(rt.name, rt.version)
	var snap keyVersion
	var keyName string
	if kv != nil {
		snap, keyName = *kv, k.Name
		snap.Ops = slices.Clone(kv.Ops)
	}
	e.mu.RUnlock()
	if kv == nil {
		keyNotFound(w, rt.name, rt.version)
		return
	}
	op := cryptoOps[rt.crypto].keyOp
	if !snap.Enabled {
		kvError(w, http.StatusForbidden, "Forbidden", fmt.Sprintf("Operation %s is not allowed on a disabled key.", op), "KeyDisabled")
		return
	}
	if !slices.Contains(snap.Ops, op) {
		kvError(w, http.StatusForbidden, "Forbidden", fmt.Sprintf("Operation %s is not permitted on this key.", op), "KeyOperationForbidden")
		return
	}
	// exp/nbf block encrypt, wrap and sign; decrypt, unwrap and verify stay
	// possible so existing data can still be read.
	if op == "encrypt" || op == "wrapKey" || op == "sign" {
		if snap.EXP != nil && now >= *snap.EXP {
			kvError(w, http.StatusForbidden, "Forbidden", fmt.Sprintf("Operation %s is not allowed on an expired key.", op), "KeyExpired")
			return
		}
		if snap.NBF != nil && now < *snap.NBF {
			kvError(w, http.StatusForbidden, "Forbidden", fmt.Sprintf("Operation %s is not allowed on a key that is not yet valid.", op), "KeyNotYetValid")
			return
		}
	}
	if req.Alg == "" {
		badParam(w, "The property alg is required.")
		return
	}
	val, err := decodeB64URL(req.Value)
	if err != nil || (len(val) == 0 && !isOct(snap.Kty)) {
		badParam(w, "The property value must be non-empty base64url.")
		return
	}
	kid := keyURL(host, keyName) + "/" + snap.Version
	switch rt.crypto {
	case "encrypt", "wrapkey", "decrypt", "unwrapkey":
		if isOct(snap.Kty) {
			out, err := aesOp(snap.sym, rt.crypto, req, val)
			if err != nil {
				badParam(w, err.Error())
				return
			}
			out.Kid = kid
			writeJSON(w, http.StatusOK, out)
			return
		}
		priv, ok := snap.priv.(*rsa.PrivateKey)
		if !ok {
			badParam(w, fmt.Sprintf("Algorithm %s is not supported for key type %s.", truncate(req.Alg, 32), snap.Kty))
			return
		}
		var out []byte
		if rt.crypto == "encrypt" || rt.crypto == "wrapkey" {
			out, err = rsaEncrypt(&priv.PublicKey, req.Alg, val)
		} else {
			out, err = rsaDecrypt(priv, req.Alg, val)
		}
		if err != nil {
			badParam(w, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, cryptoOut{Kid: kid, Value: b64url.EncodeToString(out)})
	case "sign":
		if snap.priv == nil {
			badParam(w, fmt.Sprintf("Operation sign is not supported for key type %s.", snap.Kty))
			return
		}
		sig, err := signDigest(snap.priv, snap.Curve, req.Alg, val)
		if err != nil {
			badParam(w, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, cryptoOut{Kid: kid, Value: b64url.EncodeToString(sig)})
	case "verify":
		if snap.priv == nil {
			badParam(w, fmt.Sprintf("Operation verify is not supported for key type %s.", snap.Kty))
			return
		}
		digest, err := decodeB64URL(req.Digest)
		if err != nil || len(digest) == 0 {
			badParam(w, "The property digest must be non-empty base64url.")
			return
		}
		ok, err := verifyDigest(snap.priv.Public(), snap.Curve, req.Alg, digest, val)
		if err != nil {
			badParam(w, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, map[string]bool{"value": ok})
	}
}

var errBadAlg = errors.New("Invalid algorithm. Supported RSA encryption algorithms are RSA-OAEP, RSA-OAEP-256 and RSA1_5.")

func rsaEncrypt(pub *rsa.PublicKey, alg string, pt []byte) ([]byte, error) {
	var out []byte
	var err error
	switch alg {
	case "RSA-OAEP":
		out, err = rsa.EncryptOAEP(sha1.New(), rand.Reader, pub, pt, nil)
	case "RSA-OAEP-256":
		out, err = rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, pt, nil)
	case "RSA1_5":
		out, err = rsa.EncryptPKCS1v15(rand.Reader, pub, pt)
	default:
		return nil, errBadAlg
	}
	if err != nil {
		return nil, fmt.Errorf("The value is too long for algorithm %s and this key size.", alg)
	}
	return out, nil
}

func rsaDecrypt(priv *rsa.PrivateKey, alg string, ct []byte) ([]byte, error) {
	var out []byte
	var err error
	switch alg {
	case "RSA-OAEP":
		out, err = rsa.DecryptOAEP(sha1.New(), nil, priv, ct, nil)
	case "RSA-OAEP-256":
		out, err = rsa.DecryptOAEP(sha256.New(), nil, priv, ct, nil)
	case "RSA1_5":
		out, err = rsa.DecryptPKCS1v15(nil, priv, ct) //nolint:staticcheck // Key Vault still offers RSA1_5
	default:
		return nil, errBadAlg
	}
	if err != nil {
		return nil, errors.New("Decryption failed: the ciphertext is not valid for this key and algorithm.")
	}
	return out, nil
}

// sigAlgs maps Key Vault's signature algorithms to their hash; EC
// algorithms are bound to one curve each (ES256K to P-256K).
var sigAlgs = map[string]struct {
	hash  crypto.Hash
	curve string // "" for RSA
}{
	"RS256": {crypto.SHA256, ""}, "RS384": {crypto.SHA384, ""}, "RS512": {crypto.SHA512, ""},
	"PS256": {crypto.SHA256, ""}, "PS384": {crypto.SHA384, ""}, "PS512": {crypto.SHA512, ""},
	"ES256": {crypto.SHA256, "P-256"}, "ES384": {crypto.SHA384, "P-384"}, "ES512": {crypto.SHA512, "P-521"},
	"ES256K": {crypto.SHA256, curveP256K},
}

// sigAlg checks alg against the key (its curve, "" for RSA) and the digest
// length.
func sigAlg(alg, curve string, digest []byte, op string) (crypto.Hash, error) {
	a, ok := sigAlgs[alg]
	if !ok {
		return 0, fmt.Errorf("Invalid algorithm %s for %s.", truncate(alg, 16), op)
	}
	if a.curve != curve {
		if curve == "" {
			return 0, fmt.Errorf("Algorithm %s is not supported for RSA keys.", alg)
		}
		return 0, fmt.Errorf("Algorithm %s is not supported for a key on curve %s.", alg, curve)
	}
	if len(digest) != a.hash.Size() {
		return 0, fmt.Errorf("The digest must be %d bytes for algorithm %s.", a.hash.Size(), alg)
	}
	return a.hash, nil
}

func signDigest(priv crypto.Signer, curve, alg string, digest []byte) ([]byte, error) {
	h, err := sigAlg(alg, curve, digest, "sign")
	if err != nil {
		return nil, err
	}
	switch k := priv.(type) {
	case *rsa.PrivateKey:
		if alg[:2] == "PS" {
			return rsa.SignPSS(rand.Reader, k, h, digest, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		}
		return rsa.SignPKCS1v15(rand.Reader, k, h, digest)
	case *ecdsa.PrivateKey:
		r, s, err := ecdsa.Sign(rand.Reader, k, digest)
		if err != nil {
			return nil, err
		}
		n := (k.Curve.Params().BitSize + 7) / 8
		return append(r.FillBytes(make([]byte, n)), s.FillBytes(make([]byte, n))...), nil
	case *k1Key:
		return k.Sign(nil, digest, nil)
	}
	return nil, errors.New("The algorithm is not supported for this key type.")
}

func verifyDigest(pub crypto.PublicKey, curve, alg string, digest, sig []byte) (bool, error) {
	h, err := sigAlg(alg, curve, digest, "verify")
	if err != nil {
		return false, err
	}
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if alg[:2] == "PS" {
			return rsa.VerifyPSS(k, h, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto}) == nil, nil
		}
		return rsa.VerifyPKCS1v15(k, h, digest, sig) == nil, nil
	case *ecdsa.PublicKey:
		n := (k.Curve.Params().BitSize + 7) / 8
		if len(sig) != 2*n {
			return false, nil
		}
		return ecdsa.Verify(k, digest, new(big.Int).SetBytes(sig[:n]), new(big.Int).SetBytes(sig[n:])), nil
	case *k1Public:
		return k.verify(digest, sig), nil
	}
	return false, errors.New("The algorithm is not supported for this key type.")
}
