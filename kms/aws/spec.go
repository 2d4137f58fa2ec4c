// Package aws is the kms provider for customer keys in AWS KMS.
package aws

import "github.com/ekm-dev/ekm/kms"

// Type is the external key type served by this package.
const Type = "aws"

// Param names on the external key object (OpenAI's aws shape).
const (
	ParamRoleARN    = "role_arn"
	ParamKMSARN     = "kms_arn"
	ParamExternalID = "external_id"
)

// Onboarding steps (kms.Error.Step), numbered as in docs/aws.md.
const (
	StepKey        = "1" // symmetric KMS key
	StepPolicy     = "2" // IAM policy with kms:Encrypt, kms:Decrypt, kms:DescribeKey
	StepRole       = "3" // role trusting ekm's principal with sts:ExternalId
	StepAttach     = "4" // policy attached (and key policy delegating to IAM)
	StepPolicyOrKP = "2,4"
)

// Spec describes the aws type. It needs no configuration.
func Spec() kms.Spec {
	return kms.Spec{
		Type:  Type,
		Title: "AWS KMS",
		Fields: []kms.Field{
			{Name: ParamExternalID, Required: true, MaxLen: 256, Description: "the sts:ExternalId your role's trust policy requires: your organization id (or one of its project ids)"},
			{Name: ParamKMSARN, Required: true, MaxLen: 2048, Description: "ARN of the symmetric KMS key: a key ARN, a multi-Region (mrk-) key ARN or an alias ARN"},
			{Name: ParamRoleARN, Required: true, MaxLen: 2048, Description: "ARN of the IAM role ekm assumes in your account"},
		},
		Steps: []kms.Step{
			{ID: StepKey, Title: "Create a symmetric KMS key"},
			{ID: StepPolicy, Title: "Create an IAM policy allowing kms:Encrypt, kms:Decrypt and kms:DescribeKey on the key"},
			{ID: StepRole, Title: "Create an IAM role that trusts ekm's principal with your ExternalId"},
			{ID: StepAttach, Title: "Attach the policy to the role (and let the key policy delegate to IAM)"},
		},
		Codes: []kms.Code{
			{Code: kms.CodeUnsupportedType, Class: kms.Invalid, Description: "this server does not run the aws driver"},
		},
	}
}
