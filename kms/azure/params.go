package azure

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/ekm-dev/ekm/kms"
)

// Param names on the external key object.
const (
	ParamTenantID   = "tenant_id"
	ParamVaultURI   = "vault_uri"
	ParamKeyName    = "key_name"
	ParamKeyVersion = "key_version"
)

// Registration (Check) diagnosis codes. Each is Class Invalid.
const (
	CodeInvalidTenantID        = "invalid_tenant_id"
	CodeInvalidVaultURI        = "invalid_vault_uri"
	CodeCloudNotEnabled        = "azure_cloud_not_enabled"
	CodeInvalidKeyName         = "invalid_key_name"
	CodeKeyNameOrgMismatch     = "key_name_org_mismatch"
	CodeKeyVersionNotSupported = "key_version_not_supported"
	CodeUnknownParameter       = "unknown_parameter"
	CodeInvalidOrgID           = "invalid_org_id"
	CodeMissingParameter       = "missing_parameter"
	CodeParameterTooLong       = "parameter_too_long"
)

// Cloud is an Azure cloud, named by its Key Vault DNS suffix's owner.
type Cloud string

const (
	CloudPublic     Cloud = "public"
	CloudChina      Cloud = "china"
	CloudGovernment Cloud = "usgov"
)

// vaultSuffixes maps each allowed Key Vault / Managed HSM DNS suffix to its
// cloud. Nothing outside these suffixes is ever dialled.
var vaultSuffixes = []struct {
	suffix string
	cloud  Cloud
}{
	{".vault.azure.net", CloudPublic},
	{".managedhsm.azure.net", CloudPublic},
	{".vault.azure.cn", CloudChina},
	{".vault.usgovcloudapi.net", CloudGovernment},
}

var (
	guidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	// Vault and Managed HSM names: 3-24 of [0-9a-z-], starting with a letter
	// and ending with a letter or digit (the host is lower-cased first).
	vaultNameRE = regexp.MustCompile(`^[a-z][0-9a-z-]{1,22}[0-9a-z]$`)
	keyNameRE   = regexp.MustCompile(`^[0-9A-Za-z-]{1,127}$`)
	orgIDRE     = regexp.MustCompile(`^[0-9A-Za-z-]{1,64}$`)
)

// maxParamLen bounds every parameter before any parsing.
const maxParamLen = 256

func invalid(code, param, msg string) error {
	return &kms.Error{Class: kms.Invalid, Code: code, Param: param, Message: msg}
}

// checkTenantID accepts a GUID in any case and returns it lower-cased. Domain
// names are refused: the tenant must be pinned to an immutable id.
func checkTenantID(s string) (string, error) {
	t := strings.ToLower(s)
	if !guidRE.MatchString(t) {
		return "", invalid(CodeInvalidTenantID, ParamTenantID, "tenant_id must be the customer's Microsoft Entra tenant ID, a GUID such as 00000000-0000-0000-0000-000000000000")
	}
	return t, nil
}

// checkVaultURI accepts exactly "https://<vault host>" with an optional "/"
// and returns "https://<lower-case host>/" and the vault's cloud. The input is
// matched as a whole string rather than URL-parsed so that no userinfo, port,
// path, query, fragment, IP literal or trailing-dot form can slip through.
func checkVaultURI(s string) (string, Cloud, error) {
	bad := func() (string, Cloud, error) {
		return "", "", invalid(CodeInvalidVaultURI, ParamVaultURI, "vault_uri must be https://<vault-name>.vault.azure.net/ (or .vault.azure.cn, .vault.usgovcloudapi.net, or https://<hsm-name>.managedhsm.azure.net/) with nothing else: no port, path, query or user info")
	}
	lower := strings.ToLower(s)
	host, ok := strings.CutPrefix(lower, "https://")
	if !ok {
		return bad()
	}
	host = strings.TrimSuffix(host, "/")
	for _, vs := range vaultSuffixes {
		name, ok := strings.CutSuffix(host, vs.suffix)
		if !ok {
			continue
		}
		if !vaultNameRE.MatchString(name) || strings.Contains(name, "--") {
			return "", "", invalid(CodeInvalidVaultURI, ParamVaultURI, "the vault name in vault_uri must be 3-24 letters, digits and single hyphens, start with a letter and end with a letter or digit")
		}
		return "https://" + host + "/", vs.cloud, nil
	}
	return bad()
}

// checkKeyName requires the key to be named for the calling org. ekm's Entra
// app is shared by every customer, so a role assignment to it alone does not
// say which org may use a key; the name does.
func checkKeyName(orgID, name string) (string, error) {
	if !keyNameRE.MatchString(name) {
		return "", invalid(CodeInvalidKeyName, ParamKeyName, "key_name must be 1-127 letters, digits and hyphens")
	}
	prefix := orgID + "--"
	// Key Vault names are case-insensitive, so compare the same way; org ids
	// never differ only in case.
	if len(name) <= len(prefix) || !strings.EqualFold(name[:len(prefix)], prefix) {
		return "", invalid(CodeKeyNameOrgMismatch, ParamKeyName, fmt.Sprintf("key_name must begin with your organization id followed by two hyphens, e.g. %s--ekm-kek, so that the key can only be used by your organization", orgID))
	}
	return name, nil
}

// checkParams validates and normalises registration params for orgID.
func checkParams(orgID string, p kms.Params, clouds map[Cloud]bool) (kms.Params, Cloud, error) {
	// An org id containing "--" would make the key-name prefix ambiguous.
	if !orgIDRE.MatchString(orgID) || strings.Contains(orgID, "--") {
		return nil, "", invalid(CodeInvalidOrgID, "", "the organization id is not valid for an Azure key")
	}
	for k, v := range p {
		switch k {
		case ParamTenantID, ParamVaultURI, ParamKeyName:
		case ParamKeyVersion:
			// Pinning is refused rather than ignored: ekm always wraps with
			// the key's current version and records the exact version with
			// each wrapped key, so a pin would be silently meaningless.
			if v != "" {
				return nil, "", invalid(CodeKeyVersionNotSupported, ParamKeyVersion, "key_version must be omitted: ekm always wraps with the key's current version and records the exact version it used, so rotating the key in Key Vault is safe")
			}
		default:
			return nil, "", invalid(CodeUnknownParameter, k, fmt.Sprintf("unknown parameter %q for an azure key", k))
		}
		if len(v) > maxParamLen {
			return nil, "", invalid(CodeParameterTooLong, k, fmt.Sprintf("%s is too long", k))
		}
	}
	for _, k := range []string{ParamTenantID, ParamVaultURI, ParamKeyName} {
		if p[k] == "" {
			return nil, "", invalid(CodeMissingParameter, k, k+" is required")
		}
	}
	tenant, err := checkTenantID(p[ParamTenantID])
	if err != nil {
		return nil, "", err
	}
	vault, cloud, err := checkVaultURI(p[ParamVaultURI])
	if err != nil {
		return nil, "", err
	}
	if !clouds[cloud] {
		return nil, "", invalid(CodeCloudNotEnabled, ParamVaultURI, fmt.Sprintf("this server is not set up for vaults in the Azure %s cloud", cloudName(cloud)))
	}
	name, err := checkKeyName(orgID, p[ParamKeyName])
	if err != nil {
		return nil, "", err
	}
	return kms.Params{ParamTenantID: tenant, ParamVaultURI: vault, ParamKeyName: name}, cloud, nil
}

func cloudName(c Cloud) string {
	switch c {
	case CloudChina:
		return "China"
	case CloudGovernment:
		return "US Government"
	default:
		return "public"
	}
}
