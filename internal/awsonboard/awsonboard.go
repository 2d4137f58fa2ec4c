// Package awsonboard performs a customer's AWS onboarding steps for ekm
// through the official AWS SDK (IAM and KMS), exactly as docs/aws.md tells
// a customer to do with the console or the CLI:
//
//  1. create a symmetric KMS key (SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT);
//  2. create a customer-managed IAM policy allowing kms:Encrypt,
//     kms:Decrypt and kms:DescribeKey on that key (PermissionPolicy);
//  3. create an IAM role trusting ekm's principal with
//     sts:ExternalId = <organization id> (TrustPolicy);
//  4. attach the policy to the role;
//
// and optionally an alias for the key. Each step can be skipped, so tests
// can leave one out and check that ekm diagnoses it. `ekm dev` and the
// end-to-end tests use it against the emulator; it has no emulator-specific
// code, only the credentials, region and HTTP client it is given.
package awsonboard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/kms"
)

// Placeholders in the policy templates.
const (
	VendorPrincipalPlaceholder = "<EKM_PRINCIPAL_ARN>"
	ExternalIDPlaceholder      = "<ORGANIZATION_ID>"
	KeyARNPlaceholder          = "<KEY_ARN>"
	ProjectIDPlaceholder       = "<PROJECT_ID>"
)

// TrustPolicyTemplate is the role's trust policy (step 3): only ekm's
// principal may assume the role, and only when it names the customer's
// organization as external id.
const TrustPolicyTemplate = `{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Sid": "AllowEkmWithOrganizationExternalId",
      "Effect": "Allow",
      "Principal": {"AWS": "<EKM_PRINCIPAL_ARN>"},
      "Action": "sts:AssumeRole",
      "Condition": {"StringEquals": {"sts:ExternalId": "<ORGANIZATION_ID>"}}
    }
  ]
}`

// PermissionPolicyTemplate is the role's permission policy (step 2): the
// three operations ekm performs, on this one key.
const PermissionPolicyTemplate = `{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Sid": "EkmUsesThisKey",
      "Effect": "Allow",
      "Action": ["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"],
      "Resource": "<KEY_ARN>"
    }
  ]
}`

// DenyProjectStatementTemplate is a key-policy statement that revokes one
// project: ekm binds every wrap to its project through the encryption
// context key "ekm:project", so denying that value refuses the project's
// Encrypt and Decrypt while other projects keep working.
const DenyProjectStatementTemplate = `{
  "Sid": "DenyEkmProject",
  "Effect": "Deny",
  "Principal": {"AWS": "*"},
  "Action": ["kms:Encrypt", "kms:Decrypt"],
  "Resource": "*",
  "Condition": {"StringEquals": {"kms:EncryptionContext:ekm:project": "<PROJECT_ID>"}}
}`

// jsonString quotes s for insertion inside a JSON string literal.
func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b[1 : len(b)-1])
}

// TrustPolicy fills TrustPolicyTemplate.
func TrustPolicy(vendorPrincipalARN, externalID string) string {
	return strings.NewReplacer(VendorPrincipalPlaceholder, jsonString(vendorPrincipalARN),
		ExternalIDPlaceholder, jsonString(externalID)).Replace(TrustPolicyTemplate)
}

// PermissionPolicy fills PermissionPolicyTemplate.
func PermissionPolicy(keyARN string) string {
	return strings.ReplaceAll(PermissionPolicyTemplate, KeyARNPlaceholder, jsonString(keyARN))
}

// DenyProjectStatement fills DenyProjectStatementTemplate.
func DenyProjectStatement(projectID string) string {
	return strings.ReplaceAll(DenyProjectStatementTemplate, ProjectIDPlaceholder, jsonString(projectID))
}

// AddStatement appends a statement (a JSON object) to a policy document
// and returns the new document (compact JSON).
func AddStatement(policy, statement string) (string, error) {
	var doc map[string]any
	if err := json.Unmarshal([]byte(policy), &doc); err != nil {
		return "", fmt.Errorf("policy: %w", err)
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(statement), &st); err != nil {
		return "", fmt.Errorf("statement: %w", err)
	}
	var list []any
	switch s := doc["Statement"].(type) {
	case []any:
		list = s
	case map[string]any:
		list = []any{s}
	case nil:
	default:
		return "", errors.New("policy: Statement is neither an object nor a list")
	}
	doc["Statement"] = append(list, st)
	b, err := json.Marshal(doc)
	return string(b), err
}

// Skip leaves out onboarding steps.
type Skip struct {
	Key, Policy, Role, Attach bool
}

// Options describe one customer's onboarding.
type Options struct {
	// HTTPClient reaches AWS (or the emulator, through a dial override);
	// nil means the SDK's default client.
	HTTPClient *http.Client
	// Credentials of the customer's administrator (e.g. its root user).
	Credentials aws.CredentialsProvider
	// Region of the key.
	Region string
	// VendorPrincipalARN is ekm's principal (user or role ARN) and
	// ExternalID the customer's organization id.
	VendorPrincipalARN string
	ExternalID         string
	// RoleName and PolicyName default to "ekm-kms-access".
	RoleName, PolicyName string
	// Alias, when set ("alias/..."), is created for the key.
	Alias string
	// KeyARN is an existing key to use when Skip.Key is set.
	KeyARN string
	// Description of the key.
	Description string
	Skip        Skip
}

// Result is what a customer gives ekm: the key and the role.
type Result struct {
	KeyARN    string
	KeyID     string
	PolicyARN string
	RoleARN   string
	Alias     string
}

// Run performs the onboarding steps not skipped, in order.
func Run(ctx context.Context, o Options) (Result, error) {
	if o.Credentials == nil || o.Region == "" || o.VendorPrincipalARN == "" || o.ExternalID == "" {
		return Result{}, errors.New("awsonboard: Credentials, Region, VendorPrincipalARN and ExternalID are required")
	}
	if o.RoleName == "" {
		o.RoleName = "ekm-kms-access"
	}
	if o.PolicyName == "" {
		o.PolicyName = "ekm-kms-access"
	}
	cfg := aws.Config{Region: o.Region, Credentials: o.Credentials}
	if o.HTTPClient != nil {
		cfg.HTTPClient = o.HTTPClient
	}
	kc := kms.NewFromConfig(cfg)
	// IAM is global; the SDK picks its endpoint and signing region from
	// the partition of the key's region.
	ic := iam.NewFromConfig(cfg)
	res := Result{KeyARN: o.KeyARN}
	if !o.Skip.Key {
		out, err := kc.CreateKey(ctx, &kms.CreateKeyInput{Description: aws.String(o.Description)})
		if err != nil {
			return res, fmt.Errorf("awsonboard: step 1, create key: %w", err)
		}
		res.KeyARN, res.KeyID = aws.ToString(out.KeyMetadata.Arn), aws.ToString(out.KeyMetadata.KeyId)
	}
	if res.KeyARN == "" {
		return res, errors.New("awsonboard: no key: step 1 skipped and Options.KeyARN empty")
	}
	if o.Alias != "" {
		if _, err := kc.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String(o.Alias), TargetKeyId: aws.String(res.KeyARN)}); err != nil {
			return res, fmt.Errorf("awsonboard: create alias: %w", err)
		}
		res.Alias = o.Alias
	}
	if !o.Skip.Policy {
		out, err := ic.CreatePolicy(ctx, &iam.CreatePolicyInput{PolicyName: aws.String(o.PolicyName),
			PolicyDocument: aws.String(PermissionPolicy(res.KeyARN)),
			Description:    aws.String("Lets ekm encrypt and decrypt with one KMS key")})
		if err != nil {
			return res, fmt.Errorf("awsonboard: step 2, create policy: %w", err)
		}
		res.PolicyARN = aws.ToString(out.Policy.Arn)
	}
	if !o.Skip.Role {
		out, err := ic.CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String(o.RoleName),
			AssumeRolePolicyDocument: aws.String(TrustPolicy(o.VendorPrincipalARN, o.ExternalID)),
			Description:              aws.String("Assumed by ekm for organization " + o.ExternalID)})
		if err != nil {
			return res, fmt.Errorf("awsonboard: step 3, create role: %w", err)
		}
		res.RoleARN = aws.ToString(out.Role.Arn)
	}
	if !o.Skip.Attach {
		if res.PolicyARN == "" || res.RoleARN == "" {
			return res, errors.New("awsonboard: step 4 needs the policy and the role (steps 2 and 3)")
		}
		if _, err := ic.AttachRolePolicy(ctx, &iam.AttachRolePolicyInput{RoleName: aws.String(o.RoleName), PolicyArn: aws.String(res.PolicyARN)}); err != nil {
			return res, fmt.Errorf("awsonboard: step 4, attach policy: %w", err)
		}
	}
	return res, nil
}

// DenyProject adds DenyProjectStatement(projectID) to the key's policy
// (the customer revoking one project).
func DenyProject(ctx context.Context, o Options, keyARN, projectID string) error {
	cfg := aws.Config{Region: o.Region, Credentials: o.Credentials}
	if o.HTTPClient != nil {
		cfg.HTTPClient = o.HTTPClient
	}
	kc := kms.NewFromConfig(cfg)
	cur, err := kc.GetKeyPolicy(ctx, &kms.GetKeyPolicyInput{KeyId: aws.String(keyARN), PolicyName: aws.String("default")})
	if err != nil {
		return fmt.Errorf("awsonboard: get key policy: %w", err)
	}
	doc, err := AddStatement(aws.ToString(cur.Policy), DenyProjectStatement(projectID))
	if err != nil {
		return err
	}
	if _, err := kc.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: aws.String(keyARN), Policy: aws.String(doc), PolicyName: aws.String("default")}); err != nil {
		return fmt.Errorf("awsonboard: put key policy: %w", err)
	}
	return nil
}
