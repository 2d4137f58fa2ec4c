package aws

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/ekm-dev/ekm/ekmtest"
	"github.com/ekm-dev/ekm/internal/awsonboard"
	"github.com/ekm-dev/ekm/kms/aws"
)

// revocationProbeInterval is short so the test is fast; the guarantee
// checked is relative to it. The role sessions are renewed every interval
// too (--aws-session-refresh defaults to the probe interval), which is what
// bounds a trust policy change.
const revocationProbeInterval = 500 * time.Millisecond

// revocationBound is the product's guarantee: a revocation is enforced
// within one probe interval (plus the KMS round trip), here with 5 s of
// margin for a loaded CI machine.
const revocationBound = revocationProbeInterval + 5*time.Second

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

func check(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func revocations() []revocation {
	ctx := context.Background()
	keyID := func(f *fixture) *string { return awssdk.String(f.cust.Result.KeyARN) }
	trust := func(f *fixture, externalID string) error {
		_, err := f.cust.IAM.UpdateAssumeRolePolicy(ctx, &iam.UpdateAssumeRolePolicyInput{RoleName: awssdk.String(f.cust.RoleName()),
			PolicyDocument: awssdk.String(awsonboard.TrustPolicy(f.env.AWS.Vendor().ARN, externalID))})
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
			revoke:  func(t *testing.T, f *fixture) { check(t, trust(f, "org-0000000000000000000000other")) },
			restore: func(t *testing.T, f *fixture) { check(t, trust(f, f.env.OrgID)) }},
		{name: "role policy detached", code: aws.CodePermissionMissing,
			revoke:  func(t *testing.T, f *fixture) { check(t, detach(f)) },
			restore: func(t *testing.T, f *fixture) { check(t, attach(f)) }},
		{name: "role deleted", code: aws.CodeAssumeRoleDenied,
			revoke: func(t *testing.T, f *fixture) {
				check(t, detach(f))
				_, err := f.cust.IAM.DeleteRole(ctx, &iam.DeleteRoleInput{RoleName: awssdk.String(f.cust.RoleName())})
				check(t, err)
			},
			// The same role again (a new role id): trust and policy.
			restore: func(t *testing.T, f *fixture) {
				_, err := f.cust.IAM.CreateRole(ctx, &iam.CreateRoleInput{RoleName: awssdk.String(f.cust.RoleName()),
					AssumeRolePolicyDocument: awssdk.String(awsonboard.TrustPolicy(f.env.AWS.Vendor().ARN, f.env.OrgID))})
				check(t, err)
				check(t, attach(f))
			}},
		{name: "key disabled", code: aws.CodeKeyDisabled,
			revoke: func(t *testing.T, f *fixture) {
				_, err := f.cust.KMS.DisableKey(ctx, &awskms.DisableKeyInput{KeyId: keyID(f)})
				check(t, err)
			},
			restore: func(t *testing.T, f *fixture) {
				_, err := f.cust.KMS.EnableKey(ctx, &awskms.EnableKeyInput{KeyId: keyID(f)})
				check(t, err)
			}},
		{name: "key scheduled for deletion", code: aws.CodeKeyPendingDeletion,
			revoke: func(t *testing.T, f *fixture) {
				_, err := f.cust.KMS.ScheduleKeyDeletion(ctx, &awskms.ScheduleKeyDeletionInput{KeyId: keyID(f), PendingWindowInDays: awssdk.Int32(7)})
				check(t, err)
			},
			// Cancelling leaves the key disabled: enable it too.
			restore: func(t *testing.T, f *fixture) {
				_, err := f.cust.KMS.CancelKeyDeletion(ctx, &awskms.CancelKeyDeletionInput{KeyId: keyID(f)})
				check(t, err)
				_, err = f.cust.KMS.EnableKey(ctx, &awskms.EnableKeyInput{KeyId: keyID(f)})
				check(t, err)
			}},
		{name: "key policy deny", code: aws.CodeKeyPolicyDenied,
			revoke: func(t *testing.T, f *fixture) {
				cur, err := f.cust.KMS.GetKeyPolicy(ctx, &awskms.GetKeyPolicyInput{KeyId: keyID(f), PolicyName: awssdk.String("default")})
				check(t, err)
				defaultPolicy = awssdk.ToString(cur.Policy)
				addKeyPolicyStatement(t, f.cust, `{"Sid":"DenyEkm","Effect":"Deny","Principal":{"AWS":"`+f.cust.RoleARN()+`"},"Action":["kms:Encrypt","kms:Decrypt"],"Resource":"*"}`)
			},
			restore: func(t *testing.T, f *fixture) { putKeyPolicy(t, f.cust, defaultPolicy) }},
		{name: "grant revoked", code: aws.CodePermissionMissing, grant: true,
			setup: func(o *awsonboard.Options) { o.Skip.Attach = true },
			revoke: func(t *testing.T, f *fixture) {
				out, err := f.cust.KMS.ListGrants(ctx, &awskms.ListGrantsInput{KeyId: keyID(f)})
				check(t, err)
				for _, g := range out.Grants {
					_, err := f.cust.KMS.RevokeGrant(ctx, &awskms.RevokeGrantInput{KeyId: keyID(f), GrantId: g.GrantId})
					check(t, err)
				}
			},
			restore: func(t *testing.T, f *fixture) { check(t, grant(f.cust)) }},
		{name: "alias re-pointed", code: aws.CodeAliasRepointed, alias: true,
			setup: func(o *awsonboard.Options) { o.Alias = "alias/ekm" },
			revoke: func(t *testing.T, f *fixture) {
				k, err := f.cust.KMS.CreateKey(ctx, &awskms.CreateKeyInput{KeySpec: types.KeySpecSymmetricDefault})
				check(t, err)
				_, err = f.cust.KMS.UpdateAlias(ctx, &awskms.UpdateAliasInput{AliasName: awssdk.String("alias/ekm"), TargetKeyId: k.KeyMetadata.Arn})
				check(t, err)
			},
			restore: func(t *testing.T, f *fixture) {
				_, err := f.cust.KMS.UpdateAlias(ctx, &awskms.UpdateAliasInput{AliasName: awssdk.String("alias/ekm"), TargetKeyId: keyID(f)})
				check(t, err)
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
	type latency struct {
		kind string
		d    time.Duration
	}
	var latencies []latency
	for _, rc := range revocations() {
		t.Run(rc.name, func(t *testing.T) {
			cust := env.NewAWSCustomer(t, rc.setup)
			run(t, cust)
			if rc.grant {
				check(t, grant(cust))
			}
			kmsARN := ""
			if rc.alias {
				kmsARN = cust.AliasARN()
			}
			f := register(t, env, cust, strings.ReplaceAll(rc.name, " ", "-"), kmsARN, 1)
			p := f.projects[0]
			f.mustRead(p, "before revocation")
			f.waitStatus("valid", 10*time.Second)

			t0 := time.Now()
			rc.revoke(t, f)
			var refusal result
			waitFor(t, revocationBound+5*time.Second, "the first refusal", func() bool {
				refusal = f.read(p)
				return !refusal.ok
			})
			d := time.Since(t0)
			latencies = append(latencies, latency{rc.name, d})
			t.Logf("%s: first refusal %v after the customer's action", rc.name, d.Round(time.Millisecond))
			if refusal.status != http.StatusForbidden || refusal.code != codeRevoked {
				t.Fatalf("refusal = %v", refusal)
			}
			if d > revocationBound {
				t.Errorf("revocation took %v, guarantee is %v", d, revocationBound)
			}
			for range 5 {
				r := f.read(p)
				if r.ok || r.code != codeRevoked {
					t.Fatalf("read after refusal: %v", r)
				}
				if strings.Contains(r.body, "plaintext of") || strings.Contains(r.body, "secret "+p.id) {
					t.Fatalf("refusal carries plaintext: %s", r.body)
				}
			}
			k := f.waitStatus("unavailable", 10*time.Second)
			if k.StatusDetail == nil || k.StatusDetail.Code != rc.code {
				t.Fatalf("status_detail = %+v, want code %s", k.StatusDetail, rc.code)
			}
			evs := keyEvents(t, env, "external_key.unavailable", f.ekID)
			if len(evs) != 1 || evs[0].field("code") != rc.code {
				t.Fatalf("external_key.unavailable events = %+v", evs)
			}

			rc.restore(t, f)
			f.waitStatus("valid", 15*time.Second)
			f.mustReadEventually(p, "after restoring access")
			if evs := keyEvents(t, env, "external_key.restored", f.ekID); len(evs) != 1 {
				t.Fatalf("external_key.restored events = %+v", evs)
			}
		})
	}
	var b strings.Builder
	for _, l := range latencies {
		fmt.Fprintf(&b, "\n  %-34s %v", l.kind, l.d.Round(time.Millisecond))
	}
	t.Logf("revocation latency (probe interval %v):%s", revocationProbeInterval, b.String())
}
