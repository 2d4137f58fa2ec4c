// A local attestation issuer: emulated Microsoft Azure Attestation
// providers at https://<provider>.<region>.attest.azure.net, which issue
// the signed environment assertions (attestation tokens) that key release
// verifies. Each provider publishes OpenID metadata and its signing keys,
// and also answers the SDK test mock's GET /generate-test-token (the
// Azure SDK's keyvault-mock-attestation service), so the official azkeys
// suite's release test runs against it.

package azurecloud

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// attestRegions are the region labels of attestation host names the
// emulator's certificate covers (<provider>.<region>.attest.azure.net; a
// certificate wildcard stands for one label only).
var attestRegions = []string{
	"eus", "eus2", "wus", "wus2", "wus3", "cus", "ncus", "scus", "wcus", "cae", "cac",
	"neu", "weu", "uks", "ukw", "frc", "gewc", "swn", "itn", "sec", "jpe", "jpw", "ea", "sasia",
	"auc", "aue", "ause", "inc", "krc", "brs", "uaen", "san",
}

// isAttestHost reports whether host is an emulated attestation provider.
func isAttestHost(host string) bool {
	rest, ok := strings.CutSuffix(host, ".attest.azure.net")
	if !ok {
		return false
	}
	name, region, ok := strings.Cut(rest, ".")
	if !ok || name == "" || strings.Contains(region, ".") {
		return false
	}
	for _, r := range attestRegions {
		if r == region {
			return true
		}
	}
	return false
}

// attestIssuer is the issuer URL of an attestation host (no trailing
// slash, as Microsoft Azure Attestation writes it).
func attestIssuer(host string) string { return "https://" + host }

// attestKid is the key id of the attestation signing key.
func (e *Emulator) attestKid() string {
	s := sha256.Sum256(e.st.AttestCertDER)
	return b64url.EncodeToString(s[:])
}

// attestJWKS is the providers' signing key set.
func (e *Emulator) attestJWKS() map[string]any {
	pub := e.attestKey.Public().(*rsa.PublicKey)
	n, ex := rsaJWK(pub)
	return map[string]any{"keys": []map[string]any{{
		"kty": "RSA", "kid": e.attestKid(), "alg": "RS256", "use": "sig", "n": n, "e": ex,
		"x5c": []string{base64.StdEncoding.EncodeToString(e.st.AttestCertDER)},
	}}}
}

// mintAttestation signs an attestation token for issuer with claims
// (iss, iat, nbf and exp are set here).
func (e *Emulator) mintAttestation(issuer string, claims map[string]any, lifetime time.Duration) (string, error) {
	now := e.clock.Now()
	c := map[string]any{}
	for k, v := range claims {
		c[k] = v
	}
	c["iss"], c["iat"], c["nbf"], c["exp"] = issuer, now.Unix(), now.Unix(), now.Add(lifetime).Unix()
	host := strings.TrimPrefix(strings.TrimSuffix(issuer, "/"), "https://")
	h := map[string]any{"alg": "RS256", "typ": "JWT", "kid": e.attestKid(), "jku": "https://" + host + "/certs"}
	return signJWS(h, c, e.attestKey)
}

// signJWS signs header.claims with RS256.
func signJWS(header, claims map[string]any, key *rsa.PrivateKey) (string, error) {
	hb, err := json.Marshal(header)
	if err != nil {
		return "", err
	}
	cb, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	in := b64url.EncodeToString(hb) + "." + b64url.EncodeToString(cb)
	d := sha256.Sum256([]byte(in))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, d[:])
	if err != nil {
		return "", err
	}
	return in + "." + b64url.EncodeToString(sig), nil
}

// AttestationToken issues an attestation token from an emulated provider
// (issuer "https://<provider>.<region>.attest.azure.net"): the environment
// assertion a trusted execution environment presents to key release.
// runtimeKeys are the environment's RSA public keys, published in the
// x-ms-runtime claim as a JWK set (the first is the one a release wraps
// the key for); claims are the other claims (for example
// "x-ms-attestation-type": "sevsnpvm") that release policies match.
func (e *Emulator) AttestationToken(issuer string, claims map[string]any, runtimeKeys ...*rsa.PublicKey) (string, error) {
	issuer = strings.TrimSuffix(issuer, "/")
	host, ok := strings.CutPrefix(issuer, "https://")
	if !ok || !isAttestHost(host) {
		return "", fmt.Errorf("issuer %q is not an emulated attestation provider (https://<provider>.<region>.attest.azure.net)", issuer)
	}
	c := map[string]any{}
	for k, v := range claims {
		c[k] = v
	}
	if len(runtimeKeys) > 0 {
		var keys []map[string]any
		for i, k := range runtimeKeys {
			n, ex := rsaJWK(k)
			keys = append(keys, map[string]any{"kty": "RSA", "kid": fmt.Sprintf("TpmEphemeralEncryptionKey-%d", i), "key_ops": []string{"encrypt"}, "e": ex, "n": n})
		}
		rt, _ := c["x-ms-runtime"].(map[string]any)
		if rt == nil {
			rt = map[string]any{}
		}
		rt["keys"] = keys
		c["x-ms-runtime"] = rt
	}
	return e.mintAttestation(issuer, c, 8*time.Hour)
}

// mockReleaseKey is the RSA key the SDK test mock's tokens carry as their
// runtime key (its private half is kept only so tests can unwrap).
var mockReleaseKey struct {
	once sync.Once
	key  *rsa.PrivateKey
	err  error
}

func (e *Emulator) serveAttestation(w http.ResponseWriter, r *http.Request, host string) {
	// The SDK suite builds "<url>/generate-test-token" from a URL that ends
	// in "/", so paths may start with "//".
	path := "/" + strings.TrimLeft(r.URL.Path, "/")
	op := map[string]string{
		"/.well-known/openid-configuration": "attest.discovery", "/certs": "attest.jwks", "/keys": "attest.jwks",
		"/generate-test-token": "attest.test_token",
	}[path]
	if op == "" {
		op = "attest.invalid"
	}
	if !e.begin(w, r, svcAttest, host, op) {
		return
	}
	if r.Method != http.MethodGet {
		attestError(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "Only GET is supported by the emulated attestation endpoints.")
		return
	}
	iss := attestIssuer(host)
	switch op {
	case "attest.discovery":
		writeJSON(w, http.StatusOK, map[string]any{
			"issuer": iss, "jwks_uri": iss + "/certs", "revocation_endpoint": iss + "/revocations",
			"response_types_supported": []string{"token", "none"}, "id_token_signing_alg_values_supported": []string{"RS256"},
			"claims_supported": []string{"x-ms-attestation-type", "x-ms-policy-hash", "x-ms-runtime", "x-ms-inittime", "x-ms-ver", "iss", "iat", "exp", "nbf"},
		})
	case "attest.jwks":
		writeJSON(w, http.StatusOK, e.attestJWKS())
	case "attest.test_token":
		mockReleaseKey.once.Do(func() { mockReleaseKey.key, mockReleaseKey.err = rsa.GenerateKey(rand.Reader, 2048) })
		if mockReleaseKey.err != nil {
			attestError(w, http.StatusInternalServerError, "InternalError", "could not generate the runtime key")
			return
		}
		n, ex := rsaJWK(&mockReleaseKey.key.PublicKey)
		tok, err := e.mintAttestation(iss, map[string]any{
			"sdk-test": true, "x-ms-inittime": map[string]any{}, "maa-ehd": "sdk-test",
			"x-ms-runtime": map[string]any{"keys": []map[string]any{{"kty": "RSA", "kid": "fake-release-key", "use": "enc", "e": ex, "n": n}}},
		}, 7*24*time.Hour)
		if err != nil {
			attestError(w, http.StatusInternalServerError, "InternalError", err.Error())
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"token": tok})
	default:
		attestError(w, http.StatusNotFound, "NotFound", "The emulated attestation provider serves /.well-known/openid-configuration, /certs and /generate-test-token; attestation of evidence (/attest/...) is not emulated: mint tokens with the control API (POST /_emulator/attestation/tokens).")
	}
}

func attestError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

// errUnverifiable is Key Vault's answer to an assertion it cannot verify.
var errUnverifiable = errors.New("Target environment attestation statement cannot be verified.")

// verifyAttestation checks an environment assertion: an RS256 JWT from an
// emulated attestation provider (or an issuer registered with POST
// /_emulator/issuers and its JWKS), unexpired on the emulator clock. It
// returns the issuer and the claims.
func (e *Emulator) verifyAttestation(raw string) (string, map[string]any, error) {
	t, err := parseJWT(raw)
	if err != nil {
		return "", nil, errUnverifiable
	}
	iss, _ := t.claims["iss"].(string)
	norm := strings.TrimSuffix(iss, "/")
	host, _ := strings.CutPrefix(norm, "https://")
	var pub crypto.PublicKey
	if isAttestHost(host) {
		if kid := t.hstr("kid"); kid != "" && kid != e.attestKid() {
			return "", nil, errUnverifiable
		}
		pub = e.attestKey.Public()
	} else {
		e.mu.RLock()
		set := e.st.Issuers[iss]
		if set == nil {
			set = e.st.Issuers[norm]
		}
		e.mu.RUnlock()
		if set == nil {
			return "", nil, errUnverifiable
		}
		kid := t.hstr("kid")
		for _, k := range set.Keys {
			if kid == "" || k.Kid == kid {
				if p, err := k.publicKey(); err == nil {
					pub = p
					break
				}
			}
		}
		if pub == nil {
			return "", nil, errUnverifiable
		}
	}
	if err := t.verify(pub); err != nil {
		return "", nil, errUnverifiable
	}
	now := e.clock.Now().Unix()
	exp, okExp := t.num("exp")
	if !okExp || now > exp+300 {
		return "", nil, errors.New("Target environment attestation statement has expired.")
	}
	if nbf, ok := t.num("nbf"); ok && now+300 < nbf {
		return "", nil, errors.New("Target environment attestation statement is not yet valid.")
	}
	return norm, t.claims, nil
}
