package azurecloud

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
)

func TestSDKSecretCredentialKeyLifecycle(t *testing.T) {
	e := startEmu(t, Options{})
	c := onboard(t, e, "vault1", roleKVCryptoOfficer)
	ctx := context.Background()
	cred := secretCred(t, e, c.ID)

	tok, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{"https://vault.azure.net/.default"}})
	if err != nil {
		t.Fatal(err)
	}
	if tok.Token == "" {
		t.Fatal("empty token")
	}

	kc := keysClient(t, e, c.vaultURL, cred)
	created, err := kc.CreateKey(ctx, "org-x--name", azkeys.CreateKeyParameters{Kty: ptr(azkeys.KeyTypeRSA), KeySize: ptr(int32(2048))}, nil)
	if err != nil {
		t.Fatal(err)
	}
	v1 := created.Key.KID.Version()
	if len(v1) != 32 {
		t.Fatalf("version %q", v1)
	}
	got, err := kc.GetKey(ctx, "org-x--name", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Key.KID.Version() != v1 || *got.Key.Kty != azkeys.KeyTypeRSA {
		t.Fatalf("get: %+v", got.Key)
	}
	pt := bytes.Repeat([]byte{7}, 32)
	enc, err := kc.Encrypt(ctx, "org-x--name", "", azkeys.KeyOperationParameters{Algorithm: ptr(azkeys.EncryptionAlgorithmRSAOAEP256), Value: pt}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if enc.KID.Version() != v1 {
		t.Fatalf("encrypt kid %s not versioned", *enc.KID)
	}
	dec, err := kc.Decrypt(ctx, "org-x--name", v1, azkeys.KeyOperationParameters{Algorithm: ptr(azkeys.EncryptionAlgorithmRSAOAEP256), Value: enc.Result}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dec.Result, pt) {
		t.Fatal("round trip mismatch")
	}

	rot, err := kc.RotateKey(ctx, "org-x--name", nil)
	if err != nil {
		t.Fatal(err)
	}
	v2 := rot.Key.KID.Version()
	if v2 == v1 {
		t.Fatal("rotate kept the version")
	}
	// Old ciphertext still decrypts with the old version.
	if _, err := kc.Decrypt(ctx, "org-x--name", v1, azkeys.KeyOperationParameters{Algorithm: ptr(azkeys.EncryptionAlgorithmRSAOAEP256), Value: enc.Result}, nil); err != nil {
		t.Fatal(err)
	}
	var versions []string
	pager := kc.NewListKeyPropertiesVersionsPager("org-x--name", nil)
	for pager.More() {
		p, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range p.Value {
			versions = append(versions, k.KID.Version())
		}
	}
	if len(versions) != 2 {
		t.Fatalf("versions %v", versions)
	}

	// Disable v2: crypto is refused with KeyDisabled in innererror.
	if _, err := kc.UpdateKey(ctx, "org-x--name", v2, azkeys.UpdateKeyParameters{KeyAttributes: &azkeys.KeyAttributes{Enabled: ptr(false)}}, nil); err != nil {
		t.Fatal(err)
	}
	_, err = kc.Encrypt(ctx, "org-x--name", "", azkeys.KeyOperationParameters{Algorithm: ptr(azkeys.EncryptionAlgorithmRSAOAEP256), Value: pt}, nil)
	re := respErr(t, err)
	code, inner, msg := innerCode(t, re)
	if re.StatusCode != http.StatusForbidden || code != "Forbidden" || inner != "KeyDisabled" || !strings.Contains(msg, "disabled key") {
		t.Fatalf("disabled: %d %s %s %s", re.StatusCode, code, inner, msg)
	}
	// GET of a disabled key still works by default.
	g2, err := kc.GetKey(ctx, "org-x--name", v2, nil)
	if err != nil || *g2.Attributes.Enabled {
		t.Fatalf("get disabled: %v", err)
	}
}
