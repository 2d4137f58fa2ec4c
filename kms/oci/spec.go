package oci

import "github.com/ekm-dev/ekm/kms"

// Type is the external key type served by this package.
const Type = "oci"

// Param names on the external key object (OpenAI's oci shape).
const (
	ParamKeyOCID        = "key_ocid"
	ParamRegion         = "region"
	ParamVaultOCID      = "vault_ocid"
	ParamKeyVersionOCID = "key_version_ocid"
)

// Onboarding steps (kms.Error.Step), numbered as in docs/oci.md.
const (
	StepKey    = "1" // vault and AES key, tagged with the org id
	StepPolicy = "2" // cross-tenancy Define/Admit policies
	// StepPolicyOrKey: OCI answers NotAuthorizedOrNotFound alike for a
	// policy that does not admit ekm and for a resource that does not
	// exist.
	StepPolicyOrKey = "2,1"
)

// Spec describes the oci type: the registration fields of OpenAI's
// external_keys API, the onboarding steps of docs/oci.md and every
// diagnosis code. It needs no configuration (a server without OCI still
// describes the type, as not enabled).
func Spec() kms.Spec {
	return kms.Spec{
		Type:      Type,
		Title:     "OCI Vault",
		Algorithm: Algorithm,
		Fields: []kms.Field{
			{Name: ParamKeyOCID, Required: true, MaxLen: 2048, Description: "OCID of the AES-256 key (ocid1.key.<realm>.<region>.…), tagged ekm-org=<your organization id>"},
			{Name: ParamRegion, Required: true, MaxLen: 256, Description: "region of the vault, e.g. us-ashburn-1"},
			{Name: ParamVaultOCID, Required: true, MaxLen: 2048, Description: "OCID of the key's vault (ocid1.vault.…): ekm reads its crypto endpoint from OCI"},
			{Name: ParamKeyVersionOCID, MaxLen: 2048, Description: "optional OCID of one key version to wrap with (default: the key's current version, following rotations)"},
		},
		Steps: []kms.Step{
			{ID: StepKey, Title: "Create a vault and an AES-256 key tagged ekm-org=<your organization id>"},
			{ID: StepPolicy, Title: "Write the cross-tenancy policy that admits ekm's group to read the vault and use the key"},
		},
		Codes: []kms.Code{
			{Code: kms.CodeUnsupportedType, Class: kms.Invalid, Description: "this server does not run the oci driver"},
			{Code: CodeInvalidKeyOCID, Class: kms.Invalid, Description: "key_ocid is not ocid1.key.<realm>.<region>.…"},
			{Code: CodeInvalidVaultOCID, Class: kms.Invalid, Description: "vault_ocid is not ocid1.vault.<realm>.<region>.…"},
			{Code: CodeInvalidKeyVersionOCID, Class: kms.Invalid, Description: "key_version_ocid is not ocid1.keyversion.<realm>.<region>.…"},
			{Code: CodeInvalidRegion, Class: kms.Invalid, Description: "region is not an OCI region identifier"},
			{Code: CodeRealmNotEnabled, Class: kms.Invalid, Description: "the operator has not enabled the region's realm"},
			{Code: CodeRegionMismatch, Class: kms.Invalid, Description: "an OCID is in another region than the registered one"},
			{Code: CodeUnknownParameter, Class: kms.Invalid, Description: "a parameter oci keys do not have"},
			{Code: CodeMissingParameter, Class: kms.Invalid, Description: "a required parameter is missing"},
			{Code: CodeParameterTooLong, Class: kms.Invalid, Description: "a parameter is too long"},
			{Code: CodeVaultNotFound, Class: kms.Revoked, Step: StepPolicyOrKey, Description: "OCI answered NotAuthorizedOrNotFound for the vault: no Admit … to read vaults (or no Define of ekm's tenancy and group), or no such vault in the region"},
			{Code: CodeKeyNotFound, Class: kms.Revoked, Step: StepPolicyOrKey, Description: "OCI answered NotAuthorizedOrNotFound for the key: the Admit … to use keys statement is missing, in another compartment or narrowed to another key, or no such key in the vault"},
			{Code: CodeKeyUseNotAdmitted, Class: kms.Revoked, Step: StepPolicy, Description: "ekm's group may read the key but not encrypt or decrypt with it (an Admit granting less than use keys)"},
			{Code: CodeVaultNotActive, Class: kms.Revoked, Step: StepKey, Description: "the vault is not ACTIVE (scheduled for deletion or deleted)"},
			{Code: CodeKeyDisabled, Class: kms.Revoked, Step: StepKey, Description: "the key is disabled"},
			{Code: CodeKeyPendingDeletion, Class: kms.Revoked, Step: StepKey, Description: "the key is scheduled for deletion"},
			{Code: CodeKeyDeleted, Class: kms.Revoked, Step: StepKey, Description: "the key has been deleted"},
			{Code: CodeKeyVersionUnusable, Class: kms.Revoked, Step: StepKey, Description: "the registered key version is not ENABLED"},
			{Code: CodeKeyNotInVault, Class: kms.Invalid, Step: StepKey, Description: "the key belongs to another vault than vault_ocid"},
			{Code: CodeKeyNotAES256, Class: kms.Invalid, Step: StepKey, Description: "the key is not AES with a length of 32 bytes"},
			{Code: CodeKeyOrgTagMismatch, Class: kms.Invalid, Step: StepKey, Description: "the key lacks the freeform tag ekm-org=<organization id>, or names another organization"},
			{Code: CodeKeyVersionNotFound, Class: kms.Invalid, Step: StepKey, Description: "key_version_ocid is not a version of the key"},
			{Code: CodeInvalidCiphertext, Class: kms.Invalid, Description: "the stored wrapped key is corrupt or bound to other associated data"},
			{Code: CodeWrongKey, Class: kms.Invalid, Description: "the stored wrapped key names another key, version or algorithm"},
			{Code: CodeBadRequest, Class: kms.Invalid, Description: "OCI refused a request as invalid"},
			{Code: CodeVaultEndpointRefused, Class: kms.Invalid, Description: "OCI answered a vault endpoint that is not an OCI Vault host of the region; ekm calls nothing else"},
			{Code: CodeCredentialsRejected, Class: kms.Operator, Description: "OCI rejected ekm's own request signature (NotAuthenticated)"},
			{Code: CodeCredentialsUnavailable, Class: kms.Operator, Description: "ekm could not obtain its own signing key or token"},
			{Code: CodeClientSetup, Class: kms.Operator, Description: "ekm could not build its OCI request"},
			{Code: CodeKeyTransitioning, Class: kms.Outage, Description: "the key is between states (e.g. ENABLING) or OCI answered a transient conflict"},
			{Code: CodeThrottled, Class: kms.Outage, Description: "OCI throttled ekm (429, after retries)"},
			{Code: CodeServiceError, Class: kms.Outage, Description: "OCI answered 5xx (after retries)"},
			{Code: CodeTimeout, Class: kms.Outage, Description: "no answer in time"},
			{Code: CodeCanceled, Class: kms.Outage, Description: "the caller went away"},
			{Code: CodeConnectionFailed, Class: kms.Outage, Description: "DNS, TCP or TLS failure"},
			{Code: CodeUnexpectedResponse, Class: kms.Outage, Description: "a response ekm could not use"},
		},
	}
}
