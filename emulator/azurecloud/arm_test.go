package azurecloud

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
)

func TestARMLifecycle(t *testing.T) {
	e := startEmu(t, Options{})
	tn, err := e.CreateTenant()
	if err != nil {
		t.Fatal(err)
	}
	mt := tn.AdminTokens.Management
	sub := "https://management.azure.com/subscriptions/" + tn.SubscriptionID
	rg := sub + "/resourceGroups/life"
	vault := rg + "/providers/Microsoft.KeyVault/vaults/lifevault"
	const v = "?api-version=2023-07-01"
	if s, m, _ := call(t, e, http.MethodPut, vault+v, mt, map[string]any{"location": "eastus", "properties": map[string]any{"tenantId": tn.ID}}); s != 404 ||
		m["error"].(map[string]any)["code"] != "ResourceGroupNotFound" {
		t.Fatalf("%d %v", s, m)
	}
	if s, _, _ := call(t, e, http.MethodPut, rg+v, mt, map[string]any{"location": "East US"}); s != 201 {
		t.Fatal(s)
	}
	if s, m, _ := call(t, e, http.MethodGet, rg+v, mt, nil); s != 200 || m["location"] != "eastus" {
		t.Fatalf("%d %v", s, m)
	}
	if s, _, _ := call(t, e, http.MethodPut, vault+v, mt, map[string]any{"location": "eastus", "properties": map[string]any{"tenantId": newGUID()}}); s != 400 {
		t.Fatal("foreign tenantId accepted")
	}
	if s, _, _ := call(t, e, http.MethodPut, vault+v, mt, map[string]any{"location": "eastus", "properties": map[string]any{"tenantId": tn.ID, "sku": map[string]string{"name": "premium"}}}); s != 200 {
		t.Fatal(s)
	}
	// Built-in roles are readable by id.
	if s, m, _ := call(t, e, http.MethodGet, sub+"/providers/Microsoft.Authorization/roleDefinitions/"+roleKVCryptoUser+v, mt, nil); s != 200 ||
		m["properties"].(map[string]any)["roleName"] != "Key Vault Crypto User" {
		t.Fatalf("%d %v", s, m)
	}
	if s, _, _ := call(t, e, http.MethodPut, sub+"/providers/Microsoft.Authorization/roleDefinitions/"+roleKVCryptoUser+v, mt, map[string]any{}); s != 403 {
		t.Fatal("built-in role modified")
	}
	// Role definition with a bad assignable scope, then a good one.
	rdURL := sub + "/providers/Microsoft.Authorization/roleDefinitions/" + newGUID() + v
	body := func(scope string) map[string]any {
		return map[string]any{"properties": map[string]any{"roleName": "r", "permissions": []map[string]any{{"dataActions": []string{"Microsoft.KeyVault/vaults/keys/*"}}},
			"assignableScopes": []string{scope}}}
	}
	if s, _, _ := call(t, e, http.MethodPut, rdURL, mt, body("/subscriptions/"+newGUID())); s != 400 {
		t.Fatal("foreign assignable scope accepted")
	}
	if s, _, _ := call(t, e, http.MethodPut, rdURL, mt, body("/subscriptions/"+tn.SubscriptionID+"/resourceGroups/life")); s != 201 {
		t.Fatal(s)
	}
	if s, _, _ := call(t, e, http.MethodPut, rdURL, mt, body("/subscriptions/"+tn.SubscriptionID+"/resourceGroups/life")); s != 200 {
		t.Fatal("update of a role definition")
	}
	// Not assignable at subscription scope (outside its assignable scopes).
	raSub := sub + "/providers/Microsoft.Authorization/roleAssignments/" + newGUID() + v
	rdID := "/subscriptions/" + tn.SubscriptionID + "/providers/Microsoft.Authorization/roleDefinitions/" + lastSegment(strings.Split(rdURL, "?")[0])
	if s, _, _ := call(t, e, http.MethodPut, raSub, mt, map[string]any{"properties": map[string]any{"roleDefinitionId": rdID, "principalId": tn.AdminObjectID}}); s != 403 {
		t.Fatalf("assignment outside assignable scopes: %d", s)
	}
	// Type mismatch for a known principal.
	raVault := vault + "/providers/Microsoft.Authorization/roleAssignments/" + newGUID() + v
	if s, m, _ := call(t, e, http.MethodPut, raVault, mt, map[string]any{"properties": map[string]any{"roleDefinitionId": rdID, "principalId": tn.AdminObjectID, "principalType": "ServicePrincipal"}}); s != 400 ||
		m["error"].(map[string]any)["code"] != "UnmatchedPrincipalType" {
		t.Fatalf("%d %v", s, m)
	}
	if s, _, _ := call(t, e, http.MethodPut, raVault, mt, map[string]any{"properties": map[string]any{"roleDefinitionId": rdID, "principalId": tn.AdminObjectID}}); s != 201 {
		t.Fatal(s)
	}
	if s, _, _ := call(t, e, http.MethodPut, raVault, mt, map[string]any{"properties": map[string]any{"roleDefinitionId": rdID, "principalId": tn.AdminObjectID}}); s != 201 {
		t.Fatal("idempotent re-PUT")
	}
	if s, m, _ := call(t, e, http.MethodPut, raVault, mt, map[string]any{"properties": map[string]any{"roleDefinitionId": roleKVCryptoUser, "principalId": tn.AdminObjectID}}); s != 400 ||
		m["error"].(map[string]any)["code"] != "RoleAssignmentUpdateNotPermitted" {
		t.Fatalf("%d %v", s, m)
	}
	if s, m, _ := call(t, e, http.MethodGet, vault+"/providers/Microsoft.Authorization/roleAssignments"+v+"&$filter=principalId%20eq%20'"+tn.AdminObjectID+"'", mt, nil); s != 200 ||
		len(m["value"].([]any)) != 3 { // Owner + KV Administrator at subscription, and the vault one
		t.Fatalf("%d %v", s, m)
	}
	// Deleting the vault removes its data plane.
	if s, _, _ := call(t, e, http.MethodDelete, vault+v, mt, nil); s != 200 {
		t.Fatal(s)
	}
	if s, _, _ := call(t, e, http.MethodGet, vault+v, mt, nil); s != 404 {
		t.Fatal(s)
	}
	if s, _, _ := call(t, e, http.MethodGet, "https://lifevault.vault.azure.net/keys"+apiV, tn.AdminTokens.Vault, nil); s != 404 {
		t.Fatal(s)
	}
	if s, _, _ := call(t, e, http.MethodDelete, rg+v, mt, nil); s != 200 {
		t.Fatal(s)
	}
	if s, _, _ := call(t, e, http.MethodGet, rg+v, mt, nil); s != 404 {
		t.Fatal(s)
	}
}

func TestKeyScopedAssignmentScope(t *testing.T) {
	e := startEmu(t, Options{})
	c := onboard(t, e, "scoped")
	for _, k := range []string{"mine", "theirs"} {
		if _, err := e.CreateKey("scoped", k, "RSA", 2048); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.AssignRole(c.ID, "/subscriptions/"+c.SubscriptionID+"/resourceGroups/rg1/providers/Microsoft.KeyVault/vaults/scoped/keys/mine", roleKVCryptoUser, c.spID); err != nil {
		t.Fatal(err)
	}
	kc := keysClient(t, e, c.vaultURL, secretCred(t, e, c.ID))
	ctx := context.Background()
	// Versions of its key are listable; the vault's key list is not.
	p := kc.NewListKeyPropertiesVersionsPager("mine", nil)
	if _, err := p.NextPage(ctx); err != nil {
		t.Fatal(err)
	}
	_, err := kc.NewListKeyPropertiesPager(nil).NextPage(ctx)
	if _, inner, _ := innerCode(t, respErr(t, err)); inner != "ForbiddenByRbac" {
		t.Fatal(inner)
	}
	if _, err := kc.GetKey(ctx, "theirs", "", nil); respErr(t, err).StatusCode != 403 {
		t.Fatal("other key readable")
	}
	// Forbidden comes before not-found: no existence oracle.
	if _, err := kc.GetKey(ctx, "missing", "", nil); respErr(t, err).StatusCode != 403 {
		t.Fatal("missing key revealed")
	}
	if _, err := kc.Encrypt(ctx, "mine", "", azkeys.KeyOperationParameters{Algorithm: ptr(azkeys.EncryptionAlgorithmRSAOAEP), Value: []byte("x")}, nil); err != nil {
		t.Fatal(err)
	}
}

func TestRequestLogHasNoSecrets(t *testing.T) {
	var buf bytes.Buffer
	var mu syncWriter
	mu.w = &buf
	e := startEmu(t, Options{Logger: slog.New(slog.NewTextHandler(&mu, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	c := onboard(t, e, "logvault")
	if _, err := secretCred(t, e, c.ID).GetToken(context.Background(), vaultScope); err != nil {
		t.Fatal(err)
	}
	call(t, e, http.MethodGet, c.vaultURL+"keys"+apiV, c.AdminTokens.Vault, nil)
	e.Close()
	out := mu.String()
	if !strings.Contains(out, "path=/keys") || !strings.Contains(out, "status=200") {
		t.Fatalf("log lacks requests: %s", out)
	}
	for _, secret := range []string{c.AdminTokens.Vault[:40], e.App().ClientSecret} {
		if strings.Contains(out, secret) {
			t.Fatal("secret in request log")
		}
	}
}
