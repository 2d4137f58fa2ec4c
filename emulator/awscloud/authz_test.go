package awscloud

import (
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	iamtypes "github.com/aws/aws-sdk-go-v2/service/iam/types"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
)

func putKeyPolicy(t *testing.T, kc *kms.Client, keyARN, doc string) {
	t.Helper()
	if _, err := kc.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: &keyARN, Policy: &doc, PolicyName: aws.String("default")}); err != nil {
		t.Fatal(err)
	}
}

// TestKMSAuthorization walks the ways AWS grants and refuses access to a
// key: identity policy (with the default key policy's delegation), key
// policy alone, grants, explicit denies.
func TestKMSAuthorization(t *testing.T) {
	e := shared
	c := onboardCustomer(t, e, "us-east-1", "org-authz")
	acct := c.root.AccountID
	enc := func(kc *kms.Client) error {
		_, err := kc.Encrypt(ctx, &kms.EncryptInput{KeyId: &c.keyARN, Plaintext: []byte("x")})
		return err
	}
	// 1. Identity policy + default key policy (delegation): allowed.
	if err := enc(c.vendor); err != nil {
		t.Fatal(err)
	}
	// 2. A key policy without the account delegation: the identity policy
	// no longer suffices.
	noDelegation := `{"Version":"2012-10-17","Statement":[{"Sid":"admin","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::` + acct + `:root"},"Action":["kms:PutKeyPolicy","kms:GetKeyPolicy","kms:CreateGrant","kms:RevokeGrant","kms:ListGrants","kms:DescribeKey"],"Resource":"*"}]}`
	putKeyPolicy(t, c.admin, c.keyARN, noDelegation)
	err := enc(c.vendor)
	if msg := wantCode(t, err, "AccessDeniedException"); msg != "User: arn:aws:sts::"+acct+":assumed-role/ekm/ekm is not authorized to perform: kms:Encrypt on resource: "+c.keyARN+" because no resource-based policy allows the kms:Encrypt action" {
		t.Fatal(msg)
	}
	// 3. The key policy naming the role directly: allowed without IAM.
	direct := strings.Replace(noDelegation, `]}`, `,{"Sid":"ekm","Effect":"Allow","Principal":{"AWS":"`+c.roleARN+`"},"Action":["kms:Encrypt","kms:Decrypt"],"Resource":"*"}]}`, 1)
	putKeyPolicy(t, c.admin, c.keyARN, direct)
	if err := enc(c.vendor); err != nil {
		t.Fatal(err)
	}
	// 4. A grant, with an encryption-context constraint.
	putKeyPolicy(t, c.admin, c.keyARN, noDelegation)
	g, err := c.admin.CreateGrant(ctx, &kms.CreateGrantInput{KeyId: &c.keyARN, GranteePrincipal: &c.roleARN,
		Operations:  []types.GrantOperation{types.GrantOperationEncrypt, types.GrantOperationDecrypt},
		Constraints: &types.GrantConstraints{EncryptionContextSubset: map[string]string{"Tenant": "a"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.vendor.Encrypt(ctx, &kms.EncryptInput{KeyId: &c.keyARN, Plaintext: []byte("x"), EncryptionContext: map[string]string{"tenant": "a", "x": "y"}}); err != nil {
		t.Fatal(err) // keys compare case-insensitively in constraints
	}
	_, err = c.vendor.Encrypt(ctx, &kms.EncryptInput{KeyId: &c.keyARN, Plaintext: []byte("x"), EncryptionContext: map[string]string{"tenant": "b"}})
	wantCode(t, err, "AccessDeniedException")
	_, err = c.vendor.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: &c.keyARN, NumberOfBytes: aws.Int32(32), EncryptionContext: map[string]string{"tenant": "a"}})
	wantCode(t, err, "AccessDeniedException") // operation not granted
	list, err := c.admin.ListGrants(ctx, &kms.ListGrantsInput{KeyId: &c.keyARN})
	if err != nil || len(list.Grants) != 1 || *list.Grants[0].GrantId != *g.GrantId {
		t.Fatal(err)
	}
	if _, err := c.admin.RevokeGrant(ctx, &kms.RevokeGrantInput{KeyId: &c.keyARN, GrantId: g.GrantId}); err != nil {
		t.Fatal(err)
	}
	_, err = c.vendor.Encrypt(ctx, &kms.EncryptInput{KeyId: &c.keyARN, Plaintext: []byte("x"), EncryptionContext: map[string]string{"tenant": "a"}})
	wantCode(t, err, "AccessDeniedException")
	_, err = c.admin.CreateGrant(ctx, &kms.CreateGrantInput{KeyId: &c.keyARN, GranteePrincipal: aws.String("arn:aws:iam::" + acct + ":role/ghost"),
		Operations: []types.GrantOperation{types.GrantOperationEncrypt}})
	wantCode(t, err, "ValidationException")
	// 5. Explicit deny in the key policy wins over the identity allow.
	deny := strings.Replace(DefaultKeyPolicy("aws", acct), `]}`, `,{"Sid":"deny","Effect":"Deny","Principal":{"AWS":"*"},"Action":"kms:Encrypt","Resource":"*","Condition":{"ArnLike":{"aws:PrincipalArn":"arn:aws:iam::*:role/ekm"}}}]}`, 1)
	putKeyPolicy(t, c.admin, c.keyARN, deny)
	err = enc(c.vendor)
	if msg := wantCode(t, err, "AccessDeniedException"); !strings.HasSuffix(msg, "with an explicit deny in a resource-based policy") {
		t.Fatal(msg)
	}
	if _, err := c.vendor.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: &c.keyARN}); err != nil {
		t.Fatal(err)
	}
	// 6. Explicit deny in an identity policy.
	putKeyPolicy(t, c.admin, c.keyARN, DefaultKeyPolicy("aws", acct))
	ic := iamClient(e, static(c.root))
	if _, err := ic.PutRolePolicy(ctx, &iam.PutRolePolicyInput{RoleName: aws.String("ekm"), PolicyName: aws.String("deny"),
		PolicyDocument: aws.String(`{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"kms:Encrypt","Resource":"*"}]}`)}); err != nil {
		t.Fatal(err)
	}
	err = enc(c.vendor)
	if msg := wantCode(t, err, "AccessDeniedException"); !strings.HasSuffix(msg, "with an explicit deny in an identity-based policy") {
		t.Fatal(msg)
	}
	if _, err := ic.DeleteRolePolicy(ctx, &iam.DeleteRolePolicyInput{RoleName: aws.String("ekm"), PolicyName: aws.String("deny")}); err != nil {
		t.Fatal(err)
	}
	if err := enc(c.vendor); err != nil {
		t.Fatal(err)
	}
	// 7. The lockout safety check.
	_, err = c.admin.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: &c.keyARN, Policy: aws.String(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"` + c.roleARN + `"},"Action":"kms:Decrypt","Resource":"*"}]}`)})
	if msg := wantCode(t, err, "MalformedPolicyDocumentException"); msg != "The new key policy will not allow you to update the key policy in the future." {
		t.Fatal(msg)
	}
	_, err = c.admin.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: &c.keyARN, Policy: aws.String(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::` + acct + `:role/ghost"},"Action":"kms:*","Resource":"*"}]}`)})
	if msg := wantCode(t, err, "MalformedPolicyDocumentException"); msg != "Policy contains a statement with one or more invalid principals." {
		t.Fatal(msg)
	}
	gp, err := c.admin.GetKeyPolicy(ctx, &kms.GetKeyPolicyInput{KeyId: &c.keyARN})
	if err != nil || *gp.Policy != DefaultKeyPolicy("aws", acct) || *gp.PolicyName != "default" {
		t.Fatal(err)
	}
}

// TestEncryptionContextConditions: a key-policy statement denies one
// project by kms:EncryptionContext:ekm:project; others still work.
func TestEncryptionContextConditions(t *testing.T) {
	e := shared
	c := onboardCustomer(t, e, "us-east-1", "org-ec")
	doc := strings.Replace(DefaultKeyPolicy("aws", c.root.AccountID), `]}`, `,{"Sid":"deny-p2","Effect":"Deny","Principal":{"AWS":"*"},"Action":["kms:Encrypt","kms:Decrypt"],"Resource":"*","Condition":{"StringEquals":{"kms:EncryptionContext:ekm:project":"p2"}}}]}`, 1)
	putKeyPolicy(t, c.admin, c.keyARN, doc)
	for _, tc := range []struct {
		ec   map[string]string
		deny bool
	}{
		{map[string]string{"ekm:project": "p1"}, false},
		{map[string]string{"ekm:project": "p2"}, true},
		{map[string]string{"EKM:PROJECT": "p2"}, true}, // context-key names in conditions are case-insensitive
		{map[string]string{"ekm:project": "P2"}, false},
		{nil, false},
	} {
		_, err := c.vendor.Encrypt(ctx, &kms.EncryptInput{KeyId: &c.keyARN, Plaintext: []byte("x"), EncryptionContext: tc.ec})
		if tc.deny {
			wantCode(t, err, "AccessDeniedException")
		} else if err != nil {
			t.Fatalf("%v: %v", tc.ec, err)
		}
	}
	// Allow-side conditions: ForAnyValue / IfExists forms and
	// kms:EncryptionContextKeys.
	ic := iamClient(e, static(c.root))
	if _, err := ic.PutRolePolicy(ctx, &iam.PutRolePolicyInput{RoleName: aws.String("ekm"), PolicyName: aws.String("kms"), PolicyDocument: aws.String(
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:Encrypt","Resource":"` + c.keyARN + `","Condition":{"ForAnyValue:StringEquals":{"kms:EncryptionContextKeys":"ekm:org"},"StringLikeIfExists":{"kms:EncryptionContext:ekm:project":"p*"}}}]}`)}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ec map[string]string
		ok bool
	}{
		{map[string]string{"ekm:org": "o"}, true},
		{map[string]string{"ekm:org": "o", "ekm:project": "p7"}, true},
		{map[string]string{"ekm:org": "o", "ekm:project": "x"}, false},
		{map[string]string{"other": "o"}, false},
		{nil, false},
	} {
		_, err := c.vendor.Encrypt(ctx, &kms.EncryptInput{KeyId: &c.keyARN, Plaintext: []byte("x"), EncryptionContext: tc.ec})
		if tc.ok && err != nil {
			t.Fatalf("%v: %v", tc.ec, err)
		}
		if !tc.ok {
			wantCode(t, err, "AccessDeniedException")
		}
	}
}

// TestSessionPolicy: a session policy narrows the role's permissions.
func TestSessionPolicy(t *testing.T) {
	e := shared
	c := onboardCustomer(t, e, "us-east-1", "org-sess")
	out, err := stsClient(e, "us-east-1", static(e.Vendor())).AssumeRole(ctx, stsAssumeInput(c.roleARN, "org-sess",
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:DescribeKey","Resource":"*"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if out.PackedPolicySize == nil {
		t.Fatal("no PackedPolicySize")
	}
	kc := kmsClient(e, "us-east-1", credentials.NewStaticCredentialsProvider(*out.Credentials.AccessKeyId, *out.Credentials.SecretAccessKey, *out.Credentials.SessionToken))
	if _, err := kc.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: &c.keyARN}); err != nil {
		t.Fatal(err)
	}
	_, err = kc.Encrypt(ctx, &kms.EncryptInput{KeyId: &c.keyARN, Plaintext: []byte("x")})
	if msg := wantCode(t, err, "AccessDeniedException"); !strings.Contains(msg, "because no session policy allows") {
		t.Fatal(msg)
	}
}

// TestIAMAuthorization: IAM calls by non-root principals need identity
// permissions; deleting a role needs its policies gone first.
func TestIAMAuthorization(t *testing.T) {
	e := shared
	root, _ := e.CreateAccount()
	limited, _ := e.CreateUser(root.AccountID, "limited", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iam:GetRole","Resource":"*"}]}`)
	createRole(t, e, root, "r", trustFor(e.Vendor().ARN, "org-x"))
	lc := iamClient(e, static(limited))
	if _, err := lc.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String("r")}); err != nil {
		t.Fatal(err)
	}
	_, err := lc.DeleteRole(ctx, &iam.DeleteRoleInput{RoleName: aws.String("r")})
	if msg := wantCode(t, err, "AccessDenied"); msg != "User: "+limited.ARN+" is not authorized to perform: iam:DeleteRole on resource: arn:aws:iam::"+root.AccountID+":role/r because no identity-based policy allows the iam:DeleteRole action" {
		t.Fatal(msg)
	}
	ic := iamClient(e, static(root))
	pol, err := ic.CreatePolicy(ctx, &iam.CreatePolicyInput{PolicyName: aws.String("p"), PolicyDocument: aws.String(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:Decrypt","Resource":"*"}]}`)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ic.AttachRolePolicy(ctx, &iam.AttachRolePolicyInput{RoleName: aws.String("r"), PolicyArn: pol.Policy.Arn}); err != nil {
		t.Fatal(err)
	}
	_, err = ic.DeleteRole(ctx, &iam.DeleteRoleInput{RoleName: aws.String("r")})
	wantCode(t, err, "DeleteConflict")
	_, err = ic.DeletePolicy(ctx, &iam.DeletePolicyInput{PolicyArn: pol.Policy.Arn})
	wantCode(t, err, "DeleteConflict")
	att, err := ic.ListAttachedRolePolicies(ctx, &iam.ListAttachedRolePoliciesInput{RoleName: aws.String("r")})
	if err != nil || len(att.AttachedPolicies) != 1 {
		t.Fatal(err)
	}
	if _, err := ic.DetachRolePolicy(ctx, &iam.DetachRolePolicyInput{RoleName: aws.String("r"), PolicyArn: pol.Policy.Arn}); err != nil {
		t.Fatal(err)
	}
	if _, err := ic.DeleteRole(ctx, &iam.DeleteRoleInput{RoleName: aws.String("r")}); err != nil {
		t.Fatal(err)
	}
	_, err = ic.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String("r")})
	if msg := wantCode(t, err, "NoSuchEntity"); msg != "The role with name r cannot be found." {
		t.Fatal(msg)
	}
	_, err = ic.CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String("bad"), AssumeRolePolicyDocument: aws.String(trustFor(e.Vendor().ARN, "")),
		PermissionsBoundary: aws.String("arn:aws:iam::aws:policy/x")})
	wantCode(t, err, "ValidationError")
	_, err = ic.PutRolePolicy(ctx, &iam.PutRolePolicyInput{RoleName: aws.String("bad"), PolicyName: aws.String("p"), PolicyDocument: aws.String(`{}`)})
	wantCode(t, err, "NoSuchEntity")
	tagged, err := ic.CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String("r2"), AssumeRolePolicyDocument: aws.String(trustFor(e.Vendor().ARN, "")),
		Tags: []iamtypes.Tag{{Key: aws.String("team"), Value: aws.String("ekm")}}, Path: aws.String("/svc/"), MaxSessionDuration: aws.Int32(7200)})
	if err != nil || len(tagged.Role.Tags) != 1 || *tagged.Role.Arn != "arn:aws:iam::"+root.AccountID+":role/svc/r2" || *tagged.Role.MaxSessionDuration != 7200 {
		t.Fatalf("%v %+v", err, tagged)
	}
	for doc, want := range map[string]string{
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}]}`:                                "Policy document should not specify a principal.",
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"Decrypt","Resource":"*"}]}`:                                              "Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc.",
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:Decrypt"}]}`:                                                         "Missing required field Resource",
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:Decrypt","Resource":"*","Condition":{"StringEqualz":{"a:b":"c"}}}]}`: "Invalid Condition type : StringEqualz.",
	} {
		_, err := ic.PutRolePolicy(ctx, &iam.PutRolePolicyInput{RoleName: aws.String("r2"), PolicyName: aws.String("p"), PolicyDocument: aws.String(doc)})
		if msg := wantCode(t, err, "MalformedPolicyDocument"); msg != want {
			t.Errorf("%s: %q", doc, msg)
		}
	}
}

// TestCrossAccountKeyPolicy: the key policy names the vendor's account
// (no role in between); the vendor principal then also needs its own
// identity permission, and its calls count against its own quota.
func TestCrossAccountKeyPolicy(t *testing.T) {
	e := shared
	c := onboardCustomer(t, e, "us-east-1", "org-xacct")
	v := e.Vendor()
	doc := strings.Replace(DefaultKeyPolicy("aws", c.root.AccountID), `]}`, `,{"Sid":"vendor","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::`+v.AccountID+`:root"},"Action":["kms:Encrypt","kms:Decrypt"],"Resource":"*"}]}`, 1)
	putKeyPolicy(t, c.admin, c.keyARN, doc)
	_, err := kmsClient(e, "us-east-1", static(v), noRetry).Encrypt(ctx, &kms.EncryptInput{KeyId: &c.keyARN, Plaintext: []byte("x")})
	if msg := wantCode(t, err, "AccessDeniedException"); !strings.HasSuffix(msg, "because no identity-based policy allows the kms:Encrypt action") {
		t.Fatal(msg)
	}
	u, err := e.CreateUser(v.AccountID, "xacct", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:Encrypt","Resource":"arn:aws:kms:*:*:key/*"}]}`)
	if err != nil {
		t.Fatal(err)
	}
	uc := kmsClient(e, "us-east-1", static(u), noRetry)
	if _, err := uc.Encrypt(ctx, &kms.EncryptInput{KeyId: &c.keyARN, Plaintext: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	// Cross-account needs the ARN: a bare key id resolves in the caller's account.
	_, err = uc.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(c.keyARN[strings.LastIndex(c.keyARN, "/")+1:]), Plaintext: []byte("x")})
	wantCode(t, err, "NotFoundException")
	// Requests are logged with the caller's and the key owner's accounts.
	last := e.Requests()[len(e.Requests())-2]
	if last.Account != v.AccountID || last.ResourceAccount != c.root.AccountID {
		t.Fatalf("%+v", last)
	}
}
