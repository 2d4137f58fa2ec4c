package aws

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/ekm-dev/ekm/kms"
)

// Registration (Check) diagnosis codes. Each is Class Invalid.
const (
	CodeInvalidRoleARN       = "invalid_role_arn"
	CodeInvalidKMSARN        = "invalid_kms_arn"
	CodeInvalidExternalID    = "invalid_external_id"
	CodePartitionNotEnabled  = "aws_partition_not_enabled"
	CodePartitionMismatch    = "aws_partition_mismatch"
	CodeRegionNotSupported   = "aws_region_not_supported"
	CodeUnknownParameter     = "unknown_parameter"
	CodeMissingParameter     = "missing_parameter"
	CodeParameterTooLong     = "parameter_too_long"
	CodeInvalidOrgID         = "invalid_org_id"
	CodeAWSManagedKeyRefused = "aws_managed_key_not_supported"
)

// Partitions ekm knows. The ARN's partition decides every host ekm calls:
// kms[-fips].<region>.<suffix> and sts[-fips].<region>.<suffix>, nothing
// else.
const (
	PartitionAWS   = "aws"
	PartitionChina = "aws-cn"
	PartitionGov   = "aws-us-gov"
)

type partition struct {
	id        string
	dnsSuffix string
	// regionRE is stricter than the SDK's partitions.json regionRegex
	// (which allows \w, i.e. underscores): lower-case letters and a number.
	regionRE *regexp.Regexp
	// homeRegion is where ekm asks STS who it is (GetCallerIdentity).
	homeRegion string
}

var partitions = map[string]partition{
	PartitionAWS:   {PartitionAWS, "amazonaws.com", regexp.MustCompile(`^(us|eu|ap|sa|ca|me|af|il|mx)-[a-z]{1,16}-[0-9]{1,2}$`), "us-east-1"},
	PartitionChina: {PartitionChina, "amazonaws.com.cn", regexp.MustCompile(`^cn-[a-z]{1,16}-[0-9]{1,2}$`), "cn-north-1"},
	PartitionGov:   {PartitionGov, "amazonaws.com", regexp.MustCompile(`^us-gov-[a-z]{1,16}-[0-9]{1,2}$`), "us-gov-west-1"},
}

// partitionOfRegion returns the partition whose region pattern matches.
func partitionOfRegion(region string) (partition, bool) {
	for _, p := range partitions {
		if p.regionRE.MatchString(region) {
			return p, true
		}
	}
	return partition{}, false
}

var (
	accountRE = regexp.MustCompile(`^[0-9]{12}$`)
	// Key ids: a UUID, or mrk- and 32 hex digits for a multi-Region key;
	// always lower case as AWS prints them.
	keyIDRE = regexp.MustCompile(`^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32})$`)
	// Alias names as KMS allows them (after "alias/"), 1-250 characters.
	aliasNameRE = regexp.MustCompile(`^[a-zA-Z0-9:/_-]{1,250}$`)
	// IAM role names; paths are segments of the same characters.
	roleNameRE    = regexp.MustCompile(`^[A-Za-z0-9_+=,.@-]{1,64}$`)
	pathSegmentRE = regexp.MustCompile(`^[A-Za-z0-9_+=,.@-]{1,128}$`)
	// STS ExternalId: 2-1224 of [\w+=,.@:/-].
	externalIDRE = regexp.MustCompile(`^[A-Za-z0-9_+=,.@:/-]{2,}$`) // and at most 1224 (the Spec bounds it lower)
	// The org id goes into the RoleSessionName ("ekm-<org>", [\w+=,.@-],
	// at most 64).
	orgIDRE = regexp.MustCompile(`^[A-Za-z0-9_+=,.@-]{1,60}$`)
)

// keyARN is a parsed kms_arn: a key (key/<id>, mrk- included) or an alias
// (alias/<name>) in one partition, region and account.
type keyARN struct {
	Partition, Region, Account string
	KeyID                      string // set for key ARNs
	Alias                      string // "alias/<name>" for alias ARNs
}

func (k keyARN) isAlias() bool { return k.Alias != "" }

func (k keyARN) String() string {
	res := "key/" + k.KeyID
	if k.isAlias() {
		res = k.Alias
	}
	return "arn:" + k.Partition + ":kms:" + k.Region + ":" + k.Account + ":" + res
}

// sameHome reports whether o is in k's partition, region and account.
func (k keyARN) sameHome(o keyARN) bool {
	return k.Partition == o.Partition && k.Region == o.Region && k.Account == o.Account
}

// parseKMSARN parses a key or alias ARN strictly: a known partition, a
// region of that partition, a 12-digit account, a lower-case key id (or
// mrk- id) or an alias name. Bare key ids and alias names are refused: the
// ARN pins the account and the region ekm calls.
func parseKMSARN(s string) (keyARN, error) {
	bad := func(why string) (keyARN, error) {
		return keyARN{}, invalid(CodeInvalidKMSARN, ParamKMSARN, "kms_arn must be the ARN of a KMS key or alias, arn:<partition>:kms:<region>:<account>:key/<key-id> (or key/mrk-…, or alias/<name>): "+why)
	}
	f := strings.SplitN(s, ":", 6)
	if len(f) != 6 || f[0] != "arn" || f[2] != "kms" {
		return bad("it does not have that form")
	}
	p, ok := partitions[f[1]]
	if !ok {
		return bad(fmt.Sprintf("unknown partition %q (aws, aws-us-gov or aws-cn)", f[1]))
	}
	if !p.regionRE.MatchString(f[3]) {
		if _, other := partitionOfRegion(f[3]); other {
			return keyARN{}, invalid(CodeRegionNotSupported, ParamKMSARN, fmt.Sprintf("region %q is not in the %s partition of the ARN", f[3], p.id))
		}
		return bad(fmt.Sprintf("%q is not an AWS region", f[3]))
	}
	if !accountRE.MatchString(f[4]) {
		return bad("the account must be 12 digits")
	}
	k := keyARN{Partition: p.id, Region: f[3], Account: f[4]}
	switch {
	case strings.HasPrefix(f[5], "key/"):
		k.KeyID = strings.TrimPrefix(f[5], "key/")
		if !keyIDRE.MatchString(k.KeyID) {
			return bad("the key id must be a lower-case UUID or mrk- followed by 32 hex digits")
		}
	case strings.HasPrefix(f[5], "alias/"):
		name := strings.TrimPrefix(f[5], "alias/")
		if !aliasNameRE.MatchString(name) {
			return bad("an alias name is 1-250 of letters, digits and : / _ -")
		}
		if name == "aws" || strings.HasPrefix(name, "aws/") {
			return keyARN{}, invalid(CodeAWSManagedKeyRefused, ParamKMSARN, "alias/aws/… names an AWS managed key, whose key policy you cannot change; create a customer managed key (onboarding step 1)")
		}
		k.Alias = f[5]
	default:
		return bad("the resource must be key/<key-id> or alias/<name>")
	}
	return k, nil
}

// roleARN is a parsed role_arn.
type roleARN struct {
	Partition, Account string
	Path, Name         string
}

func (r roleARN) String() string {
	return "arn:" + r.Partition + ":iam::" + r.Account + ":role" + r.Path + r.Name
}

// parseRoleARN parses arn:<partition>:iam::<account>:role/<path/><name>.
func parseRoleARN(s string) (roleARN, error) {
	bad := func(why string) (roleARN, error) {
		return roleARN{}, invalid(CodeInvalidRoleARN, ParamRoleARN, "role_arn must be the ARN of an IAM role, arn:<partition>:iam::<account>:role/<name>: "+why)
	}
	f := strings.SplitN(s, ":", 6)
	if len(f) != 6 || f[0] != "arn" || f[2] != "iam" || f[3] != "" {
		return bad("it does not have that form")
	}
	p, ok := partitions[f[1]]
	if !ok {
		return bad(fmt.Sprintf("unknown partition %q (aws, aws-us-gov or aws-cn)", f[1]))
	}
	if !accountRE.MatchString(f[4]) {
		return bad("the account must be 12 digits")
	}
	rest, ok := strings.CutPrefix(f[5], "role/")
	if !ok {
		return bad("the resource must be role/<name>")
	}
	r := roleARN{Partition: p.id, Account: f[4], Path: "/"}
	segs := strings.Split(rest, "/")
	r.Name = segs[len(segs)-1]
	if !roleNameRE.MatchString(r.Name) {
		return bad("a role name is 1-64 of letters, digits and _ + = , . @ -")
	}
	for _, sg := range segs[:len(segs)-1] {
		if !pathSegmentRE.MatchString(sg) {
			return bad("the role path has an empty or invalid segment")
		}
		r.Path += sg + "/"
	}
	if len(r.Path) > 512 {
		return bad("the role path is longer than 512 characters")
	}
	return r, nil
}

// maxParamLen bounds every parameter before any parsing (the Spec's
// MaxLen of the longest field).
const maxParamLen = 2048

func invalid(code, param, msg string) error {
	return &kms.Error{Class: kms.Invalid, Code: code, Param: param, Message: msg}
}

// params is a checked registration.
type params struct {
	key        keyARN
	role       roleARN
	externalID string
}

// checkParams validates registration params for orgID against the
// partitions the operator enabled. It never touches the network.
func checkParams(orgID string, p kms.Params, enabled map[string]bool) (kms.Params, params, error) {
	if !orgIDRE.MatchString(orgID) {
		return nil, params{}, invalid(CodeInvalidOrgID, "", "the organization id is not valid for an AWS key")
	}
	limits := map[string]int{}
	for _, f := range Spec().Fields {
		limits[f.Name] = f.MaxLen
	}
	for k, v := range p {
		max, ok := limits[k]
		if k == ParamRegion {
			// Derived from kms_arn by Check and stored with the key; when
			// given back (a stored key reopened) it must agree.
			ok, max = true, 32
		}
		if !ok {
			return nil, params{}, invalid(CodeUnknownParameter, k, fmt.Sprintf("unknown parameter %q for an aws key", k))
		}
		if len(v) > max {
			return nil, params{}, invalid(CodeParameterTooLong, k, fmt.Sprintf("%s is longer than %d characters", k, max))
		}
	}
	for _, k := range []string{ParamRoleARN, ParamKMSARN, ParamExternalID} {
		if p[k] == "" {
			return nil, params{}, invalid(CodeMissingParameter, k, k+" is required")
		}
	}
	key, err := parseKMSARN(p[ParamKMSARN])
	if err != nil {
		return nil, params{}, err
	}
	role, err := parseRoleARN(p[ParamRoleARN])
	if err != nil {
		return nil, params{}, err
	}
	if role.Partition != key.Partition {
		return nil, params{}, invalid(CodePartitionMismatch, ParamRoleARN, fmt.Sprintf("role_arn is in partition %s and kms_arn in %s; a role can only be assumed in its own partition", role.Partition, key.Partition))
	}
	if !enabled[key.Partition] {
		return nil, params{}, invalid(CodePartitionNotEnabled, ParamKMSARN, fmt.Sprintf("this server is not set up for keys in the %s partition", key.Partition))
	}
	ext := p[ParamExternalID]
	if len(ext) > 1224 || !externalIDRE.MatchString(ext) {
		return nil, params{}, invalid(CodeInvalidExternalID, ParamExternalID, "external_id must be 2-1224 of letters, digits and _ + = , . @ : / - (your organization id or one of its project ids)")
	}
	if r, ok := p[ParamRegion]; ok && r != key.Region {
		return nil, params{}, invalid(CodeRegionNotSupported, ParamRegion, fmt.Sprintf("region must be omitted: it is the region of kms_arn (%s), which is where ekm calls KMS", key.Region))
	}
	out := kms.Params{ParamRoleARN: role.String(), ParamKMSARN: key.String(), ParamExternalID: ext, ParamRegion: key.Region}
	return out, params{key: key, role: role, externalID: ext}, nil
}
