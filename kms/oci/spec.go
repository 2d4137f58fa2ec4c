// Package oci is the kms provider for customer keys in OCI Vault.
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
	StepKey    = "1" // vault and AES key
	StepPolicy = "2" // cross-tenancy Define/Admit policies
)

// Spec describes the oci type. It needs no configuration.
func Spec() kms.Spec {
	return kms.Spec{
		Type:  Type,
		Title: "OCI Vault",
		Fields: []kms.Field{
			{Name: ParamKeyOCID, Required: true, MaxLen: 2048, Description: "OCID of the AES key"},
			{Name: ParamRegion, Required: true, MaxLen: 256, Description: "region of the vault, e.g. us-ashburn-1"},
			{Name: ParamVaultOCID, Required: true, MaxLen: 2048, Description: "OCID of the vault"},
			{Name: ParamKeyVersionOCID, MaxLen: 2048, Description: "optional OCID of a key version"},
		},
		Steps: []kms.Step{
			{ID: StepKey, Title: "Create a vault and an AES key"},
			{ID: StepPolicy, Title: "Write the cross-tenancy policies that admit ekm's group to use the key"},
		},
		Codes: []kms.Code{
			{Code: kms.CodeUnsupportedType, Class: kms.Invalid, Description: "this server does not run the oci driver"},
		},
	}
}
