package ocicloud

import (
	"crypto"
	"crypto/md5"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// OCI signs every request with an HTTP signature (draft-cavage-08,
// "Signature Version 1"): Authorization: Signature version="1",
// headers="date (request-target) host[ content-length content-type
// x-content-sha256]",keyId="<tenancy>/<user>/<fingerprint>",
// algorithm="rsa-sha256",signature="<base64 RSASSA-PKCS1-v1_5 SHA-256>".
// https://docs.oracle.com/iaas/Content/API/Concepts/signingrequests.htm

// sigParams is a parsed Authorization header.
type sigParams struct {
	KeyID     string
	Algorithm string
	Version   string
	Headers   []string // lower case, in order
	Signature []byte
}

// maxAuthorization bounds the header we parse.
const maxAuthorization = 16 << 10

// signatureWindow is the clock skew OCI tolerates ("more than 5 minutes"
// gives 401).
const signatureWindow = 5 * time.Minute

// parseAuthorization parses `Signature k="v",k="v",...` (parameters in any
// order, each once).
func parseAuthorization(h string) (sigParams, error) {
	var p sigParams
	if len(h) > maxAuthorization {
		return p, errors.New("authorization header too long")
	}
	scheme, rest, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Signature") {
		return p, errors.New(`authorization scheme is not "Signature"`)
	}
	seen := map[string]bool{}
	for {
		rest = strings.TrimLeft(rest, " ")
		if rest == "" {
			break
		}
		eq := strings.IndexByte(rest, '=')
		if eq <= 0 {
			return p, errors.New("malformed signature parameter")
		}
		name := strings.TrimSpace(rest[:eq])
		rest = rest[eq+1:]
		if !strings.HasPrefix(rest, `"`) {
			return p, fmt.Errorf("parameter %q is not quoted", name)
		}
		end := strings.IndexByte(rest[1:], '"')
		if end < 0 {
			return p, fmt.Errorf("parameter %q is not terminated", name)
		}
		val := rest[1 : end+1]
		rest = strings.TrimLeft(rest[end+2:], " ")
		if rest != "" {
			if rest[0] != ',' {
				return p, errors.New("parameters must be separated by commas")
			}
			rest = rest[1:]
		}
		if seen[name] {
			return p, fmt.Errorf("duplicate parameter %q", name)
		}
		seen[name] = true
		switch name {
		case "keyId":
			p.KeyID = val
		case "algorithm":
			p.Algorithm = val
		case "version":
			p.Version = val
		case "headers":
			p.Headers = strings.Fields(strings.ToLower(val))
		case "signature":
			sig, err := base64.StdEncoding.DecodeString(val)
			if err != nil {
				return p, errors.New("signature is not base64")
			}
			p.Signature = sig
		default:
			// Unknown parameters are ignored (the draft allows extensions).
		}
	}
	switch {
	case p.KeyID == "" || len(p.Signature) == 0 || !seen["headers"]:
		return p, errors.New("keyId, headers and signature are required")
	case p.Algorithm != "rsa-sha256":
		return p, errors.New(`algorithm must be "rsa-sha256"`)
	case p.Version != "" && p.Version != "1":
		return p, errors.New(`version must be "1"`)
	}
	return p, nil
}

// splitKeyID splits an API-key keyId: <tenancy OCID>/<user OCID>/<fingerprint>.
func splitKeyID(id string) (tenancy, user, fingerprint string, ok bool) {
	f := strings.Split(id, "/")
	if len(f) != 3 || f[0] == "" || f[1] == "" || f[2] == "" {
		return "", "", "", false
	}
	return f[0], f[1], f[2], true
}

// requiredHeaders are the headers a signature must cover: OCI refuses a
// request whose signature leaves out any of them.
func requiredHeaders(method string) []string {
	req := []string{"(request-target)", "host"}
	if hasBody(method) {
		req = append(req, "content-length", "content-type", "x-content-sha256")
	}
	return req
}

func hasBody(method string) bool {
	return method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch
}

// signingString rebuilds what the client signed: one "name: value" line
// per listed header, (request-target) being the lower-case method and the
// request URI exactly as received, host the Host header.
func signingString(r *http.Request, headers []string) (string, error) {
	var b strings.Builder
	for i, h := range headers {
		if i > 0 {
			b.WriteByte('\n')
		}
		var v string
		switch h {
		case "(request-target)":
			v = strings.ToLower(r.Method) + " " + r.RequestURI
		case "host":
			v = r.Host
		case "content-length":
			v = r.Header.Get("Content-Length")
			if v == "" && r.ContentLength >= 0 && hasBody(r.Method) {
				v = strconv.FormatInt(r.ContentLength, 10)
			}
		default:
			if strings.HasPrefix(h, "(") {
				return "", fmt.Errorf("unsupported pseudo-header %s", h)
			}
			vals := r.Header.Values(h)
			if len(vals) == 0 {
				return "", fmt.Errorf("signed header %s is absent", h)
			}
			v = strings.Join(vals, ", ")
		}
		b.WriteString(h + ": " + v)
	}
	return b.String(), nil
}

// checkSigned verifies everything about a signature except the key: the
// covered headers, the body hash and length, and the date.
func checkSigned(r *http.Request, body []byte, p sigParams, now time.Time) error {
	has := map[string]bool{}
	for _, h := range p.Headers {
		if has[h] {
			return fmt.Errorf("header %s listed twice", h)
		}
		has[h] = true
	}
	if !has["date"] && !has["x-date"] {
		return errors.New("the signature must cover date or x-date")
	}
	for _, h := range requiredHeaders(r.Method) {
		if !has[h] {
			return fmt.Errorf("the signature must cover %s", h)
		}
	}
	if hasBody(r.Method) {
		sum := sha256.Sum256(body)
		if r.Header.Get("X-Content-Sha256") != base64.StdEncoding.EncodeToString(sum[:]) {
			return errors.New("x-content-sha256 does not match the body")
		}
		if cl := r.Header.Get("Content-Length"); cl != "" && cl != strconv.Itoa(len(body)) {
			return errors.New("content-length does not match the body")
		}
	}
	ds := r.Header.Get("X-Date")
	if ds == "" || !has["x-date"] {
		ds = r.Header.Get("Date")
	}
	t, err := http.ParseTime(ds)
	if err != nil {
		return errors.New("date is not an HTTP date")
	}
	if d := now.Sub(t); d > signatureWindow || d < -signatureWindow {
		return fmt.Errorf("date %s is more than 5 minutes from the server's clock", ds)
	}
	return nil
}

// verifyWith checks the signature against an RSA public key
// (RSASSA-PKCS1-v1_5 over SHA-256, as the SDK signs by default).
func verifyWith(r *http.Request, p sigParams, pub *rsa.PublicKey) error {
	s, err := signingString(r, p.Headers)
	if err != nil {
		return err
	}
	digest := sha256.Sum256([]byte(s))
	if rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], p.Signature) != nil {
		return errors.New("signature does not verify")
	}
	return nil
}

// ---- API signing keys ----

// parsePublicKeyPEM reads an RSA public key in PEM (PKIX "PUBLIC KEY", as
// OCI's console and UploadApiKey take it, or PKCS#1 "RSA PUBLIC KEY").
func parsePublicKeyPEM(s string) (*rsa.PublicKey, error) {
	b, _ := pem.Decode([]byte(s))
	if b == nil {
		return nil, errors.New("not a PEM public key")
	}
	var k any
	var err error
	switch b.Type {
	case "PUBLIC KEY":
		k, err = x509.ParsePKIXPublicKey(b.Bytes)
	case "RSA PUBLIC KEY":
		k, err = x509.ParsePKCS1PublicKey(b.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a public key", b.Type)
	}
	if err != nil {
		return nil, err
	}
	pub, ok := k.(*rsa.PublicKey)
	if !ok {
		return nil, errors.New("not an RSA key")
	}
	if pub.N.BitLen() < 2048 {
		return nil, errors.New("RSA keys must have at least 2048 bits")
	}
	return pub, nil
}

// Fingerprint is OCI's API key fingerprint: the MD5 of the DER
// SubjectPublicKeyInfo, as lower-case colon-separated hex
// (openssl rsa -pubout -outform DER | openssl md5 -c).
func Fingerprint(pub *rsa.PublicKey) string {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	sum := md5.Sum(der)
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02x", b)
	}
	return strings.Join(parts, ":")
}

func publicPEM(pub *rsa.PublicKey) string {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func privatePEM(k *rsa.PrivateKey) string {
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}
