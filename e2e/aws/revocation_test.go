package aws

import (
	"context"
	"strings"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/ekm-dev/ekm/e2e/e2ekit"
	"github.com/ekm-dev/ekm/ekmtest"
	"github.com/ekm-dev/ekm/internal/awsonboard"
	"github.com/ekm-dev/ekm/kms/aws"
)

// revocationProbeInterval is short so the test is fast; the guarantee
// checked is relative to it. The role sessions are renewed every interval
// too (--aws-session-refresh defaults to the probe interval), which is what
// bounds a trust policy change.
const revocationProbeInterval = 500 * time.Millisecond

type revocation struct {
	name string
	code string // diagnosis on the external key
	// setup changes the customer's onboarding; alias registers the alias.
	setup func(o *awsonboard.Options)
	grant bool // the role's access is a grant, not its policy
	alias bool
	// revoke is the customer's action; restore undoes it.
	revoke, restore func(t *testing.T, f *fixture)
}

func revocations() []revocation {
	ctx := context.Background()
	keyID := func(f *fixture) *string { return awssdk.String(f.cust.Result.KeyARN) }
	trust := func(f *fixture, externalID string) error {
		_, err := f.cust.IAM.UpdateAssumeRolePolicy(ctx, &iam.UpdateAssumeRolePolicyInput{RoleName: awssdk.String(f.cust.RoleName()),
			PolicyDocument: awssdk.String(awsonboard.TrustPolicy(f.Env.AWS.Vendor().ARN, externalID))})
		return err
	}
	attach := func(f *fixture) error {
		_, err := f.cust.IAM.AttachRolePolicy(ctx, &iam.AttachRolePolicyInput{RoleName: awssdk.String(f.cust.RoleName()), PolicyArn: awssdk.String(f.cust.Result.PolicyARN)})
		return err
	}
	detach := func(f *fixture) error {
		_, err := f.cust.IAM.DetachRolePolicy(ctx, &iam.DetachRolePolicyInput{RoleName: awssdk.String(f.cust.RoleName()), PolicyArn: awssdk.String(f.cust.Result.PolicyARN)})
		return err
	}
	var defaultPolicy string
	return []revocation{
		{name: "trust policy external id changed", code: aws.CodeAssumeRoleDenied,
			revoke:  func(t *testing.T, f *fixture) { e2ekit.Check(t, trust(f, "org-0000000000000000000000other")) },
			restore: func(t *testing.T, f *fixture) { e2ekit.Check(t, trust(f, f.Env.OrgID)) }},
		{name: "role policy detached", code: aws.CodePermissionMissing,
			revoke:  func(t *testing.T, f *fixture) { e2ekit.Check(t, detach(f)) },
			restore: func(t *testing.T, f *fixture) { e2ekit.Check(t, attach(f)) }},
		{name: "role deleted", code: aws.CodeAssumeRoleDenied,
			revoke: func(t *testing.T, f *fixture) {
				e2ekit.Check(t, detach(f))
				_, err := f.cust.IAM.DeleteRole(ctx, &iam.DeleteRoleInput{RoleName: awssdk.String(f.cust.RoleName())})
				e2ekit.Check(t, err)
			},
			// The same role again (a new role id): trust and policy.
			restore: func(t *testing.T, f *fixture) {
				_, err := f.cust.IAM.CreateRole(ctx, &iam.CreateRoleInput{RoleName: awssdk.String(f.cust.RoleName()),
					AssumeRolePolicyDocument: awssdk.String(awsonboard.TrustPolicy(f.Env.AWS.Vendor().ARN, f.Env.OrgID))})
				e2ekit.Check(t, err)
				e2ekit.Check(t, attach(f))
			}},
		{name: "key disabled", code: aws.CodeKeyDisabled,
			revoke: func(t *testing.T, f *fixture) {
				_, err := f.cust.KMS.DisableKey(ctx, &awskms.DisableKeyInput{KeyId: keyID(f)})
				e2ekit.Check(t, err)
			},
			restore: func(t *testing.T, f *fixture) {
				_, err := f.cust.KMS.EnableKey(ctx, &awskms.EnableKeyInput{KeyId: keyID(f)})
				e2ekit.Check(t, err)
			}},
		{name: "key scheduled for deletion", code: aws.CodeKeyPendingDeletion,
			revoke: func(t *testing.T, f *fixture) {
				_, err := f.cust.KMS.ScheduleKeyDeletion(ctx, &awskms.ScheduleKeyDeletionInput{KeyId: keyID(f), PendingWindowInDays: awssdk.Int32(7)})
				e2ekit.Check(t, err)
			},
			// Cancelling leaves the key disabled: enable it too.
			restore: func(t *testing.T, f *fixture) {
				_, err := f.cust.KMS.CancelKeyDeletion(ctx, &awskms.CancelKeyDeletionInput{KeyId: keyID(f)})
				e2ekit.Check(t, err)
				_, err = f.cust.KMS.EnableKey(ctx, &awskms.EnableKeyInput{KeyId: keyID(f)})
				e2ekit.Check(t, err)
			}},
		{name: "key policy deny", code: aws.CodeKeyPolicyDenied,
			revoke: func(t *testing.T, f *fixture) {
				cur, err := f.cust.KMS.GetKeyPolicy(ctx, &awskms.GetKeyPolicyInput{KeyId: keyID(f), PolicyName: awssdk.String("default")})
				e2ekit.Check(t, err)
				defaultPolicy = awssdk.ToString(cur.Policy)
				addKeyPolicyStatement(t, f.cust, `{"Sid":"DenyEkm","Effect":"Deny","Principal":{"AWS":"`+f.cust.RoleARN()+`"},"Action":["kms:Encrypt","kms:Decrypt"],"Resource":"*"}`)
			},
			restore: func(t *testing.T, f *fixture) { putKeyPolicy(t, f.cust, defaultPolicy) }},
		{name: "grant revoked", code: aws.CodePermissionMissing, grant: true,
			setup: func(o *awsonboard.Options) { o.Skip.Attach = true },
			revoke: func(t *testing.T, f *fixture) {
				out, err := f.cust.KMS.ListGrants(ctx, &awskms.ListGrantsInput{KeyId: keyID(f)})
				e2ekit.Check(t, err)
				for _, g := range out.Grants {
					_, err := f.cust.KMS.RevokeGrant(ctx, &awskms.RevokeGrantInput{KeyId: keyID(f), GrantId: g.GrantId})
					e2ekit.Check(t, err)
				}
			},
			restore: func(t *testing.T, f *fixture) { e2ekit.Check(t, grant(f.cust)) }},
		{name: "alias re-pointed", code: aws.CodeAliasRepointed, alias: true,
			setup: func(o *awsonboard.Options) { o.Alias = "alias/ekm" },
			revoke: func(t *testing.T, f *fixture) {
				k, err := f.cust.KMS.CreateKey(ctx, &awskms.CreateKeyInput{KeySpec: types.KeySpecSymmetricDefault})
				e2ekit.Check(t, err)
				_, err = f.cust.KMS.UpdateAlias(ctx, &awskms.UpdateAliasInput{AliasName: awssdk.String("alias/ekm"), TargetKeyId: k.KeyMetadata.Arn})
				e2ekit.Check(t, err)
			},
			restore: func(t *testing.T, f *fixture) {
				_, err := f.cust.KMS.UpdateAlias(ctx, &awskms.UpdateAliasInput{AliasName: awssdk.String("alias/ekm"), TargetKeyId: keyID(f)})
				e2ekit.Check(t, err)
			}},
	}
}

// grant gives the customer's role encrypt, decrypt and describe on its key
// by a KMS grant (instead of an attached policy).
func grant(c *ekmtest.AWSCustomer) error {
	_, err := c.KMS.CreateGrant(context.Background(), &awskms.CreateGrantInput{KeyId: awssdk.String(c.Result.KeyARN), GranteePrincipal: awssdk.String(c.RoleARN()),
		Operations: []types.GrantOperation{types.GrantOperationEncrypt, types.GrantOperationDecrypt, types.GrantOperationDescribeKey}})
	return err
}

// TestRevocation: for each way a customer can withdraw access in AWS,
// reads that were being served from cache are refused with
// customer_key_unavailable within the probe interval (+ 5 s); nothing is
// served after the first refusal; the key shows unavailable with the
// diagnosis and one audit event; restoring access brings back the same
// bytes. The latency of each kind is logged (docs/PERFORMANCE.md).
func TestRevocation(t *testing.T) {
	env := ekmtest.Start(t, ekmtest.Options{AWS: true, ProbeInterval: revocationProbeInterval})
	rs := &e2ekit.Revocations{ProbeInterval: revocationProbeInterval, Refusals: 5, ReadEventually: true}
	for _, rc := range revocations() {
		t.Run(rc.name, func(t *testing.T) {
			cust := env.NewAWSCustomer(t, rc.setup)
			run(t, cust)
			if rc.grant {
				e2ekit.Check(t, grant(cust))
			}
			kmsARN := ""
			if rc.alias {
				kmsARN = cust.AliasARN()
			}
			f := register(t, env, cust, strings.ReplaceAll(rc.name, " ", "-"), kmsARN, 1)
			rs.Check(f.ExternalKey, f.Projects[0], rc.name, rc.code, func() { rc.revoke(t, f) }, func() { rc.restore(t, f) })
		})
	}
	rs.LogLatencies(t)
}
