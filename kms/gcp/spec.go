package gcp

import "github.com/ekm-dev/ekm/kms"

// Type is the external key type served by this package.
const Type = "gcp"

// Param names on the external key object (OpenAI's gcp shape).
const (
	ParamAudience                      = "audience"
	ParamKMSProjectID                  = "kms_project_id"
	ParamKMSKeyLocation                = "kms_key_location"
	ParamKMSKeyRingName                = "kms_key_ring_name"
	ParamKMSKeyName                    = "kms_key_name"
	ParamKMSKeyVersion                 = "kms_key_version"
	ParamWorkloadIdentityPoolID        = "workload_identity_pool_id"
	ParamWorkloadIdentityProviderID    = "workload_identity_provider_id"
	ParamWorkloadIdentityProjectNumber = "workload_identity_project_number"
)

// Onboarding steps (kms.Error.Step), numbered as in docs/gcp.md.
const (
	StepFederation = "1" // workload identity pool and OIDC provider trusting ekm
	StepKey        = "2" // key ring and symmetric ENCRYPT_DECRYPT key
	StepGrant      = "3" // roles on the key for ekm's federated principal
)

// Spec describes the gcp type: the registration fields of OpenAI's
// external_keys API (plus ekm's optional service_account_email), the
// onboarding steps of docs/gcp.md and every diagnosis code. It needs no
// configuration (a server without a Google identity still describes the
// type, as not enabled); the driver's Spec adds ekm's identity.
func Spec() kms.Spec {
	return kms.Spec{
		Type:      Type,
		Title:     "Google Cloud KMS",
		Algorithm: Algorithm,
		OrgBound:  []string{ParamAudience},
		Fields: []kms.Field{
			{Name: ParamAudience, Required: true, MaxLen: 2048, Description: "the audience your OIDC provider allows: your organization id (or one of its project ids)"},
			{Name: ParamKMSKeyLocation, Required: true, MaxLen: 256, Description: "location of the key ring, e.g. us-east1 or global"},
			{Name: ParamKMSKeyName, Required: true, MaxLen: 256, Description: "name of the crypto key"},
			{Name: ParamKMSKeyRingName, Required: true, MaxLen: 256, Description: "name of the key ring"},
			{Name: ParamKMSProjectID, Required: true, MaxLen: 256, Description: "id of the Google Cloud project that holds the key"},
			{Name: ParamWorkloadIdentityPoolID, Required: true, MaxLen: 256, Description: "id of the workload identity pool"},
			{Name: ParamWorkloadIdentityProjectNumber, Required: true, MaxLen: 256, Description: "number of the project that holds the pool"},
			{Name: ParamWorkloadIdentityProviderID, Required: true, MaxLen: 256, Description: "id of the OIDC provider in the pool"},
			{Name: ParamKMSKeyVersion, MaxLen: 256, Description: "must be omitted: ekm encrypts with the key's primary version and records the version used"},
			{Name: ParamServiceAccountEmail, MaxLen: 256, Description: "optional (ekm extension): a service account of yours that ekm's federated principal impersonates; omit to grant the key to the principal directly"},
		},
		Steps: []kms.Step{
			{ID: StepFederation, Title: "Create a workload identity pool and an OIDC provider that trusts ekm"},
			{ID: StepKey, Title: "Create a key ring and a symmetric ENCRYPT_DECRYPT key"},
			{ID: StepGrant, Title: "Grant ekm's federated principal the Encrypter/Decrypter and Viewer roles on the key"},
		},
		Codes: []kms.Code{
			{Code: kms.CodeUnsupportedType, Class: kms.Invalid, Description: "this server does not run the gcp driver"},
			{Code: CodeInvalidAudience, Class: kms.Invalid, Description: "audience is not an ekm org or project id"},
			{Code: CodeInvalidProjectID, Class: kms.Invalid, Description: "kms_project_id is not a Google Cloud project id"},
			{Code: CodeInvalidLocation, Class: kms.Invalid, Description: "kms_key_location is not a Cloud KMS location"},
			{Code: CodeInvalidKeyRingName, Class: kms.Invalid, Description: "kms_key_ring_name is not 1-63 of [a-zA-Z0-9_-]"},
			{Code: CodeInvalidKeyName, Class: kms.Invalid, Description: "kms_key_name is not 1-63 of [a-zA-Z0-9_-]"},
			{Code: CodeInvalidProjectNumber, Class: kms.Invalid, Description: "workload_identity_project_number is not a project number"},
			{Code: CodeInvalidPoolID, Class: kms.Invalid, Description: "workload_identity_pool_id is not 4-32 of [a-z0-9-] (not gcp-…)"},
			{Code: CodeInvalidProviderID, Class: kms.Invalid, Description: "workload_identity_provider_id is not 4-32 of [a-z0-9-] (not gcp-…)"},
			{Code: CodeInvalidServiceAccount, Class: kms.Invalid, Description: "service_account_email is not a user-managed service account"},
			{Code: CodeKeyVersionUnsupported, Class: kms.Invalid, Description: "kms_key_version was given"},
			{Code: CodeUnknownParameter, Class: kms.Invalid, Description: "a parameter gcp keys do not have"},
			{Code: CodeMissingParameter, Class: kms.Invalid, Description: "a required parameter is missing"},
			{Code: CodeParameterTooLong, Class: kms.Invalid, Description: "a parameter is too long"},
			{Code: CodeProviderNotFound, Class: kms.Revoked, Step: StepFederation, Description: "STS invalid_target: the pool or provider is disabled, deleted or does not exist"},
			{Code: CodeInvalidProviderName, Class: kms.Invalid, Step: StepFederation, Description: "STS does not accept the provider's resource name"},
			{Code: CodeAudienceNotAllowed, Class: kms.Revoked, Step: StepFederation, Description: "the provider's allowed audiences do not include the registration's audience"},
			{Code: CodeIssuerMismatch, Class: kms.Revoked, Step: StepFederation, Description: "the provider trusts another issuer than ekm's"},
			{Code: CodeIssuerUnreachable, Class: kms.Outage, Step: StepFederation, Description: "Google could not fetch ekm's issuer discovery document or JWKS"},
			{Code: CodeJWKSMismatch, Class: kms.Revoked, Step: StepFederation, Description: "the provider's keys (jwksJson) do not verify ekm's token"},
			{Code: CodeConditionRejected, Class: kms.Revoked, Step: StepFederation, Description: "the provider's attribute condition rejects ekm's token"},
			{Code: CodeAttributeMapping, Class: kms.Revoked, Step: StepFederation, Description: "the provider's attribute mapping fails on ekm's token"},
			{Code: CodeSTSRefused, Class: kms.Revoked, Step: StepFederation, Description: "any other STS invalid_grant"},
			{Code: CodeKeyNotFound, Class: kms.Revoked, Step: StepKey, Description: "404: the key (or its ring or project) does not exist"},
			{Code: CodeKeyVersionDisabled, Class: kms.Revoked, Step: StepKey, Description: "the primary version (or the one that encrypted old data) is not enabled"},
			{Code: CodeKeyVersionDestroyed, Class: kms.Revoked, Step: StepKey, Description: "the version is scheduled for destruction or destroyed"},
			{Code: CodeKeyNoPrimary, Class: kms.Revoked, Step: StepKey, Description: "the key has no primary version"},
			{Code: CodeKeyUnusable, Class: kms.Revoked, Step: StepKey, Description: "any other FAILED_PRECONDITION on the key"},
			{Code: CodeWrongPurpose, Class: kms.Invalid, Step: StepKey, Description: "the key's purpose is not ENCRYPT_DECRYPT"},
			{Code: CodeAPIDisabled, Class: kms.Revoked, Step: StepKey, Description: "the Cloud KMS API is not enabled in the key's project"},
			{Code: CodeBadRequest, Class: kms.Invalid, Step: StepKey, Description: "Cloud KMS refused the request as invalid"},
			{Code: CodePermissionDenied, Class: kms.Revoked, Step: StepGrant, Description: "403 PERMISSION_DENIED: the message names the permission and the role that grants it"},
			{Code: CodeImpersonationDenied, Class: kms.Revoked, Step: StepGrant, Description: "ekm's principal may not impersonate service_account_email"},
			{Code: CodeInvalidCiphertext, Class: kms.Invalid, Description: "the stored wrapped key is corrupt or bound to other associated data"},
			{Code: CodeWrongKey, Class: kms.Invalid, Description: "the stored wrapped key names another key or algorithm"},
			{Code: CodeIdentityFailed, Class: kms.Operator, Description: "ekm's own identity (service account or issuer) is unusable"},
			{Code: CodeSubjectTokenRejected, Class: kms.Operator, Description: "STS rejected ekm's own ID token (expired, stale, malformed)"},
			{Code: CodeUnauthenticated, Class: kms.Operator, Description: "Cloud KMS rejected a fresh federated token (401)"},
			{Code: CodeClientSetup, Class: kms.Operator, Description: "ekm could not build its Google client"},
			{Code: CodeIdentityUnavailable, Class: kms.Outage, Description: "ekm's own identity provider could not be reached"},
			{Code: CodeSTSUnavailable, Class: kms.Outage, Description: "Google STS (or IAM Credentials) unreachable, 429 or 5xx"},
			{Code: CodeThrottled, Class: kms.Outage, Description: "429 RESOURCE_EXHAUSTED after retries"},
			{Code: CodeServiceError, Class: kms.Outage, Description: "5xx after retries"},
			{Code: CodeIntegrityCheckFailed, Class: kms.Outage, Description: "a CRC32C check failed after retries"},
			{Code: CodeTimeout, Class: kms.Outage, Description: "no answer in time"},
			{Code: CodeCanceled, Class: kms.Outage, Description: "the caller went away"},
			{Code: CodeConnectionFailed, Class: kms.Outage, Description: "DNS, TCP or TLS failure"},
			{Code: CodeUnexpectedResponse, Class: kms.Outage, Description: "a response ekm could not use"},
		},
	}
}
