package azure

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"

	"github.com/ekm-dev/ekm/kms"
)

// Provider is one customer key in one Key Vault. Safe for concurrent use.
type Provider struct {
	d       *Driver
	client  *azkeys.Client
	tenant  string
	host    string // lower-case vault host
	keyName string
}

var (
	_ kms.Provider    = (*Provider)(nil)
	_ kms.Preflighter = (*Provider)(nil)
)

// Bounds on what we send and accept. Project keys are 32 bytes; RSA-OAEP
// ciphertext is the modulus size (at most 512 bytes for RSA-4096; 1024
// leaves room for larger HSM keys).
const (
	maxPlaintext  = 64
	maxCiphertext = 1024
)

// RSA-OAEP in Key Vault takes no associated data (no OAEP label either), so
// the AAD is bound inside what is encrypted: the plaintext followed by
// aadTagSize bytes of SHA-256 over a domain string and the canonical AAD.
// Unwrap recomputes the tag and compares it in constant time. The tag is
// not keyed: it stops a stored wrap from being moved to another project or
// version, not someone who holds the public key and can write the database
// from wrapping a key of their own (as with any RSA wrap). Keys wrapped
// before this binding are exactly 32 bytes and labelled LegacyAlgorithm.
const (
	aadTagSize   = sha256.Size
	legacySize   = 32
	aadTagDomain = "ekm azure wrap aad v1\x00"
)

func aadTag(aad kms.AAD) []byte {
	h := sha256.New()
	h.Write([]byte(aadTagDomain))
	h.Write(aad.Bytes())
	return h.Sum(nil)
}

// Key Vault versions are system-generated 32-character strings.
var versionRE = regexp.MustCompile(`^[0-9A-Za-z]{32}$`)

// Wrap encrypts plaintext with RSA-OAEP-256 under the key's current version
// and records the exact versioned kid Key Vault used.
func (p *Provider) Wrap(ctx context.Context, plaintext []byte, aad kms.AAD) (kms.Wrapped, error) {
	if len(plaintext) == 0 || len(plaintext) > maxPlaintext {
		return kms.Wrapped{}, &kms.Error{Class: kms.Invalid, Code: CodeBadRequest, Message: fmt.Sprintf("plaintext must be 1-%d bytes", maxPlaintext)}
	}
	bound := append(append(make([]byte, 0, len(plaintext)+aadTagSize), plaintext...), aadTag(aad)...)
	defer clear(bound)
	var out kms.Wrapped
	err := p.call(ctx, opEncrypt, false, func(ctx context.Context) error {
		alg := azkeys.EncryptionAlgorithmRSAOAEP256
		resp, err := p.client.Encrypt(ctx, p.keyName, "", azkeys.KeyOperationParameters{Algorithm: &alg, Value: bound}, nil)
		if err != nil {
			return err
		}
		kid, ok := p.canonicalKID(resp.KID)
		if !ok || len(resp.Result) == 0 || len(resp.Result) > maxCiphertext {
			return errUnexpected
		}
		out = kms.Wrapped{KeyVersion: kid, Algorithm: Algorithm, Ciphertext: resp.Result}
		return nil
	})
	return out, err
}

// Unwrap decrypts w with exactly the key version recorded in it and checks
// its AAD tag. The kid must name this provider's vault and key: stored data
// never chooses what we dial.
func (p *Provider) Unwrap(ctx context.Context, w kms.Wrapped, aad kms.AAD) ([]byte, error) {
	version, ok := p.versionOf(w.KeyVersion)
	if !ok {
		return nil, &kms.Error{Class: kms.Invalid, Code: CodeWrongKey, Message: fmt.Sprintf("the wrapped key was not produced by key %q in vault %s", p.keyName, p.host)}
	}
	if w.Algorithm != Algorithm && w.Algorithm != LegacyAlgorithm {
		return nil, &kms.Error{Class: kms.Invalid, Code: CodeWrongKey, Message: fmt.Sprintf("the wrapped key uses algorithm %q, not %s", w.Algorithm, Algorithm)}
	}
	if len(w.Ciphertext) == 0 || len(w.Ciphertext) > maxCiphertext {
		return nil, &kms.Error{Class: kms.Invalid, Code: CodeInvalidCiphertext, Message: "the wrapped key has an impossible length"}
	}
	var pt []byte
	err := p.call(ctx, opDecrypt, false, func(ctx context.Context) error {
		alg := azkeys.EncryptionAlgorithmRSAOAEP256
		resp, err := p.client.Decrypt(ctx, p.keyName, version, azkeys.KeyOperationParameters{Algorithm: &alg, Value: w.Ciphertext}, nil)
		if err != nil {
			return err
		}
		pt = resp.Result
		return nil
	})
	if err != nil {
		return nil, err
	}
	return unbind(pt, aad, w.Algorithm == LegacyAlgorithm)
}

// unbind checks and strips the AAD tag of a decrypted plaintext. A legacy
// wrap (label LegacyAlgorithm) holds the bare 32-byte key; a bound one
// never is 32 bytes long, so neither can pass for the other.
func unbind(pt []byte, aad kms.AAD, legacy bool) ([]byte, error) {
	if legacy {
		if len(pt) != legacySize {
			clear(pt)
			return nil, &kms.Error{Class: kms.Invalid, Code: CodeInvalidCiphertext, Message: "the wrapped key has an impossible length"}
		}
		return pt, nil
	}
	n := len(pt) - aadTagSize
	if n < 1 || subtle.ConstantTimeCompare(pt[n:], aadTag(aad)) != 1 {
		clear(pt)
		return nil, &kms.Error{Class: kms.Invalid, Code: CodeInvalidCiphertext, Message: "the wrapped key is bound to another org, project or key version (its associated data does not match)"}
	}
	out := bytes.Clone(pt[:n])
	clear(pt)
	return out, nil
}

// Describe reports the key's current version and state.
func (p *Provider) Describe(ctx context.Context) (kms.KeyInfo, error) {
	var info kms.KeyInfo
	err := p.call(ctx, opGet, false, func(ctx context.Context) error {
		k, err := p.getKey(ctx)
		if err != nil {
			return err
		}
		info = k.info
		return nil
	})
	return info, err
}

type keyState struct {
	info   kms.KeyInfo
	bundle azkeys.KeyBundle
}

func (p *Provider) getKey(ctx context.Context) (keyState, error) {
	resp, err := p.client.GetKey(ctx, p.keyName, "", nil)
	if err != nil {
		return keyState{}, err
	}
	if resp.Key == nil {
		return keyState{}, errUnexpected
	}
	kid, ok := p.canonicalKID(resp.Key.KID)
	if !ok {
		return keyState{}, errUnexpected
	}
	info := kms.KeyInfo{CurrentVersion: kid}
	if resp.Key.Kty != nil {
		info.KeyType = string(*resp.Key.Kty)
	}
	if a := resp.Attributes; a != nil && a.Enabled != nil {
		info.Enabled = *a.Enabled
	}
	for _, op := range resp.Key.KeyOps {
		if op != nil {
			info.Operations = append(info.Operations, string(*op))
		}
	}
	return keyState{info: info, bundle: resp.KeyBundle}, nil
}

// Preflight reads the key and explains anything that would stop ekm from
// using it: not RSA, disabled, expired or not yet valid, or key_ops without
// encrypt and decrypt. A tenant_id that is wrong is Invalid here (it is run
// at registration) rather than Revoked.
func (p *Provider) Preflight(ctx context.Context) error {
	return p.call(ctx, opGet, true, func(ctx context.Context) error {
		k, err := p.getKey(ctx)
		if err != nil {
			return err
		}
		return p.judge(k)
	})
}

// judgement is a preflight finding, already a complete diagnosis.
type judgement struct{ e *kms.Error }

func (j *judgement) Error() string { return j.e.Error() }

func (p *Provider) judge(k keyState) error {
	where := fmt.Sprintf("key %q in vault %s", p.keyName, p.host)
	fail := func(class kms.Class, code, step, msg string) error {
		return &judgement{&kms.Error{Class: class, Code: code, Step: step, Message: msg}}
	}
	if t := k.info.KeyType; t != string(azkeys.KeyTypeRSA) && t != string(azkeys.KeyTypeRSAHSM) {
		return fail(kms.Invalid, CodeKeyTypeUnsupported, StepKey, fmt.Sprintf("%s is of type %q; ekm needs an RSA key (RSA or RSA-HSM, onboarding step 3)", where, t))
	}
	if !k.info.Enabled {
		return fail(kms.Revoked, CodeKeyDisabled, StepKey, where+" is disabled; enable it (onboarding step 3)")
	}
	now := p.d.now()
	if a := k.bundle.Attributes; a != nil {
		if a.Expires != nil && !now.Before(*a.Expires) {
			return fail(kms.Revoked, CodeKeyExpired, StepKey, fmt.Sprintf("%s expired at %s; extend its expiration date or rotate it (onboarding step 3)", where, a.Expires.UTC().Format("2006-01-02T15:04:05Z")))
		}
		if a.NotBefore != nil && now.Before(*a.NotBefore) {
			return fail(kms.Revoked, CodeKeyNotYetValid, StepKey, fmt.Sprintf("%s is not valid before %s (onboarding step 3)", where, a.NotBefore.UTC().Format("2006-01-02T15:04:05Z")))
		}
	}
	var missing []string
	for _, op := range []azkeys.KeyOperation{azkeys.KeyOperationEncrypt, azkeys.KeyOperationDecrypt} {
		if !slices.Contains(k.info.Operations, string(op)) {
			missing = append(missing, string(op))
		}
	}
	if len(missing) > 0 {
		return fail(kms.Revoked, CodeKeyOperationForbidden, StepKeyOrRestriction, fmt.Sprintf("%s does not permit %s; its permitted operations (key_ops) must include encrypt and decrypt (onboarding steps 3 and 5)", where, strings.Join(missing, " and ")))
	}
	return nil
}

var errUnexpected = errors.New("unexpected response from Key Vault")

// call runs f with a fresh x-ms-client-request-id (reported through
// kms.CallInfo whatever the outcome) and the driver's overall timeout, and
// turns any failure into a diagnosed *kms.Error.
func (p *Provider) call(ctx context.Context, op operation, registration bool, f func(context.Context) error) error {
	id := newRequestID()
	if ci := kms.CallInfoFrom(ctx); ci != nil {
		ci.Record(id)
	}
	ctx = policy.WithHTTPHeader(ctx, http.Header{"x-ms-client-request-id": {id}})
	ctx, cancel := context.WithTimeout(ctx, p.d.timeout)
	defer cancel()
	err := f(ctx)
	if err == nil {
		return nil
	}
	var e *kms.Error
	var j *judgement
	switch {
	case errors.As(err, &j):
		e = j.e
	case errors.Is(err, errUnexpected):
		e = &kms.Error{Class: kms.Outage, Code: CodeUnexpectedResponse, Message: "Azure Key Vault returned a response ekm could not use; treated as transient", Err: err}
	default:
		e = diag{p: p, op: op, reg: registration}.diagnose(err)
	}
	e.RequestID = id
	return e
}

// canonicalKID checks that a kid Key Vault returned names this provider's
// vault and key with a version, and returns it in one canonical spelling so
// that Wrap and Describe agree byte for byte.
func (p *Provider) canonicalKID(kid *azkeys.ID) (string, bool) {
	if kid == nil {
		return "", false
	}
	v, ok := p.versionOf(string(*kid))
	if !ok {
		return "", false
	}
	return "https://" + p.host + "/keys/" + p.keyName + "/" + v, true
}

// versionOf returns the version of a versioned kid of this provider's key.
// Host and key name compare case-insensitively, as Key Vault does.
func (p *Provider) versionOf(kid string) (string, bool) {
	rest, ok := cutPrefixFold(kid, "https://"+p.host+"/keys/")
	if !ok {
		return "", false
	}
	name, version, ok := strings.Cut(rest, "/")
	if !ok || !strings.EqualFold(name, p.keyName) || !versionRE.MatchString(version) {
		return "", false
	}
	return version, true
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return "", false
	}
	return s[len(prefix):], true
}

// newRequestID returns a random (version 4) UUID.
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
