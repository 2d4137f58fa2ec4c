// Package gcp is the kms provider for customer keys in Google Cloud KMS.
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

// Spec describes the gcp type. It needs no configuration.
func Spec() kms.Spec {
	return kms.Spec{
		Type:  Type,
		Title: "Google Cloud KMS",
		Fields: []kms.Field{
			{Name: ParamAudience, Required: true, MaxLen: 2048, Description: "the audience your OIDC provider allows: your organization id (or one of its project ids)"},
			{Name: ParamKMSKeyLocation, Required: true, MaxLen: 256, Description: "location of the key ring, e.g. us-east1 or global"},
			{Name: ParamKMSKeyName, Required: true, MaxLen: 256, Description: "name of the crypto key"},
			{Name: ParamKMSKeyRingName, Required: true, MaxLen: 256, Description: "name of the key ring"},
			{Name: ParamKMSProjectID, Required: true, MaxLen: 256, Description: "id of the Google Cloud project that holds the key"},
			{Name: ParamWorkloadIdentityPoolID, Required: true, MaxLen: 256, Description: "id of the workload identity pool"},
			{Name: ParamWorkloadIdentityProjectNumber, Required: true, MaxLen: 256, Description: "number of the project that holds the pool"},
			{Name: ParamWorkloadIdentityProviderID, Required: true, MaxLen: 256, Description: "id of the OIDC provider in the pool"},
			{Name: ParamKMSKeyVersion, MaxLen: 256, Description: "optional crypto key version"},
		},
		Steps: []kms.Step{
			{ID: StepFederation, Title: "Create a workload identity pool and an OIDC provider that trusts ekm"},
			{ID: StepKey, Title: "Create a key ring and a symmetric ENCRYPT_DECRYPT key"},
			{ID: StepGrant, Title: "Grant ekm's federated principal the Encrypter/Decrypter role on the key"},
		},
		Codes: []kms.Code{
			{Code: kms.CodeUnsupportedType, Class: kms.Invalid, Description: "this server does not run the gcp driver"},
		},
	}
}
