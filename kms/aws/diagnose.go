package aws

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"

	"github.com/ekm-dev/ekm/kms"
)

// Diagnosis codes of provider calls (kms.Error.Code). docs/aws.md maps each
// to its fix.
const (
	CodeAssumeRoleDenied     = "aws_assume_role_denied"
	CodePermissionMissing    = "aws_kms_permission_missing"
	CodeKeyPolicyDenied      = "aws_key_policy_denied"
	CodeAccessDenied         = "aws_kms_access_denied"
	CodeKeyDisabled          = "aws_key_disabled"
	CodeKeyPendingDeletion   = "aws_key_pending_deletion"
	CodeKeyInvalidState      = "aws_key_invalid_state"
	CodeKeyNotFound          = "aws_key_not_found"
	CodeAliasRepointed       = "aws_alias_repointed"
	CodeKeyNotSymmetric      = "aws_key_not_symmetric"
	CodeKeyUsageInvalid      = "aws_key_usage_invalid"
	CodeWrongRegion          = "aws_wrong_region"
	CodeInvalidCiphertext    = "aws_invalid_ciphertext"
	CodeWrongKey             = "aws_wrong_key"
	CodeBadRequest           = "aws_bad_request"
	CodeCredentialsMissing   = "aws_credentials_missing"
	CodeCredentialsRejected  = "aws_credentials_rejected"
	CodeSTSRegionDisabled    = "aws_sts_region_disabled"
	CodeClientSetup          = "aws_client_setup_failed"
	CodeCredentialsExpired   = "aws_credentials_expired"
	CodeThrottled            = "aws_throttled"
	CodeServiceError         = "aws_service_error"
	CodeTimeout              = "aws_timeout"
	CodeCanceled             = "aws_canceled"
	CodeConnectionFailed     = "aws_connection_failed"
	CodeUnexpectedResponse   = "aws_unexpected_response"
	CodeVendorIdentityUnsafe = "aws_vendor_identity_unsuitable"
)

// operation names the KMS action a call needs.
type operation string

const (
	opEncrypt  operation = "kms:Encrypt"
	opDecrypt  operation = "kms:Decrypt"
	opDescribe operation = "kms:DescribeKey"
	opAssume   operation = "sts:AssumeRole"
)

// maxMessageInput bounds the part of an AWS error message we quote.
const maxMessageInput = 512

// assumeRoleError marks a failure of sts:AssumeRole on the customer's role,
// whichever KMS call needed the credentials.
type assumeRoleError struct{ err error }

func (e *assumeRoleError) Error() string { return "assume role: " + e.err.Error() }
func (e *assumeRoleError) Unwrap() error { return e.err }

// vendorCredentialsError marks a failure to obtain ekm's own credentials
// from the SDK's default chain (nothing configured, or the chain failed).
type vendorCredentialsError struct{ err error }

func (e *vendorCredentialsError) Error() string { return "ekm's own AWS credentials: " + e.err.Error() }
func (e *vendorCredentialsError) Unwrap() error { return e.err }

// setupError marks a failure to build a request (e.g. an endpoint that is
// not one of the partition's real hosts).
type setupError struct{ err error }

func (e *setupError) Error() string { return "client setup: " + e.err.Error() }
func (e *setupError) Unwrap() error { return e.err }

// diag builds the kms.Error for a failed call.
type diag struct {
	op         operation
	key        keyARN
	role       string
	externalID string
	principal  string // ekm's principal ARN, "" if unknown
}

// The action and the reason AWS names in an AccessDenied message:
// "User: <arn> is not authorized to perform: kms:Decrypt on resource: <arn>
// because no identity-based policy allows the kms:Decrypt action" (or
// "with an explicit deny in a resource-based policy").
var (
	actionRE    = regexp.MustCompile(`perform: (kms:[A-Za-z]{1,40})`)
	becauseNoRE = regexp.MustCompile(`because no (identity-based|resource-based|session|permissions boundary) policy allows`)
	denyInRE    = regexp.MustCompile(`with an explicit deny in an? (identity-based|resource-based|session|permissions boundary) policy`)
)

func (g diag) where() string { return "key " + g.key.String() }

func (g diag) diagnose(err error) *kms.Error {
	e := g.classify(err)
	e.Err = err
	return e
}

func (g diag) classify(err error) *kms.Error {
	var vc *vendorCredentialsError
	var ar *assumeRoleError
	var se *setupError
	switch {
	case errors.As(err, &se):
		return &kms.Error{Class: kms.Operator, Code: CodeClientSetup, Message: "the server could not set up its AWS client; this is not a problem with your key — the operator has been notified"}
	case errors.As(err, &vc):
		return g.vendor(vc.err)
	case errors.As(err, &ar):
		return g.sts(ar.err)
	}
	return g.kms(err)
}

// transport classifies failures that have no AWS error code.
func (g diag) transport(err error, service string) *kms.Error {
	var ne net.Error
	var re *awshttp.ResponseError
	switch {
	case errors.Is(err, context.Canceled):
		return &kms.Error{Class: kms.Outage, Code: CodeCanceled, Message: "the call to AWS " + service + " was canceled"}
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return &kms.Error{Class: kms.Outage, Code: CodeTimeout, Message: "AWS " + service + " did not answer in time; this is transient, not a misconfiguration"}
	case errors.Is(err, errBodyTooLarge):
		return &kms.Error{Class: kms.Outage, Code: CodeUnexpectedResponse, Message: "AWS " + service + " returned an oversized response; treated as transient"}
	case errors.As(err, &re) && re.HTTPStatusCode() >= 500:
		return &kms.Error{Class: kms.Outage, Code: CodeServiceError, Message: fmt.Sprintf("AWS %s returned a server error (HTTP %d); this is transient, not a misconfiguration", service, re.HTTPStatusCode())}
	case errors.As(err, &re) && re.HTTPStatusCode() == 429:
		return &kms.Error{Class: kms.Outage, Code: CodeThrottled, Message: "AWS " + service + " is throttling ekm; this is transient"}
	case errors.As(err, &ne):
		return &kms.Error{Class: kms.Outage, Code: CodeConnectionFailed, Message: "could not connect to AWS " + service + "; this is transient, not a misconfiguration"}
	}
	return &kms.Error{Class: kms.Outage, Code: CodeUnexpectedResponse, Message: "unexpected failure talking to AWS " + service + "; treated as transient"}
}

// apiError returns the AWS error code and message, if err carries one.
func apiError(err error) (code, msg string, ok bool) {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return "", "", false
	}
	msg = ae.ErrorMessage()
	if len(msg) > maxMessageInput {
		msg = msg[:maxMessageInput]
	}
	return ae.ErrorCode(), msg, true
}

// vendor: ekm's own credentials could not be obtained.
func (g diag) vendor(err error) *kms.Error {
	if d := g.transport(err, "credentials"); d.Code == CodeCanceled || d.Code == CodeTimeout {
		return d
	}
	return &kms.Error{Class: kms.Operator, Code: CodeCredentialsMissing,
		Message: "the server has no usable AWS credentials of its own (SDK default chain: environment, web identity, container or instance role); this is not a problem with your key — the operator must fix the server's AWS identity"}
}

// sts: the AssumeRole of the customer's role failed.
func (g diag) sts(err error) *kms.Error {
	code, msg, ok := apiError(err)
	if !ok {
		return g.transport(err, "STS")
	}
	who := "ekm's principal"
	if g.principal != "" {
		who += " " + g.principal
	}
	switch code {
	case "AccessDenied":
		if strings.Contains(msg, "root accounts") {
			return &kms.Error{Class: kms.Operator, Code: CodeVendorIdentityUnsafe, Message: "the server's own AWS identity is an account root user, which cannot assume roles; the operator must run ekm as an IAM role or user"}
		}
		return &kms.Error{Class: kms.Revoked, Code: CodeAssumeRoleDenied, Step: StepRole,
			Message: fmt.Sprintf("AWS STS refused to let %s assume role %s: the role does not exist, or its trust policy does not allow that principal sts:AssumeRole with the condition sts:ExternalId = %q (onboarding step 3). AWS gives the same answer for each of these causes; also check the role ARN for typos", who, g.role, g.externalID)}
	case "RegionDisabledException":
		return &kms.Error{Class: kms.Operator, Code: CodeSTSRegionDisabled, Message: fmt.Sprintf("AWS STS is not activated in region %s for the account that owns the role or for the server's account; activate the region (IAM account settings) or ask the operator", g.key.Region)}
	case "InvalidClientTokenId", "SignatureDoesNotMatch", "IncompleteSignature", "MissingAuthenticationToken", "UnrecognizedClientException", "InvalidSignatureException":
		return &kms.Error{Class: kms.Operator, Code: CodeCredentialsRejected, Message: "AWS STS rejected the server's own AWS credentials (" + code + "); this is not a problem with your key — the operator must fix the server's AWS identity"}
	case "ExpiredToken", "ExpiredTokenException":
		return &kms.Error{Class: kms.Outage, Code: CodeCredentialsExpired, Message: "the server's own AWS credentials had expired; they are renewed automatically — transient"}
	case "Throttling", "ThrottlingException", "RequestLimitExceeded":
		return &kms.Error{Class: kms.Outage, Code: CodeThrottled, Message: "AWS STS is throttling ekm; this is transient"}
	case "ValidationError":
		return &kms.Error{Class: kms.Invalid, Code: CodeBadRequest, Step: StepRole, Message: fmt.Sprintf("AWS STS refused the AssumeRole request for role %s as invalid: %s (onboarding step 3)", g.role, quote(msg))}
	}
	if d := g.transport(err, "STS"); d.Code != CodeUnexpectedResponse {
		return d
	}
	return &kms.Error{Class: kms.Outage, Code: CodeUnexpectedResponse, Message: "AWS STS answered " + quote(code) + " to AssumeRole; treated as transient"}
}

// kms: a KMS call failed.
func (g diag) kms(err error) *kms.Error {
	code, msg, ok := apiError(err)
	if !ok {
		return g.transport(err, "KMS")
	}
	action := string(g.op)
	switch code {
	case "AccessDeniedException":
		if strings.Contains(msg, "ciphertext refers to a customer master key") {
			return &kms.Error{Class: kms.Invalid, Code: CodeInvalidCiphertext, Message: fmt.Sprintf("AWS KMS says the wrapped key refers to a key that does not exist in %s or that ekm may not use, although ekm named %s: the stored wrapped key is corrupt or was made by another key", g.key.Region, g.where())}
		}
		if m := actionRE.FindStringSubmatch(msg); m != nil {
			action = m[1]
		}
		if m := denyInRE.FindStringSubmatch(msg); m != nil {
			if m[1] == "resource-based" {
				return &kms.Error{Class: kms.Revoked, Code: CodeKeyPolicyDenied, Step: StepAttach,
					Message: fmt.Sprintf("the key policy of %s explicitly denies ekm's role %s the action %s (for example a Deny on this organization or project's encryption context); remove the Deny statement to restore access (onboarding step 4)", g.where(), g.role, action)}
			}
			return &kms.Error{Class: kms.Revoked, Code: CodePermissionMissing, Step: StepPolicyOrKP,
				Message: fmt.Sprintf("an IAM policy of role %s explicitly denies %s on %s; remove the Deny (onboarding steps 2 and 4)", g.role, action, g.where())}
		}
		if m := becauseNoRE.FindStringSubmatch(msg); m != nil {
			if m[1] == "resource-based" {
				return &kms.Error{Class: kms.Revoked, Code: CodeKeyPolicyDenied, Step: StepAttach,
					Message: fmt.Sprintf("the key policy of %s neither allows ekm's role %s the action %s nor delegates to IAM (the default statement allowing arn:%s:iam::%s:root kms:*); restore that statement or allow the role (onboarding step 4)", g.where(), g.role, action, g.key.Partition, g.key.Account)}
			}
			return &kms.Error{Class: kms.Revoked, Code: CodePermissionMissing, Step: StepPolicyOrKP,
				Message: fmt.Sprintf("role %s is not allowed %s on %s: its permission policy must allow kms:Encrypt, kms:Decrypt and kms:DescribeKey on the key (onboarding step 2) and be attached to the role (step 4), or a grant must allow it. IAM changes can take a few seconds to apply", g.role, action, g.where())}
		}
		return &kms.Error{Class: kms.Revoked, Code: CodeAccessDenied, Step: StepPolicyOrKP,
			Message: fmt.Sprintf("AWS KMS denied ekm's role %s the action %s on %s; check the role's permission policy (onboarding steps 2 and 4) and the key policy", g.role, action, g.where())}
	case "NotFoundException":
		if strings.HasPrefix(msg, "Invalid arn") {
			return &kms.Error{Class: kms.Invalid, Code: CodeWrongRegion, Step: StepKey, Param: ParamKMSARN,
				Message: fmt.Sprintf("AWS KMS in %s refused the ARN of %s as belonging to another region; check the region in kms_arn", g.key.Region, g.where())}
		}
		what := g.where()
		if g.key.isAlias() {
			what = "alias " + g.key.String() + " (or the key it points to)"
		}
		return &kms.Error{Class: kms.Revoked, Code: CodeKeyNotFound, Step: StepKey,
			Message: fmt.Sprintf("%s does not exist in account %s, region %s; if it was deleted it cannot be recovered, and if it is in another region or account, register that ARN (onboarding step 1)", what, g.key.Account, g.key.Region)}
	case "DisabledException":
		return &kms.Error{Class: kms.Revoked, Code: CodeKeyDisabled, Step: StepKey,
			Message: fmt.Sprintf("%s is disabled; enable it to restore access (aws kms enable-key, onboarding step 1)", g.where())}
	case "KMSInvalidStateException":
		if strings.Contains(msg, "pending deletion") || strings.Contains(msg, "PendingDeletion") {
			return &kms.Error{Class: kms.Revoked, Code: CodeKeyPendingDeletion, Step: StepKey,
				Message: fmt.Sprintf("%s is scheduled for deletion; cancel the deletion (aws kms cancel-key-deletion) and enable the key to restore access before the data becomes unrecoverable (onboarding step 1)", g.where())}
		}
		return &kms.Error{Class: kms.Revoked, Code: CodeKeyInvalidState, Step: StepKey,
			Message: fmt.Sprintf("%s is not in a usable state: %s (onboarding step 1)", g.where(), quote(msg))}
	case "IncorrectKeyException":
		if g.key.isAlias() {
			return &kms.Error{Class: kms.Revoked, Code: CodeAliasRepointed, Step: StepKey,
				Message: fmt.Sprintf("alias %s now points to another key than the one this data was wrapped with: re-pointing an alias is a revocation, not a rotation; point the alias back to its previous key to restore access (use automatic or on-demand key rotation to rotate)", g.key.String())}
		}
		return &kms.Error{Class: kms.Invalid, Code: CodeWrongKey, Message: fmt.Sprintf("the wrapped key was not made by %s; stored data mismatch, report it to the operator", g.where())}
	case "InvalidCiphertextException":
		return &kms.Error{Class: kms.Invalid, Code: CodeInvalidCiphertext, Message: fmt.Sprintf("AWS KMS could not decrypt the wrapped key with %s: it is corrupt or bound to another org, project or key version (its encryption context does not match)", g.where())}
	case "InvalidKeyUsageException":
		return &kms.Error{Class: kms.Invalid, Code: CodeKeyUsageInvalid, Step: StepKey,
			Message: fmt.Sprintf("%s cannot be used for %s: ekm needs a symmetric encryption key (SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT; onboarding step 1)", g.where(), action)}
	case "UnrecognizedClientException", "InvalidSignatureException", "IncompleteSignatureException", "MissingAuthenticationTokenException":
		return &kms.Error{Class: kms.Operator, Code: CodeCredentialsRejected, Message: "AWS KMS rejected the role session credentials ekm signed with (" + code + "); this is not a problem with your key's permissions — the operator has been notified"}
	case "ExpiredTokenException":
		return &kms.Error{Class: kms.Outage, Code: CodeCredentialsExpired, Message: "ekm's role session had expired; it is renewed automatically — transient"}
	case "ThrottlingException", "LimitExceededException":
		return &kms.Error{Class: kms.Outage, Code: CodeThrottled, Message: fmt.Sprintf("AWS KMS in %s is throttling ekm; this is transient, not a misconfiguration", g.key.Region)}
	case "KMSInternalException", "DependencyTimeoutException", "KeyUnavailableException", "InternalFailure", "ServiceUnavailable", "ServiceUnavailableException":
		return &kms.Error{Class: kms.Outage, Code: CodeServiceError, Message: fmt.Sprintf("AWS KMS in %s had an internal failure (%s); this is transient, not a misconfiguration", g.key.Region, code)}
	case "ValidationException", "InvalidArnException", "UnsupportedOperationException", "InvalidGrantTokenException", "SerializationException":
		return &kms.Error{Class: kms.Invalid, Code: CodeBadRequest, Step: StepKey, Message: fmt.Sprintf("AWS KMS refused the %s request for %s as invalid (%s): %s", action, g.where(), code, quote(msg))}
	}
	if d := g.transport(err, "KMS"); d.Code != CodeUnexpectedResponse {
		return d
	}
	return &kms.Error{Class: kms.Outage, Code: CodeUnexpectedResponse, Message: fmt.Sprintf("AWS KMS answered %s; treated as transient", quote(code))}
}

// quote bounds and sanitises text from AWS before it goes into a message.
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
