package awsonboard

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"

	"github.com/ekm-dev/ekm/emulator/awscloud"
)

var emu *awscloud.Emulator

func TestMain(m *testing.M) {
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION",
		"AWS_CA_BUNDLE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_KMS", "AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL_IAM", "AWS_USE_FIPS_ENDPOINT"} {
		os.Unsetenv(k)
	}
	e, err := awscloud.New(awscloud.Options{})
	if err != nil {
		panic(err)
	}
	if err := e.Start(); err != nil {
		panic(err)
	}
	emu = e
	code := m.Run()
	e.Close()
	os.Exit(code)
}

func static(c awscloud.Credentials) aws.CredentialsProvider {
	return credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, "")
}

func options(t *testing.T, org string) (Options, awscloud.Credentials) {
	t.Helper()
	root, err := emu.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	return Options{HTTPClient: emu.HTTPClient(), Credentials: static(root), Region: "eu-west-1",
		VendorPrincipalARN: emu.Vendor().ARN, ExternalID: org}, root
}

// vendorKMS is ekm's view: the vendor user assumes the customer's role.
func vendorKMS(roleARN, externalID string) *kms.Client {
	cfg := aws.Config{Region: "eu-west-1", HTTPClient: emu.HTTPClient(), RetryMaxAttempts: 1}
	v := emu.Vendor()
	stc := sts.NewFromConfig(aws.Config{Region: "eu-west-1", HTTPClient: emu.HTTPClient(), Credentials: static(v)})
	cfg.Credentials = aws.NewCredentialsCache(stscreds.NewAssumeRoleProvider(stc, roleARN, func(o *stscreds.AssumeRoleOptions) {
		o.ExternalID = aws.String(externalID)
	}))
	return kms.NewFromConfig(cfg)
}

func code(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func TestOnboardingWorks(t *testing.T) {
	ctx := context.Background()
	o, _ := options(t, "org-ok")
	o.Alias = "alias/ekm"
	res, err := Run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if res.KeyARN == "" || res.RoleARN == "" || res.PolicyARN == "" || res.Alias != "alias/ekm" {
		t.Fatalf("%+v", res)
	}
	kc := vendorKMS(res.RoleARN, "org-ok")
	ec := map[string]string{"ekm:project": "proj_a"}
	enc, err := kc.Encrypt(ctx, &kms.EncryptInput{KeyId: &res.KeyARN, Plaintext: []byte("k"), EncryptionContext: ec})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kc.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, KeyId: &res.KeyARN, EncryptionContext: ec}); err != nil {
		t.Fatal(err)
	}
	if _, err := kc.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: &res.KeyARN}); err != nil {
		t.Fatal(err)
	}
	// Only the permitted operations.
	_, err = kc.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: &res.KeyARN, NumberOfBytes: aws.Int32(32)})
	if code(err) != "AccessDeniedException" {
		t.Fatalf("GenerateDataKey: %v", err)
	}
	// Another organization's external id is refused.
	_, err = vendorKMS(res.RoleARN, "org-other").DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: &res.KeyARN})
	if !strings.Contains(err.Error(), "AccessDenied") {
		t.Fatalf("wrong external id: %v", err)
	}
}

// TestEachMissingStepIsDiagnosable leaves out one step at a time and
// checks what ekm then observes.
func TestEachMissingStepIsDiagnosable(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		skip Skip
		want string // error code ekm sees on Encrypt (sts AccessDenied for role problems)
	}{
		{"no policy attached", Skip{Attach: true}, "AccessDeniedException"},
		{"no role", Skip{Role: true, Attach: true}, "AccessDenied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, _ := options(t, "org-skip")
			o.Skip = tc.skip
			o.RoleName = "ekm-role"
			res, err := Run(ctx, o)
			if err != nil {
				t.Fatal(err)
			}
			roleARN := res.RoleARN
			if roleARN == "" {
				roleARN = strings.Replace(res.KeyARN[:strings.Index(res.KeyARN, ":key/")], "arn:aws:kms:eu-west-1:", "arn:aws:iam::", 1) + ":role/ekm-role"
			}
			_, err = vendorKMS(roleARN, "org-skip").Encrypt(ctx, &kms.EncryptInput{KeyId: &res.KeyARN, Plaintext: []byte("x")})
			if got := code(err); got != tc.want {
				t.Fatalf("got %q (%v), want %s", got, err, tc.want)
			}
		})
	}
	// No key: the role and policy exist but name a key that does not.
	o, root := options(t, "org-nokey")
	o.Skip = Skip{Key: true}
	o.KeyARN = "arn:aws:kms:eu-west-1:" + root.AccountID + ":key/00000000-0000-4000-8000-000000000000"
	res, err := Run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	_, err = vendorKMS(res.RoleARN, "org-nokey").Encrypt(ctx, &kms.EncryptInput{KeyId: &res.KeyARN, Plaintext: []byte("x")})
	if code(err) != "NotFoundException" {
		t.Fatalf("%v", err)
	}
	// Step 4 without 2 and 3 is refused up front.
	o, _ = options(t, "org-x")
	o.Skip = Skip{Policy: true}
	if _, err := Run(ctx, o); err == nil || !strings.Contains(err.Error(), "step 4") {
		t.Fatalf("%v", err)
	}
}

// TestPolicyDocuments: the documents docs/aws.md prints are the ones
// applied, and they are valid JSON with the values substituted.
func TestPolicyDocuments(t *testing.T) {
	for _, doc := range []string{TrustPolicy(`arn:aws:iam::111122223333:user/ekm`, `org-"q"`), PermissionPolicy("arn:aws:kms:eu-west-1:111122223333:key/k"),
		DenyProjectStatement("proj_1")} {
		var v any
		if err := json.Unmarshal([]byte(doc), &v); err != nil {
			t.Fatalf("%s: %v", doc, err)
		}
		if strings.Contains(doc, "<") {
			t.Fatalf("placeholder left: %s", doc)
		}
	}
	if !strings.Contains(TrustPolicy("a", `o"x`), `"sts:ExternalId": "o\"x"`) {
		t.Fatal("external id not escaped")
	}
	docs, err := os.ReadFile("../../docs/aws.md")
	if err != nil {
		t.Skip("docs/aws.md not present yet")
	}
	for _, tpl := range []string{TrustPolicyTemplate, PermissionPolicyTemplate, DenyProjectStatementTemplate} {
		if !strings.Contains(string(docs), tpl) {
			t.Errorf("docs/aws.md does not print this template verbatim:\n%s", tpl)
		}
	}
}

// TestDenyProject: the customer revokes one project; the others keep
// working.
func TestDenyProject(t *testing.T) {
	ctx := context.Background()
	o, _ := options(t, "org-deny")
	res, err := Run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	kc := vendorKMS(res.RoleARN, "org-deny")
	enc := func(project string) error {
		_, err := kc.Encrypt(ctx, &kms.EncryptInput{KeyId: &res.KeyARN, Plaintext: []byte("x"), EncryptionContext: map[string]string{"ekm:project": project}})
		return err
	}
	if err := enc("proj_1"); err != nil {
		t.Fatal(err)
	}
	if err := DenyProject(ctx, o, res.KeyARN, "proj_1"); err != nil {
		t.Fatal(err)
	}
	if code(enc("proj_1")) != "AccessDeniedException" {
		t.Fatal("denied project still works")
	}
	if err := enc("proj_2"); err != nil {
		t.Fatal(err)
	}
	if _, err := AddStatement("{", "{}"); err == nil {
		t.Fatal("bad policy accepted")
	}
}
