package awscloud

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

func TestSmoke(t *testing.T) {
	e := shared
	out, err := stsClient(e, "us-east-1", static(e.Vendor())).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(*out.Arn, *out.UserId, *out.Account)
	cust, err := e.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	kc := kmsClient(e, "eu-west-1", static(cust))
	ck, err := kc.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	enc, err := kc.Encrypt(ctx, &kms.EncryptInput{KeyId: ck.KeyMetadata.KeyId, Plaintext: []byte("hi"), EncryptionContext: map[string]string{"a": "b"}})
	if err != nil {
		t.Fatal(err)
	}
	dec, err := kc.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: map[string]string{"a": "b"}})
	if err != nil || string(dec.Plaintext) != "hi" {
		t.Fatal(err)
	}
	ic := iamClient(e, static(cust))
	trust := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"` + e.Vendor().ARN + `"},"Action":"sts:AssumeRole","Condition":{"StringEquals":{"sts:ExternalId":"org-1"}}}]}`
	role, err := ic.CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String("ekm"), AssumeRolePolicyDocument: aws.String(trust)})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := ic.CreatePolicy(ctx, &iam.CreatePolicyInput{PolicyName: aws.String("p"), PolicyDocument: aws.String(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["kms:Encrypt","kms:Decrypt"],"Resource":"` + *ck.KeyMetadata.Arn + `"}]}`)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ic.AttachRolePolicy(ctx, &iam.AttachRolePolicyInput{RoleName: aws.String("ekm"), PolicyArn: pol.Policy.Arn}); err != nil {
		t.Fatal(err)
	}
	vk := kmsClient(e, "eu-west-1", assumed(e, *role.Role.Arn, "org-1"))
	dec, err = vk.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: map[string]string{"a": "b"}})
	if err != nil || string(dec.Plaintext) != "hi" {
		t.Fatal(err)
	}
	_, err = vk.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: ck.KeyMetadata.Arn})
	t.Log(wantCode(t, err, "AccessDeniedException"))
	t.Log(e.Requests()[len(e.Requests())-1])
}
