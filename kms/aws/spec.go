package aws

import "github.com/ekm-dev/ekm/kms"

// Type is the external key type served by this package.
const Type = "aws"

// Param names on the external key object (OpenAI's aws shape).
const (
	ParamRoleARN    = "role_arn"
	ParamKMSARN     = "kms_arn"
	ParamExternalID = "external_id"
	// ParamRegion is not registered: Check derives it from kms_arn (the
	// region ekm calls), and the external key object shows it, as
	// OpenAI's does.
	ParamRegion = "region"
)

// Onboarding steps (kms.Error.Step), numbered as in docs/aws.md.
const (
	StepKey        = "1" // symmetric KMS key
	StepPolicy     = "2" // IAM policy with kms:Encrypt, kms:Decrypt, kms:DescribeKey
	StepRole       = "3" // role trusting ekm's principal with sts:ExternalId
	StepAttach     = "4" // policy attached (and key policy delegating to IAM)
	StepPolicyOrKP = "2,4"
)

// Identity keys of the Spec (what the onboarding steps need).
const (
	IdentityPrincipalARN = "principal_arn"
	IdentityAccountID    = "account_id"
)

// Spec describes the aws type with ekm's principal, once known (it is
// looked up in the background when the driver starts; Config.PrincipalARN
// sets it explicitly).
func (d *Driver) Spec() kms.Spec {
	s := Spec()
	id := d.knownIdentity()
	s.Identity = map[string]string{}
	if id.ARN != "" {
		s.Identity[IdentityPrincipalARN] = id.ARN
	}
	if id.Account != "" {
		s.Identity[IdentityAccountID] = id.Account
	}
	return s
}

// Spec describes the aws type: the registration fields of OpenAI's
// external_keys API, the onboarding steps of docs/aws.md and every
// diagnosis code. It needs no configuration (a server without AWS still
// describes the type, as not enabled).
func Spec() kms.Spec {
	return kms.Spec{
		Type:      Type,
		Title:     "AWS KMS",
		Algorithm: Algorithm,
		OrgBound:  []string{ParamExternalID},
		// A key policy can condition on kms:EncryptionContext:ekm:project.
		ProjectScoped: true,
		Fields: []kms.Field{
			{Name: ParamExternalID, Required: true, MaxLen: 256, Description: "the sts:ExternalId your role's trust policy requires: your organization id (or one of its project ids)"},
			{Name: ParamKMSARN, Required: true, MaxLen: 2048, Description: "ARN of the symmetric KMS key: a key ARN, a multi-Region (mrk-) key ARN or an alias ARN, in the region ekm is to call"},
			{Name: ParamRoleARN, Required: true, MaxLen: 2048, Description: "ARN of the IAM role ekm assumes in your account"},
		},
		Steps: []kms.Step{
			{ID: StepKey, Title: "Create a symmetric KMS key"},
			{ID: StepPolicy, Title: "Create an IAM policy allowing kms:Encrypt, kms:Decrypt and kms:DescribeKey on the key"},
			{ID: StepRole, Title: "Create an IAM role that trusts ekm's principal with your ExternalId"},
			{ID: StepAttach, Title: "Attach the policy to the role (and let the key policy delegate to IAM)"},
		},
		Codes: []kms.Code{
			{Code: kms.CodeUnsupportedType, Class: kms.Invalid, Description: "this server does not run the aws driver"},
			{Code: CodeInvalidRoleARN, Class: kms.Invalid, Description: "role_arn is not arn:<partition>:iam::<12 digits>:role/<name>"},
			{Code: CodeInvalidKMSARN, Class: kms.Invalid, Description: "kms_arn is not a key or alias ARN (arn:<partition>:kms:<region>:<12 digits>:key/<id> or alias/<name>)"},
			{Code: CodeInvalidExternalID, Class: kms.Invalid, Description: "external_id is not 2-1224 of [A-Za-z0-9_+=,.@:/-]"},
			{Code: CodeAWSManagedKeyRefused, Class: kms.Invalid, Step: StepKey, Description: "kms_arn names an AWS managed key (alias/aws/...)"},
			{Code: CodePartitionNotEnabled, Class: kms.Invalid, Description: "the operator has not enabled the key's partition"},
			{Code: CodePartitionMismatch, Class: kms.Invalid, Description: "role_arn and kms_arn are in different partitions"},
			{Code: CodeRegionNotSupported, Class: kms.Invalid, Description: "the region in kms_arn is not a region of its partition"},
			{Code: CodeUnknownParameter, Class: kms.Invalid, Description: "a parameter aws keys do not have"},
			{Code: CodeMissingParameter, Class: kms.Invalid, Description: "a required parameter is missing"},
			{Code: CodeParameterTooLong, Class: kms.Invalid, Description: "a parameter is too long"},
			{Code: CodeInvalidOrgID, Class: kms.Invalid, Description: "the organization id cannot be used in a role session name"},
			{Code: CodeAssumeRoleDenied, Class: kms.Revoked, Step: StepRole, Description: "sts:AssumeRole refused: the role does not exist, or its trust policy does not admit ekm's principal with this external id"},
			{Code: CodePermissionMissing, Class: kms.Revoked, Step: StepPolicyOrKP, Description: "the role's policies (or grants) do not allow the KMS action on the key, or explicitly deny it"},
			{Code: CodeKeyPolicyDenied, Class: kms.Revoked, Step: StepAttach, Description: "the key policy denies the action (e.g. a per-project Deny) or neither allows the role nor delegates to IAM"},
			{Code: CodeAccessDenied, Class: kms.Revoked, Step: StepPolicyOrKP, Description: "any other AccessDeniedException from KMS"},
			{Code: CodeKeyDisabled, Class: kms.Revoked, Step: StepKey, Description: "the key is disabled"},
			{Code: CodeKeyPendingDeletion, Class: kms.Revoked, Step: StepKey, Description: "the key is scheduled for deletion"},
			{Code: CodeKeyInvalidState, Class: kms.Revoked, Step: StepKey, Description: "the key is in another unusable state (pending import, unavailable key store)"},
			{Code: CodeKeyNotFound, Class: kms.Revoked, Step: StepKey, Description: "the key or alias does not exist in that account and region"},
			{Code: CodeAliasRepointed, Class: kms.Revoked, Step: StepKey, Description: "the registered alias now points to another key than the one that wrapped the data"},
			{Code: CodeKeyNotSymmetric, Class: kms.Invalid, Step: StepKey, Description: "the key is not SYMMETRIC_DEFAULT"},
			{Code: CodeKeyUsageInvalid, Class: kms.Invalid, Step: StepKey, Description: "the key's usage is not ENCRYPT_DECRYPT"},
			{Code: CodeWrongRegion, Class: kms.Invalid, Step: StepKey, Description: "KMS refused the ARN as belonging to another region"},
			{Code: CodeBadRequest, Class: kms.Invalid, Description: "AWS refused the request as invalid (the step depends on the call: 1 for KMS, 3 for AssumeRole)"},
			{Code: CodeInvalidCiphertext, Class: kms.Invalid, Description: "the stored wrapped key is corrupt or bound to another encryption context"},
			{Code: CodeWrongKey, Class: kms.Invalid, Description: "the stored wrapped key names another key or algorithm"},
			{Code: CodeCredentialsMissing, Class: kms.Operator, Description: "ekm's own credentials could not be obtained from the SDK's default chain"},
			{Code: CodeCredentialsRejected, Class: kms.Operator, Description: "AWS rejected ekm's own credentials or its role session's signature"},
			{Code: CodeVendorIdentityUnsafe, Class: kms.Operator, Description: "ekm runs as an account root user, which cannot assume roles"},
			{Code: CodeSTSRegionDisabled, Class: kms.Operator, Description: "STS is not activated in the key's region"},
			{Code: CodeClientSetup, Class: kms.Operator, Description: "ekm could not build its AWS request (e.g. an endpoint outside the partition's hosts)"},
			{Code: CodeCredentialsExpired, Class: kms.Outage, Description: "a session had expired; renewed automatically"},
			{Code: CodeThrottled, Class: kms.Outage, Description: "AWS throttled ekm (after retries)"},
			{Code: CodeServiceError, Class: kms.Outage, Description: "AWS answered 5xx or an internal failure (after retries)"},
			{Code: CodeTimeout, Class: kms.Outage, Description: "no answer in time"},
			{Code: CodeCanceled, Class: kms.Outage, Description: "the caller went away"},
			{Code: CodeConnectionFailed, Class: kms.Outage, Description: "DNS, TCP or TLS failure"},
			{Code: CodeUnexpectedResponse, Class: kms.Outage, Description: "a response ekm could not use"},
		},
	}
}
