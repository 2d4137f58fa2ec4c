package gcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strings"

	"github.com/googleapis/gax-go/v2/apierror"
	"google.golang.org/api/googleapi"

	"github.com/ekm-dev/ekm/kms"
)

// Diagnosis codes of provider calls (kms.Error.Code). docs/gcp.md maps
// each to its fix.
const (
	// Step 1: workload identity pool and provider (Google STS).
	CodeProviderNotFound    = "gcp_workload_identity_provider_not_found"
	CodeInvalidProviderName = "gcp_invalid_provider_name"
	CodeAudienceNotAllowed  = "gcp_audience_not_allowed"
	CodeIssuerMismatch      = "gcp_issuer_mismatch"
	CodeIssuerUnreachable   = "gcp_issuer_unreachable"
	CodeJWKSMismatch        = "gcp_jwks_mismatch"
	CodeConditionRejected   = "gcp_attribute_condition_rejected"
	CodeAttributeMapping    = "gcp_attribute_mapping_failed"
	CodeSTSRefused          = "gcp_sts_refused"
	// Step 2: the key.
	CodeKeyNotFound         = "gcp_key_not_found"
	CodeKeyVersionDisabled  = "gcp_key_version_disabled"
	CodeKeyVersionDestroyed = "gcp_key_version_destroyed"
	CodeKeyNoPrimary        = "gcp_key_no_primary_version"
	CodeKeyUnusable         = "gcp_key_failed_precondition"
	CodeWrongPurpose        = "gcp_key_wrong_purpose"
	CodeAPIDisabled         = "gcp_kms_api_disabled"
	// Step 3: the grant.
	CodePermissionDenied    = "gcp_permission_denied"
	CodeImpersonationDenied = "gcp_impersonation_denied"
	// ekm's own side (operator).
	CodeIdentityFailed       = "gcp_identity_failed"
	CodeSubjectTokenRejected = "gcp_identity_token_rejected"
	CodeUnauthenticated      = "gcp_unauthenticated"
	CodeClientSetup          = "gcp_client_setup_failed"
	CodeInvalidCiphertext    = "gcp_invalid_ciphertext"
	CodeWrongKey             = "gcp_wrong_key"
	CodeBadRequest           = "gcp_bad_request"
	CodeIdentityUnavailable  = "gcp_identity_unavailable"
	CodeSTSUnavailable       = "gcp_sts_unavailable"
	CodeThrottled            = "gcp_throttled"
	CodeServiceError         = "gcp_service_error"
	CodeIntegrityCheckFailed = "gcp_integrity_check_failed"
	CodeTimeout              = "gcp_timeout"
	CodeCanceled             = "gcp_canceled"
	CodeConnectionFailed     = "gcp_connection_failed"
	CodeUnexpectedResponse   = "gcp_unexpected_response"
)

// Roles the customer grants (docs/gcp.md, step 3).
const (
	RoleEncrypterDecrypter   = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
	RoleViewer               = "roles/cloudkms.viewer"
	RoleWorkloadIdentityUser = "roles/iam.workloadIdentityUser"
)

const propagationNote = "changes to pools, providers and IAM can take a few minutes to apply"

// diag builds the kms.Error of a failed Cloud KMS call.
type diag struct {
	ref    keyRef
	name   string
	op     operation
	member string // ekm's principal as the customer's policies name it
}

// googleBody is Google's JSON error shape.
type googleBody struct {
	Error struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Status  string `json:"status"`
	} `json:"error"`
}

var (
	permissionRE = regexp.MustCompile(`Permission '([a-zA-Z0-9._]{1,100})' denied`)
	stateRE      = regexp.MustCompile(`current state is: ([A-Z_]{1,40})`)
	versionRE    = regexp.MustCompile(`projects/[^\s'"]{1,300}/cryptoKeyVersions/[0-9]{1,19}`)
)

func (g diag) diagnose(err error) *kms.Error {
	e := g.classify(err)
	e.Err = err
	return e
}

func (g diag) classify(err error) *kms.Error {
	var ie *IdentityError
	var ae *apierror.APIError
	var ge *googleapi.Error
	var ne net.Error
	switch {
	case errors.As(err, &ie):
		return identityDiagnosis(ie)
	case errors.Is(err, errIntegrity):
		return &kms.Error{Class: kms.Outage, Code: CodeIntegrityCheckFailed, Message: "a CRC32C integrity check of the exchange with Cloud KMS failed after retries (the data was corrupted in transit); this is transient"}
	case errors.Is(err, errUnexpected), errors.Is(err, errBodyTooLarge):
		return &kms.Error{Class: kms.Outage, Code: CodeUnexpectedResponse, Message: "Cloud KMS returned a response ekm could not use; treated as transient"}
	case errors.As(err, &ge):
		return g.google(ge, ae)
	case errors.As(err, &ae) && ae.HTTPCode() > 0:
		return g.google(&googleapi.Error{Code: ae.HTTPCode(), Message: ae.Message()}, ae)
	case errors.Is(err, context.Canceled):
		return &kms.Error{Class: kms.Outage, Code: CodeCanceled, Message: "the call to Cloud KMS was canceled"}
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return &kms.Error{Class: kms.Outage, Code: CodeTimeout, Message: "Cloud KMS did not answer in time; this is transient, not a misconfiguration"}
	case errors.As(err, &ne):
		return &kms.Error{Class: kms.Outage, Code: CodeConnectionFailed, Message: "could not connect to Google Cloud; this is transient, not a misconfiguration"}
	}
	return &kms.Error{Class: kms.Outage, Code: CodeUnexpectedResponse, Message: "unexpected failure talking to Cloud KMS; treated as transient"}
}

func (g diag) google(ge *googleapi.Error, ae *apierror.APIError) *kms.Error {
	var b googleBody
	_ = json.Unmarshal([]byte(clip(ge.Body, maxErrorBody)), &b)
	status, msg := b.Error.Status, b.Error.Message
	if msg == "" {
		msg = ge.Message
	}
	var violations []string
	var permission string
	if ae != nil {
		if pf := ae.Details().PreconditionFailure; pf != nil {
			for _, v := range pf.GetViolations() {
				violations = append(violations, v.GetType())
			}
		}
		permission = ae.Metadata()["permission"]
	}
	if permission == "" {
		if m := permissionRE.FindStringSubmatch(msg); m != nil {
			permission = m[1]
		}
	}
	key := "key " + g.name
	switch code := ge.Code; {
	case code == http.StatusUnauthorized:
		return &kms.Error{Class: kms.Operator, Code: CodeUnauthenticated,
			Message: "Cloud KMS did not accept the federated token Google STS issued to ekm (HTTP 401) even after a new token exchange; the operator must check the server's Google setup"}
	case code == http.StatusForbidden && apiDisabled(msg):
		return &kms.Error{Class: kms.Revoked, Code: CodeAPIDisabled, Step: StepKey,
			Message: fmt.Sprintf("the Cloud KMS API is not enabled in project %s; enable it (gcloud services enable cloudkms.googleapis.com --project %s, onboarding step 2)", g.ref.project, g.ref.project)}
	case code == http.StatusForbidden:
		if permission == "" {
			permission = string(g.op)
		}
		role := RoleEncrypterDecrypter
		if strings.HasSuffix(permission, ".get") || strings.HasSuffix(permission, ".list") {
			role = RoleViewer
		}
		return &kms.Error{Class: kms.Revoked, Code: CodePermissionDenied, Step: StepGrant,
			Message: fmt.Sprintf("Cloud KMS denied %s the permission %s on %s (or the key does not exist); grant %s on the key to that principal (onboarding step 3; check the key's name, step 2). IAM changes can take a few minutes to apply", g.memberText(), permission, key, role)}
	case code == http.StatusNotFound:
		return &kms.Error{Class: kms.Revoked, Code: CodeKeyNotFound, Step: StepKey,
			Message: fmt.Sprintf("%s was not found; check kms_project_id, kms_key_location, kms_key_ring_name and kms_key_name (onboarding step 2)", key)}
	case code == http.StatusBadRequest && (status == "FAILED_PRECONDITION" || len(violations) > 0):
		return g.precondition(msg, violations)
	case code == http.StatusBadRequest && g.op == opDecrypt && strings.Contains(msg, "Decryption failed"):
		return &kms.Error{Class: kms.Invalid, Code: CodeInvalidCiphertext,
			Message: fmt.Sprintf("Cloud KMS could not decrypt the wrapped key with %s: it is corrupt, was made by another key, or is bound to another org, project or key version (its associated data does not match)", key)}
	case code == http.StatusBadRequest && strings.Contains(strings.ToLower(msg), "checksum"):
		return &kms.Error{Class: kms.Outage, Code: CodeIntegrityCheckFailed, Message: "Cloud KMS found a CRC32C mismatch in ekm's request (corrupted in transit); this is transient"}
	case code == http.StatusBadRequest:
		return &kms.Error{Class: kms.Invalid, Code: CodeBadRequest, Step: StepKey,
			Message: fmt.Sprintf("Cloud KMS refused the request on %s as invalid (HTTP 400 %s); the key must be a symmetric ENCRYPT_DECRYPT key (onboarding step 2)", key, status)}
	case code == http.StatusTooManyRequests:
		return &kms.Error{Class: kms.Outage, Code: CodeThrottled,
			Message: fmt.Sprintf("Cloud KMS quota exceeded for project %s (HTTP 429 RESOURCE_EXHAUSTED); this is transient, not a misconfiguration", g.ref.project)}
	case code >= 500:
		return &kms.Error{Class: kms.Outage, Code: CodeServiceError,
			Message: fmt.Sprintf("Cloud KMS returned a server error (HTTP %d); this is transient, not a misconfiguration", code)}
	}
	return &kms.Error{Class: kms.Outage, Code: CodeUnexpectedResponse,
		Message: fmt.Sprintf("Cloud KMS returned unexpected HTTP %d %s; treated as transient", ge.Code, status)}
}

func (g diag) precondition(msg string, violations []string) *kms.Error {
	version := versionRE.FindString(msg)
	if version == "" {
		version = "a version of key " + g.name
	}
	state := ""
	if m := stateRE.FindStringSubmatch(msg); m != nil {
		state = m[1]
	}
	has := func(t string) bool {
		for _, v := range violations {
			if v == t {
				return true
			}
		}
		return false
	}
	switch {
	case has("KEY_PURPOSE") || strings.Contains(msg, "purpose"):
		return &kms.Error{Class: kms.Invalid, Code: CodeWrongPurpose, Step: StepKey,
			Message: fmt.Sprintf("key %s does not have purpose ENCRYPT_DECRYPT; ekm needs a symmetric key (onboarding step 2)", g.name)}
	case has("KEY_DESTROYED") || state == "DESTROYED" || state == "DESTROY_SCHEDULED":
		if state == "" {
			state = "destroyed or scheduled for destruction"
		}
		return &kms.Error{Class: kms.Revoked, Code: CodeKeyVersionDestroyed, Step: StepKey,
			Message: fmt.Sprintf("%s is %s; if destruction is only scheduled, restore and enable it (gcloud kms keys versions restore, then enable; onboarding step 2)", version, state)}
	case has("KEY_DISABLED") || state != "":
		if state == "" {
			state = "DISABLED"
		}
		return &kms.Error{Class: kms.Revoked, Code: CodeKeyVersionDisabled, Step: StepKey,
			Message: fmt.Sprintf("%s is %s, not ENABLED; enable it (gcloud kms keys versions enable; onboarding step 2)", version, state)}
	}
	return &kms.Error{Class: kms.Revoked, Code: CodeKeyUnusable, Step: StepKey,
		Message: fmt.Sprintf("Cloud KMS refused to use key %s (FAILED_PRECONDITION); check the key and its primary version (onboarding step 2)", g.name)}
}

func apiDisabled(msg string) bool {
	return strings.Contains(msg, "has not been used in project") || strings.Contains(msg, "API") && strings.Contains(msg, "is disabled")
}

func (g diag) memberText() string {
	if g.member != "" {
		return "ekm's principal " + g.member
	}
	if g.ref.serviceAccount != "" {
		return "service account " + g.ref.serviceAccount + " (which ekm impersonates)"
	}
	return "ekm's federated principal (principal://iam.googleapis.com/projects/" + g.ref.projectNumber +
		"/locations/global/workloadIdentityPools/" + g.ref.pool + "/subject/<ekm's subject>)"
}

// httpStatus returns the HTTP status of a Cloud KMS error, or 0.
func httpStatus(err error) int {
	var ge *googleapi.Error
	if errors.As(err, &ge) {
		return ge.Code
	}
	var ae *apierror.APIError
	if errors.As(err, &ae) {
		return ae.HTTPCode()
	}
	return 0
}

func identityDiagnosis(ie *IdentityError) *kms.Error {
	if ie.Transient {
		return &kms.Error{Class: kms.Outage, Code: CodeIdentityUnavailable,
			Message: "ekm could not obtain its own identity token (" + ie.Message + "); this is transient, not a problem with your key"}
	}
	return &kms.Error{Class: kms.Operator, Code: CodeIdentityFailed,
		Message: "the server's own Google identity is unusable (" + ie.Message + "); this is not a problem with your key — the operator must fix it"}
}

// stsBody is Google STS's OAuth-style error.
type stsBody struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

var (
	stsIssuerRE   = regexp.MustCompile(`The issuer in ID Token (\S{1,300}) does not match the expected ones: (\S{1,300})`)
	stsAudienceRE = regexp.MustCompile(`The audience in ID Token \[([^\]]{0,300})\]`)
)

// diagnoseExchange explains a failed token exchange: ekm's identity, the
// STS refusal (kept by the transport), the impersonation, or the network.
func (d *Driver) diagnoseExchange(ctx context.Context, key fedKey, tr *trace, err error) *kms.Error {
	var ie *IdentityError
	if errors.As(err, &ie) {
		e := identityDiagnosis(ie)
		e.Err = err
		return e
	}
	if f, ok := tr.failure(failSTS); ok {
		e := d.stsDiagnosis(key, f)
		e.Err = err
		return e
	}
	if f, ok := tr.failure(failImpersonate); ok {
		e := impersonationDiagnosis(key, f)
		e.Err = err
		return e
	}
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled):
		return &kms.Error{Class: kms.Outage, Code: CodeCanceled, Message: "the token exchange with Google STS was canceled", Err: err}
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return &kms.Error{Class: kms.Outage, Code: CodeTimeout, Message: "Google STS did not answer in time; this is transient", Err: err}
	case errors.As(err, &ne):
		return &kms.Error{Class: kms.Outage, Code: CodeConnectionFailed, Message: "could not connect to Google STS; this is transient, not a misconfiguration", Err: err}
	}
	_ = ctx
	return &kms.Error{Class: kms.Outage, Code: CodeSTSUnavailable, Message: "the token exchange with Google STS failed unexpectedly; treated as transient", Err: err}
}

// stsDiagnosis maps Google STS's refusal to the onboarding step 1 fix,
// naming what does not match.
func (d *Driver) stsDiagnosis(key fedKey, f httpFailure) *kms.Error {
	var b stsBody
	_ = json.Unmarshal(f.body, &b)
	id := d.identity.Describe()
	provider := strings.TrimPrefix(key.provider, "//iam.googleapis.com/")
	desc := b.Description
	step1 := func(code, msg string) *kms.Error {
		return &kms.Error{Class: kms.Revoked, Code: code, Step: StepFederation, Message: msg + " (onboarding step 1; " + propagationNote + ")"}
	}
	switch {
	case f.status == http.StatusTooManyRequests || f.status >= 500 || b.Error == "temporarily_unavailable":
		return &kms.Error{Class: kms.Outage, Code: CodeSTSUnavailable, Message: fmt.Sprintf("Google STS is unavailable (HTTP %d); this is transient", f.status)}
	case b.Error == "invalid_target":
		return step1(CodeProviderNotFound, fmt.Sprintf("Google STS refused the token exchange: workload identity provider %s, or its pool, is disabled, deleted or does not exist (invalid_target); check workload_identity_project_number, workload_identity_pool_id and workload_identity_provider_id, and that pool and provider are enabled", provider))
	case b.Error == "invalid_request" && strings.Contains(desc, "audience"):
		return &kms.Error{Class: kms.Invalid, Code: CodeInvalidProviderName, Step: StepFederation, Param: ParamWorkloadIdentityProjectNumber,
			Message: fmt.Sprintf("Google STS does not accept %s as a provider's name (invalid_request); check workload_identity_project_number (a number, not the project id), workload_identity_pool_id and workload_identity_provider_id", key.provider)}
	case b.Error == "unauthorized_client":
		return step1(CodeConditionRejected, fmt.Sprintf("the attribute condition of provider %s rejects ekm's token (unauthorized_client); the condition must admit assertion.sub == %q", provider, id["subject"]))
	case b.Error == "invalid_grant" && strings.Contains(desc, "audience"):
		aud := key.audience
		if m := stsAudienceRE.FindStringSubmatch(desc); m != nil {
			aud = m[1]
		}
		return &kms.Error{Class: kms.Revoked, Code: CodeAudienceNotAllowed, Step: StepFederation, Param: ParamAudience,
			Message: fmt.Sprintf("provider %s does not allow the audience %q that ekm's token carries (the registration's audience); add it to the provider's allowed audiences, or register with the audience the provider allows (onboarding step 1; %s)", provider, aud, propagationNote)}
	case b.Error == "invalid_grant" && strings.Contains(desc, "issuer in ID Token"):
		iss, want := id["issuer"], "another issuer"
		if m := stsIssuerRE.FindStringSubmatch(desc); m != nil {
			iss, want = m[1], strings.TrimSuffix(m[2], ".")
		}
		return step1(CodeIssuerMismatch, fmt.Sprintf("provider %s trusts the issuer %s, but ekm's tokens are issued by %s; set the provider's issuer URI to %s", provider, want, iss, iss))
	case b.Error == "invalid_grant" && strings.Contains(desc, "connecting to the given credential's issuer"):
		return &kms.Error{Class: kms.Outage, Code: CodeIssuerUnreachable, Step: StepFederation,
			Message: fmt.Sprintf("Google could not fetch the OIDC discovery document or keys of ekm's issuer %s; if that issuer is not reachable from the internet, upload ekm's JWKS to provider %s (oidc.jwksJson, onboarding step 1); otherwise this is transient", id["issuer"], provider)}
	case b.Error == "invalid_grant" && (strings.Contains(desc, "signature") || strings.Contains(desc, "JWK") || strings.Contains(desc, "kid")):
		return step1(CodeJWKSMismatch, fmt.Sprintf("the keys provider %s trusts do not verify ekm's token: the JWKS uploaded to the provider (oidc.jwksJson) lacks the key ekm signs with, or the issuer URI is wrong; upload ekm's current JWKS (%s) or remove jwksJson so that Google fetches it", provider, jwksHint(id)))
	case b.Error == "invalid_grant" && strings.Contains(desc, "mapped attribute"):
		return step1(CodeAttributeMapping, fmt.Sprintf("the attribute mapping of provider %s fails on ekm's token (%s); map google.subject = assertion.sub", provider, clip(desc, 200)))
	case b.Error == "invalid_grant" && (strings.Contains(desc, "stale") || strings.Contains(desc, "expired") || strings.Contains(desc, "required claim") || strings.Contains(desc, "parse")):
		return &kms.Error{Class: kms.Operator, Code: CodeSubjectTokenRejected,
			Message: fmt.Sprintf("Google STS rejected ekm's own ID token (%s); this is not a problem with your provider — the operator must check the server's identity and clock", clip(desc, 200))}
	case b.Error == "invalid_grant":
		return step1(CodeSTSRefused, fmt.Sprintf("Google STS refused ekm's token for provider %s (invalid_grant: %s)", provider, clip(desc, 200)))
	case b.Error == "invalid_scope" || b.Error == "unsupported_grant_type" || b.Error == "invalid_request":
		return &kms.Error{Class: kms.Operator, Code: CodeSubjectTokenRejected,
			Message: fmt.Sprintf("Google STS refused ekm's token exchange request (%s); the operator must check the server", b.Error)}
	}
	return &kms.Error{Class: kms.Outage, Code: CodeSTSUnavailable, Message: fmt.Sprintf("Google STS answered HTTP %d %s; treated as transient", f.status, clip(b.Error, 64))}
}

func jwksHint(id map[string]string) string {
	if u := id["jwks_uri"]; u != "" {
		return "printed by `ekm issuer jwks`, served at " + u
	}
	return "the issuer's JWKS"
}

func impersonationDiagnosis(key fedKey, f httpFailure) *kms.Error {
	switch {
	case f.status == http.StatusTooManyRequests || f.status >= 500:
		return &kms.Error{Class: kms.Outage, Code: CodeSTSUnavailable, Message: fmt.Sprintf("IAM Credentials is unavailable (HTTP %d); this is transient", f.status)}
	case f.status == http.StatusForbidden || f.status == http.StatusNotFound:
		return &kms.Error{Class: kms.Revoked, Code: CodeImpersonationDenied, Step: StepGrant, Param: ParamServiceAccountEmail,
			Message: fmt.Sprintf("ekm's federated principal may not impersonate service account %s (iam.serviceAccounts.getAccessToken denied, or the account does not exist or is disabled); grant %s on the account to the principal (onboarding step 3)", key.serviceAccount, RoleWorkloadIdentityUser)}
	case f.status == http.StatusUnauthorized:
		return &kms.Error{Class: kms.Operator, Code: CodeUnauthenticated, Message: "IAM Credentials did not accept the federated token Google STS issued to ekm (HTTP 401)"}
	}
	return &kms.Error{Class: kms.Outage, Code: CodeSTSUnavailable,
		Message: fmt.Sprintf("IAM Credentials answered HTTP %d to ekm's impersonation of service account %s; treated as transient", f.status, key.serviceAccount)}
}
