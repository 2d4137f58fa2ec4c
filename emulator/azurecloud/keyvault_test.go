package azurecloud

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
)

const apiV = "?api-version=2025-07-01"

func TestChallengeComesFirst(t *testing.T) {
	e := startEmu(t, Options{})
	c := onboard(t, e, "chalvault")
	for _, u := range []string{
		"https://chalvault.vault.azure.net/keys/k/encrypt" + apiV,
		"https://chalvault.vault.azure.net/keys/!!bad!!/zzz?api-version=1.0",
		"https://chalvault.vault.azure.net/nonsense",
	} {
		req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader("{garbage"))
		resp, err := e.HTTPClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := `Bearer authorization="https://login.microsoftonline.com/` + c.ID + `", resource="https://vault.azure.net"`
		if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != want {
			t.Fatalf("%s: %d %q", u, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
		if resp.Header.Get("Content-Type") != "application/json; charset=utf-8" || resp.Header.Get("x-ms-request-id") == "" ||
			resp.Header.Get("x-ms-keyvault-service-version") == "" {
			t.Fatalf("headers %v", resp.Header)
		}
	}
	// Other clouds name their own resource.
	if _, err := e.CreateVault(c.ID, "rg1", "cnvault"); err != nil {
		t.Fatal(err)
	}
	_, _, h := call(t, e, http.MethodGet, "https://cnvault.vault.azure.cn/keys"+apiV, "", nil)
	if !strings.HasSuffix(h.Get("WWW-Authenticate"), `resource="https://vault.azure.cn"`) {
		t.Fatalf("china challenge %q", h.Get("WWW-Authenticate"))
	}
	if n := e.Counters()["kv.challenge"]; n != 4 {
		t.Fatalf("kv.challenge = %d", n)
	}
}

func TestKeyVaultErrorsAndShapes(t *testing.T) {
	e := startEmu(t, Options{})
	c := onboard(t, e, "errvault")
	tok := c.AdminTokens.Vault
	base := "https://errvault.vault.azure.net"
	kvErr := func(status int, m map[string]any, wantStatus int, code, inner string) {
		t.Helper()
		em, _ := m["error"].(map[string]any)
		ie, _ := em["innererror"].(map[string]any)
		gotInner, _ := ie["code"].(string)
		if status != wantStatus || em["code"] != code || gotInner != inner {
			t.Fatalf("want %d %s/%s, got %d %v", wantStatus, code, inner, status, m)
		}
	}
	status, m, _ := call(t, e, http.MethodGet, base+"/keys/missing/"+apiV, tok, nil)
	kvErr(status, m, 404, "KeyNotFound", "")
	if !strings.HasPrefix(m["error"].(map[string]any)["message"].(string), "A key with (name/id) missing was not found in this key vault.") {
		t.Fatalf("%v", m)
	}
	status, m, _ = call(t, e, http.MethodGet, base+"/keys?api-version=7.3", tok, nil)
	kvErr(status, m, 400, "BadParameter", "")
	for _, v := range []string{"7.4", "7.5", "7.6", "2025-07-01"} {
		if status, _, _ := call(t, e, http.MethodGet, base+"/keys?api-version="+v, tok, nil); status != 200 {
			t.Fatalf("api-version %s: %d", v, status)
		}
	}
	// Wrong audience: an ARM token on the vault.
	status, m, _ = call(t, e, http.MethodGet, base+"/keys"+apiV, c.AdminTokens.Management, nil)
	kvErr(status, m, 401, "Unauthorized", "")
	if !strings.Contains(m["error"].(map[string]any)["message"].(string), "AKV10022: Invalid audience. Expected https://vault.azure.net") {
		t.Fatalf("%v", m)
	}
	// Garbage token.
	status, m, _ = call(t, e, http.MethodGet, base+"/keys"+apiV, "a.b.c", nil)
	kvErr(status, m, 401, "Unauthorized", "")

	// A key with only decrypt permitted.
	status, m, _ = call(t, e, http.MethodPost, base+"/keys/dec-only/create"+apiV, tok, map[string]any{"kty": "RSA", "key_size": 3072, "key_ops": []string{"decrypt"}})
	if status != 200 {
		t.Fatalf("%d %v", status, m)
	}
	kid := m["key"].(map[string]any)["kid"].(string)
	if !strings.HasPrefix(kid, base+"/keys/dec-only/") || strings.ContainsAny(m["key"].(map[string]any)["n"].(string), "=+/") {
		t.Fatalf("kid/base64: %v", m)
	}
	if _, ok := m["attributes"].(map[string]any)["created"].(float64); !ok {
		t.Fatalf("created not an integer: %v", m["attributes"])
	}
	status, m, _ = call(t, e, http.MethodPost, base+"/keys/dec-only/encrypt"+apiV, tok, map[string]any{"alg": "RSA-OAEP", "value": "AAAA"})
	kvErr(status, m, 403, "Forbidden", "KeyOperationForbidden")
	if m["error"].(map[string]any)["message"] != "Operation encrypt is not permitted on this key." {
		t.Fatalf("%v", m)
	}

	// Expired key: encrypt/wrap refused, decrypt/unwrap allowed.
	past := e.Now().Add(-time.Hour).Unix()
	status, m, _ = call(t, e, http.MethodPost, base+"/keys/old/create"+apiV, tok, map[string]any{"kty": "RSA", "attributes": map[string]any{"exp": past}})
	if status != 200 {
		t.Fatalf("%d %v", status, m)
	}
	status, m, _ = call(t, e, http.MethodPost, base+"/keys/old/wrapkey"+apiV, tok, map[string]any{"alg": "RSA-OAEP-256", "value": "AAAA"})
	kvErr(status, m, 403, "Forbidden", "KeyExpired")
	// Make a ciphertext via the key's public part while it was valid: set
	// exp in the future, encrypt, then expire it again.
	status, m, _ = call(t, e, http.MethodPatch, base+"/keys/old/"+apiV, tok, map[string]any{"attributes": map[string]any{"exp": e.Now().Add(time.Hour).Unix()}})
	if status != 200 {
		t.Fatalf("%d %v", status, m)
	}
	status, enc, _ := call(t, e, http.MethodPost, base+"/keys/old/wrapkey"+apiV, tok, map[string]any{"alg": "RSA-OAEP-256", "value": "AAAA"})
	if status != 200 || strings.ContainsAny(enc["value"].(string), "=+/") {
		t.Fatalf("%d %v", status, enc)
	}
	e.AdvanceClock(2 * time.Hour)
	toks, _ := e.AdminTokens(c.ID)
	status, m, _ = call(t, e, http.MethodPost, base+"/keys/old/unwrapkey"+apiV, toks.Vault, map[string]any{"alg": "RSA-OAEP-256", "value": enc["value"]})
	if status != 200 || m["value"] != "AAAA" {
		t.Fatalf("unwrap after expiry: %d %v", status, m)
	}
	status, m, _ = call(t, e, http.MethodPost, base+"/keys/old/encrypt"+apiV, toks.Vault, map[string]any{"alg": "RSA-OAEP-256", "value": "AAAA"})
	kvErr(status, m, 403, "Forbidden", "KeyExpired")
	tok = toks.Vault

	// Not yet valid.
	status, _, _ = call(t, e, http.MethodPost, base+"/keys/future/create"+apiV, tok, map[string]any{"kty": "RSA", "attributes": map[string]any{"nbf": e.Now().Add(time.Hour).Unix()}})
	if status != 200 {
		t.Fatal(status)
	}
	status, m, _ = call(t, e, http.MethodPost, base+"/keys/future/encrypt"+apiV, tok, map[string]any{"alg": "RSA1_5", "value": "AAAA"})
	kvErr(status, m, 403, "Forbidden", "KeyNotYetValid")

	// EC key: created and readable, refused for RSA encryption.
	status, m, _ = call(t, e, http.MethodPost, base+"/keys/ec/create"+apiV, tok, map[string]any{"kty": "EC", "crv": "P-256"})
	if status != 200 || m["key"].(map[string]any)["kty"] != "EC" || m["key"].(map[string]any)["crv"] != "P-256" {
		t.Fatalf("%d %v", status, m)
	}
	status, m, _ = call(t, e, http.MethodPost, base+"/keys/ec/encrypt"+apiV, tok, map[string]any{"alg": "RSA-OAEP", "value": "AAAA"})
	kvErr(status, m, 403, "Forbidden", "KeyOperationForbidden")

	// Bad inputs.
	for _, tc := range []struct {
		path string
		body any
	}{
		{"/keys/k1/create", map[string]any{"kty": "RSA", "key_size": 1024}},
		{"/keys/k1/create", map[string]any{"kty": "oct"}},
		{"/keys/k1/create", map[string]any{"kty": "EC", "crv": "P-192"}},
		{"/keys/k1/create", map[string]any{"kty": "RSA", "key_ops": []string{"fly"}}},
		{"/keys/k1/create", "not an object"},
		{"/keys/dec-only/decrypt", map[string]any{"alg": "RSA-OAEP", "value": "!!"}},
		{"/keys/dec-only/decrypt", map[string]any{"alg": "A256GCM", "value": "AAAA"}},
		{"/keys/dec-only/decrypt", map[string]any{"alg": "RSA-OAEP", "value": "AAAA"}},
		{"/keys/bad_name/create", map[string]any{"kty": "RSA"}},
	} {
		status, m, _ := call(t, e, http.MethodPost, base+tc.path+apiV, tok, tc.body)
		kvErr(status, m, 400, "BadParameter", "")
	}
	// Plaintext too long for the key.
	status, m, _ = call(t, e, http.MethodPost, base+"/keys/future/decrypt"+apiV, tok, map[string]any{"alg": "RSA-OAEP", "value": strings.Repeat("A", 2000)})
	kvErr(status, m, 400, "BadParameter", "")

	// Unknown vault.
	status, m, _ = call(t, e, http.MethodGet, "https://novault.vault.azure.net/keys"+apiV, tok, nil)
	if status != 404 {
		t.Fatalf("%d %v", status, m)
	}
}

func TestListPagingDeleteRecover(t *testing.T) {
	e := startEmu(t, Options{})
	c := onboard(t, e, "pagevault")
	ctx := context.Background()
	kc := adminKeysClient(t, e, c)
	for i := 0; i < 3; i++ {
		if _, err := kc.CreateKey(ctx, "paged", azkeys.CreateKeyParameters{Kty: ptr(azkeys.KeyTypeEC), Curve: ptr(azkeys.CurveNameP256)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	// maxresults=2 forces a nextLink that the raw client follows.
	u := "https://pagevault.vault.azure.net/keys/paged/versions" + apiV + "&maxresults=2"
	seen := 0
	for pages := 0; u != ""; pages++ {
		status, m, _ := call(t, e, http.MethodGet, u, c.AdminTokens.Vault, nil)
		if status != 200 || pages > 3 {
			t.Fatalf("%d %v", status, m)
		}
		seen += len(m["value"].([]any))
		u, _ = m["nextLink"].(string)
	}
	if seen != 3 {
		t.Fatalf("saw %d versions", seen)
	}
	pager := kc.NewListKeyPropertiesPager(nil)
	n := 0
	for pager.More() {
		p, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range p.Value {
			if k.KID.Version() != "" {
				t.Fatalf("list kid should be versionless: %s", *k.KID)
			}
			n++
		}
	}
	if n != 1 {
		t.Fatalf("keys %d", n)
	}
	del, err := kc.DeleteKey(ctx, "paged", nil)
	if err != nil || del.RecoveryID == nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := kc.GetKey(ctx, "paged", "", nil); respErr(t, err).StatusCode != 404 {
		t.Fatal("deleted key still readable")
	}
	_, err = kc.CreateKey(ctx, "paged", azkeys.CreateKeyParameters{Kty: ptr(azkeys.KeyTypeRSA)}, nil)
	if re := respErr(t, err); re.StatusCode != 409 {
		t.Fatalf("create over deleted: %d", re.StatusCode)
	}
	if _, err := kc.GetDeletedKey(ctx, "paged", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := kc.RecoverDeletedKey(ctx, "paged", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := kc.GetKey(ctx, "paged", "", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := kc.DeleteKey(ctx, "paged", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := kc.PurgeDeletedKey(ctx, "paged", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := kc.CreateKey(ctx, "paged", azkeys.CreateKeyParameters{Kty: ptr(azkeys.KeyTypeRSA)}, nil); err != nil {
		t.Fatal(err)
	}
}

func TestSignVerifyAndImport(t *testing.T) {
	e := startEmu(t, Options{})
	c := onboard(t, e, "signvault")
	ctx := context.Background()
	kc := adminKeysClient(t, e, c)
	for _, tc := range []struct {
		kty azkeys.KeyType
		alg azkeys.SignatureAlgorithm
	}{{azkeys.KeyTypeRSA, azkeys.SignatureAlgorithmPS256}, {azkeys.KeyTypeRSA, azkeys.SignatureAlgorithmRS256}, {azkeys.KeyTypeEC, azkeys.SignatureAlgorithmES256}} {
		name := "s-" + strings.ToLower(string(tc.alg))
		if _, err := kc.CreateKey(ctx, name, azkeys.CreateKeyParameters{Kty: ptr(tc.kty)}, nil); err != nil {
			t.Fatal(err)
		}
		digest := make([]byte, 32)
		sig, err := kc.Sign(ctx, name, "", azkeys.SignParameters{Algorithm: ptr(tc.alg), Value: digest}, nil)
		if err != nil {
			t.Fatal(err)
		}
		v, err := kc.Verify(ctx, name, "", azkeys.VerifyParameters{Algorithm: ptr(tc.alg), Digest: digest, Signature: sig.Result}, nil)
		if err != nil || !*v.Value {
			t.Fatalf("verify %s: %v", tc.alg, err)
		}
		digest[0] = 1
		v, err = kc.Verify(ctx, name, "", azkeys.VerifyParameters{Algorithm: ptr(tc.alg), Digest: digest, Signature: sig.Result}, nil)
		if err != nil || *v.Value {
			t.Fatalf("verify tampered %s: %v", tc.alg, err)
		}
	}

	// Import an RSA key we hold, then decrypt locally made ciphertext.
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	jk := azkeys.JSONWebKey{Kty: ptr(azkeys.KeyTypeRSA), N: priv.N.Bytes(), E: big.NewInt(int64(priv.E)).Bytes(),
		D: priv.D.Bytes(), P: priv.Primes[0].Bytes(), Q: priv.Primes[1].Bytes()}
	imp, err := kc.ImportKey(ctx, "imported", azkeys.ImportKeyParameters{Key: &jk}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if imp.Key.D != nil {
		t.Fatal("private part returned")
	}
	ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, &priv.PublicKey, []byte("dek"), nil)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := kc.UnwrapKey(ctx, "imported", "", azkeys.KeyOperationParameters{Algorithm: ptr(azkeys.EncryptionAlgorithmRSAOAEP256), Value: ct}, nil)
	if err != nil || string(dec.Result) != "dek" {
		t.Fatalf("unwrap imported: %v", err)
	}
}
