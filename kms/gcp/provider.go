package gcp

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"net/http"
	"time"

	kmsapi "cloud.google.com/go/kms/apiv1"
	"cloud.google.com/go/kms/apiv1/kmspb"
	"github.com/googleapis/gax-go/v2"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/ekm-dev/ekm/kms"
)

// Provider is one customer key in Cloud KMS. Safe for concurrent use.
type Provider struct {
	d      *Driver
	ref    keyRef
	name   string // the crypto key's resource name
	member string // ekm's principal in the customer's policies
	fed    *federation
	client *kmsapi.KeyManagementClient
}

var (
	_ kms.Provider    = (*Provider)(nil)
	_ kms.Preflighter = (*Provider)(nil)
)

// Bounds on what we send and accept. Project keys are 32 bytes; Cloud KMS
// symmetric ciphertext adds a version header, nonce and tag to it.
const (
	maxPlaintext  = 64
	maxCiphertext = 1024
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// crc32c is the checksum Cloud KMS's integrity fields carry.
func crc32c(b []byte) int64 { return int64(crc32.Checksum(b, crcTable)) }

// Errors of a call whose answer ekm cannot use. errIntegrity is retried
// (Google: discard the response and retry a limited number of times).
var (
	errIntegrity  = errors.New("a CRC32C integrity check of the Cloud KMS exchange failed")
	errUnexpected = errors.New("unexpected response from Cloud KMS")
)

// noRetry turns off the client's own retries: call retries, with its
// bounds, what is worth retrying (gapic retries neither 429 nor integrity
// failures, and would retry 503 for up to 60 s).
var noRetry = gax.WithRetry(nil)

// Wrap encrypts plaintext under the key's primary version with the AAD
// bound as additionalAuthenticatedData, checks every CRC32C integrity
// field, and records the exact version Cloud KMS used (the response name).
func (p *Provider) Wrap(ctx context.Context, plaintext []byte, aad kms.AAD) (kms.Wrapped, error) {
	if len(plaintext) == 0 || len(plaintext) > maxPlaintext {
		return kms.Wrapped{}, &kms.Error{Class: kms.Invalid, Code: CodeBadRequest, Message: fmt.Sprintf("plaintext must be 1-%d bytes", maxPlaintext)}
	}
	ad := aad.Bytes()
	var out kms.Wrapped
	err := p.call(ctx, opEncrypt, func(ctx context.Context) error {
		resp, err := p.client.Encrypt(ctx, &kmspb.EncryptRequest{
			Name:                              p.name,
			Plaintext:                         plaintext,
			AdditionalAuthenticatedData:       ad,
			PlaintextCrc32C:                   wrapperspb.Int64(crc32c(plaintext)),
			AdditionalAuthenticatedDataCrc32C: wrapperspb.Int64(crc32c(ad)),
		}, noRetry)
		if err != nil {
			return err
		}
		if !resp.GetVerifiedPlaintextCrc32C() || !resp.GetVerifiedAdditionalAuthenticatedDataCrc32C() ||
			resp.GetCiphertextCrc32C() == nil || resp.GetCiphertextCrc32C().GetValue() != crc32c(resp.GetCiphertext()) {
			return errIntegrity
		}
		if _, ok := versionOf(p.name, resp.GetName()); !ok || len(resp.GetCiphertext()) == 0 || len(resp.GetCiphertext()) > maxCiphertext {
			return errUnexpected
		}
		out = kms.Wrapped{KeyVersion: resp.GetName(), Algorithm: Algorithm, Ciphertext: resp.GetCiphertext()}
		return nil
	})
	return out, err
}

// Unwrap decrypts w with the AAD it was wrapped with. Cloud KMS's decrypt
// takes the key's name and finds the version in the ciphertext; the
// recorded version must name a version of this provider's key (stored
// data never chooses what is called).
func (p *Provider) Unwrap(ctx context.Context, w kms.Wrapped, aad kms.AAD) ([]byte, error) {
	if _, ok := versionOf(p.name, w.KeyVersion); !ok {
		return nil, &kms.Error{Class: kms.Invalid, Code: CodeWrongKey, Message: fmt.Sprintf("the wrapped key was not produced by a version of key %s", p.name)}
	}
	if w.Algorithm != Algorithm {
		return nil, &kms.Error{Class: kms.Invalid, Code: CodeWrongKey, Message: fmt.Sprintf("the wrapped key uses algorithm %q, not %s", w.Algorithm, Algorithm)}
	}
	if len(w.Ciphertext) == 0 || len(w.Ciphertext) > maxCiphertext {
		return nil, &kms.Error{Class: kms.Invalid, Code: CodeInvalidCiphertext, Message: "the wrapped key has an impossible length"}
	}
	ad := aad.Bytes()
	var pt []byte
	err := p.call(ctx, opDecrypt, func(ctx context.Context) error {
		resp, err := p.client.Decrypt(ctx, &kmspb.DecryptRequest{
			Name:                              p.name,
			Ciphertext:                        w.Ciphertext,
			AdditionalAuthenticatedData:       ad,
			CiphertextCrc32C:                  wrapperspb.Int64(crc32c(w.Ciphertext)),
			AdditionalAuthenticatedDataCrc32C: wrapperspb.Int64(crc32c(ad)),
		}, noRetry)
		if err != nil {
			return err
		}
		if resp.GetPlaintextCrc32C() == nil || resp.GetPlaintextCrc32C().GetValue() != crc32c(resp.GetPlaintext()) {
			clear(resp.GetPlaintext())
			return errIntegrity
		}
		pt = resp.GetPlaintext()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return pt, nil
}

// Describe reports the key's primary version and its state. It needs
// cloudkms.cryptoKeys.get (roles/cloudkms.viewer, onboarding step 3).
func (p *Provider) Describe(ctx context.Context) (kms.KeyInfo, error) {
	var info kms.KeyInfo
	err := p.call(ctx, opGet, func(ctx context.Context) error {
		k, err := p.getKey(ctx)
		if err != nil {
			return err
		}
		info = p.info(k)
		return nil
	})
	return info, err
}

func (p *Provider) getKey(ctx context.Context) (*kmspb.CryptoKey, error) {
	k, err := p.client.GetCryptoKey(ctx, &kmspb.GetCryptoKeyRequest{Name: p.name}, noRetry)
	if err != nil {
		return nil, err
	}
	if k.GetName() != p.name {
		return nil, errUnexpected
	}
	if pr := k.GetPrimary(); pr != nil {
		if _, ok := versionOf(p.name, pr.GetName()); !ok {
			return nil, errUnexpected
		}
	}
	return k, nil
}

func (p *Provider) info(k *kmspb.CryptoKey) kms.KeyInfo {
	info := kms.KeyInfo{KeyType: k.GetVersionTemplate().GetAlgorithm().String()}
	if pr := k.GetPrimary(); pr != nil {
		info.CurrentVersion = pr.GetName()
		info.Enabled = pr.GetState() == kmspb.CryptoKeyVersion_ENABLED
		if pr.GetAlgorithm() != kmspb.CryptoKeyVersion_CRYPTO_KEY_VERSION_ALGORITHM_UNSPECIFIED {
			info.KeyType = pr.GetAlgorithm().String()
		}
	}
	if k.GetPurpose() == kmspb.CryptoKey_ENCRYPT_DECRYPT {
		info.Operations = []string{"encrypt", "decrypt"}
	}
	return info
}

// Preflight reads the key and explains anything that would stop ekm from
// using it: a purpose other than ENCRYPT_DECRYPT, no primary version, or a
// primary that is not enabled.
func (p *Provider) Preflight(ctx context.Context) error {
	return p.call(ctx, opGet, func(ctx context.Context) error {
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

func (p *Provider) judge(k *kmspb.CryptoKey) error {
	fail := func(class kms.Class, code, msg string) error {
		return &judgement{&kms.Error{Class: class, Code: code, Step: StepKey, Message: msg}}
	}
	if k.GetPurpose() != kmspb.CryptoKey_ENCRYPT_DECRYPT {
		return fail(kms.Invalid, CodeWrongPurpose, fmt.Sprintf("key %s has purpose %s; ekm needs a symmetric key with purpose ENCRYPT_DECRYPT (onboarding step 2)", p.name, k.GetPurpose()))
	}
	pr := k.GetPrimary()
	if pr == nil {
		return fail(kms.Revoked, CodeKeyNoPrimary, fmt.Sprintf("key %s has no primary version; create a version and make it primary (onboarding step 2)", p.name))
	}
	switch st := pr.GetState(); st {
	case kmspb.CryptoKeyVersion_ENABLED:
		return nil
	case kmspb.CryptoKeyVersion_DESTROY_SCHEDULED, kmspb.CryptoKeyVersion_DESTROYED:
		return fail(kms.Revoked, CodeKeyVersionDestroyed, fmt.Sprintf("the primary version %s is %s; restore and enable it if destruction is only scheduled, or make an enabled version primary (onboarding step 2)", pr.GetName(), st))
	default:
		return fail(kms.Revoked, CodeKeyVersionDisabled, fmt.Sprintf("the primary version %s is %s, not ENABLED; enable it (onboarding step 2)", pr.GetName(), st))
	}
}

// operation names the Cloud KMS permission a call needs.
type operation string

const (
	opEncrypt operation = "cloudkms.cryptoKeyVersions.useToEncrypt"
	opDecrypt operation = "cloudkms.cryptoKeyVersions.useToDecrypt"
	opGet     operation = "cloudkms.cryptoKeys.get"
)

// call runs f against Cloud KMS with a federated token, the driver's
// overall timeout and bounded retries, and turns any failure into a
// diagnosed *kms.Error carrying the id of the last request sent. A 401
// drops the federated token and tries once more with a new exchange: a
// pool disabled or deleted since the token was issued then shows up as
// the token exchange's refusal.
func (p *Provider) call(ctx context.Context, op operation, f func(context.Context) error) error {
	ctx, tr := withTrace(ctx)
	ctx, cancel := context.WithTimeout(ctx, p.d.timeout)
	defer cancel()
	reauthed := false
	for attempt := 0; ; {
		tok, err := p.fed.Token(ctx)
		if err != nil {
			return p.finish(op, tr, err)
		}
		err = f(ctx)
		if err == nil {
			return nil
		}
		if httpStatus(err) == http.StatusUnauthorized && !reauthed {
			reauthed = true
			p.fed.invalidate(tok)
			continue
		}
		if attempt < p.d.retries && retryable(err) && sleep(ctx, backoff(attempt)) {
			attempt++
			continue
		}
		return p.finish(op, tr, err)
	}
}

func (p *Provider) finish(op operation, tr *trace, err error) error {
	var e *kms.Error
	var j *judgement
	switch {
	case errors.As(err, &j):
		e = j.e
	case errors.As(err, &e):
		// Diagnosed already (the token exchange).
	default:
		e = diag{ref: p.ref, name: p.name, op: op, member: p.member}.diagnose(err)
	}
	if e.RequestID == "" {
		e.RequestID = tr.requestID()
	}
	return e
}

func retryable(err error) bool {
	if errors.Is(err, errIntegrity) {
		return true
	}
	switch httpStatus(err) {
	case http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// backoff is the pause before retry n (0-based): 100 ms doubling, with
// full jitter, capped at 2 s.
func backoff(n int) time.Duration {
	d := 100 * time.Millisecond << n
	if d > 2*time.Second {
		d = 2 * time.Second
	}
	return d/2 + rand.N(d/2+1)
}

func sleep(ctx context.Context, d time.Duration) bool {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
