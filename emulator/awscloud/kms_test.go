package awscloud

import (
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
)

// customer is an onboarded customer: a key, and a role the vendor assumes
// with an identity policy allowing kms:Encrypt/Decrypt/DescribeKey on it.
type customer struct {
	root    Credentials
	keyARN  string
	roleARN string
	admin   *kms.Client // the customer's root user
	vendor  *kms.Client // the vendor through the assumed role
}

func onboardCustomer(t *testing.T, e *Emulator, region, externalID string) customer {
	t.Helper()
	root, err := e.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	c := customer{root: root, admin: kmsClient(e, region, static(root))}
	k, err := c.admin.CreateKey(ctx, &kms.CreateKeyInput{Description: aws.String("ekm KEK")})
	if err != nil {
		t.Fatal(err)
	}
	c.keyARN = *k.KeyMetadata.Arn
	c.roleARN = createRole(t, e, root, "ekm", trustFor(e.Vendor().ARN, externalID))
	if _, err := iamClient(e, static(root)).PutRolePolicy(ctx, &iam.PutRolePolicyInput{RoleName: aws.String("ekm"), PolicyName: aws.String("kms"),
		PolicyDocument: aws.String(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["kms:Encrypt","kms:Decrypt","kms:DescribeKey"],"Resource":"` + c.keyARN + `"}]}`)}); err != nil {
		t.Fatal(err)
	}
	c.vendor = kmsClient(e, region, assumed(e, c.roleARN, externalID), noRetry)
	return c
}

func TestKMSCrypto(t *testing.T) {
	e := shared
	c := onboardCustomer(t, e, "eu-west-1", "org-crypto")
	ec := map[string]string{"ekm:org": "org-crypto", "ekm:project": "p1"}
	enc, err := c.vendor.Encrypt(ctx, &kms.EncryptInput{KeyId: &c.keyARN, Plaintext: []byte("project key"), EncryptionContext: ec})
	if err != nil {
		t.Fatal(err)
	}
	if *enc.KeyId != c.keyARN || enc.EncryptionAlgorithm != types.EncryptionAlgorithmSpecSymmetricDefault {
		t.Fatalf("%+v", enc)
	}
	// Decrypt finds the key in the blob; KeyId is optional.
	dec, err := c.vendor.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: ec})
	if err != nil || string(dec.Plaintext) != "project key" || *dec.KeyId != c.keyARN || len(*dec.KeyMaterialId) != 64 {
		t.Fatalf("%v %+v", err, dec)
	}
	// The encryption context must match exactly.
	for _, bad := range []map[string]string{nil, {"ekm:org": "org-crypto"}, {"ekm:org": "org-crypto", "ekm:project": "P1"}} {
		_, err := c.vendor.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: bad})
		if msg := wantCode(t, err, "InvalidCiphertextException"); msg != "" {
			t.Fatalf("message %q", msg)
		}
	}
	tampered := append([]byte{}, enc.CiphertextBlob...)
	tampered[len(tampered)-1] ^= 1
	_, err = c.vendor.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: tampered, EncryptionContext: ec})
	wantCode(t, err, "InvalidCiphertextException")
	_, err = c.vendor.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: []byte("garbage that is not a blob at all........................................")})
	wantCode(t, err, "InvalidCiphertextException")
	// GenerateDataKey is not in the role's policy.
	_, err = c.vendor.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: &c.keyARN, KeySpec: types.DataKeySpecAes256})
	if msg := wantCode(t, err, "AccessDeniedException"); !strings.Contains(msg, "kms:GenerateDataKey on resource: "+c.keyARN+" because no identity-based policy allows the kms:GenerateDataKey action") {
		t.Fatal(msg)
	}
	// The customer's root (key policy delegates to the account) can.
	gdk, err := c.admin.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: &c.keyARN, KeySpec: types.DataKeySpecAes256, EncryptionContext: ec})
	if err != nil || len(gdk.Plaintext) != 32 {
		t.Fatal(err)
	}
	dec, err = c.vendor.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: gdk.CiphertextBlob, EncryptionContext: ec, KeyId: &c.keyARN})
	if err != nil || string(dec.Plaintext) != string(gdk.Plaintext) {
		t.Fatal(err)
	}
	wo, err := c.admin.GenerateDataKeyWithoutPlaintext(ctx, &kms.GenerateDataKeyWithoutPlaintextInput{KeyId: &c.keyARN, NumberOfBytes: aws.Int32(64)})
	if err != nil || len(wo.CiphertextBlob) == 0 {
		t.Fatal(err)
	}
	_, err = c.admin.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: &c.keyARN})
	wantCode(t, err, "ValidationException")
	// ReEncrypt to a second key.
	k2, err := c.admin.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	re, err := c.admin.ReEncrypt(ctx, &kms.ReEncryptInput{CiphertextBlob: enc.CiphertextBlob, SourceEncryptionContext: ec,
		DestinationKeyId: k2.KeyMetadata.KeyId, DestinationEncryptionContext: map[string]string{"x": "y"}})
	if err != nil || *re.SourceKeyId != c.keyARN || *re.KeyId != *k2.KeyMetadata.Arn {
		t.Fatalf("%v %+v", err, re)
	}
	dec, err = c.admin.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: re.CiphertextBlob, EncryptionContext: map[string]string{"x": "y"}})
	if err != nil || string(dec.Plaintext) != "project key" {
		t.Fatal(err)
	}
	// Limits and strictness.
	_, err = c.admin.Encrypt(ctx, &kms.EncryptInput{KeyId: &c.keyARN, Plaintext: make([]byte, 4097)})
	if msg := wantCode(t, err, "ValidationException"); !strings.Contains(msg, "'plaintext'") {
		t.Fatal(msg)
	}
	_, err = c.admin.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: ec, Recipient: &types.RecipientInfo{AttestationDocument: []byte("x")}})
	wantCode(t, err, "UnsupportedOperationException")
	_, err = c.admin.Encrypt(ctx, &kms.EncryptInput{KeyId: &c.keyARN, Plaintext: []byte("x"), DryRun: aws.Bool(true)})
	wantCode(t, err, "DryRunOperationException")
	rnd, err := c.admin.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(16)})
	if err != nil || len(rnd.Plaintext) != 16 {
		t.Fatal(err)
	}
}

func TestKMSKeyIdentifiers(t *testing.T) {
	e := shared
	c := onboardCustomer(t, e, "us-west-2", "org-ids")
	md, err := c.admin.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: &c.keyARN})
	if err != nil {
		t.Fatal(err)
	}
	m := md.KeyMetadata
	if m.KeyState != types.KeyStateEnabled || m.KeySpec != types.KeySpecSymmetricDefault || m.KeyUsage != types.KeyUsageTypeEncryptDecrypt ||
		*m.AWSAccountId != c.root.AccountID || m.Origin != types.OriginTypeAwsKms || m.KeyManager != types.KeyManagerTypeCustomer ||
		*m.Description != "ekm KEK" || m.CreationDate.IsZero() || !m.Enabled || len(*m.CurrentKeyMaterialId) != 64 {
		t.Fatalf("%+v", m)
	}
	if _, err := c.admin.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/ekm"), TargetKeyId: m.KeyId}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{*m.KeyId, c.keyARN, "alias/ekm", "arn:aws:kms:us-west-2:" + c.root.AccountID + ":alias/ekm"} {
		out, err := c.admin.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(id)})
		if err != nil || *out.KeyMetadata.Arn != c.keyARN {
			t.Fatalf("%s: %v", id, err)
		}
	}
	_, err = c.admin.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/ekm"), TargetKeyId: m.KeyId})
	wantCode(t, err, "AlreadyExistsException")
	_, err = c.admin.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("ekm2"), TargetKeyId: m.KeyId})
	if msg := wantCode(t, err, "ValidationException"); !strings.HasPrefix(msg, `Alias must start with the prefix "alias/".`) {
		t.Fatal(msg)
	}
	for id, want := range map[string]string{
		"alias/nope":                           "Alias arn:aws:kms:us-west-2:" + c.root.AccountID + ":alias/nope is not found.",
		"not-a-key":                            "Invalid keyId 'not-a-key'",
		"00000000-0000-4000-8000-000000000000": "Key 'arn:aws:kms:us-west-2:" + c.root.AccountID + ":key/00000000-0000-4000-8000-000000000000' does not exist",
		strings.Replace(c.keyARN, "us-west-2", "eu-west-1", 1): "Invalid arn eu-west-1",
	} {
		_, err := c.admin.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(id)})
		if msg := wantCode(t, err, "NotFoundException"); msg != want {
			t.Errorf("%s: %q", id, msg)
		}
	}
	// A key in another region is invisible from this one.
	other := kmsClient(e, "eu-west-1", static(c.root))
	_, err = other.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: m.KeyId})
	wantCode(t, err, "NotFoundException")
	// A bare id resolves in the caller's account: the role session is in
	// the customer's account, the vendor's own user is not.
	if _, err := c.vendor.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: m.KeyId}); err != nil {
		t.Fatal(err)
	}
	_, err = kmsClient(e, "us-west-2", static(e.Vendor())).DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: m.KeyId})
	wantCode(t, err, "NotFoundException")
	// Multi-Region keys have mrk- ids.
	mrk, err := c.admin.CreateKey(ctx, &kms.CreateKeyInput{MultiRegion: aws.Bool(true)})
	if err != nil || !strings.HasPrefix(*mrk.KeyMetadata.KeyId, "mrk-") || len(*mrk.KeyMetadata.KeyId) != 36 ||
		mrk.KeyMetadata.MultiRegionConfiguration.MultiRegionKeyType != types.MultiRegionKeyTypePrimary {
		t.Fatalf("%v %+v", err, mrk)
	}
	list, err := c.admin.ListAliases(ctx, &kms.ListAliasesInput{KeyId: m.KeyId})
	if err != nil || len(list.Aliases) != 1 || *list.Aliases[0].AliasName != "alias/ekm" {
		t.Fatal(err)
	}
	keys, err := c.admin.ListKeys(ctx, &kms.ListKeysInput{Limit: aws.Int32(1)})
	if err != nil || len(keys.Keys) != 1 || !keys.Truncated {
		t.Fatal(err)
	}
	if _, err := c.admin.DeleteAlias(ctx, &kms.DeleteAliasInput{AliasName: aws.String("alias/ekm")}); err != nil {
		t.Fatal(err)
	}
	_, err = c.admin.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String("alias/ekm")})
	wantCode(t, err, "NotFoundException")
}

// TestAliasRepointing: an alias moved to another key makes Decrypt with
// the alias as KeyId fail with IncorrectKeyException.
func TestAliasRepointing(t *testing.T) {
	e := shared
	root, _ := e.CreateAccount()
	kc := kmsClient(e, "us-east-1", static(root))
	k1, _ := kc.CreateKey(ctx, &kms.CreateKeyInput{})
	k2, _ := kc.CreateKey(ctx, &kms.CreateKeyInput{})
	if _, err := kc.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/kek"), TargetKeyId: k1.KeyMetadata.KeyId}); err != nil {
		t.Fatal(err)
	}
	enc, err := kc.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String("alias/kek"), Plaintext: []byte("x")})
	if err != nil || *enc.KeyId != *k1.KeyMetadata.Arn {
		t.Fatal(err)
	}
	if _, err := kc.UpdateAlias(ctx, &kms.UpdateAliasInput{AliasName: aws.String("alias/kek"), TargetKeyId: k2.KeyMetadata.Arn}); err != nil {
		t.Fatal(err)
	}
	_, err = kc.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, KeyId: aws.String("alias/kek")})
	if msg := wantCode(t, err, "IncorrectKeyException"); msg != "The key ID in the request does not identify a CMK that can perform this operation." {
		t.Fatal(msg)
	}
	if _, err := kc.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob}); err != nil {
		t.Fatal(err)
	}
	// An alias moves only between keys of the same type.
	rsaKey, err := kc.CreateKey(ctx, &kms.CreateKeyInput{KeySpec: types.KeySpecRsa2048})
	if err != nil {
		t.Fatal(err)
	}
	_, err = kc.UpdateAlias(ctx, &kms.UpdateAliasInput{AliasName: aws.String("alias/kek"), TargetKeyId: rsaKey.KeyMetadata.KeyId})
	wantCode(t, err, "ValidationException")
}

func TestRSAKeyIsNotSymmetric(t *testing.T) {
	e := shared
	root, _ := e.CreateAccount()
	kc := kmsClient(e, "us-east-1", static(root))
	k, err := kc.CreateKey(ctx, &kms.CreateKeyInput{KeySpec: types.KeySpecRsa2048, KeyUsage: types.KeyUsageTypeEncryptDecrypt})
	if err != nil {
		t.Fatal(err)
	}
	if k.KeyMetadata.KeySpec != types.KeySpecRsa2048 || len(k.KeyMetadata.EncryptionAlgorithms) != 2 {
		t.Fatalf("%+v", k.KeyMetadata)
	}
	_, err = kc.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: k.KeyMetadata.KeyId, KeySpec: types.DataKeySpecAes256})
	wantCode(t, err, "InvalidKeyUsageException")
	_, err = kc.Encrypt(ctx, &kms.EncryptInput{KeyId: k.KeyMetadata.KeyId, Plaintext: []byte("x")})
	wantCode(t, err, "InvalidKeyUsageException")
	enc, err := kc.Encrypt(ctx, &kms.EncryptInput{KeyId: k.KeyMetadata.KeyId, Plaintext: []byte("x"), EncryptionAlgorithm: types.EncryptionAlgorithmSpecRsaesOaepSha256})
	if err != nil {
		t.Fatal(err)
	}
	// The public key encrypts too (GetPublicKey), and KMS decrypts.
	pub, err := kc.GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: k.KeyMetadata.KeyId})
	if err != nil {
		t.Fatal(err)
	}
	pk, err := x509.ParsePKIXPublicKey(pub.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	local, _ := rsa.EncryptOAEP(sha256.New(), randReader{}, pk.(*rsa.PublicKey), []byte("y"), nil)
	for want, blob := range map[string][]byte{"x": enc.CiphertextBlob, "y": local} {
		dec, err := kc.Decrypt(ctx, &kms.DecryptInput{KeyId: k.KeyMetadata.KeyId, CiphertextBlob: blob, EncryptionAlgorithm: types.EncryptionAlgorithmSpecRsaesOaepSha256})
		if err != nil || string(dec.Plaintext) != want {
			t.Fatal(err)
		}
	}
	_, err = kc.EnableKeyRotation(ctx, &kms.EnableKeyRotationInput{KeyId: k.KeyMetadata.KeyId})
	wantCode(t, err, "UnsupportedOperationException")
	for _, spec := range []types.KeySpec{types.KeySpecEccNistP256, types.KeySpecHmac256} {
		_, err = kc.CreateKey(ctx, &kms.CreateKeyInput{KeySpec: spec})
		wantCode(t, err, "UnsupportedOperationException")
	}
	_, err = kc.CreateKey(ctx, &kms.CreateKeyInput{KeySpec: "RSA_1024"})
	wantCode(t, err, "ValidationException")
	_, err = kc.CreateKey(ctx, &kms.CreateKeyInput{Origin: types.OriginTypeExternal})
	wantCode(t, err, "UnsupportedOperationException")
}

func TestKeyLifecycle(t *testing.T) {
	e := startEmu(t, Options{Now: fixedClock()})
	root, _ := e.CreateAccount()
	kc := kmsClient(e, "us-east-1", static(root), noRetry)
	k, _ := kc.CreateKey(ctx, &kms.CreateKeyInput{})
	id := k.KeyMetadata.KeyId
	arn := *k.KeyMetadata.Arn
	enc, err := kc.Encrypt(ctx, &kms.EncryptInput{KeyId: id, Plaintext: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kc.DisableKey(ctx, &kms.DisableKeyInput{KeyId: id}); err != nil {
		t.Fatal(err)
	}
	_, err = kc.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob})
	if msg := wantCode(t, err, "DisabledException"); msg != arn+" is disabled." {
		t.Fatal(msg)
	}
	if _, err := kc.EnableKey(ctx, &kms.EnableKeyInput{KeyId: id}); err != nil {
		t.Fatal(err)
	}
	_, err = kc.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: id, PendingWindowInDays: aws.Int32(3)})
	wantCode(t, err, "ValidationException")
	sd, err := kc.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: id, PendingWindowInDays: aws.Int32(7)})
	if err != nil || sd.KeyState != types.KeyStatePendingDeletion || *sd.PendingWindowInDays != 7 || sd.DeletionDate.Sub(e.Now()).Round(time.Second) != 7*24*time.Hour {
		t.Fatalf("%v %+v", err, sd)
	}
	_, err = kc.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob})
	if msg := wantCode(t, err, "KMSInvalidStateException"); msg != arn+" is pending deletion." {
		t.Fatal(msg)
	}
	md, err := kc.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: id})
	if err != nil || md.KeyMetadata.KeyState != types.KeyStatePendingDeletion || md.KeyMetadata.DeletionDate == nil {
		t.Fatal(err)
	}
	if _, err := kc.CancelKeyDeletion(ctx, &kms.CancelKeyDeletionInput{KeyId: id}); err != nil {
		t.Fatal(err)
	}
	md, _ = kc.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: id})
	if md.KeyMetadata.KeyState != types.KeyStateDisabled {
		t.Fatalf("after cancel: %s", md.KeyMetadata.KeyState)
	}
	_, err = kc.CancelKeyDeletion(ctx, &kms.CancelKeyDeletionInput{KeyId: id})
	wantCode(t, err, "KMSInvalidStateException")
	// Deletion completes when the clock passes the date.
	if _, err := kc.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: id, PendingWindowInDays: aws.Int32(7)}); err != nil {
		t.Fatal(err)
	}
	e.AdvanceClock(7*24*time.Hour + time.Second)
	kc = kmsClient(e, "us-east-1", static(root)) // default retries: the SDK corrects its clock skew
	_, err = kc.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: id})
	wantCode(t, err, "NotFoundException")
	_, err = kc.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob})
	if msg := wantCode(t, err, "AccessDeniedException"); !strings.HasPrefix(msg, "The ciphertext refers to a customer master key that does not exist") {
		t.Fatal(msg)
	}
}

func TestRotationKeepsOldCiphertexts(t *testing.T) {
	e := startEmu(t, Options{Now: fixedClock()})
	root, _ := e.CreateAccount()
	kc := kmsClient(e, "us-east-1", static(root), noRetry)
	k, _ := kc.CreateKey(ctx, &kms.CreateKeyInput{})
	id := k.KeyMetadata.KeyId
	var blobs [][]byte
	var mats []string
	for i := 0; i < 3; i++ {
		enc, err := kc.Encrypt(ctx, &kms.EncryptInput{KeyId: id, Plaintext: []byte{byte(i)}})
		if err != nil {
			t.Fatal(err)
		}
		blobs = append(blobs, enc.CiphertextBlob)
		if _, err := kc.RotateKeyOnDemand(ctx, &kms.RotateKeyOnDemandInput{KeyId: id}); err != nil {
			t.Fatal(err)
		}
	}
	for i, b := range blobs {
		dec, err := kc.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: b})
		if err != nil || dec.Plaintext[0] != byte(i) {
			t.Fatal(err)
		}
		mats = append(mats, *dec.KeyMaterialId)
	}
	if mats[0] == mats[1] || mats[1] == mats[2] {
		t.Fatal("rotation did not change the key material")
	}
	// Automatic rotation happens when the clock passes the period.
	if _, err := kc.EnableKeyRotation(ctx, &kms.EnableKeyRotationInput{KeyId: id, RotationPeriodInDays: aws.Int32(90)}); err != nil {
		t.Fatal(err)
	}
	st, err := kc.GetKeyRotationStatus(ctx, &kms.GetKeyRotationStatusInput{KeyId: id})
	if err != nil || !st.KeyRotationEnabled || *st.RotationPeriodInDays != 90 {
		t.Fatal(err)
	}
	before, _ := kc.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: id})
	e.AdvanceClock(91 * 24 * time.Hour)
	kc2 := kmsClient(e, "us-east-1", static(root))
	after, err := kc2.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: id})
	if err != nil || *after.KeyMetadata.CurrentKeyMaterialId == *before.KeyMetadata.CurrentKeyMaterialId {
		t.Fatalf("automatic rotation: %v", err)
	}
	if _, err := kc2.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: blobs[0]}); err != nil {
		t.Fatal(err)
	}
	if _, err := kc2.DisableKeyRotation(ctx, &kms.DisableKeyRotationInput{KeyId: id}); err != nil {
		t.Fatal(err)
	}
	// At most 25 on-demand rotations.
	for i := 3; i < 25; i++ {
		if _, err := kc2.RotateKeyOnDemand(ctx, &kms.RotateKeyOnDemandInput{KeyId: id}); err != nil {
			t.Fatal(i, err)
		}
	}
	_, err = kc2.RotateKeyOnDemand(ctx, &kms.RotateKeyOnDemandInput{KeyId: id}, noRetry)
	if msg := wantCode(t, err, "LimitExceededException"); !strings.HasPrefix(msg, "The on-demand rotations limit has been reached") {
		t.Fatal(msg)
	}
}

type randReader struct{}

func (randReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(i * 7)
	}
	return len(p), nil
}
