package aws

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/ekm-dev/ekm/kms"
)

// Provider is one customer key in AWS KMS, used through one role. Safe for
// concurrent use.
type Provider struct {
	d          *Driver
	key        keyARN // as registered: a key ARN or an alias ARN
	role       string
	externalID string
	sess       *roleSession
	client     *awskms.Client
}

var (
	_ kms.Provider    = (*Provider)(nil)
	_ kms.Preflighter = (*Provider)(nil)
)

// Bounds on what we send and accept: project keys are 32 bytes; a KMS
// symmetric ciphertext is at most 6144 bytes.
const (
	maxPlaintext  = 64
	maxCiphertext = 6144
)

var errUnexpected = errors.New("unexpected response from AWS KMS")

// Wrap encrypts plaintext under the registered key (an alias is resolved by
// KMS) with the AAD as encryption context, and records the ARN of the key
// KMS used.
func (p *Provider) Wrap(ctx context.Context, plaintext []byte, aad kms.AAD) (kms.Wrapped, error) {
	if len(plaintext) == 0 || len(plaintext) > maxPlaintext {
		return kms.Wrapped{}, &kms.Error{Class: kms.Invalid, Code: CodeBadRequest, Message: fmt.Sprintf("plaintext must be 1-%d bytes", maxPlaintext)}
	}
	var out kms.Wrapped
	err := p.call(ctx, opEncrypt, func(ctx context.Context) error {
		resp, err := p.client.Encrypt(ctx, &awskms.EncryptInput{
			KeyId:               aws.String(p.key.String()),
			Plaintext:           plaintext,
			EncryptionContext:   aad.Context(),
			EncryptionAlgorithm: types.EncryptionAlgorithmSpecSymmetricDefault,
		})
		if err != nil {
			return err
		}
		used, ok := p.usedKey(aws.ToString(resp.KeyId))
		if !ok || len(resp.CiphertextBlob) == 0 || len(resp.CiphertextBlob) > maxCiphertext {
			return errUnexpected
		}
		out = kms.Wrapped{KeyVersion: used, Algorithm: Algorithm, Ciphertext: resp.CiphertextBlob}
		return nil
	})
	return out, p.scope(ctx, err, aad)
}

// Unwrap decrypts w, naming the registered key explicitly (so KMS refuses a
// ciphertext of any other key, and an alias re-pointed to another key
// fails with IncorrectKeyException: a revocation), with the AAD as
// encryption context. The key that decrypted must be the one recorded.
func (p *Provider) Unwrap(ctx context.Context, w kms.Wrapped, aad kms.AAD) ([]byte, error) {
	recorded, ok := p.usedKey(w.KeyVersion)
	if !ok || recorded != w.KeyVersion {
		return nil, &kms.Error{Class: kms.Invalid, Code: CodeWrongKey, Message: fmt.Sprintf("the wrapped key was not produced by key %s", p.key.String())}
	}
	if w.Algorithm != Algorithm {
		return nil, &kms.Error{Class: kms.Invalid, Code: CodeWrongKey, Message: fmt.Sprintf("the wrapped key uses algorithm %q, not %s", quote(w.Algorithm), Algorithm)}
	}
	if len(w.Ciphertext) == 0 || len(w.Ciphertext) > maxCiphertext {
		return nil, &kms.Error{Class: kms.Invalid, Code: CodeInvalidCiphertext, Message: "the wrapped key has an impossible length"}
	}
	var pt []byte
	err := p.call(ctx, opDecrypt, func(ctx context.Context) error {
		resp, err := p.client.Decrypt(ctx, &awskms.DecryptInput{
			KeyId:               aws.String(p.key.String()),
			CiphertextBlob:      w.Ciphertext,
			EncryptionContext:   aad.Context(),
			EncryptionAlgorithm: types.EncryptionAlgorithmSpecSymmetricDefault,
		})
		if err != nil {
			return err
		}
		if aws.ToString(resp.KeyId) != recorded {
			clear(resp.Plaintext)
			return &judgement{&kms.Error{Class: kms.Invalid, Code: CodeWrongKey, Message: fmt.Sprintf("AWS KMS decrypted the wrapped key with another key than the one recorded (%s)", recorded)}}
		}
		if len(resp.Plaintext) == 0 || len(resp.Plaintext) > maxPlaintext {
			clear(resp.Plaintext)
			return errUnexpected
		}
		pt = bytes.Clone(resp.Plaintext)
		clear(resp.Plaintext)
		return nil
	})
	if err != nil {
		return nil, p.scope(ctx, err, aad)
	}
	return pt, nil
}

// scope tells a refusal of one project from a refusal of the key: the
// customer's key policy may deny a single project through
// kms:EncryptionContext:ekm:project. When a call with a project's context
// is denied, an encrypt and decrypt with the org's context alone are tried:
// if they work, the key is fine and only that project is refused
// (kms.ScopeProject). Only denials that a policy can cause are checked.
func (p *Provider) scope(ctx context.Context, err error, aad kms.AAD) error {
	var e *kms.Error
	if aad.ProjectID == "" || !errors.As(err, &e) || e.Class != kms.Revoked {
		return err
	}
	switch e.Code {
	case CodePermissionMissing, CodeAccessDenied, CodeKeyPolicyDenied:
	default:
		return err
	}
	org := kms.AAD{OrgID: aad.OrgID}
	probe := make([]byte, 32)
	_, _ = rand.Read(probe)
	w, werr := p.Wrap(ctx, probe, org)
	if werr == nil {
		var pt []byte
		if pt, werr = p.Unwrap(ctx, w, org); werr == nil {
			clear(pt)
		}
	}
	if werr != nil {
		return err // the key itself refuses ekm: not one project's matter
	}
	e.Scope = kms.ScopeProject
	e.Message += fmt.Sprintf(" This concerns project %s only: the key works for the organization's other projects (a key policy statement on kms:EncryptionContext:ekm:project?).", aad.ProjectID)
	return err
}

// Describe reports the key the registered ARN names now: its ARN (the KEK
// "version" new wraps record), spec, state and usage. AWS rotation keeps the
// ARN (old material stays usable), so it is transparent to ekm.
func (p *Provider) Describe(ctx context.Context) (kms.KeyInfo, error) {
	var info kms.KeyInfo
	err := p.call(ctx, opDescribe, func(ctx context.Context) error {
		md, err := p.describe(ctx)
		if err != nil {
			return err
		}
		info = md.info
		return nil
	})
	return info, err
}

type keyMetadata struct {
	info kms.KeyInfo
	md   *types.KeyMetadata
}

func (p *Provider) describe(ctx context.Context) (keyMetadata, error) {
	resp, err := p.client.DescribeKey(ctx, &awskms.DescribeKeyInput{KeyId: aws.String(p.key.String())})
	if err != nil {
		return keyMetadata{}, err
	}
	md := resp.KeyMetadata
	if md == nil {
		return keyMetadata{}, errUnexpected
	}
	arn, ok := p.usedKey(aws.ToString(md.Arn))
	if !ok {
		return keyMetadata{}, errUnexpected
	}
	info := kms.KeyInfo{CurrentVersion: arn, KeyType: string(md.KeySpec), Enabled: md.KeyState == types.KeyStateEnabled}
	if md.KeyUsage == types.KeyUsageTypeEncryptDecrypt {
		info.Operations = []string{"encrypt", "decrypt"}
	} else if md.KeyUsage != "" {
		info.Operations = []string{string(md.KeyUsage)}
	}
	return keyMetadata{info: info, md: md}, nil
}

// Preflight assumes the role afresh (the trust policy as it is now), reads
// the key and explains anything that would stop ekm from using it: not
// symmetric, not for encryption, disabled, pending deletion or otherwise
// unusable.
func (p *Provider) Preflight(ctx context.Context) error {
	return p.call(ctx, opDescribe, func(ctx context.Context) error {
		if _, err := p.sess.renew(ctx, true); err != nil {
			return err
		}
		k, err := p.describe(ctx)
		if err != nil {
			return err
		}
		return p.judge(k)
	})
}

// judgement is a preflight finding, already a complete diagnosis.
type judgement struct{ e *kms.Error }

func (j *judgement) Error() string { return j.e.Error() }

func (p *Provider) judge(k keyMetadata) error {
	md := k.md
	where := "key " + aws.ToString(md.Arn)
	if p.key.isAlias() {
		where += " (alias " + p.key.Alias + ")"
	}
	fail := func(class kms.Class, code, msg string) error {
		return &judgement{&kms.Error{Class: class, Code: code, Step: StepKey, Message: msg}}
	}
	if md.KeySpec != types.KeySpecSymmetricDefault {
		return fail(kms.Invalid, CodeKeyNotSymmetric, fmt.Sprintf("%s has key spec %s; ekm needs a symmetric encryption key (SYMMETRIC_DEFAULT, onboarding step 1)", where, md.KeySpec))
	}
	if md.KeyUsage != types.KeyUsageTypeEncryptDecrypt {
		return fail(kms.Invalid, CodeKeyUsageInvalid, fmt.Sprintf("%s has key usage %s; ekm needs ENCRYPT_DECRYPT (onboarding step 1)", where, md.KeyUsage))
	}
	switch md.KeyState {
	case types.KeyStateEnabled:
		return nil
	case types.KeyStateDisabled:
		return fail(kms.Revoked, CodeKeyDisabled, where+" is disabled; enable it (aws kms enable-key, onboarding step 1)")
	case types.KeyStatePendingDeletion, types.KeyStatePendingReplicaDeletion:
		msg := where + " is scheduled for deletion"
		if md.DeletionDate != nil {
			msg += " on " + md.DeletionDate.UTC().Format("2006-01-02T15:04:05Z")
		}
		return fail(kms.Revoked, CodeKeyPendingDeletion, msg+"; cancel the deletion (aws kms cancel-key-deletion) and enable the key (onboarding step 1)")
	}
	return fail(kms.Revoked, CodeKeyInvalidState, fmt.Sprintf("%s is in state %s, in which it cannot encrypt or decrypt (onboarding step 1)", where, md.KeyState))
}

// usedKey checks that arn (as KMS reports the key it used, or as recorded
// with a wrap) is a key ARN in the registered key's partition, region and
// account, and the registered key itself when a key ARN was registered.
func (p *Provider) usedKey(arn string) (string, bool) {
	k, err := parseKMSARN(arn)
	if err != nil || k.isAlias() || !k.sameHome(p.key) {
		return "", false
	}
	if !p.key.isAlias() && k.KeyID != p.key.KeyID {
		return "", false
	}
	return k.String(), true
}

func (p *Provider) diag(op operation) diag {
	return diag{op: op, key: p.key, role: p.role, externalID: p.externalID, principal: p.d.knownIdentity().ARN}
}

// call runs f with the driver's timeout and a recorder of the request ids,
// and turns any failure into a diagnosed *kms.Error naming the last
// request id.
func (p *Provider) call(ctx context.Context, op operation, f func(context.Context) error) error {
	rec := &recorder{}
	ctx = context.WithValue(ctx, recorderKey{}, rec)
	ctx, cancel := context.WithTimeout(ctx, p.d.cfg.Timeout)
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
		e = &kms.Error{Class: kms.Outage, Code: CodeUnexpectedResponse, Message: "AWS KMS returned a response ekm could not use; treated as transient", Err: err}
	default:
		g := p.diag(op)
		e = g.diagnose(err)
		switch e.Code {
		case CodePermissionMissing, CodeAccessDenied:
			// A deleted role, or one whose trust no longer admits ekm,
			// shows as a KMS denial while its session lasts: assume it
			// again so that the diagnosis names the step to fix.
			if _, rerr := p.sess.renew(ctx, true); rerr != nil {
				if re := g.diagnose(rerr); re.Code == CodeAssumeRoleDenied {
					e = re
				}
			}
		case CodeCredentialsExpired, CodeCredentialsRejected:
			p.sess.invalidate()
		}
	}
	e.RequestID = rec.get()
	return e
}
