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
	if err != nil || len(val) == 0 {
		badParam(w, "The property value must be non-empty base64url.")
		return
	}
	kid := keyURL(host, keyName) + "/" + snap.Version
	switch rt.crypto {
	case "encrypt", "wrapkey", "decrypt", "unwrapkey":
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
		writeJSON(w, http.StatusOK, map[string]string{"kid": kid, "value": b64url.EncodeToString(out)})
	case "sign":
		sig, err := signDigest(snap.priv, req.Alg, val)
		if err != nil {
			badParam(w, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"kid": kid, "value": b64url.EncodeToString(sig)})
	case "verify":
		digest, err := decodeB64URL(req.Digest)
		if err != nil || len(digest) == 0 {
			badParam(w, "The property digest must be non-empty base64url.")
			return
		}
		ok, err := verifyDigest(snap.priv.Public(), req.Alg, digest, val)
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

func sigHash(alg string) (crypto.Hash, bool) {
	if len(alg) != 5 {
		return 0, false
	}
	h, _, ok := hashFor(alg)
	return h, ok
}

func signDigest(priv crypto.Signer, alg string, digest []byte) ([]byte, error) {
	h, ok := sigHash(alg)
	if !ok || len(digest) != h.Size() {
		return nil, errors.New("Invalid algorithm or digest length for sign.")
	}
	switch k := priv.(type) {
	case *rsa.PrivateKey:
		switch alg[:2] {
		case "RS":
			return rsa.SignPKCS1v15(rand.Reader, k, h, digest)
		case "PS":
			return rsa.SignPSS(rand.Reader, k, h, digest, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		}
	case *ecdsa.PrivateKey:
		if alg[:2] == "ES" {
			r, s, err := ecdsa.Sign(rand.Reader, k, digest)
			if err != nil {
				return nil, err
			}
			n := (k.Curve.Params().BitSize + 7) / 8
			return append(r.FillBytes(make([]byte, n)), s.FillBytes(make([]byte, n))...), nil
		}
	}
	return nil, errors.New("The algorithm is not supported for this key type.")
}

func verifyDigest(pub crypto.PublicKey, alg string, digest, sig []byte) (bool, error) {
	h, ok := sigHash(alg)
	if !ok || len(digest) != h.Size() {
		return false, errors.New("Invalid algorithm or digest length for verify.")
	}
	switch k := pub.(type) {
	case *rsa.PublicKey:
		switch alg[:2] {
		case "RS":
			return rsa.VerifyPKCS1v15(k, h, digest, sig) == nil, nil
		case "PS":
			return rsa.VerifyPSS(k, h, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto}) == nil, nil
		}
	case *ecdsa.PublicKey:
		if alg[:2] == "ES" {
			n := len(sig) / 2
			if n == 0 || len(sig)%2 != 0 {
				return false, nil
			}
			return ecdsa.Verify(k, digest, new(big.Int).SetBytes(sig[:n]), new(big.Int).SetBytes(sig[n:])), nil
		}
	}
	return false, errors.New("The algorithm is not supported for this key type.")
}
