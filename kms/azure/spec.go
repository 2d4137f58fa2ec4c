package azure

import "github.com/ekm-dev/ekm/kms"

// Spec describes the azure type with the app customers grant access to.
func (d *Driver) Spec() kms.Spec {
	s := Spec()
	s.Identity = map[string]string{"app_client_id": d.clientID}
	return s
}

// Spec describes the azure type: the registration fields of OpenAI's
// external_keys API, the onboarding steps of docs/azure.md and every
// diagnosis code. It needs no configuration (a server without an Azure app
// still describes the type, as not enabled).
func Spec() kms.Spec {
	return kms.Spec{
		Type:      Type,
		Title:     "Azure Key Vault",
		Algorithm: Algorithm,
		Fields: []kms.Field{
			{Name: ParamKeyName, Required: true, MaxLen: 256, Description: "name of the RSA key, which must begin with your organization id and two hyphens (<org-id>--<name>)"},
			{Name: ParamTenantID, Required: true, MaxLen: 256, Description: "the Microsoft Entra tenant ID (a GUID) that owns the vault"},
			{Name: ParamVaultURI, Required: true, MaxLen: 2048, Description: "https://<vault>.vault.azure.net/ (or a Managed HSM, China or US Government cloud vault)"},
			{Name: ParamKeyVersion, MaxLen: 256, Description: "must be omitted: ekm wraps with the current version and records the version it used"},
		},
		Steps: []kms.Step{
			{ID: StepServicePrincipal, Title: "Create ekm's service principal in your tenant"},
			{ID: StepRole, Title: "Create a custom role with the encrypt, decrypt and read data actions"},
			{ID: StepKey, Title: "Create an RSA key named <org-id>--<name>"},
			{ID: StepRoleAssignment, Title: "Assign the role to ekm's service principal at the key's scope"},
			{ID: StepRestrictions, Title: "Optional restrictions (firewall, Conditional Access, key operations)"},
		},
		Codes: []kms.Code{
			{Code: CodeInvalidTenantID, Class: kms.Invalid, Description: "tenant_id is not a GUID"},
			{Code: CodeInvalidVaultURI, Class: kms.Invalid, Description: "vault_uri is not exactly https://<vault>.<Key Vault suffix>/"},
			{Code: CodeCloudNotEnabled, Class: kms.Invalid, Description: "the operator's app is not registered in the vault's cloud"},
			{Code: CodeInvalidKeyName, Class: kms.Invalid, Description: "key_name is not 1-127 of [0-9A-Za-z-]"},
			{Code: CodeKeyNameOrgMismatch, Class: kms.Invalid, Description: "key_name does not begin with <org-id>--"},
			{Code: CodeKeyVersionNotSupported, Class: kms.Invalid, Description: "key_version was given"},
			{Code: CodeUnknownParameter, Class: kms.Invalid, Description: "a parameter azure keys do not have"},
			{Code: CodeMissingParameter, Class: kms.Invalid, Description: "a required parameter is missing"},
			{Code: CodeParameterTooLong, Class: kms.Invalid, Description: "a parameter is too long"},
			{Code: CodeInvalidOrgID, Class: kms.Invalid, Description: "the organization id cannot be used in a key name"},
			{Code: CodeServicePrincipalMissing, Class: kms.Revoked, Step: StepServicePrincipal, Description: "ekm's app has no service principal in the tenant (AADSTS700016)"},
			{Code: CodeServicePrincipalDisabled, Class: kms.Revoked, Step: StepServicePrincipal, Description: "the service principal is disabled"},
			{Code: CodeTenantNotFound, Class: kms.Revoked, Description: "the tenant does not exist in this cloud (invalid at registration)"},
			{Code: CodeTenantMismatch, Class: kms.Revoked, Description: "the vault belongs to another tenant (invalid at registration)"},
			{Code: CodeConditionalAccess, Class: kms.Revoked, Step: StepRestrictions, Description: "a Conditional Access policy blocks ekm"},
			{Code: CodeForbiddenByRBAC, Class: kms.Revoked, Step: StepRoleOrAssignment, Description: "the role lacks a data action or is not assigned at the key's scope"},
			{Code: CodeAccessPolicyDenied, Class: kms.Revoked, Step: StepRoleAssignment, Description: "the vault uses access policies that do not admit ekm"},
			{Code: CodeForbiddenByFirewall, Class: kms.Revoked, Step: StepRestrictions, Description: "the vault's firewall blocks ekm"},
			{Code: CodeForbidden, Class: kms.Revoked, Step: StepRoleAssignment, Description: "any other 403 from Key Vault"},
			{Code: CodeKeyDisabled, Class: kms.Revoked, Step: StepKey, Description: "the key (or the version recorded for old data) is disabled"},
			{Code: CodeKeyExpired, Class: kms.Revoked, Step: StepKey, Description: "the key is past its expiry date"},
			{Code: CodeKeyNotYetValid, Class: kms.Revoked, Step: StepKey, Description: "the key is before its activation date"},
			{Code: CodeKeyOperationForbidden, Class: kms.Revoked, Step: StepKeyOrRestriction, Description: "the key's permitted operations lack encrypt or decrypt"},
			{Code: CodeKeyNotFound, Class: kms.Revoked, Step: StepKey, Description: "the key was deleted or renamed"},
			{Code: CodeKeyTypeUnsupported, Class: kms.Invalid, Step: StepKey, Description: "the key is not RSA or RSA-HSM"},
			{Code: CodeBadRequest, Class: kms.Invalid, Step: StepKey, Description: "Key Vault refused the request as malformed"},
			{Code: CodeInvalidCiphertext, Class: kms.Invalid, Description: "the stored wrapped key is corrupt or bound to other associated data"},
			{Code: CodeWrongKey, Class: kms.Invalid, Description: "the stored wrapped key names another vault, key or algorithm"},
			{Code: CodeAppCredentialRejected, Class: kms.Operator, Description: "Entra ID rejected ekm's own app credential"},
			{Code: CodeUnauthorized, Class: kms.Operator, Description: "Key Vault rejected ekm's token"},
			{Code: CodeClientSetup, Class: kms.Operator, Description: "ekm could not build its Azure client"},
			{Code: CodeThrottled, Class: kms.Outage, Description: "Key Vault throttled ekm"},
			{Code: CodeServiceError, Class: kms.Outage, Description: "Key Vault answered 5xx"},
			{Code: CodeIdentityUnavailable, Class: kms.Outage, Description: "Entra ID could not be reached"},
			{Code: CodeAuthenticationFailed, Class: kms.Outage, Description: "an unlisted Entra ID error"},
			{Code: CodeTimeout, Class: kms.Outage, Description: "no answer in time"},
			{Code: CodeCanceled, Class: kms.Outage, Description: "the caller went away"},
			{Code: CodeConnectionFailed, Class: kms.Outage, Description: "DNS, TCP or TLS failure"},
			{Code: CodeUnexpectedResponse, Class: kms.Outage, Description: "a response ekm could not use"},
		},
	}
}
