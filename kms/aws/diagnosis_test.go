package aws

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/ekm-dev/ekm/emulator/awscloud"
	"github.com/ekm-dev/ekm/internal/awsonboard"
	"github.com/ekm-dev/ekm/kms"
)

// validate is what registration runs: preflight, then a round trip.
func validate(p *Provider) error {
	ctx := context.Background()
	if err := p.Preflight(ctx); err != nil {
		return err
	}
	w, err := p.Wrap(ctx, key32(), kms.AAD{OrgID: testOrg})
	if err != nil {
		return err
	}
	_, err = p.Unwrap(ctx, w, kms.AAD{OrgID: testOrg})
	return err
}

// TestDiagnosisPerStep leaves out or breaks each onboarding step and checks
// what registration (preflight + round trip) reports.
func TestDiagnosisPerStep(t *testing.T) {
	d := emuDriver(t, nil)
	vendor := emu.Vendor().ARN

	t.Run("ok", func(t *testing.T) {
		c := onboard(t, newOrg(), nil)
		if err := validate(c.open(t, d, "")); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("step 1: no key", func(t *testing.T) {
		root, err := emu.CreateAccount()
		if err != nil {
			t.Fatal(err)
		}
		// The policy names a key of the customer's account that does not
		// exist.
		arn := "arn:aws:kms:" + region + ":" + root.AccountID + ":key/00000000-0000-4000-8000-000000000000"
		c := onboardInto(t, root, newOrg(), func(o *awsonboard.Options) { o.Skip.Key, o.KeyARN = true, arn })
		checkErr(t, "preflight", validate(c.open(t, d, arn)), wantErr{kms.Revoked, CodeKeyNotFound, StepKey}, arn)
	})
	t.Run("step 1: asymmetric key", func(t *testing.T) {
		root, err := emu.CreateAccount()
		if err != nil {
			t.Fatal(err)
		}
		admin := &customer{kc: awskms.NewFromConfig(aws.Config{Region: region, HTTPClient: emu.HTTPClient(), Credentials: static(root)})}
		rsaKey := admin.newKey(t, types.KeySpecRsa2048)
		c := onboardInto(t, root, newOrg(), func(o *awsonboard.Options) { o.Skip.Key, o.KeyARN = true, rsaKey })
		checkErr(t, "preflight", validate(c.open(t, d, rsaKey)), wantErr{kms.Invalid, CodeKeyNotSymmetric, StepKey}, "RSA_2048")
	})
	t.Run("step 2: no permission policy", func(t *testing.T) {
		c := onboard(t, newOrg(), func(o *awsonboard.Options) { o.Skip.Policy, o.Skip.Attach = true, true })
		checkErr(t, "preflight", validate(c.open(t, d, "")), wantErr{kms.Revoked, CodePermissionMissing, StepPolicyOrKP}, "kms:DescribeKey", c.roleARN())
	})
	t.Run("step 3: no role", func(t *testing.T) {
		c := onboard(t, newOrg(), func(o *awsonboard.Options) { o.Skip.Role, o.Skip.Attach = true, true })
		checkErr(t, "preflight", validate(c.open(t, d, "")), wantErr{kms.Revoked, CodeAssumeRoleDenied, StepRole}, c.roleARN(), vendor, c.org)
	})
	t.Run("step 3: trust names another external id", func(t *testing.T) {
		org := newOrg()
		c := onboard(t, org, func(o *awsonboard.Options) { o.ExternalID = "org-someone-else" })
		c.org = org
		checkErr(t, "preflight", validate(c.open(t, d, "")), wantErr{kms.Revoked, CodeAssumeRoleDenied, StepRole}, `sts:ExternalId = "`+org+`"`)
	})
	t.Run("step 3: trust names another principal", func(t *testing.T) {
		other, err := emu.CreateAccount()
		if err != nil {
			t.Fatal(err)
		}
		c := onboard(t, newOrg(), func(o *awsonboard.Options) { o.VendorPrincipalARN = "arn:aws:iam::" + other.AccountID + ":root" })
		checkErr(t, "preflight", validate(c.open(t, d, "")), wantErr{kms.Revoked, CodeAssumeRoleDenied, StepRole})
	})
	t.Run("step 4: policy not attached", func(t *testing.T) {
		c := onboard(t, newOrg(), func(o *awsonboard.Options) { o.Skip.Attach = true })
		checkErr(t, "preflight", validate(c.open(t, d, "")), wantErr{kms.Revoked, CodePermissionMissing, StepPolicyOrKP}, "kms:DescribeKey")
	})
	t.Run("step 4: key policy does not delegate to IAM", func(t *testing.T) {
		c := onboard(t, newOrg(), nil)
		admin, err := emu.CreateUser(c.root.AccountID, "keyadmin", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}`)
		if err != nil {
			t.Fatal(err)
		}
		c.putKeyPolicy(t, `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"`+admin.ARN+`"},"Action":"kms:*","Resource":"*"}]}`)
		checkErr(t, "preflight", validate(c.open(t, d, "")), wantErr{kms.Revoked, CodeKeyPolicyDenied, StepAttach}, "delegates to IAM")
	})
	t.Run("key disabled", func(t *testing.T) {
		c := onboard(t, newOrg(), nil)
		p := c.open(t, d, "")
		w := mustWrap(t, p)
		if _, err := c.kc.DisableKey(context.Background(), &awskms.DisableKeyInput{KeyId: aws.String(c.res.KeyARN)}); err != nil {
			t.Fatal(err)
		}
		checkErr(t, "preflight", p.Preflight(context.Background()), wantErr{kms.Revoked, CodeKeyDisabled, StepKey})
		_, err := p.Unwrap(context.Background(), w, testAAD)
		checkErr(t, "unwrap", err, wantErr{kms.Revoked, CodeKeyDisabled, StepKey}, "enable-key")
	})
	t.Run("key pending deletion", func(t *testing.T) {
		c := onboard(t, newOrg(), nil)
		p := c.open(t, d, "")
		w := mustWrap(t, p)
		if _, err := c.kc.ScheduleKeyDeletion(context.Background(), &awskms.ScheduleKeyDeletionInput{KeyId: aws.String(c.res.KeyARN), PendingWindowInDays: aws.Int32(7)}); err != nil {
			t.Fatal(err)
		}
		checkErr(t, "preflight", p.Preflight(context.Background()), wantErr{kms.Revoked, CodeKeyPendingDeletion, StepKey}, "cancel-key-deletion")
		_, err := p.Unwrap(context.Background(), w, testAAD)
		checkErr(t, "unwrap", err, wantErr{kms.Revoked, CodeKeyPendingDeletion, StepKey})
		// Cancelled, the key is disabled; enabled, the same bytes come back.
		if _, err := c.kc.CancelKeyDeletion(context.Background(), &awskms.CancelKeyDeletionInput{KeyId: aws.String(c.res.KeyARN)}); err != nil {
			t.Fatal(err)
		}
		_, err = p.Unwrap(context.Background(), w, testAAD)
		checkErr(t, "unwrap after cancel", err, wantErr{kms.Revoked, CodeKeyDisabled, StepKey})
		if _, err := c.kc.EnableKey(context.Background(), &awskms.EnableKeyInput{KeyId: aws.String(c.res.KeyARN)}); err != nil {
			t.Fatal(err)
		}
		if _, err := p.Unwrap(context.Background(), w, testAAD); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("key policy deny", func(t *testing.T) {
		c := onboard(t, newOrg(), nil)
		p := c.open(t, d, "")
		w := mustWrap(t, p)
		c.addKeyPolicyStatement(t, `{"Sid":"DenyEkm","Effect":"Deny","Principal":{"AWS":"`+c.roleARN()+`"},"Action":"kms:Decrypt","Resource":"*"}`)
		_, err := p.Unwrap(context.Background(), w, testAAD)
		checkErr(t, "unwrap", err, wantErr{kms.Revoked, CodeKeyPolicyDenied, StepAttach}, "kms:Decrypt", "explicitly denies")
	})
	t.Run("per-project deny by encryption context", func(t *testing.T) {
		c := onboard(t, newOrg(), nil)
		p := c.open(t, d, "")
		a := kms.AAD{OrgID: c.org, ProjectID: "proj_a", Version: 1}
		b := kms.AAD{OrgID: c.org, ProjectID: "proj_b", Version: 1}
		pa, pb := key32(), key32()
		wa, err := p.Wrap(context.Background(), pa, a)
		if err != nil {
			t.Fatal(err)
		}
		wb, err := p.Wrap(context.Background(), pb, b)
		if err != nil {
			t.Fatal(err)
		}
		if err := awsonboard.DenyProject(context.Background(), c.o, c.res.KeyARN, "proj_a"); err != nil {
			t.Fatal(err)
		}
		_, err = p.Unwrap(context.Background(), wa, a)
		checkErr(t, "unwrap proj_a", err, wantErr{kms.Revoked, CodeKeyPolicyDenied, StepAttach}, "kms:Decrypt")
		_, err = p.Wrap(context.Background(), key32(), a)
		checkErr(t, "wrap proj_a", err, wantErr{kms.Revoked, CodeKeyPolicyDenied, StepAttach}, "kms:Encrypt")
		if got, err := p.Unwrap(context.Background(), wb, b); err != nil || !bytes.Equal(got, pb) {
			t.Fatalf("proj_b after proj_a was denied: %v", err)
		}
		// The org-level checks (no project in the context) still pass.
		if err := validate(p); err != nil {
			t.Fatal(err)
		}
		// The emulator's log shows what the customer's CloudTrail would.
		found := false
		for _, r := range emu.Requests() {
			if r.Operation == "kms.Decrypt" && r.EncryptionContext[kms.AADProject] == "proj_a" && r.ErrorCode == "AccessDeniedException" {
				found = r.EncryptionContext[kms.AADOrg] == c.org && r.EncryptionContext[kms.AADVersion] == "1"
			}
		}
		if !found {
			t.Fatal("the denied decrypt's encryption context is not in the request log")
		}
	})
	t.Run("grant instead of a permission policy", func(t *testing.T) {
		c := onboard(t, newOrg(), func(o *awsonboard.Options) { o.Skip.Attach = true })
		g, err := c.kc.CreateGrant(context.Background(), &awskms.CreateGrantInput{KeyId: aws.String(c.res.KeyARN), GranteePrincipal: aws.String(c.roleARN()),
			Operations: []types.GrantOperation{types.GrantOperationEncrypt, types.GrantOperationDecrypt, types.GrantOperationDescribeKey}})
		if err != nil {
			t.Fatal(err)
		}
		p := c.open(t, d, "")
		if err := validate(p); err != nil {
			t.Fatal(err)
		}
		w := mustWrap(t, p)
		if _, err := c.kc.RevokeGrant(context.Background(), &awskms.RevokeGrantInput{KeyId: aws.String(c.res.KeyARN), GrantId: g.GrantId}); err != nil {
			t.Fatal(err)
		}
		_, err = p.Unwrap(context.Background(), w, testAAD)
		checkErr(t, "unwrap", err, wantErr{kms.Revoked, CodePermissionMissing, StepPolicyOrKP}, "kms:Decrypt")
	})
	t.Run("alias re-pointed", func(t *testing.T) {
		c := onboard(t, newOrg(), func(o *awsonboard.Options) { o.Alias = "alias/ekm" })
		aliasARN := strings.Replace(c.res.KeyARN, "key/"+c.res.KeyID, "alias/ekm", 1)
		p := c.open(t, d, aliasARN)
		pt := key32()
		w, err := p.Wrap(context.Background(), pt, testAAD)
		if err != nil {
			t.Fatal(err)
		}
		if w.KeyVersion != c.res.KeyARN {
			t.Fatalf("wrap recorded %q, want the resolved key %q", w.KeyVersion, c.res.KeyARN)
		}
		other := c.newKey(t, types.KeySpecSymmetricDefault)
		c.pointAlias(t, other)
		_, err = p.Unwrap(context.Background(), w, testAAD)
		checkErr(t, "unwrap", err, wantErr{kms.Revoked, CodeAliasRepointed, StepKey}, "alias/ekm", "not a rotation")
		c.pointAlias(t, c.res.KeyARN)
		if got, err := p.Unwrap(context.Background(), w, testAAD); err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("unwrap after the alias is pointed back: %v", err)
		}
	})
	t.Run("foreign key version", func(t *testing.T) {
		c := onboard(t, newOrg(), nil)
		p := c.open(t, d, "")
		w := mustWrap(t, p)
		other := c.newKey(t, types.KeySpecSymmetricDefault)
		w.KeyVersion = other
		_, err := p.Unwrap(context.Background(), w, testAAD)
		checkErr(t, "unwrap", err, wantErr{kms.Invalid, CodeWrongKey, ""})
	})
	t.Run("key in another region", func(t *testing.T) {
		c := onboard(t, newOrg(), nil)
		arn := strings.Replace(c.res.KeyARN, ":"+region+":", ":eu-central-1:", 1)
		checkErr(t, "preflight", validate(c.open(t, d, arn)), wantErr{kms.Revoked, CodeKeyNotFound, StepKey}, "eu-central-1")
	})
	t.Run("registered by another org", func(t *testing.T) {
		c := onboard(t, newOrg(), nil)
		// Check is syntax only (the lifecycle enforces that external_id
		// belongs to the caller); AWS then refuses the other org's session
		// because the trust policy names the customer's org.
		other := newOrg()
		p, err := d.open(other, kms.Params{ParamRoleARN: c.roleARN(), ParamKMSARN: c.res.KeyARN, ParamExternalID: other})
		if err != nil {
			t.Fatal(err)
		}
		checkErr(t, "preflight", validate(p), wantErr{kms.Revoked, CodeAssumeRoleDenied, StepRole})
	})
}

// onboardInto runs the onboarding in an existing account.
func onboardInto(t testing.TB, root awscloud.Credentials, org string, mod func(*awsonboard.Options)) *customer {
	t.Helper()
	c := &customer{t: t, root: root, org: org}
	c.o = awsonboard.Options{HTTPClient: emu.HTTPClient(), Credentials: static(root), Region: region, VendorPrincipalARN: emu.Vendor().ARN, ExternalID: org}
	cfg := aws.Config{Region: region, HTTPClient: emu.HTTPClient(), Credentials: static(root)}
	c.kc, c.ic = awskms.NewFromConfig(cfg), iam.NewFromConfig(cfg)
	if mod != nil {
		mod(&c.o)
	}
	var err error
	if c.res, err = awsonboard.Run(context.Background(), c.o); err != nil {
		t.Fatal(err)
	}
	return c
}

func mustWrap(t *testing.T, p *Provider) kms.Wrapped {
	t.Helper()
	w, err := p.Wrap(context.Background(), key32(), testAAD)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func (c *customer) putKeyPolicy(t testing.TB, doc string) {
	t.Helper()
	if _, err := c.kc.PutKeyPolicy(context.Background(), &awskms.PutKeyPolicyInput{KeyId: aws.String(c.res.KeyARN), PolicyName: aws.String("default"),
		Policy: aws.String(doc), BypassPolicyLockoutSafetyCheck: true}); err != nil {
		t.Fatal(err)
	}
}

func (c *customer) addKeyPolicyStatement(t testing.TB, st string) {
	t.Helper()
	cur, err := c.kc.GetKeyPolicy(context.Background(), &awskms.GetKeyPolicyInput{KeyId: aws.String(c.res.KeyARN), PolicyName: aws.String("default")})
	if err != nil {
		t.Fatal(err)
	}
	doc, err := awsonboard.AddStatement(aws.ToString(cur.Policy), st)
	if err != nil {
		t.Fatal(err)
	}
	c.putKeyPolicy(t, doc)
}

func (c *customer) pointAlias(t testing.TB, keyARN string) {
	t.Helper()
	if _, err := c.kc.UpdateAlias(context.Background(), &awskms.UpdateAliasInput{AliasName: aws.String("alias/ekm"), TargetKeyId: aws.String(keyARN)}); err != nil {
		t.Fatal(err)
	}
}

// TestSessions: the credentials cache per role. A trust policy change or a
// deleted role is noticed at the next AssumeRole (after SessionRefresh, or
// at once when KMS denies); an STS outage keeps the current session in use
// until it nears expiry.
func TestSessions(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{}
	d := emuDriver(t, func(c *Config) { c.Now, c.SessionRefresh = clock.Now, time.Minute })
	assumes := func() int { return emu.Counters()["sts.AssumeRole"] }

	t.Run("cached, refreshed after SessionRefresh", func(t *testing.T) {
		c := onboard(t, newOrg(), nil)
		p := c.open(t, d, "")
		n := assumes()
		w := mustWrap(t, p)
		for range 5 {
			if _, err := p.Unwrap(ctx, w, testAAD); err != nil {
				t.Fatal(err)
			}
		}
		if got := assumes() - n; got != 1 {
			t.Fatalf("%d AssumeRole calls for 6 KMS calls, want 1", got)
		}
		// Another provider for the same role, org and external id shares
		// the session.
		if _, err := c.open(t, d, "").Unwrap(ctx, w, testAAD); err != nil || assumes()-n != 1 {
			t.Fatalf("second provider: %v, %d AssumeRole calls", err, assumes()-n)
		}
		clock.Advance(time.Minute)
		if _, err := p.Unwrap(ctx, w, testAAD); err != nil || assumes()-n != 2 {
			t.Fatalf("after the refresh period: %v, %d AssumeRole calls", err, assumes()-n)
		}
	})
	t.Run("trust policy changed", func(t *testing.T) {
		c := onboard(t, newOrg(), nil)
		p := c.open(t, d, "")
		w := mustWrap(t, p)
		c.setTrust(t, awsonboard.TrustPolicy(emu.Vendor().ARN, "org-not-yours"))
		// The session is still valid (AWS evaluates trust only in
		// AssumeRole) until the refresh period ends.
		if _, err := p.Unwrap(ctx, w, testAAD); err != nil {
			t.Fatal(err)
		}
		clock.Advance(time.Minute)
		_, err := p.Unwrap(ctx, w, testAAD)
		checkErr(t, "unwrap", err, wantErr{kms.Revoked, CodeAssumeRoleDenied, StepRole})
		c.setTrust(t, awsonboard.TrustPolicy(emu.Vendor().ARN, c.org))
		if _, err := p.Unwrap(ctx, w, testAAD); err != nil {
			t.Fatalf("after the trust policy is restored: %v", err)
		}
	})
	t.Run("role deleted", func(t *testing.T) {
		c := onboard(t, newOrg(), nil)
		p := c.open(t, d, "")
		w := mustWrap(t, p)
		if err := c.detach(); err != nil {
			t.Fatal(err)
		}
		if _, err := c.ic.DeleteRole(ctx, &iam.DeleteRoleInput{RoleName: aws.String(c.roleName())}); err != nil {
			t.Fatal(err)
		}
		// KMS denies the old session; ekm assumes the role again to find
		// out why: the role is gone (step 3), not a missing permission.
		_, err := p.Unwrap(ctx, w, testAAD)
		checkErr(t, "unwrap", err, wantErr{kms.Revoked, CodeAssumeRoleDenied, StepRole})
		// Re-created with the same name, trust and policy: works again.
		if _, err := c.ic.CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String(c.roleName()),
			AssumeRolePolicyDocument: aws.String(awsonboard.TrustPolicy(emu.Vendor().ARN, c.org))}); err != nil {
			t.Fatal(err)
		}
		if err := c.attach(); err != nil {
			t.Fatal(err)
		}
		if _, err := p.Unwrap(ctx, w, testAAD); err != nil {
			t.Fatalf("after the role is re-created: %v", err)
		}
	})
	t.Run("STS outage keeps the session", func(t *testing.T) {
		c := onboard(t, newOrg(), nil)
		p := c.open(t, d, "")
		w := mustWrap(t, p)
		id, err := emu.InjectFault(awscloud.Fault{Host: "sts", Operation: "sts.AssumeRole", Status: 503})
		if err != nil {
			t.Fatal(err)
		}
		defer emu.RemoveFault(id)
		clock.Advance(time.Minute) // past the refresh period
		if _, err := p.Unwrap(ctx, w, testAAD); err != nil {
			t.Fatalf("STS down, session still valid: %v", err)
		}
		clock.Advance(DefaultSessionDuration) // past expiry
		_, err = p.Unwrap(ctx, w, testAAD)
		checkErr(t, "unwrap with an expired session and STS down", err, wantErr{kms.Outage, CodeServiceError, ""})
		emu.RemoveFault(id)
		if _, err := p.Unwrap(ctx, w, testAAD); err != nil {
			t.Fatalf("STS back: %v", err)
		}
	})
}

func (c *customer) setTrust(t testing.TB, doc string) {
	t.Helper()
	if _, err := c.ic.UpdateAssumeRolePolicy(context.Background(), &iam.UpdateAssumeRolePolicyInput{RoleName: aws.String(c.roleName()), PolicyDocument: aws.String(doc)}); err != nil {
		t.Fatal(err)
	}
}
