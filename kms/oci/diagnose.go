package oci

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"

	"github.com/oracle/oci-go-sdk/v65/common"
	"github.com/oracle/oci-go-sdk/v65/keymanagement"

	"github.com/ekm-dev/ekm/kms"
)

// Diagnosis codes of provider calls (kms.Error.Code). docs/oci.md maps each
// to its fix.
const (
	CodeVaultNotFound          = "oci_vault_not_authorized_or_not_found"
	CodeKeyNotFound            = "oci_key_not_authorized_or_not_found"
	CodeKeyUseNotAdmitted      = "oci_key_use_not_admitted"
	CodeVaultNotActive         = "oci_vault_not_active"
	CodeKeyDisabled            = "oci_key_disabled"
	CodeKeyPendingDeletion     = "oci_key_pending_deletion"
	CodeKeyDeleted             = "oci_key_deleted"
	CodeKeyVersionUnusable     = "oci_key_version_unusable"
	CodeKeyNotInVault          = "oci_key_not_in_vault"
	CodeKeyNotAES256           = "oci_key_not_aes256"
	CodeKeyOrgTagMismatch      = "oci_key_org_tag_mismatch"
	CodeKeyVersionNotFound     = "oci_key_version_not_found"
	CodeInvalidCiphertext      = "oci_invalid_ciphertext"
	CodeWrongKey               = "oci_wrong_key"
	CodeBadRequest             = "oci_bad_request"
	CodeVaultEndpointRefused   = "oci_vault_endpoint_refused"
	CodeCredentialsRejected    = "oci_credentials_rejected"
	CodeCredentialsUnavailable = "oci_credentials_unavailable"
	CodeClientSetup            = "oci_client_setup_failed"
	CodeKeyTransitioning       = "oci_key_transitioning"
	CodeThrottled              = "oci_throttled"
	CodeServiceError           = "oci_service_error"
	CodeTimeout                = "oci_timeout"
	CodeCanceled               = "oci_canceled"
	CodeConnectionFailed       = "oci_connection_failed"
	CodeUnexpectedResponse     = "oci_unexpected_response"
)

// TagOrg is the freeform tag a customer puts on its key with the ekm
// organization id as value: it ties the key to that organization, so that
// no other organization of this ekm can register it (ekm's group is
// admitted for all of them).
const TagOrg = "ekm-org"

// operation names the OCI call a diagnosis is about.
type operation string

const (
	opEncrypt       operation = "Encrypt"
	opDecrypt       operation = "Decrypt"
	opGetKey        operation = "GetKey"
	opGetVault      operation = "GetVault"
	opGetKeyVersion operation = "GetKeyVersion"
)

func (op operation) crypto() bool { return op == opEncrypt || op == opDecrypt }

var errUnexpected = errors.New("unexpected response from OCI Vault")

// judgement is a finding that is already a complete diagnosis.
type judgement struct{ e *kms.Error }

func (j *judgement) Error() string { return j.e.Error() }

// vaultError marks a failure of GetVault.
type vaultError struct{ err error }

func (e *vaultError) Error() string { return "get vault: " + e.err.Error() }
func (e *vaultError) Unwrap() error { return e.err }

// setupError marks a failure to build a client or a request.
type setupError struct{ err error }

func (e *setupError) Error() string { return "client setup: " + e.err.Error() }
func (e *setupError) Unwrap() error { return e.err }

// credentialsError marks a failure to obtain ekm's own signing key or
// token (an instance principal's certificate, say).
type credentialsError struct{ err error }

func (e *credentialsError) Error() string { return "ekm's own OCI credentials: " + e.err.Error() }
func (e *credentialsError) Unwrap() error { return e.err }

// KeyID and PrivateRSAKey mark failures of ekm's own identity as the
// operator's.
func (p regionProvider) KeyID() (string, error) {
	id, err := p.ConfigurationProvider.KeyID()
	if err != nil {
		return "", &credentialsError{err}
	}
	return id, nil
}

func (p regionProvider) PrivateRSAKey() (*rsa.PrivateKey, error) {
	k, err := p.ConfigurationProvider.PrivateRSAKey()
	if err != nil {
		return nil, &credentialsError{err}
	}
	return k, nil
}

// ---- request ids ----

// recorder keeps the last opc-request-id of one provider call (for
// kms.Error.RequestID).
type recorder struct {
	mu   sync.Mutex
	last string
}

type recorderKey struct{}

// record makes the opc-request-id of one request (32 hex digits, as the
// SDK's own) and records it in the call's kms.CallInfo: OCI echoes it in
// the opc-request-id it answers and its audit log, so the customer can
// find each of ekm's requests.
func record(ctx context.Context) *string {
	var b [16]byte
	rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	if ci := kms.CallInfoFrom(ctx); ci != nil {
		ci.Record(id)
	}
	if r, ok := ctx.Value(recorderKey{}).(*recorder); ok {
		r.mu.Lock()
		r.last = id
		r.mu.Unlock()
	}
	return &id
}

// ---- classification ----

// retryable reports whether err is worth another attempt: throttling,
// 5xx, a connection failure.
func retryable(err error) bool {
	if se, ok := common.IsServiceError(err); ok {
		s := se.GetHTTPStatusCode()
		return s == 429 || (s >= 500 && s != 501)
	}
	var ne net.Error
	var ue *url.Error
	return !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) && (errors.As(err, &ne) || errors.As(err, &ue))
}

func (p *Provider) where() string { return "key " + p.p.key.raw }

// diagnose turns the failure of op into a *kms.Error. For refusals OCI
// explains no further (404 NotAuthorizedOrNotFound, or a 400/409 that may
// mean a key not ENABLED) it reads the vault and the key.
func (p *Provider) diagnose(ctx context.Context, op operation, err error) *kms.Error {
	e := p.classify(ctx, op, err)
	if e.Err == nil {
		e.Err = err
	}
	return e
}

func (p *Provider) classify(ctx context.Context, op operation, err error) *kms.Error {
	var j *judgement
	var se *setupError
	var ce *credentialsError
	var ee *endpointError
	var ve *vaultError
	switch {
	case errors.As(err, &j):
		return j.e
	case errors.Is(err, errUnexpected), errors.Is(err, errBodyTooLarge):
		return &kms.Error{Class: kms.Outage, Code: CodeUnexpectedResponse, Message: "OCI Vault returned a response ekm could not use; treated as transient"}
	case errors.As(err, &ce):
		return &kms.Error{Class: kms.Operator, Code: CodeCredentialsUnavailable, Message: "ekm could not obtain its own OCI signing credentials; this is not a problem with your key — the operator has been notified"}
	case errors.As(err, &se):
		return &kms.Error{Class: kms.Operator, Code: CodeClientSetup, Message: "the server could not set up its OCI client; this is not a problem with your key — the operator has been notified"}
	case errors.As(err, &ee):
		return &kms.Error{Class: kms.Invalid, Code: CodeVaultEndpointRefused, Param: ParamVaultOCID,
			Message: fmt.Sprintf("vault %s answered an endpoint that is not an OCI Vault host of %s; ekm calls nothing else (%s)", p.p.vault.raw, p.p.region.id, ee.err)}
	case errors.As(err, &ve):
		if s, code := status(ve.err); s == 404 {
			return &kms.Error{Class: kms.Revoked, Code: CodeVaultNotFound, Step: StepPolicyOrKey,
				Message: fmt.Sprintf("OCI answered NotAuthorizedOrNotFound for vault %s in %s: either your policy does not admit ekm's group to read it (onboarding step 2: the Define statements and the Admit … to read vaults statement, in your root compartment), or the vault does not exist in that region (step 1). OCI does not say which.", p.p.vault.raw, p.p.region.id)}
		} else if code != "" {
			return p.generic(opGetVault, ve.err)
		}
		return p.transport(ve.err)
	}
	s, code := status(err)
	switch {
	case s == 0:
		return p.transport(err)
	case s == 404 && (op.crypto() || op == opGetKey):
		return p.explain404(ctx, op)
	case op.crypto() && (s == 409 || s == 400):
		return p.explainState(ctx, op, err)
	case s == 404 && op == opGetKeyVersion:
		return &kms.Error{Class: kms.Invalid, Code: CodeKeyVersionNotFound, Step: StepKey, Param: ParamKeyVersionOCID,
			Message: fmt.Sprintf("key version %s is not a version of %s that ekm can read (onboarding step 1)", p.p.version.raw, p.where())}
	}
	_ = code
	return p.generic(op, err)
}

// status is the HTTP status and OCI error code of a service error (0, ""
// for anything else).
func status(err error) (int, string) {
	if se, ok := common.IsServiceError(err); ok {
		return se.GetHTTPStatusCode(), se.GetCode()
	}
	return 0, ""
}

// generic classifies a service error by its status alone.
func (p *Provider) generic(op operation, err error) *kms.Error {
	s, code := status(err)
	switch {
	case s == 401:
		return &kms.Error{Class: kms.Operator, Code: CodeCredentialsRejected,
			Message: "OCI rejected ekm's own request signature (NotAuthenticated: an unknown or deleted API key, a wrong fingerprint, or a clock more than 5 minutes off); this is not a problem with your key — the operator has been notified"}
	case s == 429:
		return &kms.Error{Class: kms.Outage, Code: CodeThrottled, Message: fmt.Sprintf("OCI Vault in %s is throttling ekm; this is transient, not a misconfiguration", p.p.region.id)}
	case s >= 500:
		return &kms.Error{Class: kms.Outage, Code: CodeServiceError, Message: fmt.Sprintf("OCI Vault in %s had an internal failure (%d %s); this is transient, not a misconfiguration", p.p.region.id, s, quote(code))}
	case s == 404:
		return &kms.Error{Class: kms.Revoked, Code: CodeKeyNotFound, Step: StepPolicyOrKey, Message: p.notFoundMessage()}
	case s == 409:
		return &kms.Error{Class: kms.Outage, Code: CodeKeyTransitioning, Message: fmt.Sprintf("OCI Vault refused %s on %s for now (%s); treated as transient", op, p.where(), quote(code))}
	}
	return &kms.Error{Class: kms.Invalid, Code: CodeBadRequest, Message: fmt.Sprintf("OCI Vault refused the %s request for %s as invalid (%d %s)", op, p.where(), s, quote(code))}
}

func (p *Provider) notFoundMessage() string {
	return fmt.Sprintf("OCI answered NotAuthorizedOrNotFound for %s: either your policy does not admit ekm's group to use this key (onboarding step 2: the Admit … to use keys statement is missing, in another compartment, or its where target.key.id names another key), or the key does not exist in vault %s (step 1). OCI does not say which.", p.where(), p.p.vault.raw)
}

// explain404 reads the vault and the key after a 404 on the key: the vault
// unreadable means ekm is not admitted at all (or the vault is gone); a key
// ekm can read but not use means an Admit that grants less than "use
// keys".
func (p *Provider) explain404(ctx context.Context, op operation) *kms.Error {
	vc, err := p.vault(ctx, true)
	if err != nil {
		return p.classify(ctx, opGetVault, err)
	}
	k, err := vc.mgmt.GetKey(sdk(ctx), keymanagement.GetKeyRequest{KeyId: &p.p.key.raw, OpcRequestId: record(ctx), RequestMetadata: noRetry()})
	if err != nil {
		if s, _ := status(err); s == 404 || s == 0 {
			return &kms.Error{Class: kms.Revoked, Code: CodeKeyNotFound, Step: StepPolicyOrKey, Message: p.notFoundMessage()}
		}
		return p.generic(opGetKey, err)
	}
	if j := p.judgeState(k.Key); j != nil {
		return j
	}
	if op.crypto() {
		return &kms.Error{Class: kms.Revoked, Code: CodeKeyUseNotAdmitted, Step: StepPolicy,
			Message: fmt.Sprintf("ekm's group may read %s but not %s with it: your Admit statement grants less than \"use keys\" (onboarding step 2)", p.where(), strings.ToLower(string(op)))}
	}
	return &kms.Error{Class: kms.Revoked, Code: CodeKeyNotFound, Step: StepPolicyOrKey, Message: p.notFoundMessage()}
}

// explainState reads the key after a crypto call was refused as invalid or
// conflicting: OCI gives such answers for a key that is not ENABLED.
func (p *Provider) explainState(ctx context.Context, op operation, cause error) *kms.Error {
	vc, err := p.vault(ctx, false)
	if err != nil {
		return p.classify(ctx, opGetVault, err)
	}
	k, err := vc.mgmt.GetKey(sdk(ctx), keymanagement.GetKeyRequest{KeyId: &p.p.key.raw, OpcRequestId: record(ctx), RequestMetadata: noRetry()})
	if err != nil {
		if s, _ := status(err); s == 404 {
			return &kms.Error{Class: kms.Revoked, Code: CodeKeyNotFound, Step: StepPolicyOrKey, Message: p.notFoundMessage()}
		}
		return p.generic(op, cause)
	}
	if j := p.judgeState(k.Key); j != nil {
		return j
	}
	if s, code := status(cause); s == 400 && op == opDecrypt {
		return &kms.Error{Class: kms.Invalid, Code: CodeInvalidCiphertext,
			Message: fmt.Sprintf("OCI Vault could not decrypt the wrapped key with %s (%s): it is corrupt or bound to another org, project or key version (its associated data does not match)", p.where(), quote(code))}
	}
	return p.generic(op, cause)
}

// judgeState explains a key that is not ENABLED (nil if it is).
func (p *Provider) judgeState(k keymanagement.Key) *kms.Error {
	fail := func(class kms.Class, code, msg string) *kms.Error {
		return &kms.Error{Class: class, Code: code, Step: StepKey, Message: msg}
	}
	w := p.where()
	switch k.LifecycleState {
	case keymanagement.KeyLifecycleStateEnabled:
		return nil
	case keymanagement.KeyLifecycleStateDisabled, keymanagement.KeyLifecycleStateDisabling:
		return fail(kms.Revoked, CodeKeyDisabled, w+" is disabled; enable it to restore access (oci kms management key enable, onboarding step 1)")
	case keymanagement.KeyLifecycleStatePendingDeletion, keymanagement.KeyLifecycleStateSchedulingDeletion:
		msg := w + " is scheduled for deletion"
		if k.TimeOfDeletion != nil {
			msg += " on " + k.TimeOfDeletion.UTC().Format("2006-01-02T15:04:05Z")
		}
		return fail(kms.Revoked, CodeKeyPendingDeletion, msg+"; cancel the deletion (oci kms management key cancel-deletion) to restore access before the data becomes unrecoverable (onboarding step 1)")
	case keymanagement.KeyLifecycleStateDeleted, keymanagement.KeyLifecycleStateDeleting:
		return fail(kms.Revoked, CodeKeyDeleted, w+" has been deleted; data wrapped by it cannot be recovered (onboarding step 1)")
	}
	return &kms.Error{Class: kms.Outage, Code: CodeKeyTransitioning, Message: fmt.Sprintf("%s is %s; treated as transient", w, quote(string(k.LifecycleState)))}
}

// transport classifies failures without an answer from OCI.
func (p *Provider) transport(err error) *kms.Error {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return &kms.Error{Class: kms.Outage, Code: CodeTimeout, Message: fmt.Sprintf("OCI Vault in %s did not answer in time", p.p.region.id)}
	case errors.Is(err, context.Canceled):
		return &kms.Error{Class: kms.Outage, Code: CodeCanceled, Message: "the request was canceled"}
	}
	var ne net.Error
	var ue *url.Error
	if errors.As(err, &ne) || errors.As(err, &ue) {
		return &kms.Error{Class: kms.Outage, Code: CodeConnectionFailed, Message: fmt.Sprintf("ekm could not reach OCI Vault in %s (DNS, TCP or TLS failure); treated as transient", p.p.region.id)}
	}
	return &kms.Error{Class: kms.Outage, Code: CodeUnexpectedResponse, Message: "OCI Vault could not be used (an unexpected failure); treated as transient"}
}

// quote bounds and sanitises text from OCI before it goes into a message.
func quote(s string) string {
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == 0xfffd {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "\ufffd"))
}
