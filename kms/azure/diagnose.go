package azure

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/ekm-dev/ekm/kms"
)

// Diagnosis codes of provider calls (kms.Error.Code). docs/azure.md maps each
// to its fix.
const (
	CodeServicePrincipalMissing  = "azure_service_principal_missing"
	CodeServicePrincipalDisabled = "azure_service_principal_disabled"
	CodeTenantNotFound           = "azure_tenant_not_found"
	CodeTenantMismatch           = "azure_tenant_mismatch"
	CodeConditionalAccess        = "azure_conditional_access_blocked"
	CodeAppCredentialRejected    = "azure_app_credential_rejected"
	CodeAuthenticationFailed     = "azure_authentication_failed"
	CodeIdentityUnavailable      = "azure_identity_unavailable"
	CodeForbiddenByRBAC          = "azure_forbidden_by_rbac"
	CodeAccessPolicyDenied       = "azure_access_policy_denied"
	CodeForbiddenByFirewall      = "azure_forbidden_by_firewall"
	CodeForbidden                = "azure_forbidden"
	CodeKeyDisabled              = "azure_key_disabled"
	CodeKeyExpired               = "azure_key_expired"
	CodeKeyNotYetValid           = "azure_key_not_yet_valid"
	CodeKeyOperationForbidden    = "azure_key_operation_forbidden"
	CodeKeyNotFound              = "azure_key_not_found"
	CodeKeyTypeUnsupported       = "azure_key_type_unsupported"
	CodeUnauthorized             = "azure_unauthorized"
	CodeInvalidCiphertext        = "azure_invalid_ciphertext"
	CodeBadRequest               = "azure_bad_request"
	CodeWrongKey                 = "azure_wrong_key"
	CodeThrottled                = "azure_throttled"
	CodeServiceError             = "azure_service_error"
	CodeTimeout                  = "azure_timeout"
	CodeCanceled                 = "azure_canceled"
	CodeConnectionFailed         = "azure_connection_failed"
	CodeUnexpectedResponse       = "azure_unexpected_response"
	CodeClientSetup              = "azure_client_setup_failed"
)

// Onboarding steps (kms.Error.Step), numbered as in docs/azure.md.
const (
	StepServicePrincipal = "1" // create ekm's service principal in the tenant
	StepRole             = "2" // custom role with encrypt/decrypt/read
	StepKey              = "3" // RSA key named <org-id>--<name>
	StepRoleAssignment   = "4" // assign the role at the key's scope
	StepRestrictions     = "5" // optional restrictions (firewall, CA, key_ops)
	StepRoleOrAssignment = "2,4"
	StepKeyOrRestriction = "3,5"
)

// operation names the Key Vault data action a call needs.
type operation string

const (
	opEncrypt operation = "encrypt"
	opDecrypt operation = "decrypt"
	opGet     operation = "read"
)

func (o operation) action() string {
	if o == opGet {
		return "Microsoft.KeyVault/vaults/keys/read"
	}
	return "Microsoft.KeyVault/vaults/keys/" + string(o) + "/action"
}

// maxErrorBody bounds how much of an error body we parse.
const maxErrorBody = 64 << 10

// Entra AADSTS codes that mean ekm's own app credential (secret, certificate
// or federated token) was rejected.
var appCredentialCodes = []int{
	7000215, // invalid client secret
	7000222, // client secret expired
	700027,  // assertion signature
	700024,  // assertion outside its time range
	700023,  // invalid audience in assertion
	50012,   // authentication failed (bad assertion / thumbprint)
	50013,   // assertion signature validation failed
	70021,   // no matching federated identity credential
	700211,  // no matching federated identity issuer
	700212,  // no matching federated identity audience
	700213,  // no matching federated identity subject
	7002137, // federated identity credential mismatch
	7000218, // neither client_assertion nor client_secret
}

// diag builds the kms.Error for a failed call.
type diag struct {
	p   *Provider
	op  operation
	reg bool // during registration (Preflight): a wrong tenant is Invalid
}

func (g diag) where() string {
	return fmt.Sprintf("key %q in vault %s", g.p.keyName, g.p.host)
}

// tenantClass is Invalid while registering (the customer typed a wrong
// tenant) and Revoked afterwards (a tenant that worked is gone or no longer
// owns the vault).
func (g diag) tenantClass() kms.Class {
	if g.reg {
		return kms.Invalid
	}
	return kms.Revoked
}

func (g diag) diagnose(err error) *kms.Error {
	e := g.classify(err)
	e.Err = err
	return e
}

func (g diag) classify(err error) *kms.Error {
	var tm *tenantMismatchError
	var op *operatorError
	var af *azidentity.AuthenticationFailedError
	var re *azcore.ResponseError
	var ne net.Error
	switch {
	case errors.As(err, &tm):
		return &kms.Error{Class: g.tenantClass(), Code: CodeTenantMismatch, Param: ParamTenantID,
			Message: fmt.Sprintf("vault %s belongs to Microsoft Entra tenant %s, not to the registered tenant_id %s; register the key with the tenant that owns the vault", g.p.host, tm.vault, tm.registered)}
	case errors.As(err, &op):
		return &kms.Error{Class: kms.Operator, Code: CodeAppCredentialRejected,
			Message: "the server's own Azure credential is unusable (" + op.what + "); this is not a problem with your key — the operator has been notified"}
	case errors.As(err, &af):
		return g.entra(af)
	case errors.As(err, &re):
		return g.vault(re)
	case errors.Is(err, errBodyTooLarge):
		return &kms.Error{Class: kms.Outage, Code: CodeUnexpectedResponse, Message: "Azure returned an oversized response; treated as a transient failure"}
	case errors.Is(err, context.Canceled):
		return &kms.Error{Class: kms.Outage, Code: CodeCanceled, Message: "the call to Azure Key Vault was canceled"}
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return &kms.Error{Class: kms.Outage, Code: CodeTimeout, Message: "Azure Key Vault did not answer in time; this is transient, not a misconfiguration"}
	case errors.As(err, &ne):
		return &kms.Error{Class: kms.Outage, Code: CodeConnectionFailed, Message: "could not connect to Azure; this is transient, not a misconfiguration"}
	}
	return &kms.Error{Class: kms.Outage, Code: CodeUnexpectedResponse, Message: "unexpected failure talking to Azure; treated as transient"}
}

// entraBody is the part of a token endpoint error we use.
type entraBody struct {
	Error      string `json:"error"`
	ErrorCodes []int  `json:"error_codes"`
}

func (g diag) entra(af *azidentity.AuthenticationFailedError) *kms.Error {
	resp := af.RawResponse
	if resp == nil {
		// No HTTP answer from Entra: a network failure or timeout.
		return &kms.Error{Class: kms.Outage, Code: CodeIdentityUnavailable, Message: "could not obtain a token from Microsoft Entra ID; this is transient, not a misconfiguration"}
	}
	var b entraBody
	_ = json.Unmarshal(boundedPayload(resp), &b)
	has := func(codes ...int) bool {
		for _, c := range codes {
			if slices.Contains(b.ErrorCodes, c) {
				return true
			}
		}
		return false
	}
	switch {
	case has(700016):
		return &kms.Error{Class: kms.Revoked, Code: CodeServicePrincipalMissing, Step: StepServicePrincipal,
			Message: fmt.Sprintf("ekm's application (appId %s) has no service principal in tenant %s (AADSTS700016); an administrator of that tenant must create it (onboarding step 1)", g.p.d.clientID, g.p.tenant)}
	case has(7000112):
		return &kms.Error{Class: kms.Revoked, Code: CodeServicePrincipalDisabled, Step: StepServicePrincipal,
			Message: fmt.Sprintf("ekm's service principal (appId %s) is disabled in tenant %s (AADSTS7000112); re-enable it (onboarding step 1)", g.p.d.clientID, g.p.tenant)}
	case has(90002):
		return &kms.Error{Class: g.tenantClass(), Code: CodeTenantNotFound, Param: ParamTenantID,
			Message: fmt.Sprintf("Microsoft Entra tenant %s was not found (AADSTS90002); check tenant_id", g.p.tenant)}
	case has(53003):
		return &kms.Error{Class: kms.Revoked, Code: CodeConditionalAccess, Step: StepRestrictions,
			Message: fmt.Sprintf("a Conditional Access policy in tenant %s blocks ekm's service principal (AADSTS53003); exempt it (onboarding step 5)", g.p.tenant)}
	case has(appCredentialCodes...):
		// Name the code that matched: Entra may list others before it.
		i := slices.IndexFunc(b.ErrorCodes, func(c int) bool { return slices.Contains(appCredentialCodes, c) })
		return &kms.Error{Class: kms.Operator, Code: CodeAppCredentialRejected,
			Message: fmt.Sprintf("Microsoft Entra ID rejected the server's own application credential (AADSTS%d); this is not a problem with your key — the operator must fix the server's Azure credential", b.ErrorCodes[i])}
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 || resp.StatusCode == http.StatusRequestTimeout:
		return &kms.Error{Class: kms.Outage, Code: CodeIdentityUnavailable, Message: fmt.Sprintf("Microsoft Entra ID is unavailable (HTTP %d); this is transient", resp.StatusCode)}
	}
	msg := fmt.Sprintf("Microsoft Entra ID refused a token for tenant %s (HTTP %d", g.p.tenant, resp.StatusCode)
	if len(b.ErrorCodes) > 0 {
		msg += fmt.Sprintf(", AADSTS%d", b.ErrorCodes[0])
	}
	return &kms.Error{Class: kms.Outage, Code: CodeAuthenticationFailed, Message: msg + ")"}
}

// vaultBody is Key Vault's error shape; innererror carries the code that
// tells the 403s apart (the SDK surfaces only the outer code).
type vaultBody struct {
	Error struct {
		Code       string `json:"code"`
		Message    string `json:"message"`
		InnerError *struct {
			Code string `json:"code"`
		} `json:"innererror"`
	} `json:"error"`
}

var actionRE = regexp.MustCompile(`Action: '(Microsoft\.KeyVault/[A-Za-z/]{1,100})'`)

func (g diag) vault(re *azcore.ResponseError) *kms.Error {
	var b vaultBody
	if re.RawResponse != nil {
		_ = json.Unmarshal(boundedPayload(re.RawResponse), &b)
	}
	inner := ""
	if b.Error.InnerError != nil {
		inner = b.Error.InnerError.Code
	}
	code := inner
	if code == "" {
		code = re.ErrorCode
	}
	switch re.StatusCode {
	case http.StatusUnauthorized:
		if strings.Contains(b.Error.Message, "AKV10032") {
			return &kms.Error{Class: g.tenantClass(), Code: CodeTenantMismatch, Param: ParamTenantID,
				Message: fmt.Sprintf("vault %s does not belong to the registered tenant %s (AKV10032); register the key with the tenant that owns the vault", g.p.host, g.p.tenant)}
		}
		return &kms.Error{Class: kms.Operator, Code: CodeUnauthorized,
			Message: "Azure Key Vault did not accept the server's access token (HTTP 401); the operator must check the server's Azure setup"}
	case http.StatusForbidden:
		switch code {
		case "ForbiddenByRbac":
			action := g.op.action()
			if m := actionRE.FindStringSubmatch(b.Error.Message); m != nil {
				action = m[1]
			}
			return &kms.Error{Class: kms.Revoked, Code: CodeForbiddenByRBAC, Step: StepRoleOrAssignment,
				Message: fmt.Sprintf("Azure RBAC denied ekm's service principal the action %s on %s; make sure the custom role includes this data action (onboarding step 2) and is assigned to ekm's service principal at the key's scope (step 4). Role changes can take a few minutes to apply", action, g.where())}
		case "KeyDisabled":
			return &kms.Error{Class: kms.Revoked, Code: CodeKeyDisabled, Step: StepKey,
				Message: fmt.Sprintf("%s is disabled; enable it to restore access (onboarding step 3)", g.where())}
		case "KeyOperationForbidden":
			return &kms.Error{Class: kms.Revoked, Code: CodeKeyOperationForbidden, Step: StepKeyOrRestriction,
				Message: fmt.Sprintf("%s does not permit the %s operation; its permitted operations (key_ops) must include encrypt and decrypt (onboarding steps 3 and 5)", g.where(), g.op)}
		case "KeyExpired", "KeyNotYetValid":
			return &kms.Error{Class: kms.Revoked, Code: CodeKeyExpired, Step: StepKey,
				Message: fmt.Sprintf("%s is outside its activation/expiration dates; adjust them (onboarding step 3)", g.where())}
		case "AccessDenied":
			return &kms.Error{Class: kms.Revoked, Code: CodeAccessPolicyDenied, Step: StepRoleAssignment,
				Message: fmt.Sprintf("vault %s uses access policies and none grants ekm's service principal keys %s; switch the vault to Azure RBAC and assign the role (onboarding steps 2 and 4), or add an access policy", g.p.host, g.op)}
		case "ForbiddenByFirewall", "ForbiddenByConnection":
			return &kms.Error{Class: kms.Revoked, Code: CodeForbiddenByFirewall, Step: StepRestrictions,
				Message: fmt.Sprintf("the firewall of vault %s blocks ekm; allow ekm's egress addresses (onboarding step 5)", g.p.host)}
		}
		return &kms.Error{Class: kms.Revoked, Code: CodeForbidden, Step: StepRoleAssignment,
			Message: fmt.Sprintf("Azure Key Vault refused ekm access to %s (HTTP 403); check the role assignment (onboarding step 4)", g.where())}
	case http.StatusNotFound:
		return &kms.Error{Class: kms.Revoked, Code: CodeKeyNotFound, Step: StepKey,
			Message: fmt.Sprintf("%s was not found; if it was deleted, recover it (onboarding step 3)", g.where())}
	case http.StatusBadRequest:
		if g.op == opDecrypt {
			return &kms.Error{Class: kms.Invalid, Code: CodeInvalidCiphertext,
				Message: fmt.Sprintf("Azure Key Vault could not decrypt the wrapped key with %s: the stored wrapped key is corrupt", g.where())}
		}
		return &kms.Error{Class: kms.Invalid, Code: CodeBadRequest, Step: StepKey,
			Message: fmt.Sprintf("Azure Key Vault refused the %s request for %s (HTTP 400); the key must be an RSA key (onboarding step 3)", g.op, g.where())}
	case http.StatusTooManyRequests, http.StatusRequestTimeout:
		return &kms.Error{Class: kms.Outage, Code: CodeThrottled,
			Message: fmt.Sprintf("Azure Key Vault is throttling requests to vault %s; this is transient, not a misconfiguration", g.p.host)}
	}
	if re.StatusCode >= 500 {
		return &kms.Error{Class: kms.Outage, Code: CodeServiceError,
			Message: fmt.Sprintf("Azure Key Vault returned a server error (HTTP %d); this is transient, not a misconfiguration", re.StatusCode)}
	}
	return &kms.Error{Class: kms.Outage, Code: CodeUnexpectedResponse,
		Message: fmt.Sprintf("Azure Key Vault returned unexpected HTTP %d; treated as transient", re.StatusCode)}
}

// boundedPayload returns at most maxErrorBody bytes of resp's body, which
// the SDK has already buffered (itself bounded by boundedTransport).
func boundedPayload(resp *http.Response) []byte {
	b, err := runtime.Payload(resp)
	if err != nil {
		return nil
	}
	if len(b) > maxErrorBody {
		b = b[:maxErrorBody]
	}
	return b
}

// operatorError marks a failure of the server's own credential material
// detected before any request (e.g. an unreadable federated token file).
type operatorError struct {
	what string
	err  error
}

func (e *operatorError) Error() string { return e.what + ": " + e.err.Error() }
func (e *operatorError) Unwrap() error { return e.err }
