package azurecloud

import (
	"bytes"
	"context"
	"crypto"
	"crypto/aes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// RFC 3394 section 4.1 and RFC 5649 section 6 test vectors.
func TestAESKeyWrapVectors(t *testing.T) {
	block, _ := aes.NewCipher(unhex(t, "000102030405060708090A0B0C0D0E0F"))
	pt := unhex(t, "00112233445566778899AABBCCDDEEFF")
	ct, err := aesKeyWrap(block, pt)
	if err != nil || !bytes.Equal(ct, unhex(t, "1FA68B0A8112B447 AEF34BD8FB5A7B82 9D3E862371D2CFE5")) {
		t.Fatalf("RFC 3394 wrap: %x %v", ct, err)
	}
	back, err := aesKeyUnwrap(block, ct)
	if err != nil || !bytes.Equal(back, pt) {
		t.Fatalf("RFC 3394 unwrap: %x %v", back, err)
	}
	ct[3] ^= 1
	if _, err := aesKeyUnwrap(block, ct); err == nil {
		t.Fatal("tampered wrap unwrapped")
	}
	kek, _ := aes.NewCipher(unhex(t, "5840df6e29b02af1 ab493b705bf16ea1 ae8338f4dcc176a8"))
	for _, v := range []struct{ key, wrapped string }{
		{"c37b7e6492584340 bed1220780894115 5068f738", "138bdeaa9b8fa7fc 61f97742e72248ee 5ae6ae5360d1ae6a 5f54f373fa543b6a"},
		{"466f7250617369", "afbeb0f07dfbf541 9200f2ccb50bb24f"},
	} {
		got, err := aesKeyWrapPad(kek, unhex(t, v.key))
		if err != nil || !bytes.Equal(got, unhex(t, v.wrapped)) {
			t.Fatalf("RFC 5649 wrap of %s: %x %v", v.key, got, err)
		}
		back, err := aesKeyUnwrapPad(kek, got)
		if err != nil || !bytes.Equal(back, unhex(t, v.key)) {
			t.Fatalf("RFC 5649 unwrap: %x %v", back, err)
		}
	}
}

// secp256k1: the public key of d = 1 is the generator (SEC 2, 2.4.1), a
// signature made through the SDK verifies with a fresh parse of the
// published point, and the PKCS #8 export round-trips.
func TestP256KKnownPointAndES256K(t *testing.T) {
	k, err := parseK1Scalar([]byte{1})
	if err != nil {
		t.Fatal(err)
	}
	x, y := k.Public().(*k1Public).xy()
	if hex.EncodeToString(x) != strings.ToLower("79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798") ||
		hex.EncodeToString(y) != strings.ToLower("483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8") {
		t.Fatalf("G = (%x, %x)", x, y)
	}
	der, err := pkcs8Of(k)
	if err != nil {
		t.Fatal(err)
	}
	if k2, err := parsePKCS8K1(der); err != nil || !bytes.Equal(k2.scalar(), k.scalar()) {
		t.Fatalf("PKCS #8 round trip: %v", err)
	}
	for _, bad := range [][]byte{{0}, bytes.Repeat([]byte{0xff}, 32)} { // zero, >= N
		if _, err := parseK1Scalar(bad); err == nil {
			t.Fatalf("scalar %x accepted", bad)
		}
	}

	e := startEmu(t, Options{})
	c := onboard(t, e, "k1vault", roleKVCryptoOfficer)
	kc := keysClient(t, e, c.vaultURL, secretCred(t, e, c.ID))
	ctx := context.Background()
	// Import d = 1 and read back the generator.
	imp, err := kc.ImportKey(ctx, "gen", azkeys.ImportKeyParameters{Key: &azkeys.JSONWebKey{Kty: ptr(azkeys.KeyTypeEC), Crv: ptr(azkeys.CurveNameP256K), D: []byte{1}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(imp.Key.X, x) || !bytes.Equal(imp.Key.Y, y) || *imp.Key.Crv != azkeys.CurveNameP256K {
		t.Fatalf("imported point %x %x", imp.Key.X, imp.Key.Y)
	}
	created, err := kc.CreateKey(ctx, "k1", azkeys.CreateKeyParameters{Kty: ptr(azkeys.KeyTypeEC), Curve: ptr(azkeys.CurveNameP256K)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("ekm"))
	sig, err := kc.Sign(ctx, "k1", "", azkeys.SignParameters{Algorithm: ptr(azkeys.SignatureAlgorithmES256K), Value: digest[:]}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := parseK1Public(created.Key.X, created.Key.Y)
	if err != nil || len(sig.Result) != 64 || !pub.verify(digest[:], sig.Result) {
		t.Fatalf("ES256K signature does not verify with the published key: %v", err)
	}
	bad := bytes.Clone(sig.Result)
	bad[10] ^= 1
	v, err := kc.Verify(ctx, "k1", "", azkeys.VerifyParameters{Algorithm: ptr(azkeys.SignatureAlgorithmES256K), Digest: digest[:], Signature: bad}, nil)
	if err != nil || *v.Value {
		t.Fatalf("tampered signature verified: %v", err)
	}
	// The algorithm is bound to the curve.
	_, err = kc.Sign(ctx, "k1", "", azkeys.SignParameters{Algorithm: ptr(azkeys.SignatureAlgorithmES256), Value: digest[:]}, nil)
	if re := respErr(t, err); re.StatusCode != 400 || re.ErrorCode != "BadParameter" {
		t.Fatalf("ES256 on P-256K: %v", err)
	}
}

// premium is an onboarded customer with a premium vault (soft delete 7
// days) and the app as Key Vault Administrator.
func premium(t *testing.T, e *Emulator, name string) (customer, *azkeys.Client) {
	t.Helper()
	tn, err := e.CreateTenant()
	if err != nil {
		t.Fatal(err)
	}
	sp, err := e.CreateServicePrincipal(tn.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	u, err := e.CreateVaultWithOptions(tn.ID, "rg1", name, VaultOptions{SKU: "premium", Location: "westus2", SoftDeleteDays: 7})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.AssignRole(tn.ID, "/subscriptions/"+tn.SubscriptionID, roleKVAdministrator, sp); err != nil {
		t.Fatal(err)
	}
	c := customer{Tenant: tn, spID: sp, vaultURL: u}
	return c, keysClient(t, e, u, secretCred(t, e, tn.ID))
}

func TestBackupRestoreRules(t *testing.T) {
	e := startEmu(t, Options{})
	ctx := context.Background()
	c, kc := premium(t, e, "bkvault")
	created, err := kc.CreateKey(ctx, "bk", azkeys.CreateKeyParameters{Kty: ptr(azkeys.KeyTypeRSAHSM), Tags: map[string]*string{"a": ptr("b")}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if *created.Attributes.RecoverableDays != 7 || *created.Attributes.RecoveryLevel != "CustomizedRecoverable+Purgeable" {
		t.Fatalf("recovery %d %s", *created.Attributes.RecoverableDays, *created.Attributes.RecoveryLevel)
	}
	if _, err := kc.RotateKey(ctx, "bk", nil); err != nil {
		t.Fatal(err)
	}
	b, err := kc.BackupKey(ctx, "bk", nil)
	if err != nil {
		t.Fatal(err)
	}
	// Markers long enough that random ciphertext cannot hold them by
	// chance (the two bytes "bk" alone appeared in one run's blob).
	if bytes.Contains(b.Value, []byte(`"bk"`)) || bytes.Contains(b.Value, []byte("/keys/bk")) || bytes.Contains(b.Value, []byte(c.ID)) {
		t.Fatal("the backup blob is not opaque")
	}
	// Same name in use: conflict.
	_, err = kc.RestoreKey(ctx, azkeys.RestoreKeyParameters{KeyBackup: b.Value}, nil)
	if re := respErr(t, err); re.StatusCode != 409 {
		t.Fatalf("restore over a live key: %v", err)
	}
	// Tampered blob.
	bad := bytes.Clone(b.Value)
	bad[len(bad)-5] ^= 1
	_, err = kc.RestoreKey(ctx, azkeys.RestoreKeyParameters{KeyBackup: bad}, nil)
	if re := respErr(t, err); re.StatusCode != 400 || re.ErrorCode != "BadParameter" {
		t.Fatalf("tampered restore: %v", err)
	}
	// Another vault of the same subscription in the same geography
	// (westus2 -> eastus, both United States): restored with every version.
	u2, err := e.CreateVaultWithOptions(c.ID, "rg2", "bkvault2", VaultOptions{SKU: "premium", Location: "eastus"})
	if err != nil {
		t.Fatal(err)
	}
	kc2 := keysClient(t, e, u2, secretCred(t, e, c.ID))
	r, err := kc2.RestoreKey(ctx, azkeys.RestoreKeyParameters{KeyBackup: b.Value}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Key.KID.Name() != "bk" || *r.Tags["a"] != "b" || !strings.Contains(string(*r.Key.KID), "bkvault2.vault.azure.net") {
		t.Fatalf("restored %s", *r.Key.KID)
	}
	n := 0
	for p := kc2.NewListKeyPropertiesVersionsPager("bk", nil); p.More(); {
		pg, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n += len(pg.Value)
	}
	if n != 2 {
		t.Fatalf("restored %d versions", n)
	}
	// Other geography, same subscription: refused.
	u3, err := e.CreateVaultWithOptions(c.ID, "rg3", "bkvaulteu", VaultOptions{SKU: "premium", Location: "westeurope"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = keysClient(t, e, u3, secretCred(t, e, c.ID)).RestoreKey(ctx, azkeys.RestoreKeyParameters{KeyBackup: b.Value}, nil)
	if re := respErr(t, err); re.StatusCode != 400 || !strings.Contains(err.Error(), "geography") {
		t.Fatalf("cross-geography restore: %v", err)
	}
	// Another tenant's (subscription's) vault: refused.
	_, kcOther := premium(t, e, "bkother")
	_, err = kcOther.RestoreKey(ctx, azkeys.RestoreKeyParameters{KeyBackup: b.Value}, nil)
	if re := respErr(t, err); re.StatusCode != 400 || !strings.Contains(err.Error(), "subscription") {
		t.Fatalf("cross-subscription restore: %v", err)
	}
}

func TestRotationPolicyAndAutoRotation(t *testing.T) {
	e := startEmu(t, Options{})
	ctx := context.Background()
	rc, kc := premium(t, e, "rotvault")
	if _, err := kc.CreateKey(ctx, "rk", azkeys.CreateKeyParameters{Kty: ptr(azkeys.KeyTypeRSA)}, nil); err != nil {
		t.Fatal(err)
	}
	// The default policy: notify 30 days before expiry.
	def, err := kc.GetKeyRotationPolicy(ctx, "rk", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(def.LifetimeActions) != 1 || *def.LifetimeActions[0].Action.Type != azkeys.KeyRotationPolicyActionNotify || *def.LifetimeActions[0].Trigger.TimeBeforeExpiry != "P30D" {
		t.Fatalf("default policy %+v", def.LifetimeActions)
	}
	for _, bad := range []azkeys.KeyRotationPolicy{
		{Attributes: &azkeys.KeyRotationPolicyAttributes{ExpiryTime: ptr("P20D")}},
		{LifetimeActions: []*azkeys.LifetimeAction{{Action: &azkeys.LifetimeActionType{Type: ptr(azkeys.KeyRotationPolicyActionRotate)}, Trigger: &azkeys.LifetimeActionTrigger{TimeAfterCreate: ptr("P1D")}}}},
		{LifetimeActions: []*azkeys.LifetimeAction{{Action: &azkeys.LifetimeActionType{Type: ptr(azkeys.KeyRotationPolicyActionRotate)}, Trigger: &azkeys.LifetimeActionTrigger{TimeBeforeExpiry: ptr("P10D")}}}},
		{LifetimeActions: []*azkeys.LifetimeAction{{Action: &azkeys.LifetimeActionType{Type: ptr(azkeys.KeyRotationPolicyActionRotate)}, Trigger: &azkeys.LifetimeActionTrigger{TimeAfterCreate: ptr("thirty days")}}}},
	} {
		_, err := kc.UpdateKeyRotationPolicy(ctx, "rk", bad, nil)
		if re := respErr(t, err); re.StatusCode != 400 || re.ErrorCode != "BadParameter" {
			t.Fatalf("invalid policy accepted: %v", err)
		}
	}
	pol := azkeys.KeyRotationPolicy{
		Attributes: &azkeys.KeyRotationPolicyAttributes{ExpiryTime: ptr("P90D")},
		LifetimeActions: []*azkeys.LifetimeAction{{Action: &azkeys.LifetimeActionType{Type: ptr(azkeys.KeyRotationPolicyActionRotate)},
			Trigger: &azkeys.LifetimeActionTrigger{TimeAfterCreate: ptr("P30D")}}},
	}
	up, err := kc.UpdateKeyRotationPolicy(ctx, "rk", pol, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(up.LifetimeActions) != 2 || *up.Attributes.ExpiryTime != "P90D" || up.Attributes.Created == nil {
		t.Fatalf("updated policy %+v", up)
	}
	// Manual rotation applies expiryTime to the new version.
	rot, err := kc.RotateKey(ctx, "rk", nil)
	if err != nil {
		t.Fatal(err)
	}
	if rot.Attributes.Expires == nil || rot.Attributes.Expires.Sub(*rot.Attributes.Created) != 90*24*time.Hour {
		t.Fatalf("rotated version expiry %v", rot.Attributes.Expires)
	}
	// 65 days later: rotations at +30 and +60 days (from the manual
	// rotation), each created at its due time with its own expiry.
	start := *rot.Attributes.Created
	e.AdvanceClock(65 * 24 * time.Hour)
	kc = keysClient(t, e, rc.vaultURL, secretCred(t, e, rc.ID)) // tokens from the new time
	cur, err := kc.GetKey(ctx, "rk", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := cur.Attributes.Created.Sub(start); got != 60*24*time.Hour {
		t.Fatalf("current version created %v after the manual rotation, want 60 days", got)
	}
	n := 0
	for p := kc.NewListKeyPropertiesVersionsPager("rk", nil); p.More(); {
		pg, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n += len(pg.Value)
	}
	if n != 4 || e.Counters()["kv.auto_rotate"] != 2 {
		t.Fatalf("%d versions, %d automatic rotations", n, e.Counters()["kv.auto_rotate"])
	}
	// A soft-deleted key is purged at the end of the retention (7 days).
	if _, err := kc.DeleteKey(ctx, "rk", nil); err != nil {
		t.Fatal(err)
	}
	e.AdvanceClock(8 * 24 * time.Hour)
	kc = keysClient(t, e, rc.vaultURL, secretCred(t, e, rc.ID))
	_, err = kc.GetDeletedKey(ctx, "rk", nil)
	if re := respErr(t, err); re.StatusCode != 404 {
		t.Fatalf("deleted key after its retention: %v", err)
	}
}

func releasePolicyDoc(authority string, claim string, value any) []byte {
	b, _ := json.Marshal(map[string]any{"version": "1.0.0", "anyOf": []any{map[string]any{
		"authority": authority, "allOf": []any{map[string]any{"claim": claim, "equals": value}}}}})
	return b
}

const testAttestIssuer = "https://ekmtest.weu.attest.azure.net"

func TestExportableKeysAndRelease(t *testing.T) {
	e := startEmu(t, Options{})
	ctx := context.Background()
	sc, kc := premium(t, e, "skrvault")
	pol := &azkeys.KeyReleasePolicy{EncodedPolicy: releasePolicyDoc(testAttestIssuer, "x-ms-attestation-type", "sevsnpvm")}
	// Refused, never silently dropped: exportable without a policy, a
	// policy on a non-exportable key, an exportable software key, a
	// malformed policy.
	for _, p := range []azkeys.CreateKeyParameters{
		{Kty: ptr(azkeys.KeyTypeRSAHSM), KeyAttributes: &azkeys.KeyAttributes{Exportable: ptr(true)}},
		{Kty: ptr(azkeys.KeyTypeRSAHSM), ReleasePolicy: pol},
		{Kty: ptr(azkeys.KeyTypeRSA), KeyAttributes: &azkeys.KeyAttributes{Exportable: ptr(true)}, ReleasePolicy: pol},
		{Kty: ptr(azkeys.KeyTypeRSAHSM), KeyAttributes: &azkeys.KeyAttributes{Exportable: ptr(true)}, ReleasePolicy: &azkeys.KeyReleasePolicy{EncodedPolicy: []byte(`{"anyOf":[]}`)}},
	} {
		_, err := kc.CreateKey(ctx, "bad", p, nil)
		if re := respErr(t, err); re.StatusCode != 400 || re.ErrorCode != "BadParameter" {
			t.Fatalf("create %+v: %v", p, err)
		}
	}
	created, err := kc.CreateKey(ctx, "skr", azkeys.CreateKeyParameters{Kty: ptr(azkeys.KeyTypeECHSM), Curve: ptr(azkeys.CurveNameP256),
		KeyAttributes: &azkeys.KeyAttributes{Exportable: ptr(true)}, ReleasePolicy: &azkeys.KeyReleasePolicy{EncodedPolicy: pol.EncodedPolicy, Immutable: ptr(true)}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !*created.Attributes.Exportable || created.ReleasePolicy == nil || !bytes.Equal(created.ReleasePolicy.EncodedPolicy, pol.EncodedPolicy) || !*created.ReleasePolicy.Immutable {
		t.Fatalf("exportable key answered %+v %+v", created.Attributes, created.ReleasePolicy)
	}
	// The immutable policy cannot change.
	_, err = kc.UpdateKey(ctx, "skr", "", azkeys.UpdateKeyParameters{ReleasePolicy: &azkeys.KeyReleasePolicy{EncodedPolicy: releasePolicyDoc(testAttestIssuer, "a", "b")}}, nil)
	if re := respErr(t, err); re.StatusCode != 400 {
		t.Fatalf("changed an immutable policy: %v", err)
	}

	target, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	good, err := e.AttestationToken(testAttestIssuer, map[string]any{"x-ms-attestation-type": "sevsnpvm"}, &target.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	rel, err := kc.Release(ctx, "skr", "", azkeys.ReleaseParameters{TargetAttestationToken: &good, Algorithm: ptr(azkeys.KeyEncryptionAlgorithmRSAAESKEYWRAP256)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The JWS: signed by a certificate the emulator CA issued for the vault.
	parts := strings.Split(*rel.Value, ".")
	if len(parts) != 3 {
		t.Fatal("release value is not a JWS")
	}
	hb, _ := base64.RawURLEncoding.DecodeString(parts[0])
	var hdr struct {
		Alg string   `json:"alg"`
		X5C []string `json:"x5c"`
	}
	if err := json.Unmarshal(hb, &hdr); err != nil || hdr.Alg != "RS256" || len(hdr.X5C) == 0 {
		t.Fatalf("JWS header %s", hb)
	}
	der, _ := base64.StdEncoding.DecodeString(hdr.X5C[0])
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(e.CAPEM())
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "skrvault.vault.azure.net", Roots: roots}); err != nil {
		t.Fatalf("release signer: %v", err)
	}
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	d := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(leaf.PublicKey.(*rsa.PublicKey), cryptoSHA256, d[:], sig); err != nil {
		t.Fatalf("JWS signature: %v", err)
	}
	// Unwrap the released key with the target's private key: it is the
	// private half of the key's published point.
	pb, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var payload struct {
		Request  struct{ Enc string } `json:"request"`
		Response struct {
			Key struct {
				Key struct {
					KeyHSM string `json:"key_hsm"`
				} `json:"key"`
			} `json:"key"`
		} `json:"response"`
	}
	if err := json.Unmarshal(pb, &payload); err != nil || payload.Request.Enc != "RSA_AES_KEY_WRAP_256" {
		t.Fatalf("payload %s", pb)
	}
	kh, _ := base64.RawURLEncoding.DecodeString(payload.Response.Key.Key.KeyHSM)
	var khs struct{ Ciphertext string }
	if err := json.Unmarshal(kh, &khs); err != nil {
		t.Fatal(err)
	}
	ct, _ := base64.RawURLEncoding.DecodeString(khs.Ciphertext)
	kek, err := rsa.DecryptOAEP(sha256.New(), nil, target, ct[:256], nil)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := aes.NewCipher(kek)
	pkcs8, err := aesKeyUnwrapPad(blk, ct[256:])
	if err != nil {
		t.Fatal(err)
	}
	k, err := x509.ParsePKCS8PrivateKey(pkcs8)
	if err != nil {
		t.Fatal(err)
	}
	ek := k.(*ecdsa.PrivateKey)
	if ek.X.Cmp(new(big.Int).SetBytes(created.Key.X)) != 0 || ek.Y.Cmp(new(big.Int).SetBytes(created.Key.Y)) != 0 {
		t.Fatal("released key is not the key's private half")
	}

	// A token whose claims do not satisfy the policy, one from an unknown
	// issuer, and one past its expiry are refused.
	wrong, _ := e.AttestationToken(testAttestIssuer, map[string]any{"x-ms-attestation-type": "sgx"}, &target.PublicKey)
	_, err = kc.Release(ctx, "skr", "", azkeys.ReleaseParameters{TargetAttestationToken: &wrong}, nil)
	if re := respErr(t, err); re.StatusCode != 403 {
		t.Fatalf("release to a non-matching environment: %v", err)
	}
	other, _ := e.AttestationToken("https://other.eus.attest.azure.net", map[string]any{"x-ms-attestation-type": "sevsnpvm"}, &target.PublicKey)
	_, err = kc.Release(ctx, "skr", "", azkeys.ReleaseParameters{TargetAttestationToken: &other}, nil)
	if re := respErr(t, err); re.StatusCode != 403 {
		t.Fatalf("release to another authority: %v", err)
	}
	e.AdvanceClock(9 * time.Hour)
	kc = keysClient(t, e, sc.vaultURL, secretCred(t, e, sc.ID))
	_, err = kc.Release(ctx, "skr", "", azkeys.ReleaseParameters{TargetAttestationToken: &good}, nil)
	if re := respErr(t, err); re.StatusCode != 400 || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("release with an expired assertion: %v", err)
	}
	// A non-exportable key is not released.
	if _, err := kc.CreateKey(ctx, "plain", azkeys.CreateKeyParameters{Kty: ptr(azkeys.KeyTypeRSAHSM)}, nil); err != nil {
		t.Fatal(err)
	}
	fresh, _ := e.AttestationToken(testAttestIssuer, map[string]any{"x-ms-attestation-type": "sevsnpvm"}, &target.PublicKey)
	_, err = kc.Release(ctx, "plain", "", azkeys.ReleaseParameters{TargetAttestationToken: &fresh}, nil)
	if re := respErr(t, err); re.StatusCode != 403 {
		t.Fatalf("released a non-exportable key: %v", err)
	}
}

// Vaults refuse what only Managed HSM offers, and standard vaults refuse
// HSM keys.
func TestVaultRefusesManagedHSMFeatures(t *testing.T) {
	e := startEmu(t, Options{})
	ctx := context.Background()
	c := onboard(t, e, "stdvault", roleKVCryptoOfficer)
	kc := keysClient(t, e, c.vaultURL, secretCred(t, e, c.ID))
	for _, p := range []azkeys.CreateKeyParameters{
		{Kty: ptr(azkeys.KeyTypeOct)}, {Kty: ptr(azkeys.KeyTypeOctHSM)}, {Kty: ptr(azkeys.KeyTypeRSAHSM)},
	} {
		_, err := kc.CreateKey(ctx, "x", p, nil)
		if re := respErr(t, err); re.StatusCode != 400 {
			t.Fatalf("%s in a standard vault: %v", *p.Kty, err)
		}
	}
	_, err := kc.GetRandomBytes(ctx, azkeys.GetRandomBytesParameters{Count: ptr(int32(8))}, nil)
	if re := respErr(t, err); re.StatusCode != 400 {
		t.Fatalf("rng on a vault: %v", err)
	}
}

func hsmClient(t *testing.T, e *Emulator, hsmURL string, tenantID string) *azkeys.Client {
	t.Helper()
	return keysClient(t, e, hsmURL, secretCred(t, e, tenantID))
}

func TestManagedHSM(t *testing.T) {
	e := startEmu(t, Options{})
	ctx := context.Background()
	tn, err := e.CreateTenant()
	if err != nil {
		t.Fatal(err)
	}
	sp, err := e.CreateServicePrincipal(tn.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	u, err := e.CreateManagedHSM(tn.ID, "rg", "ekmhsm", ManagedHSMOptions{Administrators: []string{tn.AdminObjectID}})
	if err != nil {
		t.Fatal(err)
	}
	kc := hsmClient(t, e, u, tn.ID)
	// No role yet: local RBAC denies.
	_, err = kc.CreateKey(ctx, "aes", azkeys.CreateKeyParameters{Kty: ptr(azkeys.KeyTypeOctHSM)}, nil)
	if re := respErr(t, err); re.StatusCode != 403 {
		t.Fatalf("create without a role: %v", err)
	}
	// The administrator assigns Crypto User through the pool's own API.
	status, _, _ := call(t, e, http.MethodPut, u+"/providers/Microsoft.Authorization/roleAssignments/"+newGUID()+"?api-version=7.6", tn.AdminTokens.ManagedHSM,
		map[string]any{"properties": map[string]string{"roleDefinitionId": hsmRoleDefinitionPathPrefix + roleHSMCryptoUser, "principalId": sp}})
	if status != 201 {
		t.Fatalf("role assignment: %d", status)
	}
	status, list, _ := call(t, e, http.MethodGet, u+"/providers/Microsoft.Authorization/roleDefinitions?api-version=7.6", tn.AdminTokens.ManagedHSM, nil)
	if status != 200 || len(list["value"].([]any)) != len(builtinHSMRoles) {
		t.Fatalf("role definitions: %d %v", status, list)
	}

	// oct-HSM: AES-GCM (the HSM picks the IV), AES-CBC with padding, and
	// AES key wrap.
	key, err := kc.CreateKey(ctx, "aes", azkeys.CreateKeyParameters{Kty: ptr(azkeys.KeyTypeOct), KeySize: ptr(int32(256))}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if *key.Key.Kty != azkeys.KeyTypeOctHSM || key.Key.K != nil {
		t.Fatalf("oct key %s, k exposed: %v", *key.Key.Kty, key.Key.K != nil)
	}
	pt := []byte("attack at dawn")
	aad := []byte("ctx")
	enc, err := kc.Encrypt(ctx, "aes", "", azkeys.KeyOperationParameters{Algorithm: ptr(azkeys.EncryptionAlgorithmA256GCM), Value: pt, AdditionalAuthenticatedData: aad}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(enc.IV) != 12 || len(enc.AuthenticationTag) != 16 {
		t.Fatalf("GCM iv %d tag %d", len(enc.IV), len(enc.AuthenticationTag))
	}
	dec, err := kc.Decrypt(ctx, "aes", "", azkeys.KeyOperationParameters{Algorithm: ptr(azkeys.EncryptionAlgorithmA256GCM), Value: enc.Result, IV: enc.IV,
		AuthenticationTag: enc.AuthenticationTag, AdditionalAuthenticatedData: aad}, nil)
	if err != nil || !bytes.Equal(dec.Result, pt) {
		t.Fatalf("GCM round trip: %v", err)
	}
	_, err = kc.Decrypt(ctx, "aes", "", azkeys.KeyOperationParameters{Algorithm: ptr(azkeys.EncryptionAlgorithmA256GCM), Value: enc.Result, IV: enc.IV,
		AuthenticationTag: enc.AuthenticationTag, AdditionalAuthenticatedData: []byte("other")}, nil)
	if re := respErr(t, err); re.StatusCode != 400 {
		t.Fatalf("GCM with the wrong aad: %v", err)
	}
	iv := []byte("0123456789ABCDEF")
	cbc, err := kc.Encrypt(ctx, "aes", "", azkeys.KeyOperationParameters{Algorithm: ptr(azkeys.EncryptionAlgorithmA256CBCPAD), Value: pt, IV: iv}, nil)
	if err != nil || len(cbc.Result) != 16 || !bytes.Equal(cbc.IV, iv) {
		t.Fatalf("CBCPAD: %v", err)
	}
	dec, err = kc.Decrypt(ctx, "aes", "", azkeys.KeyOperationParameters{Algorithm: ptr(azkeys.EncryptionAlgorithmA256CBCPAD), Value: cbc.Result, IV: cbc.IV}, nil)
	if err != nil || !bytes.Equal(dec.Result, pt) {
		t.Fatalf("CBCPAD round trip: %v", err)
	}
	dek := bytes.Repeat([]byte{9}, 32)
	wr, err := kc.WrapKey(ctx, "aes", "", azkeys.KeyOperationParameters{Algorithm: ptr(azkeys.EncryptionAlgorithmA256KW), Value: dek}, nil)
	if err != nil || len(wr.Result) != 40 {
		t.Fatalf("A256KW: %v", err)
	}
	uw, err := kc.UnwrapKey(ctx, "aes", "", azkeys.KeyOperationParameters{Algorithm: ptr(azkeys.EncryptionAlgorithmA256KW), Value: wr.Result}, nil)
	if err != nil || !bytes.Equal(uw.Result, dek) {
		t.Fatalf("A256KW round trip: %v", err)
	}
	_, err = kc.Encrypt(ctx, "aes", "", azkeys.KeyOperationParameters{Algorithm: ptr(azkeys.EncryptionAlgorithmA128GCM), Value: pt}, nil)
	if re := respErr(t, err); re.StatusCode != 400 {
		t.Fatalf("A128GCM with a 256-bit key: %v", err)
	}
	// RSA keys are HSM keys in a pool.
	rk, err := kc.CreateKey(ctx, "rsa", azkeys.CreateKeyParameters{Kty: ptr(azkeys.KeyTypeRSA)}, nil)
	if err != nil || *rk.Key.Kty != azkeys.KeyTypeRSAHSM {
		t.Fatalf("RSA in a pool: %v", err)
	}
	rb, err := kc.GetRandomBytes(ctx, azkeys.GetRandomBytesParameters{Count: ptr(int32(100))}, nil)
	if err != nil || len(rb.Value) != 100 {
		t.Fatalf("rng: %v", err)
	}
	// Crypto User deletes but may not purge (Crypto Officer's action).
	if _, err := kc.DeleteKey(ctx, "rsa", nil); err != nil {
		t.Fatal(err)
	}
	_, err = kc.PurgeDeletedKey(ctx, "rsa", nil)
	var re *azcore.ResponseError
	if !errorsAs(err, &re) || re.StatusCode != 403 || !strings.Contains(err.Error(), "managedHsm/keys/deletedKeys/delete") {
		t.Fatalf("purge as Crypto User: %v", err)
	}
	if _, err := e.AssignHSMRole("ekmhsm", "/keys/rsa", roleHSMCryptoOfficer, sp); err != nil {
		t.Fatal(err)
	}
	if _, err := kc.PurgeDeletedKey(ctx, "rsa", nil); err != nil {
		t.Fatalf("purge as Crypto Officer at key scope: %v", err)
	}
	// Backups of a pool restore into the pool, not into a vault.
	bk, err := kc.BackupKey(ctx, "aes", nil)
	if err != nil {
		t.Fatal(err)
	}
	vu, err := e.CreateVaultWithOptions(tn.ID, "rg", "ekmhsmvault", VaultOptions{SKU: "premium"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.AssignRole(tn.ID, "/subscriptions/"+tn.SubscriptionID, roleKVAdministrator, sp); err != nil {
		t.Fatal(err)
	}
	_, err = keysClient(t, e, vu, secretCred(t, e, tn.ID)).RestoreKey(ctx, azkeys.RestoreKeyParameters{KeyBackup: bk.Value}, nil)
	if re := respErr(t, err); re.StatusCode != 400 {
		t.Fatalf("pool backup restored into a vault: %v", err)
	}
	// Security domain: refused, not emulated.
	status, m, _ := call(t, e, http.MethodPost, u+"/securitydomain/download?api-version=7.6", tn.AdminTokens.ManagedHSM, map[string]any{})
	if status != 400 || m["error"] == nil {
		t.Fatalf("security domain: %d %v", status, m)
	}
}

// ARM creates a pool with its initial administrators.
func TestARMManagedHSM(t *testing.T) {
	e := startEmu(t, Options{})
	tn, err := e.CreateTenant()
	if err != nil {
		t.Fatal(err)
	}
	arm := "https://management.azure.com/subscriptions/" + tn.SubscriptionID + "/resourceGroups/rg"
	if s, _, _ := call(t, e, http.MethodPut, arm+"?api-version=2021-04-01", tn.AdminTokens.Management, map[string]string{"location": "eastus"}); s != 201 {
		t.Fatalf("rg %d", s)
	}
	url := arm + "/providers/Microsoft.KeyVault/managedHSMs/armhsm?api-version=2023-07-01"
	s, m, _ := call(t, e, http.MethodPut, url, tn.AdminTokens.Management, map[string]any{"location": "eastus", "sku": map[string]string{"family": "B", "name": "Standard_B1"},
		"properties": map[string]any{"tenantId": tn.ID, "initialAdminObjectIds": []string{tn.AdminObjectID}, "softDeleteRetentionInDays": 7}})
	if s != 201 {
		t.Fatalf("PUT managedHSMs: %d %v", s, m)
	}
	props := m["properties"].(map[string]any)
	if props["hsmUri"] != "https://armhsm.managedhsm.azure.net/" || props["softDeleteRetentionInDays"].(float64) != 7 {
		t.Fatalf("pool %v", props)
	}
	// The administrator manages role assignments but holds no key actions.
	s, _, _ = call(t, e, http.MethodGet, "https://armhsm.managedhsm.azure.net/providers/Microsoft.Authorization/roleAssignments?api-version=7.6", tn.AdminTokens.ManagedHSM, nil)
	if s != 200 {
		t.Fatalf("list assignments as administrator: %d", s)
	}
	s, m, _ = call(t, e, http.MethodPost, "https://armhsm.managedhsm.azure.net/keys/k/create?api-version=7.6", tn.AdminTokens.ManagedHSM, map[string]string{"kty": "RSA"})
	if s != 403 {
		t.Fatalf("administrator created a key: %d %v", s, m)
	}
	// A vault token is not a Managed HSM token.
	s, _, _ = call(t, e, http.MethodGet, "https://armhsm.managedhsm.azure.net/keys?api-version=7.6", tn.AdminTokens.Vault, nil)
	if s != 401 {
		t.Fatalf("vault token on a pool: %d", s)
	}
}

const cryptoSHA256 = crypto.SHA256

// P-256K, oct-HSM keys, pools, local role assignments and rotation
// policies survive a restart with --state-dir.
func TestNewStatePersists(t *testing.T) {
	dir := t.TempDir()
	e := startEmu(t, Options{StateDir: dir})
	ctx := context.Background()
	tn, _ := e.CreateTenant()
	sp, _ := e.CreateServicePrincipal(tn.ID, "")
	u, err := e.CreateManagedHSM(tn.ID, "rg", "persisthsm", ManagedHSMOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.AssignHSMRole("persisthsm", "/", roleHSMCryptoUser, sp); err != nil {
		t.Fatal(err)
	}
	kc := hsmClient(t, e, u, tn.ID)
	for _, p := range []azkeys.CreateKeyParameters{{Kty: ptr(azkeys.KeyTypeOctHSM)}, {Kty: ptr(azkeys.KeyTypeECHSM), Curve: ptr(azkeys.CurveNameP256K)}} {
		if _, err := kc.CreateKey(ctx, strings.ToLower(strings.ReplaceAll(string(*p.Kty), "-", "")), p, nil); err != nil {
			t.Fatal(err)
		}
	}
	enc, err := kc.Encrypt(ctx, "octhsm", "", azkeys.KeyOperationParameters{Algorithm: ptr(azkeys.EncryptionAlgorithmA256GCM), Value: []byte("x")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kc.UpdateKeyRotationPolicy(ctx, "echsm", azkeys.KeyRotationPolicy{LifetimeActions: []*azkeys.LifetimeAction{{Action: &azkeys.LifetimeActionType{Type: ptr(azkeys.KeyRotationPolicyActionRotate)}, Trigger: &azkeys.LifetimeActionTrigger{TimeAfterCreate: ptr("P7D")}}}}, nil); err != nil {
		t.Fatal(err)
	}
	e.Close()

	e2 := startEmu(t, Options{StateDir: dir})
	kc2 := hsmClient(t, e2, u, tn.ID)
	dec, err := kc2.Decrypt(ctx, "octhsm", "", azkeys.KeyOperationParameters{Algorithm: ptr(azkeys.EncryptionAlgorithmA256GCM), Value: enc.Result, IV: enc.IV, AuthenticationTag: enc.AuthenticationTag}, nil)
	if err != nil || string(dec.Result) != "x" {
		t.Fatalf("decrypt after restart: %v", err)
	}
	d := sha256.Sum256([]byte("y"))
	if _, err := kc2.Sign(ctx, "echsm", "", azkeys.SignParameters{Algorithm: ptr(azkeys.SignatureAlgorithmES256K), Value: d[:]}, nil); err != nil {
		t.Fatalf("sign after restart: %v", err)
	}
	pol, err := kc2.GetKeyRotationPolicy(ctx, "echsm", nil)
	if err != nil || *pol.LifetimeActions[0].Trigger.TimeAfterCreate != "P7D" {
		t.Fatalf("policy after restart: %v", err)
	}
}
