package azurecloud

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
)

// TestConcurrentUse runs crypto, rotation, updates and control calls at
// once; -race checks the locking.
func TestConcurrentUse(t *testing.T) {
	e := startEmu(t, Options{})
	c := onboard(t, e, "busy", roleKVCryptoOfficer)
	if _, err := e.CreateKey("busy", "k", "RSA", 2048); err != nil {
		t.Fatal(err)
	}
	kc := keysClient(t, e, c.vaultURL, secretCred(t, e, c.ID))
	ctx := context.Background()
	alg := ptr(azkeys.EncryptionAlgorithmRSAOAEP256)
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for g := 0; g < 6; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				pt := []byte{byte(g), byte(i)}
				enc, err := kc.WrapKey(ctx, "k", "", azkeys.KeyOperationParameters{Algorithm: alg, Value: pt}, nil)
				if err != nil {
					errs <- err
					return
				}
				dec, err := kc.UnwrapKey(ctx, "k", enc.KID.Version(), azkeys.KeyOperationParameters{Algorithm: alg, Value: enc.Result}, nil)
				if err != nil || !bytes.Equal(dec.Result, pt) {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; i < 3; i++ {
			if _, err := kc.RotateKey(ctx, "k", nil); err != nil {
				errs <- err
			}
			if _, err := kc.UpdateKey(ctx, "k", "", azkeys.UpdateKeyParameters{Tags: map[string]*string{"i": ptr("x")}}, nil); err != nil {
				errs <- err
			}
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; i < 5; i++ {
			if _, err := e.CreateTenant(); err != nil {
				errs <- err
			}
			e.Counters()
			e.AdvanceClock(0)
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestHeadersAndBasicAuth(t *testing.T) {
	e := startEmu(t, Options{})
	c := onboard(t, e, "hdrvault")
	req, _ := http.NewRequest(http.MethodGet, c.vaultURL+"keys"+apiV, nil)
	req.Header.Set("Authorization", "Bearer "+c.AdminTokens.Vault)
	req.Header.Set("x-ms-client-request-id", "abc-123")
	resp, err := e.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("x-ms-client-request-id") != "abc-123" || resp.Header.Get("x-ms-keyvault-region") != "eastus" {
		t.Fatalf("%d %v", resp.StatusCode, resp.Header)
	}
	// Client secret in HTTP Basic auth.
	a := e.App()
	req, _ = http.NewRequest(http.MethodPost, "https://login.microsoftonline.com/"+c.ID+"/oauth2/v2.0/token",
		strings.NewReader("grant_type=client_credentials&scope=https%3A%2F%2Fvault.azure.net%2F.default"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(a.ClientID, a.ClientSecret)
	resp, err = e.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("basic auth: %d", resp.StatusCode)
	}
}

func TestGoHelpers(t *testing.T) {
	e := startEmu(t, Options{})
	c := onboard(t, e, "helpers")
	kid, err := e.CreateKey("helpers", "ec", "EC", 0)
	if err != nil || !strings.HasPrefix(kid, "https://helpers.vault.azure.net/keys/ec/") {
		t.Fatalf("%s %v", kid, err)
	}
	if _, err := e.CreateKey("nope", "k", "RSA", 0); err == nil {
		t.Fatal("unknown vault accepted")
	}
	if _, err := e.CreateKey("helpers", "k", "RSA", 1000); err == nil {
		t.Fatal("bad size accepted")
	}
	raID, err := e.AssignRole(c.ID, "/subscriptions/"+c.SubscriptionID+"/resourceGroups/rg1/providers/Microsoft.KeyVault/vaults/helpers/keys/ec", roleKVCryptoUser, c.spID)
	if err != nil {
		t.Fatal(err)
	}
	kc := keysClient(t, e, c.vaultURL, secretCred(t, e, c.ID))
	got, err := kc.GetKey(context.Background(), "ec", "", nil)
	if err != nil || *got.Key.Kty != azkeys.KeyTypeEC {
		t.Fatalf("%v", err)
	}
	if err := e.RemoveRoleAssignment(c.ID, raID); err != nil {
		t.Fatal(err)
	}
	if _, err := kc.GetKey(context.Background(), "ec", "", nil); respErr(t, err).StatusCode != 403 {
		t.Fatal("assignment removal not effective")
	}
	if err := e.DeleteServicePrincipal(c.ID, c.spID); err != nil {
		t.Fatal(err)
	}
	cred, _ := azidentity.NewClientSecretCredential(c.ID, e.App().ClientID, e.App().ClientSecret, &azidentity.ClientSecretCredentialOptions{ClientOptions: sdkOpts(e)})
	if _, err := cred.GetToken(context.Background(), vaultScope); err == nil || !strings.Contains(err.Error(), "AADSTS700016") {
		t.Fatalf("%v", err)
	}
	if _, err := e.AssignRole(c.ID, "/subscriptions/"+newGUID(), roleKVCryptoUser, c.AdminObjectID); err == nil {
		t.Fatal("foreign scope accepted")
	}
}
