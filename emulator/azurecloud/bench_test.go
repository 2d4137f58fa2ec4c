package azurecloud

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
)

// BenchmarkLocalRSAOAEPUnwrap is the baseline: the RSA private-key
// operation alone, in process.
func BenchmarkLocalRSAOAEPUnwrap(b *testing.B) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	ct, _ := rsa.EncryptOAEP(sha256.New(), rand.Reader, &k.PublicKey, make([]byte, 32), nil)
	for b.Loop() {
		if _, err := rsa.DecryptOAEP(sha256.New(), nil, k, ct, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSDKUnwrapViaEmulator is the same operation through azkeys, TLS,
// token validation, RBAC and the limiter (disabled here).
func BenchmarkSDKUnwrapViaEmulator(b *testing.B) {
	s := DefaultSettings()
	s.Throttle.Disabled = true
	e, err := New(Options{Settings: &s})
	if err != nil {
		b.Fatal(err)
	}
	if err := e.Start(); err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	tn, _ := e.CreateTenant()
	sp, _ := e.CreateServicePrincipal(tn.ID, "")
	u, _ := e.CreateVault(tn.ID, "rg", "benchvault")
	if _, err := e.AssignRole(tn.ID, "/subscriptions/"+tn.SubscriptionID, roleKVCryptoOfficer, sp); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	a := e.App()
	cred, err := newSecretCredForBench(e, tn.ID, a)
	if err != nil {
		b.Fatal(err)
	}
	kc, err := azkeys.NewClient(u, cred, &azkeys.ClientOptions{ClientOptions: sdkOpts(e)})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := kc.CreateKey(ctx, "k", azkeys.CreateKeyParameters{Kty: ptr(azkeys.KeyTypeRSA)}, nil); err != nil {
		b.Fatal(err)
	}
	alg := ptr(azkeys.EncryptionAlgorithmRSAOAEP256)
	w, err := kc.WrapKey(ctx, "k", "", azkeys.KeyOperationParameters{Algorithm: alg, Value: make([]byte, 32)}, nil)
	if err != nil {
		b.Fatal(err)
	}
	ver := w.KID.Version()
	b.ResetTimer()
	for b.Loop() {
		if _, err := kc.UnwrapKey(ctx, "k", ver, azkeys.KeyOperationParameters{Algorithm: alg, Value: w.Result}, nil); err != nil {
			b.Fatal(err)
		}
	}
}
