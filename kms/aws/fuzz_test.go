package aws

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
	smithyendpoints "github.com/aws/smithy-go/endpoints"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/ekm-dev/ekm/kms"
)

// Seed corpora live in testdata/fuzz/<FuzzName>/.

func endpointOf(t testing.TB, s string) smithyendpoints.Endpoint {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return smithyendpoints.Endpoint{URI: *u}
}

// Written out independently of params.go, so that a change there is caught
// here.
var (
	fuzzKeyARN = regexp.MustCompile(`^arn:(aws|aws-cn|aws-us-gov):kms:([a-z]{2}(-gov)?-[a-z]+-[0-9]{1,2}):([0-9]{12}):` +
		`(key/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32})|alias/[A-Za-z0-9:/_-]+)$`)
	fuzzRoleARN = regexp.MustCompile(`^arn:(aws|aws-cn|aws-us-gov):iam::[0-9]{12}:role/([A-Za-z0-9_+=,.@-]+/)*[A-Za-z0-9_+=,.@-]{1,64}$`)
	fuzzExtID   = regexp.MustCompile(`^[A-Za-z0-9_+=,.@:/-]{2,256}$`)
	fuzzDNS     = map[string]string{"aws": "amazonaws.com", "aws-us-gov": "amazonaws.com", "aws-cn": "amazonaws.com.cn"}
)

// FuzzCheck drives Check (the ARN parsers) with arbitrary registration
// params. Whatever it accepts is returned unchanged, is a key or alias ARN
// and a role ARN of one enabled partition, a region of that partition whose
// KMS and STS hosts are the partition's, and an external id of the allowed
// characters; refusals are Invalid kms.Errors naming a parameter.
func FuzzCheck(f *testing.F) {
	all := map[string]bool{PartitionAWS: true, PartitionGov: true, PartitionChina: true}
	awsOnly := map[string]bool{PartitionAWS: true}
	f.Fuzz(func(t *testing.T, org, role, key, ext, extraName, extraValue string) {
		p := kms.Params{ParamRoleARN: role, ParamKMSARN: key, ParamExternalID: ext}
		if extraName != "" {
			p[extraName] = extraValue
		}
		for _, enabled := range []map[string]bool{all, awsOnly} {
			out, ps, err := checkParams(org, p, enabled)
			if err != nil {
				var ke *kms.Error
				if !errors.As(err, &ke) || ke.Class != kms.Invalid || ke.Code == "" || ke.Message == "" || !utf8.ValidString(ke.Message) {
					t.Fatalf("refusal is not an Invalid kms.Error: %#v", err)
				}
				if ke.Code != CodeInvalidOrgID && ke.Param == "" {
					t.Fatalf("refusal %s names no parameter", ke.Code)
				}
				continue
			}
			if len(out) != 4 || out[ParamRoleARN] != role || out[ParamKMSARN] != key || out[ParamExternalID] != ext || out[ParamRegion] != ps.key.Region {
				t.Fatalf("accepted params changed: %q -> %q", p, out)
			}
			m := fuzzKeyARN.FindStringSubmatch(key)
			if m == nil || len(key) > 2048 || m[2] != out[ParamRegion] {
				t.Fatalf("accepted kms_arn %q", key)
			}
			if !enabled[m[1]] || !strings.HasPrefix(role, "arn:"+m[1]+":") || !fuzzRoleARN.MatchString(role) || len(role) > 2048 {
				t.Fatalf("accepted role_arn %q with kms_arn %q", role, key)
			}
			if strings.HasPrefix(m[5], "alias/aws/") || m[5] == "alias/aws" {
				t.Fatalf("accepted an AWS managed key %q", key)
			}
			if !fuzzExtID.MatchString(ext) {
				t.Fatalf("accepted external_id %q", ext)
			}
			if ps.key.String() != key || ps.role.String() != role {
				t.Fatalf("parsed %q %q as %q %q", key, role, ps.key.String(), ps.role.String())
			}
			// The hosts ekm would call are the partition's.
			region := m[2]
			for _, svc := range []string{"kms", "sts", "kms-fips", "sts-fips"} {
				host := svc + "." + region + "." + fuzzDNS[m[1]]
				if err := checkHost(endpointOf(t, "https://"+host), strings.TrimSuffix(svc, "-fips"), region); err != nil {
					t.Fatalf("host %s of accepted %q refused: %v", host, key, err)
				}
			}
			sess := "ekm-" + org
			if len(sess) > 64 || !regexp.MustCompile(`^[A-Za-z0-9_+=,.@-]+$`).MatchString(sess) {
				t.Fatalf("org %q gives session name %q", org, sess)
			}
		}
	})
}

var (
	diagCodes = func() []string {
		var out []string
		for _, c := range Spec().Codes {
			out = append(out, c.Code)
		}
		return out
	}()
	diagSteps = []string{"", StepKey, StepPolicy, StepRole, StepAttach, StepPolicyOrKP}
)

// maxDiagMessage bounds a diagnosis message whatever AWS answers: fixed
// text plus ARNs, the external id and at most 200 quoted characters.
const maxDiagMessage = 2048

// FuzzDiagnose feeds arbitrary AWS error answers (code, message, HTTP
// status) to the diagnosis of KMS calls, AssumeRole and ekm's own
// credentials. It must never panic, must return a code listed in the Spec
// with its class and step, a bounded valid UTF-8 message, and must never
// call a failure a revocation unless AWS's code says access was refused or
// the key is unusable.
func FuzzDiagnose(f *testing.F) {
	key, _ := parseKMSARN(testKey)
	alias, _ := parseKMSARN(testAlias)
	ops := []operation{opEncrypt, opDecrypt, opDescribe}
	revoking := []string{"AccessDeniedException", "AccessDenied", "NotFoundException", "DisabledException", "KMSInvalidStateException", "IncorrectKeyException"}
	f.Fuzz(func(t *testing.T, where uint8, code, msg string, status int, op uint8, useAlias bool) {
		g := diag{op: ops[int(op)%len(ops)], key: key, role: testRole, externalID: testOrg, principal: "arn:aws:iam::999988887777:user/ekm"}
		if useAlias {
			g.key = alias
		}
		resp := &smithyhttp.Response{Response: &http.Response{StatusCode: status, Header: http.Header{}, Body: io.NopCloser(bytes.NewReader(nil))}}
		var err error = &smithy.GenericAPIError{Code: code, Message: msg}
		if code == "" && msg == "" {
			err = errors.New("no api error")
		}
		err = &awshttp.ResponseError{ResponseError: &smithyhttp.ResponseError{Response: resp, Err: err}, RequestID: "r"}
		err = &smithy.OperationError{ServiceID: "KMS", OperationName: "Decrypt", Err: err}
		switch where % 3 {
		case 1:
			err = &assumeRoleError{err}
		case 2:
			err = &vendorCredentialsError{err}
		}
		e := g.diagnose(err)
		i := slices.IndexFunc(Spec().Codes, func(c kms.Code) bool { return c.Code == e.Code })
		if e == nil || i < 0 || !slices.Contains(diagSteps, e.Step) || e.Err != err {
			t.Fatalf("diagnosis %#v", e)
		}
		if c := Spec().Codes[i]; c.Class != e.Class || c.Step != "" && c.Step != e.Step {
			t.Fatalf("diagnosis %s: class %s step %q, Spec says %s %q", e.Code, e.Class, e.Step, c.Class, c.Step)
		}
		if e.Message == "" || len(e.Message) > maxDiagMessage || !utf8.ValidString(e.Message) {
			t.Fatalf("diagnosis message %q", e.Message)
		}
		if e.Class == kms.Revoked && (where%3 == 2 || !slices.Contains(revoking, code)) {
			t.Fatalf("%q (HTTP %d) diagnosed as a revocation: %s", code, status, e.Message)
		}
		if e.Class == kms.Revoked && where%3 == 1 && e.Code != CodeAssumeRoleDenied {
			t.Fatalf("AssumeRole failure %q diagnosed as %s", code, e.Code)
		}
		if strings.Contains(e.Message, "\n") {
			t.Fatalf("multi-line message %q", e.Message)
		}
	})
}
