package azure

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/ekm-dev/ekm/kms"
)

// Seed corpora live in testdata/fuzz/<FuzzName>/.

func fuzzDriver(tb testing.TB, clouds ...Cloud) *Driver {
	tb.Helper()
	d, err := NewDriver(Config{ClientID: fakeClientID, ClientSecret: "x", Clouds: clouds})
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

// The allowed Key Vault DNS suffixes, written out independently of
// vaultSuffixes so that a change there is caught here.
var (
	publicSuffixes = []string{".vault.azure.net", ".managedhsm.azure.net"}
	otherSuffixes  = []string{".vault.azure.cn", ".vault.usgovcloudapi.net"}
	fuzzVaultName  = regexp.MustCompile(`^[a-z][0-9a-z-]{1,22}[0-9a-z]$`)
	fuzzGUID       = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	fuzzKeyName    = regexp.MustCompile(`^[0-9A-Za-z-]{1,127}$`)
	fuzzOrgID      = regexp.MustCompile(`^[0-9A-Za-z-]{1,64}$`)
)

// FuzzCheck drives Driver.Check with arbitrary registration params. Whatever
// it accepts must be a lower-case GUID tenant, a bare https://<vault>/ URI on
// an allowed (and enabled) Key Vault suffix, and a key name owned by the org.
func FuzzCheck(f *testing.F) {
	all := fuzzDriver(f, CloudPublic, CloudChina, CloudGovernment)
	public := fuzzDriver(f, CloudPublic)
	f.Fuzz(func(t *testing.T, org, tenant, vault, key, extraName, extraValue string) {
		p := kms.Params{ParamTenantID: tenant, ParamVaultURI: vault, ParamKeyName: key}
		if extraName != "" {
			p[extraName] = extraValue
		}
		for _, d := range []*Driver{all, public} {
			out, err := d.Check(org, p)
			if err != nil {
				var ke *kms.Error
				if !errors.As(err, &ke) || ke.Class != kms.Invalid || ke.Code == "" || ke.Message == "" {
					t.Fatalf("refusal is not an Invalid kms.Error: %#v", err)
				}
				continue
			}
			if len(out) != 3 {
				t.Fatalf("accepted params %q", out)
			}
			if !fuzzOrgID.MatchString(org) || strings.Contains(org, "--") {
				t.Fatalf("accepted org id %q", org)
			}
			if tn := out[ParamTenantID]; !fuzzGUID.MatchString(tn) || !strings.EqualFold(tn, tenant) {
				t.Fatalf("accepted tenant %q as %q", tenant, tn)
			}
			checkVault(t, vault, out[ParamVaultURI], d == public)
			kn := out[ParamKeyName]
			prefix := org + "--"
			if kn != key || !fuzzKeyName.MatchString(kn) || len(kn) <= len(prefix) || !strings.EqualFold(kn[:len(prefix)], prefix) {
				t.Fatalf("accepted key name %q for org %q", kn, org)
			}
		}
	})
}

func checkVault(t *testing.T, in, out string, publicOnly bool) {
	t.Helper()
	u, err := url.Parse(out)
	if err != nil || u.Scheme != "https" || u.Opaque != "" || u.User != nil || u.Port() != "" || u.Host != u.Hostname() ||
		u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.Path != "/" || u.RawPath != "" || out != "https://"+u.Host+"/" {
		t.Fatalf("accepted vault_uri %q as %q", in, out)
	}
	host := u.Host
	if host != strings.ToLower(host) || !utf8.ValidString(host) {
		t.Fatalf("vault host %q is not normalised", host)
	}
	allowed := publicSuffixes
	if !publicOnly {
		allowed = append(slices.Clone(publicSuffixes), otherSuffixes...)
	}
	for _, s := range allowed {
		if name, ok := strings.CutSuffix(host, s); ok {
			if !fuzzVaultName.MatchString(name) || strings.Contains(name, "--") {
				t.Fatalf("accepted vault name %q in %q", name, in)
			}
			return
		}
	}
	t.Fatalf("accepted vault host %q (from %q) outside the allowed suffixes", host, in)
}

// All diagnosis codes and steps a provider call may report.
var (
	diagCodes = []string{CodeServicePrincipalMissing, CodeServicePrincipalDisabled, CodeTenantNotFound, CodeTenantMismatch,
		CodeConditionalAccess, CodeAppCredentialRejected, CodeAuthenticationFailed, CodeIdentityUnavailable, CodeForbiddenByRBAC,
		CodeAccessPolicyDenied, CodeForbiddenByFirewall, CodeForbidden, CodeKeyDisabled, CodeKeyExpired, CodeKeyNotYetValid,
		CodeKeyOperationForbidden, CodeKeyNotFound, CodeKeyTypeUnsupported, CodeUnauthorized, CodeInvalidCiphertext, CodeBadRequest,
		CodeWrongKey, CodeThrottled, CodeServiceError, CodeTimeout, CodeCanceled, CodeConnectionFailed, CodeUnexpectedResponse}
	diagSteps = []string{"", StepServicePrincipal, StepRole, StepKey, StepRoleAssignment, StepRestrictions,
		StepRoleOrAssignment, StepKeyOrRestriction}
	aadstsRE = regexp.MustCompile(`AADSTS(\d+)`)
)

// maxDiagMessage bounds a diagnosis message whatever the error body holds:
// the fixed text plus the vault host, key name, tenant and one bounded
// RBAC action name.
const maxDiagMessage = 1024

// FuzzDiagnose feeds arbitrary error responses to the diagnosis of Key
// Vault (innererror) and Entra ID (error_codes) failures, built the way the
// SDK builds them. It must never panic, must return a known code, step and
// class with a bounded, valid UTF-8 message, and must never call a failure
// a revocation unless the status or body says so.
func FuzzDiagnose(f *testing.F) {
	d := fuzzDriver(f)
	p := &Provider{d: d, tenant: fakeTenant, host: "ekmtest.vault.azure.net", keyName: fakeKey}
	ops := []operation{opEncrypt, opDecrypt, opGet}
	f.Fuzz(func(t *testing.T, entra bool, status int, errorCodeHeader string, body []byte, op uint8, reg bool) {
		req, _ := http.NewRequest("POST", "https://ekmtest.vault.azure.net/keys/k/encrypt", nil)
		resp := &http.Response{StatusCode: status, Status: strconv.Itoa(status), Request: req,
			Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(bytes.NewReader(body))}
		if errorCodeHeader != "" {
			resp.Header.Set("x-ms-error-code", errorCodeHeader)
		}
		var err error
		if entra {
			err = &azidentity.AuthenticationFailedError{RawResponse: resp}
		} else {
			err = runtime.NewResponseError(resp)
		}
		g := diag{p: p, op: ops[int(op)%len(ops)], reg: reg}
		e := g.diagnose(err)
		if e == nil || !slices.Contains([]kms.Class{kms.Revoked, kms.Outage, kms.Operator, kms.Invalid}, e.Class) ||
			!slices.Contains(diagCodes, e.Code) || !slices.Contains(diagSteps, e.Step) || (e.Param != "" && e.Param != ParamTenantID) || e.Err != err {
			t.Fatalf("diagnosis %#v", e)
		}
		if e.Message == "" || len(e.Message) > maxDiagMessage || !utf8.ValidString(e.Message) {
			t.Fatalf("diagnosis message %q", e.Message)
		}
		if e.Class == kms.Revoked {
			if entra && !containsAny(body, "700016", "7000112", "90002", "53003") {
				t.Fatalf("Entra HTTP %d %q diagnosed as a revocation: %s", status, body, e.Message)
			}
			if !entra && status != http.StatusUnauthorized && status != http.StatusForbidden && status != http.StatusNotFound {
				t.Fatalf("Key Vault HTTP %d diagnosed as a revocation: %s", status, e.Message)
			}
		}
		if reg && (e.Code == CodeTenantMismatch || e.Code == CodeTenantNotFound) && e.Class != kms.Invalid {
			t.Fatalf("wrong tenant at registration is %s, not Invalid", e.Class)
		}
		if e.Code == CodeAppCredentialRejected {
			// The reported AADSTS code must be one that means the app
			// credential, not whichever code Entra listed first.
			m := aadstsRE.FindStringSubmatch(e.Message)
			if m == nil {
				t.Fatalf("app credential diagnosis without its AADSTS code: %s", e.Message)
			}
			n, _ := strconv.Atoi(m[1])
			if !slices.Contains(appCredentialCodes, n) {
				t.Fatalf("app credential diagnosis names AADSTS%d: %s", n, e.Message)
			}
		}
	})
}

func containsAny(b []byte, subs ...string) bool {
	for _, s := range subs {
		if bytes.Contains(b, []byte(s)) {
			return true
		}
	}
	return false
}

// Regression (found with FuzzDiagnose's invariant): when Entra lists an
// unrelated code before the app-credential one, the diagnosis named the
// first code instead of the one that made it an operator failure.
func TestDiagnoseEntraNamesTheMatchedCode(t *testing.T) {
	body := `{"error":"invalid_client","error_codes":[50011,7000215]}`
	resp := &http.Response{StatusCode: 401, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(body))}
	g := diag{p: &Provider{d: fuzzDriver(t), tenant: fakeTenant, host: "ekmtest.vault.azure.net", keyName: fakeKey}, op: opEncrypt}
	e := g.diagnose(&azidentity.AuthenticationFailedError{RawResponse: resp})
	if e.Class != kms.Operator || e.Code != CodeAppCredentialRejected || !strings.Contains(e.Message, "AADSTS7000215") || strings.Contains(e.Message, "50011") {
		t.Fatalf("got %s/%s: %s", e.Class, e.Code, e.Message)
	}
}
