package aws

import (
	"errors"
	"strings"
	"testing"

	"github.com/ekm-dev/ekm/kms"
)

const (
	testOrg   = "org-0123456789abcdefghjkmnpqrs"
	testKey   = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	testRole  = "arn:aws:iam::111122223333:role/ekm-kms-access"
	testAlias = "arn:aws:kms:eu-west-1:111122223333:alias/ekm"
)

func validParams() kms.Params {
	return kms.Params{ParamRoleARN: testRole, ParamKMSARN: testKey, ParamExternalID: testOrg}
}

func checkOnly(org string, p kms.Params, parts ...string) (kms.Params, error) {
	if len(parts) == 0 {
		parts = []string{PartitionAWS}
	}
	enabled := map[string]bool{}
	for _, p := range parts {
		enabled[p] = true
	}
	out, _, err := checkParams(org, p, enabled)
	return out, err
}

func TestCheckAccepts(t *testing.T) {
	for _, tc := range []struct {
		name  string
		mod   func(kms.Params)
		parts []string
	}{
		{"key ARN", nil, nil},
		{"multi-Region key", func(p kms.Params) {
			p[ParamKMSARN] = "arn:aws:kms:us-east-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab"
		}, nil},
		{"alias ARN", func(p kms.Params) { p[ParamKMSARN] = testAlias }, nil},
		{"alias with slashes and colons", func(p kms.Params) { p[ParamKMSARN] = "arn:aws:kms:eu-west-1:111122223333:alias/team/ekm:prod" }, nil},
		{"role with path", func(p kms.Params) { p[ParamRoleARN] = "arn:aws:iam::111122223333:role/service-role/ekm/ekm-access" }, nil},
		{"cross-account key", func(p kms.Params) { p[ParamRoleARN] = "arn:aws:iam::444455556666:role/r" }, nil},
		{"project id as external id", func(p kms.Params) { p[ParamExternalID] = "proj_0123456789abcdefghjkmnpqrs" }, nil},
		{"us-gov", func(p kms.Params) {
			p[ParamKMSARN] = "arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
			p[ParamRoleARN] = "arn:aws-us-gov:iam::111122223333:role/r"
		}, []string{PartitionGov}},
		{"china", func(p kms.Params) {
			p[ParamKMSARN] = "arn:aws-cn:kms:cn-north-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
			p[ParamRoleARN] = "arn:aws-cn:iam::111122223333:role/r"
		}, []string{PartitionChina}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := validParams()
			if tc.mod != nil {
				tc.mod(p)
			}
			out, err := checkOnly(testOrg, p, tc.parts...)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range p {
				if out[k] != v {
					t.Fatalf("%s normalised %q to %q", k, v, out[k])
				}
			}
			// The region is derived, and a stored key reopens.
			k, _ := parseKMSARN(p[ParamKMSARN])
			if out[ParamRegion] != k.Region {
				t.Fatalf("region %q for %s", out[ParamRegion], p[ParamKMSARN])
			}
			if again, err := checkOnly(testOrg, out, tc.parts...); err != nil || len(again) != len(out) {
				t.Fatalf("stored params refused: %v", err)
			}
		})
	}
}

func TestCheckRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, field, value string
		code, param        string
		parts              []string
	}{
		{"bare key id", ParamKMSARN, "1234abcd-12ab-34cd-56ef-1234567890ab", CodeInvalidKMSARN, ParamKMSARN, nil},
		{"alias name", ParamKMSARN, "alias/ekm", CodeInvalidKMSARN, ParamKMSARN, nil},
		{"upper-case key id", ParamKMSARN, "arn:aws:kms:eu-west-1:111122223333:key/1234ABCD-12ab-34cd-56ef-1234567890ab", CodeInvalidKMSARN, ParamKMSARN, nil},
		{"short account", ParamKMSARN, "arn:aws:kms:eu-west-1:11112222333:key/1234abcd-12ab-34cd-56ef-1234567890ab", CodeInvalidKMSARN, ParamKMSARN, nil},
		{"not kms", ParamKMSARN, "arn:aws:s3:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab", CodeInvalidKMSARN, ParamKMSARN, nil},
		{"unknown partition", ParamKMSARN, "arn:aws-iso:kms:us-iso-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab", CodeInvalidKMSARN, ParamKMSARN, nil},
		{"region of another partition", ParamKMSARN, "arn:aws:kms:us-gov-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab", CodeRegionNotSupported, ParamKMSARN, nil},
		{"not a region", ParamKMSARN, "arn:aws:kms:evil.example.com:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab", CodeInvalidKMSARN, ParamKMSARN, nil},
		{"region with dots", ParamKMSARN, "arn:aws:kms:eu-west-1.evil:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab", CodeInvalidKMSARN, ParamKMSARN, nil},
		{"region with underscore", ParamKMSARN, "arn:aws:kms:eu-we_st-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab", CodeInvalidKMSARN, ParamKMSARN, nil},
		{"aws managed key", ParamKMSARN, "arn:aws:kms:eu-west-1:111122223333:alias/aws/s3", CodeAWSManagedKeyRefused, ParamKMSARN, nil},
		{"alias with space", ParamKMSARN, "arn:aws:kms:eu-west-1:111122223333:alias/a b", CodeInvalidKMSARN, ParamKMSARN, nil},
		{"trailing space", ParamKMSARN, testKey + " ", CodeInvalidKMSARN, ParamKMSARN, nil},
		{"key resource", ParamKMSARN, "arn:aws:kms:eu-west-1:111122223333:keys/1234abcd-12ab-34cd-56ef-1234567890ab", CodeInvalidKMSARN, ParamKMSARN, nil},
		{"partition not enabled", ParamKMSARN, "arn:aws-cn:kms:cn-north-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab", CodePartitionMismatch, ParamRoleARN, nil},
		{"role: user", ParamRoleARN, "arn:aws:iam::111122223333:user/ekm", CodeInvalidRoleARN, ParamRoleARN, nil},
		{"role: region", ParamRoleARN, "arn:aws:iam:eu-west-1:111122223333:role/r", CodeInvalidRoleARN, ParamRoleARN, nil},
		{"role: empty name", ParamRoleARN, "arn:aws:iam::111122223333:role/", CodeInvalidRoleARN, ParamRoleARN, nil},
		{"role: double slash", ParamRoleARN, "arn:aws:iam::111122223333:role/a//b", CodeInvalidRoleARN, ParamRoleARN, nil},
		{"role: name too long", ParamRoleARN, "arn:aws:iam::111122223333:role/" + strings.Repeat("r", 65), CodeInvalidRoleARN, ParamRoleARN, nil},
		{"role: other partition", ParamRoleARN, "arn:aws-us-gov:iam::111122223333:role/r", CodePartitionMismatch, ParamRoleARN, nil},
		{"role: assumed-role", ParamRoleARN, "arn:aws:sts::111122223333:assumed-role/r/s", CodeInvalidRoleARN, ParamRoleARN, nil},
		{"external id: one char", ParamExternalID, "o", CodeInvalidExternalID, ParamExternalID, nil},
		{"external id: space", ParamExternalID, "org x", CodeInvalidExternalID, ParamExternalID, nil},
		{"external id: too long", ParamExternalID, strings.Repeat("o", 257), CodeParameterTooLong, ParamExternalID, nil},
		{"missing role", ParamRoleARN, "", CodeMissingParameter, ParamRoleARN, nil},
		{"unknown parameter", "regions", "eu-west-1", CodeUnknownParameter, "regions", nil},
		{"region not the key's", "region", "us-east-1", CodeRegionNotSupported, "region", nil},
		{"too long", ParamKMSARN, "arn:aws:kms:eu-west-1:111122223333:alias/" + strings.Repeat("a", 2048), CodeParameterTooLong, ParamKMSARN, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := validParams()
			p[tc.field] = tc.value
			_, err := checkOnly(testOrg, p, tc.parts...)
			var ke *kms.Error
			if !errors.As(err, &ke) || ke.Class != kms.Invalid || ke.Code != tc.code || ke.Param != tc.param || ke.Message == "" {
				t.Fatalf("got %v, want %s on %s", err, tc.code, tc.param)
			}
		})
	}
	// A partition the operator did not enable.
	p := validParams()
	p[ParamKMSARN] = "arn:aws-cn:kms:cn-north-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	p[ParamRoleARN] = "arn:aws-cn:iam::111122223333:role/r"
	if _, err := checkOnly(testOrg, p); kms.ClassOf(err) != kms.Invalid || !strings.Contains(err.Error(), CodePartitionNotEnabled) {
		t.Fatalf("aws-cn on an aws-only server: %v", err)
	}
	if _, err := checkOnly("org x", validParams()); err == nil || !strings.Contains(err.Error(), CodeInvalidOrgID) {
		t.Fatalf("bad org id: %v", err)
	}
}

func TestCheckHost(t *testing.T) {
	for _, tc := range []struct {
		url, service, region string
		ok                   bool
	}{
		{"https://kms.eu-west-1.amazonaws.com", "kms", "eu-west-1", true},
		{"https://kms-fips.us-east-1.amazonaws.com", "kms", "us-east-1", true},
		{"https://sts.us-gov-west-1.amazonaws.com", "sts", "us-gov-west-1", true},
		{"https://kms.cn-north-1.amazonaws.com.cn", "kms", "cn-north-1", true},
		{"https://kms.eu-west-1.amazonaws.com/", "kms", "eu-west-1", true},
		{"http://kms.eu-west-1.amazonaws.com", "kms", "eu-west-1", false},
		{"https://kms.eu-west-1.amazonaws.com:8443", "kms", "eu-west-1", false},
		{"https://kms.eu-west-2.amazonaws.com", "kms", "eu-west-1", false},
		{"https://sts.amazonaws.com", "sts", "us-east-1", false},
		{"https://kms.eu-west-1.api.aws", "kms", "eu-west-1", false},
		{"https://localhost:4566", "kms", "eu-west-1", false},
		{"https://u@kms.eu-west-1.amazonaws.com", "kms", "eu-west-1", false},
		{"https://kms.eu-west-1.amazonaws.com/x", "kms", "eu-west-1", false},
		{"https://kms.eu-west-1.amazonaws.com.cn", "kms", "eu-west-1", false},
	} {
		ep := endpointOf(t, tc.url)
		if err := checkHost(ep, tc.service, tc.region); (err == nil) != tc.ok {
			t.Errorf("%s for %s in %s: %v", tc.url, tc.service, tc.region, err)
		}
	}
}

func TestPrincipalOf(t *testing.T) {
	for in, want := range map[string]string{
		"arn:aws:iam::111122223333:user/ekm":                                   "arn:aws:iam::111122223333:user/ekm",
		"arn:aws:sts::111122223333:assumed-role/EnterpriseKeyManagement/i-123": "arn:aws:iam::111122223333:role/EnterpriseKeyManagement",
		"arn:aws-us-gov:sts::111122223333:assumed-role/r/s":                    "arn:aws-us-gov:iam::111122223333:role/r",
	} {
		if _, got := principalOf(in); got != want {
			t.Errorf("principalOf(%s) = %s, want %s", in, got, want)
		}
	}
}
