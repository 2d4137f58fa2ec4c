// Package local is a software KMS held by ekm itself, for development, tests
// and the operator's default key. It is NOT customer-held: whoever has the
// server's root key file can read every project protected by a local key.
//
// Each local KEK is derived from the root key with HKDF-SHA256 over its org,
// key id and version, so nothing but the root key has to be stored; every replica
// that shares the root key file serves the same keys.
package local

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/secret"
)

// Type is the external key type served by this package.
const Type = "local"

// Algorithm is the wrapping algorithm recorded in kms.Wrapped: AES-256-GCM
// with the KEK version id and the kms.AAD as associated data.
const Algorithm = "A256GCM-AAD"

// LegacyAlgorithm marks keys wrapped before wraps were bound to a kms.AAD
// (only the KEK version id is associated data). They stay readable; new
// wraps, rewraps after a re-key and KEK rotations use Algorithm.
const LegacyAlgorithm = "A256GCM"

// Param names on the external key object.
const (
	ParamKeyID      = "local_key_id"
	ParamKeyVersion = "key_version"
)

var keyIDRE = regexp.MustCompile(`^[0-9a-z-]{1,64}$`)

// Driver opens local keys derived from one root key.
type Driver struct {
	root secret.Key
}

// NewDriver returns a driver over root. The driver does not copy root.
func NewDriver(root secret.Key) *Driver { return &Driver{root: root} }

func (*Driver) Type() string { return Type }

// Spec describes local keys. key_version is the only registration field the
// Admin API accepts: the key id is always generated, so that two
// registrations never share a KEK by choosing the same id.
func (*Driver) Spec() kms.Spec {
	return kms.Spec{
		Type: Type, Title: "Local development key", Development: true, Algorithm: Algorithm,
		Fields: []kms.Field{{Name: ParamKeyVersion, MaxLen: 256, Description: "version of the local KEK new wraps use (default 1)"}},
		Codes: []kms.Code{
			{Code: "invalid_local_key_id", Class: kms.Invalid, Description: "local_key_id is not 1-64 of [0-9a-z-]"},
			{Code: "invalid_key_version", Class: kms.Invalid, Description: "key_version is not a positive integer"},
			{Code: "unknown_parameter", Class: kms.Invalid, Description: "a parameter local keys do not have"},
			{Code: "wrong_key", Class: kms.Invalid, Description: "the wrapped key was not produced by this local key"},
			{Code: "invalid_ciphertext", Class: kms.Invalid, Description: "the wrapped key failed authentication (damaged, or bound to other associated data)"},
			{Code: "local_root_key_missing", Class: kms.Operator, Description: "the server's local root key is not loaded"},
		},
	}
}

// Check fills in a fresh key id and version 1 when absent.
func (*Driver) Check(_ string, p kms.Params) (kms.Params, error) {
	out := kms.Params{}
	id := p[ParamKeyID]
	if id == "" {
		var b [12]byte
		_, _ = rand.Read(b[:])
		id = hex.EncodeToString(b[:])
	}
	if !keyIDRE.MatchString(id) {
		return nil, &kms.Error{Class: kms.Invalid, Code: "invalid_local_key_id", Param: ParamKeyID, Message: ParamKeyID + " must be 1-64 of [0-9a-z-]"}
	}
	out[ParamKeyID] = id
	v := p[ParamKeyVersion]
	if v == "" {
		v = "1"
	}
	if n, err := strconv.Atoi(v); err != nil || n < 1 || strconv.Itoa(n) != v {
		return nil, &kms.Error{Class: kms.Invalid, Code: "invalid_key_version", Param: ParamKeyVersion, Message: ParamKeyVersion + " must be a positive integer"}
	}
	out[ParamKeyVersion] = v
	for k := range p {
		if k != ParamKeyID && k != ParamKeyVersion {
			return nil, &kms.Error{Class: kms.Invalid, Code: "unknown_parameter", Param: k, Message: fmt.Sprintf("unknown parameter %q for a local key", k)}
		}
	}
	return out, nil
}

// Open returns the provider for checked params.
func (d *Driver) Open(orgID string, p kms.Params) (kms.Provider, error) {
	p, err := d.Check(orgID, p)
	if err != nil {
		return nil, err
	}
	return &Provider{root: d.root, org: orgID, id: p[ParamKeyID], version: p[ParamKeyVersion]}, nil
}

// Provider is one local KEK.
type Provider struct {
	root secret.Key
	// org is bound into the derivation, so one org naming another org's key
	// id (or the operator default's) gets an unrelated key.
	org     string
	id      string
	version string
}

func (p *Provider) versionID(v string) string { return "local:" + p.id + "/" + v }

func (p *Provider) kek(version string) (cipher.AEAD, error) {
	if p.root.IsZero() {
		return nil, &kms.Error{Class: kms.Operator, Code: "local_root_key_missing", Message: "the server's local root key is not loaded"}
	}
	k, err := hkdf.Key(sha256.New, p.root.Bytes(), nil, "ekm local kek v1|"+p.org+"|"+p.id+"|"+version, secret.Size)
	if err != nil {
		return nil, err
	}
	defer secret.Wipe(k)
	b, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// Wrap seals plaintext under the current version; the version id and aad
// are bound as associated data.
func (p *Provider) Wrap(_ context.Context, plaintext []byte, aad kms.AAD) (kms.Wrapped, error) {
	vid := p.versionID(p.version)
	a, err := p.kek(p.version)
	if err != nil {
		return kms.Wrapped{}, err
	}
	nonce := make([]byte, a.NonceSize(), a.NonceSize()+len(plaintext)+a.Overhead())
	_, _ = rand.Read(nonce)
	return kms.Wrapped{KeyVersion: vid, Algorithm: Algorithm, Ciphertext: a.Seal(nonce, nonce, plaintext, boundAAD(vid, aad))}, nil
}

// boundAAD is the GCM associated data of a wrap: the version id, a zero
// byte (never part of an id), and the canonical AAD.
func boundAAD(vid string, aad kms.AAD) []byte {
	return append(append([]byte(vid), 0), aad.Bytes()...)
}

// Unwrap opens w with the version recorded in it.
func (p *Provider) Unwrap(_ context.Context, w kms.Wrapped, aad kms.AAD) ([]byte, error) {
	prefix := "local:" + p.id + "/"
	v, ok := strings.CutPrefix(w.KeyVersion, prefix)
	if !ok || (w.Algorithm != Algorithm && w.Algorithm != LegacyAlgorithm) {
		return nil, &kms.Error{Class: kms.Invalid, Code: "wrong_key", Message: "wrapped key was not produced by this local key"}
	}
	if n, err := strconv.Atoi(v); err != nil || n < 1 {
		return nil, &kms.Error{Class: kms.Invalid, Code: "wrong_key", Message: "wrapped key names an invalid version"}
	}
	a, err := p.kek(v)
	if err != nil {
		return nil, err
	}
	if len(w.Ciphertext) < a.NonceSize()+a.Overhead() {
		return nil, &kms.Error{Class: kms.Invalid, Code: "invalid_ciphertext", Message: "wrapped key is too short"}
	}
	ad := []byte(w.KeyVersion)
	if w.Algorithm == Algorithm {
		ad = boundAAD(w.KeyVersion, aad)
	}
	ns := a.NonceSize()
	pt, err := a.Open(nil, w.Ciphertext[:ns], w.Ciphertext[ns:], ad)
	if err != nil {
		return nil, &kms.Error{Class: kms.Invalid, Code: "invalid_ciphertext", Message: "wrapped key failed authentication (damaged, or bound to another org, project or version)", Err: err}
	}
	return pt, nil
}

// Describe reports the configured version.
func (p *Provider) Describe(context.Context) (kms.KeyInfo, error) {
	return kms.KeyInfo{CurrentVersion: p.versionID(p.version), KeyType: "AES", Enabled: true, Operations: []string{"encrypt", "decrypt"}}, nil
}
