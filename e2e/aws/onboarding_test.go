package aws

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/openai/openai-go/v3"

	"github.com/ekm-dev/ekm/client"
	"github.com/ekm-dev/ekm/e2e/e2ekit"
	"github.com/ekm-dev/ekm/ekmtest"
	"github.com/ekm-dev/ekm/internal/awsonboard"
	"github.com/ekm-dev/ekm/kms/aws"
)

// TestOnboarding: every missing or wrong onboarding step is refused with
// its diagnosis and nothing is stored; then the key is registered with the
// official OpenAI SDK, a project is created on it, and the Files and crypto
// APIs work under it; every STS and KMS request ekm made is in the audit
// log with its request id.
func TestOnboarding(t *testing.T) {
	env := ekmtest.Start(t, ekmtest.Options{AWS: true, ProbeInterval: time.Hour, CacheTTL: time.Minute})
	ctx := context.Background()
	admin := env.Admin()

	t.Run("Refusals", func(t *testing.T) { refusals(t, env) })

	cust := env.OnboardAWS(t, nil)
	ek, err := admin.Admin.Organization.ExternalKeys.New(ctx, awsKey("prod", cust, "", env.OrgID))
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	if ek.Type != "aws" || ek.RoleArn != cust.RoleARN() || ek.KmsArn != cust.Result.KeyARN || ek.ExternalID != env.OrgID ||
		ek.Region != ekmtest.AWSRegion || ek.WorkspaceID != env.OrgID {
		t.Fatalf("external key object: %s", ek.RawJSON())
	}
	if v := e2ekit.KeyObject(t, env, ek.ID); v.Status != "valid" || v.CurrentKEKVersion != cust.Result.KeyARN {
		t.Fatalf("external key health: %+v", v)
	}
	if v, err := admin.Admin.Organization.ExternalKeys.Validate(ctx, ek.ID); err != nil || v.Status != "valid" {
		t.Fatalf("validate = %v, %v", v, err)
	}
	proj, err := admin.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "ekm", ExternalKeyID: openai.String(ek.ID)})
	if err != nil {
		t.Fatalf("create project: %v", err)
	}
	if proj.ExternalKeyID != ek.ID {
		t.Fatalf("project not on the key: %s", proj.RawJSON())
	}
	apiKey := e2ekit.ServiceAccountKey(t, env, proj.ID)
	e2ekit.CheckDataPlane(t, env, apiKey)
	data := env.Client(apiKey)
	page, err := data.Files.List(ctx, openai.FileListParams{})
	if err != nil || len(page.Data) != 1 || page.Data[0].Filename != "plans.txt" {
		t.Fatalf("list files: %v", err)
	}
	items, err := e2ekit.Crypto(t, env, apiKey).EncryptBatch(ctx, []client.Item{{Data: []byte("a")}, {Data: []byte("b")}})
	if err != nil || len(items) != 2 {
		t.Fatalf("batch: %v", err)
	}

	// The project key's wrap is bound to the project: KMS saw ekm's
	// encryption context with the org, project and version, and the key
	// ARN was recorded.
	sawProject := false
	for _, r := range env.AWS.Requests() {
		if r.Operation == "kms.Encrypt" && r.EncryptionContext["ekm:project"] == proj.ID {
			sawProject = r.EncryptionContext["ekm:org"] == env.OrgID && r.EncryptionContext["ekm:version"] == "1" && r.Resource == cust.Result.KeyARN
		}
	}
	if !sawProject {
		t.Fatal("no kms:Encrypt with the project's encryption context")
	}
	auditKMSCalls(t, env)
}

func refusals(t *testing.T, env *ekmtest.Env) {
	ctx := context.Background()
	admin := env.Admin()
	before := e2ekit.CountExternalKeys(t, env)
	awsCalls := func() int {
		n := 0
		for op, c := range env.AWS.Counters() {
			if op == "sts.AssumeRole" || strings.HasPrefix(op, "kms.") {
				n += c
			}
		}
		return n
	}

	ok := env.OnboardAWS(t, nil)
	// A key of the customer's account that does not exist, named in the
	// permission policy.
	noKey := env.NewAWSCustomer(t, nil)
	missingKey := "arn:aws:kms:" + ekmtest.AWSRegion + ":" + noKey.Root.AccountID + ":key/00000000-0000-4000-8000-000000000000"
	noKey.Options.Skip.Key, noKey.Options.KeyARN = true, missingKey
	run(t, noKey)
	// An RSA key.
	rsa := env.NewAWSCustomer(t, nil)
	out, err := rsa.KMS.CreateKey(ctx, &awskms.CreateKeyInput{KeySpec: types.KeySpecRsa2048, KeyUsage: types.KeyUsageTypeEncryptDecrypt})
	if err != nil {
		t.Fatal(err)
	}
	rsa.Options.Skip.Key, rsa.Options.KeyARN = true, awssdk.ToString(out.KeyMetadata.Arn)
	run(t, rsa)
	noPolicy := env.OnboardAWS(t, func(o *awsonboard.Options) { o.Skip.Policy, o.Skip.Attach = true, true })
	noRole := env.OnboardAWS(t, func(o *awsonboard.Options) { o.Skip.Role, o.Skip.Attach = true, true })
	noAttach := env.OnboardAWS(t, func(o *awsonboard.Options) { o.Skip.Attach = true })
	otherOrg := env.OnboardAWS(t, func(o *awsonboard.Options) { o.ExternalID = "org-0000000000000000000000other" })
	disabled := env.OnboardAWS(t, nil)
	if _, err := disabled.KMS.DisableKey(ctx, &awskms.DisableKeyInput{KeyId: awssdk.String(disabled.Result.KeyARN)}); err != nil {
		t.Fatal(err)
	}
	pending := env.OnboardAWS(t, nil)
	if _, err := pending.KMS.ScheduleKeyDeletion(ctx, &awskms.ScheduleKeyDeletionInput{KeyId: awssdk.String(pending.Result.KeyARN), PendingWindowInDays: awssdk.Int32(7)}); err != nil {
		t.Fatal(err)
	}
	denied := env.OnboardAWS(t, nil)
	addKeyPolicyStatement(t, denied, `{"Sid":"NoEkm","Effect":"Deny","Principal":{"AWS":"*"},"Action":"kms:*","Resource":"*",
		"Condition":{"StringLike":{"aws:PrincipalArn":"`+denied.RoleARN()+`"}}}`)
	keyARN := ok.Result.KeyARN
	acct := ok.Root.AccountID

	for _, tc := range []struct {
		name                 string
		c                    *ekmtest.AWSCustomer
		kmsARN, roleARN, ext string
		code, step, param    string
		static               bool // refused before any AWS call
	}{
		{name: "step 1: no such key", c: noKey, kmsARN: missingKey, code: aws.CodeKeyNotFound, step: aws.StepKey},
		{name: "step 1: RSA key", c: rsa, kmsARN: rsa.Options.KeyARN, code: aws.CodeKeyNotSymmetric, step: aws.StepKey},
		{name: "step 1: key disabled", c: disabled, code: aws.CodeKeyDisabled, step: aws.StepKey},
		{name: "step 1: key pending deletion", c: pending, code: aws.CodeKeyPendingDeletion, step: aws.StepKey},
		{name: "step 2: no permission policy", c: noPolicy, code: aws.CodePermissionMissing, step: aws.StepPolicyOrKP},
		{name: "step 3: no role", c: noRole, code: aws.CodeAssumeRoleDenied, step: aws.StepRole},
		{name: "step 3: trust policy names another external id", c: otherOrg, code: aws.CodeAssumeRoleDenied, step: aws.StepRole},
		{name: "step 4: policy not attached", c: noAttach, code: aws.CodePermissionMissing, step: aws.StepPolicyOrKP},
		{name: "step 4: key policy denies the role", c: denied, code: aws.CodeKeyPolicyDenied, step: aws.StepAttach},
		{name: "external id of another org", c: ok, ext: "org-0000000000000000000000other", code: "org_mismatch", param: "external_id", static: true},
		{name: "bare key id", c: ok, kmsARN: ok.Result.KeyID, code: aws.CodeInvalidKMSARN, param: "kms_arn", static: true},
		{name: "region injection", c: ok, kmsARN: "arn:aws:kms:eu-west-1.evil.example:" + acct + ":key/" + ok.Result.KeyID, code: aws.CodeInvalidKMSARN, param: "kms_arn", static: true},
		{name: "region of another partition", c: ok, kmsARN: strings.Replace(keyARN, "eu-west-1", "us-gov-west-1", 1), code: aws.CodeRegionNotSupported, param: "kms_arn", static: true},
		{name: "partition not enabled", c: ok, kmsARN: strings.Replace(strings.Replace(keyARN, "arn:aws:", "arn:aws-cn:", 1), "eu-west-1", "cn-north-1", 1),
			roleARN: strings.Replace(ok.RoleARN(), "arn:aws:", "arn:aws-cn:", 1), code: aws.CodePartitionNotEnabled, param: "kms_arn", static: true},
		{name: "AWS managed key", c: ok, kmsARN: "arn:aws:kms:eu-west-1:" + acct + ":alias/aws/s3", code: aws.CodeAWSManagedKeyRefused, param: "kms_arn", static: true},
		{name: "role ARN of a user", c: ok, roleARN: "arn:aws:iam::" + acct + ":user/admin", code: aws.CodeInvalidRoleARN, param: "role_arn", static: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := awsKey(tc.name, tc.c, tc.kmsARN, env.OrgID)
			if tc.roleARN != "" {
				p.OfAws.RoleArn = tc.roleARN
			}
			if tc.ext != "" {
				p.OfAws.ExternalID = tc.ext
			}
			calls := awsCalls()
			_, err := admin.Admin.Organization.ExternalKeys.New(ctx, p)
			e2ekit.CheckRefused(t, err, e2ekit.Refusal{Code: tc.code, Step: tc.step, Param: tc.param}, "ASIA", env.AWS.Vendor().SecretAccessKey)
			if tc.static && awsCalls() != calls {
				t.Fatalf("a statically invalid registration reached AWS")
			}
		})
	}
	if after := e2ekit.CountExternalKeys(t, env); after != before {
		t.Fatalf("refused registrations stored keys: %d -> %d", before, after)
	}
}

func run(t *testing.T, c *ekmtest.AWSCustomer) {
	t.Helper()
	var err error
	if c.Result, err = awsonboard.Run(context.Background(), c.Options); err != nil {
		t.Fatal(err)
	}
}

func addKeyPolicyStatement(t *testing.T, c *ekmtest.AWSCustomer, st string) {
	t.Helper()
	ctx := context.Background()
	cur, err := c.KMS.GetKeyPolicy(ctx, &awskms.GetKeyPolicyInput{KeyId: awssdk.String(c.Result.KeyARN), PolicyName: awssdk.String("default")})
	if err != nil {
		t.Fatal(err)
	}
	doc, err := awsonboard.AddStatement(awssdk.ToString(cur.Policy), st)
	if err != nil {
		t.Fatal(err)
	}
	putKeyPolicy(t, c, doc)
}

func putKeyPolicy(t *testing.T, c *ekmtest.AWSCustomer, doc string) {
	t.Helper()
	if _, err := c.KMS.PutKeyPolicy(context.Background(), &awskms.PutKeyPolicyInput{KeyId: awssdk.String(c.Result.KeyARN),
		PolicyName: awssdk.String("default"), Policy: awssdk.String(doc)}); err != nil {
		t.Fatal(err)
	}
}

// auditKMSCalls checks that every STS and KMS request ekm made (its
// AssumeRole as the vendor, its KMS calls as a role session "ekm-<org>") is
// named by a kms.call event of the org's audit log.
func auditKMSCalls(t *testing.T, env *ekmtest.Env) {
	t.Helper()
	vendor := env.AWS.Vendor().ARN
	sent := map[string]string{}
	for _, r := range env.AWS.Requests() {
		if r.Operation == "sts.AssumeRole" && r.Principal == vendor || strings.HasSuffix(r.Principal, "/ekm-"+env.OrgID) {
			sent[r.RequestID] = r.Operation
		}
	}
	e2ekit.WaitKMSCallsAudited(t, env, "STS and KMS", sent)
}

// TestDocsPolicies applies the exact policy documents docs/aws.md prints
// (its json blocks, placeholders replaced as the doc says) to the emulator,
// with the SDK calls its aws CLI commands make, and registers the key; then
// adds the doc's per-project statement to the key policy.
func TestDocsPolicies(t *testing.T) {
	env := ekmtest.Start(t, ekmtest.Options{AWS: true, ProbeInterval: time.Hour})
	ctx := context.Background()
	trust, perm, deny := docBlock(t, "trust-policy.json"), docBlock(t, "permission-policy.json"), docBlock(t, "deny-project-statement.json")
	// The doc prints the very templates internal/awsonboard (ekm dev, the
	// other tests) applies.
	if trust != awsonboard.TrustPolicyTemplate || perm != awsonboard.PermissionPolicyTemplate || deny != awsonboard.DenyProjectStatementTemplate {
		t.Fatal("docs/aws.md and internal/awsonboard disagree on a policy document")
	}
	fill := strings.NewReplacer(awsonboard.VendorPrincipalPlaceholder, env.AWS.Vendor().ARN, awsonboard.ExternalIDPlaceholder, env.OrgID)
	cust := env.NewAWSCustomer(t, nil)

	// Step 1: aws kms create-key --description "ekm KEK"
	key, err := cust.KMS.CreateKey(ctx, &awskms.CreateKeyInput{Description: awssdk.String("ekm KEK")})
	if err != nil {
		t.Fatal(err)
	}
	keyARN := awssdk.ToString(key.KeyMetadata.Arn)
	// Step 2: aws iam create-policy --policy-name ekm-kms-access --policy-document file://permission-policy.json
	pol, err := cust.IAM.CreatePolicy(ctx, &iam.CreatePolicyInput{PolicyName: awssdk.String("ekm-kms-access"),
		PolicyDocument: awssdk.String(strings.ReplaceAll(perm, awsonboard.KeyARNPlaceholder, keyARN))})
	if err != nil {
		t.Fatal(err)
	}
	// Step 3: aws iam create-role --role-name ekm-kms-access --assume-role-policy-document file://trust-policy.json
	role, err := cust.IAM.CreateRole(ctx, &iam.CreateRoleInput{RoleName: awssdk.String("ekm-kms-access"), AssumeRolePolicyDocument: awssdk.String(fill.Replace(trust))})
	if err != nil {
		t.Fatal(err)
	}
	// Step 4: aws iam attach-role-policy --role-name ekm-kms-access --policy-arn $POLICY_ARN
	if _, err := cust.IAM.AttachRolePolicy(ctx, &iam.AttachRolePolicyInput{RoleName: awssdk.String("ekm-kms-access"), PolicyArn: pol.Policy.Arn}); err != nil {
		t.Fatal(err)
	}
	cust.Result = awsonboard.Result{KeyARN: keyARN, KeyID: awssdk.ToString(key.KeyMetadata.KeyId), PolicyARN: awssdk.ToString(pol.Policy.Arn), RoleARN: awssdk.ToString(role.Role.Arn)}

	f := register(t, env, cust, "from the docs", "", 2)
	f.MustRead(f.Projects[0], "registered from the docs")

	// The per-project statement, added to the key policy as the doc says
	// (get-key-policy, add the statement, put-key-policy), refuses that
	// project's encryption context in KMS, for ekm and anyone else.
	denied, other := f.Projects[0], f.Projects[1]
	cur, err := cust.KMS.GetKeyPolicy(ctx, &awskms.GetKeyPolicyInput{KeyId: awssdk.String(keyARN), PolicyName: awssdk.String("default")})
	if err != nil {
		t.Fatal(err)
	}
	doc, err := awsonboard.AddStatement(awssdk.ToString(cur.Policy), strings.ReplaceAll(deny, awsonboard.ProjectIDPlaceholder, denied.ID))
	if err != nil {
		t.Fatal(err)
	}
	putKeyPolicy(t, cust, doc)
	encrypt := func(project string) error {
		_, err := cust.KMS.Encrypt(ctx, &awskms.EncryptInput{KeyId: awssdk.String(keyARN), Plaintext: []byte("x"),
			EncryptionContext: map[string]string{"ekm:org": env.OrgID, "ekm:project": project, "ekm:version": "1"}})
		return err
	}
	if err := encrypt(denied.ID); err == nil || !strings.Contains(err.Error(), "AccessDeniedException") {
		t.Fatalf("encrypt for the denied project: %v", err)
	}
	if err := encrypt(other.ID); err != nil {
		t.Fatalf("encrypt for another project: %v", err)
	}
}

// docBlock returns the json block that follows the first mention of name
// (in backquotes) in docs/aws.md.
func docBlock(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("../../docs/aws.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(b), "`"+name+"`")
	if !ok {
		t.Fatalf("docs/aws.md does not name %s", name)
	}
	_, after, ok = strings.Cut(after, "```json\n")
	if !ok {
		t.Fatalf("no json block after %s in docs/aws.md", name)
	}
	block, _, ok := strings.Cut(after, "\n```")
	if !ok {
		t.Fatalf("unterminated json block after %s", name)
	}
	return block
}
