package oci

import (
	"context"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/oracle/oci-go-sdk/v65/keymanagement"

	"github.com/ekm-dev/ekm/kms"
)

// Provider is one customer key in OCI Vault. Safe for concurrent use.
type Provider struct {
	d   *Driver
	p   params
	org string
}

var (
	_ kms.Provider    = (*Provider)(nil)
	_ kms.Preflighter = (*Provider)(nil)
)

// Bounds on what we send and accept: project keys are 32 bytes; OCI's
// ciphertexts of them are well under 1 KiB.
const (
	maxPlaintext  = 64
	maxCiphertext = 8192
)

// Wrap encrypts plaintext under the key's current version (or the
// registered key_version_ocid) with the AAD as associatedData, and records
// the version OCI used.
func (p *Provider) Wrap(ctx context.Context, plaintext []byte, aad kms.AAD) (kms.Wrapped, error) {
	if len(plaintext) == 0 || len(plaintext) > maxPlaintext {
		return kms.Wrapped{}, &kms.Error{Class: kms.Invalid, Code: CodeBadRequest, Message: fmt.Sprintf("plaintext must be 1-%d bytes", maxPlaintext)}
	}
	var out kms.Wrapped
	err := p.call(ctx, opEncrypt, func(ctx context.Context) error {
		vc, err := p.vault(ctx, false)
		if err != nil {
			return err
		}
		in := keymanagement.EncryptDataDetails{KeyId: &p.p.key.raw, Plaintext: b64(plaintext), AssociatedData: aad.Context(),
			EncryptionAlgorithm: keymanagement.EncryptDataDetailsEncryptionAlgorithmAes256Gcm}
		if p.p.version != nil {
			in.KeyVersionId = &p.p.version.raw
		}
		resp, err := vc.crypto.Encrypt(sdk(ctx), keymanagement.EncryptRequest{EncryptDataDetails: in, OpcRequestId: record(ctx), RequestMetadata: noRetry()})
		if err != nil {
			return err
		}
		ct, err := decode(resp.Ciphertext, maxCiphertext)
		if err != nil || resp.KeyId == nil || *resp.KeyId != p.p.key.raw || resp.KeyVersionId == nil || !p.p.versionOK(*resp.KeyVersionId) ||
			(p.p.version != nil && *resp.KeyVersionId != p.p.version.raw) {
			return errUnexpected
		}
		out = kms.Wrapped{KeyVersion: *resp.KeyVersionId, Algorithm: Algorithm, Ciphertext: ct}
		return nil
	})
	return out, err
}

// Unwrap decrypts w with exactly the key version recorded in it and the
// AAD as associatedData.
func (p *Provider) Unwrap(ctx context.Context, w kms.Wrapped, aad kms.AAD) ([]byte, error) {
	if !p.p.versionOK(w.KeyVersion) {
		return nil, &kms.Error{Class: kms.Invalid, Code: CodeWrongKey, Message: fmt.Sprintf("the wrapped key names %q, not a key version in %s", quote(w.KeyVersion), p.p.region.id)}
	}
	if w.Algorithm != Algorithm {
		return nil, &kms.Error{Class: kms.Invalid, Code: CodeWrongKey, Message: fmt.Sprintf("the wrapped key uses algorithm %q, not %s", quote(w.Algorithm), Algorithm)}
	}
	if len(w.Ciphertext) == 0 || len(w.Ciphertext) > maxCiphertext {
		return nil, &kms.Error{Class: kms.Invalid, Code: CodeInvalidCiphertext, Message: "the wrapped key has an impossible length"}
	}
	var pt []byte
	err := p.call(ctx, opDecrypt, func(ctx context.Context) error {
		vc, err := p.vault(ctx, false)
		if err != nil {
			return err
		}
		resp, err := vc.crypto.Decrypt(sdk(ctx), keymanagement.DecryptRequest{DecryptDataDetails: keymanagement.DecryptDataDetails{
			KeyId: &p.p.key.raw, Ciphertext: b64(w.Ciphertext), AssociatedData: aad.Context(), KeyVersionId: &w.KeyVersion,
			EncryptionAlgorithm: keymanagement.DecryptDataDetailsEncryptionAlgorithmAes256Gcm},
			OpcRequestId: record(ctx), RequestMetadata: noRetry()})
		if err != nil {
			return err
		}
		if resp.KeyId != nil && *resp.KeyId != p.p.key.raw || resp.KeyVersionId != nil && *resp.KeyVersionId != w.KeyVersion {
			return &judgement{&kms.Error{Class: kms.Invalid, Code: CodeWrongKey, Message: fmt.Sprintf("OCI Vault decrypted the wrapped key with another key or version than the one recorded (%s)", w.KeyVersion)}}
		}
		b, err := decode(resp.Plaintext, maxPlaintext)
		if err != nil || len(b) == 0 {
			return errUnexpected
		}
		pt = b
		return nil
	})
	if err != nil {
		return nil, err
	}
	return pt, nil
}

// Describe reports the key's current version (the registered
// key_version_ocid if there is one) and state.
func (p *Provider) Describe(ctx context.Context) (kms.KeyInfo, error) {
	var info kms.KeyInfo
	err := p.call(ctx, opGetKey, func(ctx context.Context) error {
		k, err := p.getKey(ctx, false)
		if err != nil {
			return err
		}
		info = kms.KeyInfo{CurrentVersion: *k.CurrentKeyVersion, Enabled: k.LifecycleState == keymanagement.KeyLifecycleStateEnabled}
		if p.p.version != nil {
			info.CurrentVersion = p.p.version.raw
		}
		if k.KeyShape != nil {
			info.KeyType = string(k.KeyShape.Algorithm)
			if k.KeyShape.Length != nil {
				info.KeyType += fmt.Sprintf("-%d", *k.KeyShape.Length*8)
			}
		}
		if k.KeyShape != nil && k.KeyShape.Algorithm == keymanagement.KeyShapeAlgorithmAes {
			info.Operations = []string{"encrypt", "decrypt"}
		}
		return nil
	})
	return info, err
}

func (p *Provider) getKey(ctx context.Context, fresh bool) (keymanagement.Key, error) {
	vc, err := p.vault(ctx, fresh)
	if err != nil {
		return keymanagement.Key{}, err
	}
	resp, err := vc.mgmt.GetKey(sdk(ctx), keymanagement.GetKeyRequest{KeyId: &p.p.key.raw, OpcRequestId: record(ctx), RequestMetadata: noRetry()})
	if err != nil {
		return keymanagement.Key{}, err
	}
	k := resp.Key
	if k.Id == nil || *k.Id != p.p.key.raw || k.CurrentKeyVersion == nil || !p.p.versionOK(*k.CurrentKeyVersion) || k.VaultId == nil {
		return k, errUnexpected
	}
	return k, nil
}

// Preflight reads the vault afresh (the policy as it is now) and the key,
// and explains anything that would stop ekm from using it: a key of
// another vault, not AES-256, not ENABLED, not tagged with the calling
// organization, or a registered key version that is not the key's.
func (p *Provider) Preflight(ctx context.Context) error {
	return p.call(ctx, opGetKey, func(ctx context.Context) error {
		k, err := p.getKey(ctx, true)
		if err != nil {
			return err
		}
		fail := func(class kms.Class, code, param, msg string) error {
			return &judgement{&kms.Error{Class: class, Code: code, Step: StepKey, Param: param, Message: msg}}
		}
		// The tag first: a key that is not the caller's is refused with one
		// message whatever its vault, shape, state or tag value, so no
		// organization learns anything of another's key through ekm (whose
		// group every customer admits).
		if got := k.FreeformTags[TagOrg]; got != p.org {
			return fail(kms.Invalid, CodeKeyOrgTagMismatch, ParamKeyOCID, fmt.Sprintf("%s must carry the freeform tag %s=%s, your organization id, "+
				"which ties the key to your organization; it does not (onboarding step 1)", p.where(), TagOrg, p.org))
		}
		if *k.VaultId != p.p.vault.raw {
			return fail(kms.Invalid, CodeKeyNotInVault, ParamVaultOCID, fmt.Sprintf("%s is in vault %s, not in %s: register the key's own vault", p.where(), quote(*k.VaultId), p.p.vault.raw))
		}
		if k.KeyShape == nil || k.KeyShape.Algorithm != keymanagement.KeyShapeAlgorithmAes || k.KeyShape.Length == nil || *k.KeyShape.Length != 32 {
			shape := "unknown"
			if k.KeyShape != nil && k.KeyShape.Length != nil {
				shape = fmt.Sprintf("%s of %d bytes", k.KeyShape.Algorithm, *k.KeyShape.Length)
			}
			return fail(kms.Invalid, CodeKeyNotAES256, ParamKeyOCID, fmt.Sprintf("%s is %s; ekm needs an AES key of 256 bits (--key-shape '{\"algorithm\":\"AES\",\"length\":32}', onboarding step 1)", p.where(), quote(shape)))
		}
		if j := p.judgeState(k); j != nil {
			return &judgement{j}
		}
		if p.p.version == nil {
			return nil
		}
		vc, err := p.vault(ctx, false)
		if err != nil {
			return err
		}
		kv, err := vc.mgmt.GetKeyVersion(sdk(ctx), keymanagement.GetKeyVersionRequest{KeyId: &p.p.key.raw, KeyVersionId: &p.p.version.raw,
			OpcRequestId: record(ctx), RequestMetadata: noRetry()})
		if err != nil {
			if s, _ := status(err); s == 404 {
				return fail(kms.Invalid, CodeKeyVersionNotFound, ParamKeyVersionOCID, fmt.Sprintf("key version %s is not a version of %s (onboarding step 1)", p.p.version.raw, p.where()))
			}
			return err
		}
		if kv.KeyId == nil || *kv.KeyId != p.p.key.raw {
			return fail(kms.Invalid, CodeKeyVersionNotFound, ParamKeyVersionOCID, fmt.Sprintf("key version %s is not a version of %s (onboarding step 1)", p.p.version.raw, p.where()))
		}
		if kv.LifecycleState != "" && kv.LifecycleState != keymanagement.KeyVersionLifecycleStateEnabled {
			return fail(kms.Revoked, CodeKeyVersionUnusable, ParamKeyVersionOCID, fmt.Sprintf("key version %s is %s; register the key without key_version_ocid, or a version that is ENABLED (onboarding step 1)", p.p.version.raw, kv.LifecycleState))
		}
		return nil
	})
}

// call runs f with the driver's timeout, retrying transient failures with
// jittered backoff, and turns a failure into a diagnosed *kms.Error naming
// the last request id.
func (p *Provider) call(ctx context.Context, op operation, f func(context.Context) error) error {
	rec := &recorder{}
	ctx = context.WithValue(ctx, recorderKey{}, rec)
	ctx, cancel := context.WithTimeout(ctx, p.d.cfg.Timeout)
	defer cancel()
	var err error
	for attempt := 1; ; attempt++ {
		if err = f(ctx); err == nil {
			return nil
		}
		if attempt >= p.d.cfg.MaxAttempts || !retryable(err) {
			break
		}
		back := min(p.d.cfg.MaxBackoff, 50*time.Millisecond<<attempt)
		t := time.NewTimer(back/2 + rand.N(back/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
		if ctx.Err() != nil {
			break
		}
	}
	e := p.diagnose(ctx, op, err)
	rec.mu.Lock()
	e.RequestID = rec.last
	rec.mu.Unlock()
	return e
}

func b64(b []byte) *string { s := base64.StdEncoding.EncodeToString(b); return &s }

func decode(s *string, max int) ([]byte, error) {
	if s == nil || len(*s) > base64.StdEncoding.EncodedLen(max) {
		return nil, errUnexpected
	}
	b, err := base64.StdEncoding.DecodeString(*s)
	if err != nil || len(b) > max {
		return nil, errUnexpected
	}
	return b, nil
}
