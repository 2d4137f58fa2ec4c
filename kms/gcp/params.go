package gcp

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/ekm-dev/ekm/kms"
)

// Registration (Check) diagnosis codes. Each is Class Invalid.
const (
	CodeInvalidProjectID      = "invalid_kms_project_id"
	CodeInvalidLocation       = "invalid_kms_key_location"
	CodeInvalidKeyRingName    = "invalid_kms_key_ring_name"
	CodeInvalidKeyName        = "invalid_kms_key_name"
	CodeInvalidProjectNumber  = "invalid_workload_identity_project_number"
	CodeInvalidPoolID         = "invalid_workload_identity_pool_id"
	CodeInvalidProviderID     = "invalid_workload_identity_provider_id"
	CodeInvalidAudience       = "invalid_audience"
	CodeInvalidServiceAccount = "invalid_service_account_email"
	CodeKeyVersionUnsupported = "key_version_not_supported"
	CodeUnknownParameter      = "unknown_parameter"
	CodeMissingParameter      = "missing_parameter"
	CodeParameterTooLong      = "parameter_too_long"
)

// ParamServiceAccountEmail is ekm's extension of OpenAI's gcp shape: a
// service account of the customer's that ekm's federated principal
// impersonates (optional; without it ekm uses the key as the federated
// principal itself).
const ParamServiceAccountEmail = "service_account_email"

// maxParamLen bounds every parameter before any parsing.
const maxParamLen = 256

// Identifier syntax as Google defines it. Every identifier ends up in a
// URL path or an STS audience on one of Google's fixed hosts, so none may
// hold '/', '?', '#', '%', whitespace or dots (except where noted): the
// path cannot be steered anywhere else.
var (
	// Project ids: 6-30 of [a-z0-9-], starting with a letter and not
	// ending with a hyphen; legacy domain-scoped ids carry a
	// "<domain>:" prefix (e.g. example.com:my-project).
	projectIDRE = regexp.MustCompile(`^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$`)
	// Locations: "global", multi-regions ("us", "europe", "nam4",
	// "nam-eur-asia1") and regions ("us-east1", "europe-west10").
	locationRE = regexp.MustCompile(`^[a-z]{2,24}(?:-[a-z]{2,24}){0,3}[0-9]{0,2}$`)
	// Key ring and crypto key ids (CreateKeyRingRequest, CreateCryptoKeyRequest).
	kmsIDRE = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,63}$`)
	// Project numbers: up to 19 digits, no leading zero.
	projectNumberRE = regexp.MustCompile(`^[1-9][0-9]{0,18}$`)
	// Workload identity pool and provider ids: 4-32 of [a-z0-9-]; the
	// prefix gcp- is reserved by Google.
	poolIDRE = regexp.MustCompile(`^[a-z0-9-]{4,32}$`)
	// Audiences are ekm org or project ids; the lifecycle service checks
	// that the value is the calling org's.
	audienceRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,256}$`)
	// User-managed service accounts: <6-30 char id>@<project id>.iam.gserviceaccount.com.
	serviceAccountRE = regexp.MustCompile(`^[a-z][a-z0-9-]{4,28}[a-z0-9]@[a-z][a-z0-9-]{4,28}[a-z0-9]\.iam\.gserviceaccount\.com$`)
)

func invalid(code, param, msg string) error {
	return &kms.Error{Class: kms.Invalid, Code: code, Param: param, Message: msg}
}

// keyRef is a checked registration.
type keyRef struct {
	project, location, ring, key  string
	projectNumber, pool, provider string
	audience                      string
	serviceAccount                string // "" = direct access by the federated principal
}

// keyName is the crypto key's resource name.
func (r keyRef) keyName() string {
	return "projects/" + r.project + "/locations/" + r.location + "/keyRings/" + r.ring + "/cryptoKeys/" + r.key
}

// providerName is the provider's full resource name: the STS audience.
func (r keyRef) providerName() string {
	return "//iam.googleapis.com/projects/" + r.projectNumber + "/locations/global/workloadIdentityPools/" + r.pool + "/providers/" + r.provider
}

func (r keyRef) params() kms.Params {
	p := kms.Params{
		ParamAudience:                      r.audience,
		ParamKMSProjectID:                  r.project,
		ParamKMSKeyLocation:                r.location,
		ParamKMSKeyRingName:                r.ring,
		ParamKMSKeyName:                    r.key,
		ParamWorkloadIdentityPoolID:        r.pool,
		ParamWorkloadIdentityProviderID:    r.provider,
		ParamWorkloadIdentityProjectNumber: r.projectNumber,
	}
	if r.serviceAccount != "" {
		p[ParamServiceAccountEmail] = r.serviceAccount
	}
	return p
}

var required = []string{
	ParamAudience, ParamKMSProjectID, ParamKMSKeyLocation, ParamKMSKeyRingName, ParamKMSKeyName,
	ParamWorkloadIdentityPoolID, ParamWorkloadIdentityProviderID, ParamWorkloadIdentityProjectNumber,
}

// checkParams validates registration params and returns them parsed. It
// checks syntax only: that audience is the calling org's id or one of its
// project ids is the lifecycle service's job (kms.Spec.OrgBound).
func checkParams(p kms.Params) (keyRef, error) {
	for k, v := range p {
		switch k {
		case ParamAudience, ParamKMSProjectID, ParamKMSKeyLocation, ParamKMSKeyRingName, ParamKMSKeyName,
			ParamWorkloadIdentityPoolID, ParamWorkloadIdentityProviderID, ParamWorkloadIdentityProjectNumber, ParamServiceAccountEmail:
		case ParamKMSKeyVersion:
			// Refused rather than ignored: ekm encrypts with the key's
			// primary version and records the version Cloud KMS used, so
			// a pin would be silently meaningless (OpenAI: "not accepted
			// for EKM").
			if v != "" {
				return keyRef{}, invalid(CodeKeyVersionUnsupported, k, "kms_key_version must be omitted: ekm always encrypts with the key's primary version and records the exact version Cloud KMS used, so rotating the key is safe")
			}
		default:
			return keyRef{}, invalid(CodeUnknownParameter, k, fmt.Sprintf("unknown parameter %q for a gcp key", k))
		}
		if len(v) > maxParamLen {
			return keyRef{}, invalid(CodeParameterTooLong, k, fmt.Sprintf("%s is too long", k))
		}
	}
	for _, k := range required {
		if p[k] == "" {
			return keyRef{}, invalid(CodeMissingParameter, k, k+" is required")
		}
	}
	r := keyRef{
		project: p[ParamKMSProjectID], location: p[ParamKMSKeyLocation], ring: p[ParamKMSKeyRingName], key: p[ParamKMSKeyName],
		projectNumber: p[ParamWorkloadIdentityProjectNumber], pool: p[ParamWorkloadIdentityPoolID], provider: p[ParamWorkloadIdentityProviderID],
		audience: p[ParamAudience], serviceAccount: p[ParamServiceAccountEmail],
	}
	switch {
	case !audienceRE.MatchString(r.audience):
		return keyRef{}, invalid(CodeInvalidAudience, ParamAudience, "audience must be your ekm organization id (org-…) or the id of one of its projects (proj_…)")
	case !projectIDRE.MatchString(r.project):
		return keyRef{}, invalid(CodeInvalidProjectID, ParamKMSProjectID, "kms_project_id must be the id (not the number or display name) of the Google Cloud project holding the key: 6-30 lower-case letters, digits and hyphens, starting with a letter, e.g. acme-prod")
	case !locationRE.MatchString(r.location) || len(r.location) > 63:
		return keyRef{}, invalid(CodeInvalidLocation, ParamKMSKeyLocation, "kms_key_location must be a Cloud KMS location such as global, us, europe or us-east1")
	case !kmsIDRE.MatchString(r.ring):
		return keyRef{}, invalid(CodeInvalidKeyRingName, ParamKMSKeyRingName, "kms_key_ring_name must be the key ring's id: 1-63 letters, digits, underscores and hyphens")
	case !kmsIDRE.MatchString(r.key):
		return keyRef{}, invalid(CodeInvalidKeyName, ParamKMSKeyName, "kms_key_name must be the crypto key's id (not its full resource name): 1-63 letters, digits, underscores and hyphens")
	case !projectNumberRE.MatchString(r.projectNumber):
		return keyRef{}, invalid(CodeInvalidProjectNumber, ParamWorkloadIdentityProjectNumber, "workload_identity_project_number must be the number (not the id) of the project holding the workload identity pool, e.g. 123456789012 (gcloud projects describe <id> --format='value(projectNumber)')")
	case !validPoolID(r.pool):
		return keyRef{}, invalid(CodeInvalidPoolID, ParamWorkloadIdentityPoolID, "workload_identity_pool_id must be the pool's id: 4-32 lower-case letters, digits and hyphens, not starting with gcp-")
	case !validPoolID(r.provider):
		return keyRef{}, invalid(CodeInvalidProviderID, ParamWorkloadIdentityProviderID, "workload_identity_provider_id must be the provider's id: 4-32 lower-case letters, digits and hyphens, not starting with gcp-")
	case r.serviceAccount != "" && !serviceAccountRE.MatchString(r.serviceAccount):
		return keyRef{}, invalid(CodeInvalidServiceAccount, ParamServiceAccountEmail, "service_account_email must be a service account of your project, <name>@<project-id>.iam.gserviceaccount.com, or be omitted (ekm then uses the key as its federated principal)")
	}
	return r, nil
}

func validPoolID(s string) bool {
	return poolIDRE.MatchString(s) && !strings.HasPrefix(s, "gcp-")
}

// versionOf parses a CryptoKeyVersion resource name of key and returns its
// version id (decimal, as Cloud KMS assigns them).
func versionOf(key, name string) (string, bool) {
	v, ok := strings.CutPrefix(name, key+"/cryptoKeyVersions/")
	if !ok || len(v) == 0 || len(v) > 19 || v[0] == '0' {
		return "", false
	}
	for _, c := range v {
		if c < '0' || c > '9' {
			return "", false
		}
	}
	return v, true
}
