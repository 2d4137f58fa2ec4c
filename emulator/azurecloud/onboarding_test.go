package azurecloud

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
)

// TestOnboardingRawHTTP walks the customer onboarding steps with raw
// Graph/ARM calls, then proves the key-scoped grant with the SDK.
func TestOnboardingRawHTTP(t *testing.T) {
	e := startEmu(t, Options{})
	ctx := context.Background()
	app := e.App()
	tn, err := e.CreateTenant()
	if err != nil {
		t.Fatal(err)
	}
	gt, mt := tn.AdminTokens.Graph, tn.AdminTokens.Management
	const graph = "https://graph.microsoft.com/v1.0/servicePrincipals"
	arm := "https://management.azure.com/subscriptions/" + tn.SubscriptionID
	rg := arm + "/resourceGroups/customer-rg"
	vaultID := rg + "/providers/Microsoft.KeyVault/vaults/custvault"

	// Before step 1 the app cannot get a token in the customer tenant.
	if _, err := secretCred(t, e, tn.ID).GetToken(ctx, vaultScope); err == nil || !strings.Contains(err.Error(), "AADSTS700016") {
		t.Fatalf("before consent: %v", err)
	}

	// Step 1: service principal via Graph.
	status, sp, _ := call(t, e, http.MethodPost, graph, gt, map[string]string{"appId": app.ClientID})
	if status != http.StatusCreated || sp["appId"] != app.ClientID || sp["appOwnerOrganizationId"] != app.HomeTenantID ||
		sp["accountEnabled"] != true || sp["servicePrincipalType"] != "Application" || sp["appDisplayName"] == "" {
		t.Fatalf("create SP: %d %v", status, sp)
	}
	spID := sp["id"].(string)
	status, m, _ := call(t, e, http.MethodPost, graph, gt, map[string]string{"appId": app.ClientID})
	if status != http.StatusConflict || m["error"].(map[string]any)["code"] != "Request_MultipleObjectsWithSameKeyValue" {
		t.Fatalf("duplicate SP: %d %v", status, m)
	}
	for _, u := range []string{graph + "(appId='" + app.ClientID + "')", graph + "/" + spID} {
		if status, m, _ := call(t, e, http.MethodGet, u, gt, nil); status != 200 || m["id"] != spID {
			t.Fatalf("GET %s: %d %v", u, status, m)
		}
	}
	if status, m, _ := call(t, e, http.MethodGet, graph+"?$filter=appId%20eq%20'"+app.ClientID+"'", gt, nil); status != 200 || len(m["value"].([]any)) != 1 {
		t.Fatalf("filter: %d %v", status, m)
	}
	// An ARM token is refused by Graph, and the app's own Graph token is
	// not an admin token.
	if status, m, _ := call(t, e, http.MethodGet, graph, mt, nil); status != 401 {
		t.Fatalf("ARM token on Graph: %d %v", status, m)
	}
	appTok, err := secretCred(t, e, tn.ID).GetToken(ctx, graphScope)
	if err != nil {
		t.Fatal(err)
	}
	if status, m, _ := call(t, e, http.MethodPost, graph, appTok.Token, map[string]string{"appId": app.ClientID}); status != 403 ||
		m["error"].(map[string]any)["code"] != "Authorization_RequestDenied" {
		t.Fatalf("app token on Graph: %d %v", status, m)
	}

	// Step 2: resource group and RBAC vault via ARM.
	if status, m, _ := call(t, e, http.MethodPut, rg+"?api-version=2021-04-01", mt, map[string]any{"location": "westeurope"}); status != 201 {
		t.Fatalf("rg: %d %v", status, m)
	}
	status, v, _ := call(t, e, http.MethodPut, vaultID+"?api-version=2023-07-01", mt, map[string]any{
		"location":   "westeurope",
		"properties": map[string]any{"tenantId": tn.ID, "sku": map[string]string{"family": "A", "name": "standard"}, "enableRbacAuthorization": true},
	})
	if status != 200 || v["properties"].(map[string]any)["vaultUri"] != "https://custvault.vault.azure.net/" {
		t.Fatalf("vault: %d %v", status, v)
	}
	if status, _, _ := call(t, e, http.MethodGet, vaultID+"?api-version=2023-07-01", mt, nil); status != 200 {
		t.Fatalf("get vault: %d", status)
	}
	if status, m, _ := call(t, e, http.MethodPut, vaultID+"?api-version=2023-07-01", mt, map[string]any{}); status != 400 {
		t.Fatalf("vault without location: %d %v", status, m)
	}

	// The admin creates two keys with its data-plane token.
	admin := keysClient(t, e, "https://custvault.vault.azure.net/", staticToken(tn.AdminTokens.Vault))
	for _, n := range []string{"org-x--name", "other"} {
		if _, err := admin.CreateKey(ctx, n, azkeys.CreateKeyParameters{Kty: ptr(azkeys.KeyTypeRSA), KeySize: ptr(int32(2048))}, nil); err != nil {
			t.Fatal(err)
		}
	}

	// Step 3: custom role.
	roleID := newGUID()
	roleURL := arm + "/providers/Microsoft.Authorization/roleDefinitions/" + roleID + "?api-version=2022-04-01"
	roleBody := map[string]any{"name": roleID, "properties": map[string]any{
		"roleName": "Vendor Key Encrypt/Decrypt", "description": "ekm", "type": "CustomRole",
		"permissions": []map[string]any{{"actions": []string{}, "notActions": []string{}, "notDataActions": []string{},
			"dataActions": []string{"Microsoft.KeyVault/vaults/keys/read", "Microsoft.KeyVault/vaults/keys/encrypt/action", "Microsoft.KeyVault/vaults/keys/decrypt/action"}}},
		"assignableScopes": []string{"/subscriptions/" + tn.SubscriptionID},
	}}
	status, rd, _ := call(t, e, http.MethodPut, roleURL, mt, roleBody)
	if status != 201 || rd["name"] != roleID || rd["properties"].(map[string]any)["type"] != "CustomRole" {
		t.Fatalf("role: %d %v", status, rd)
	}
	dup := newGUID()
	if status, m, _ := call(t, e, http.MethodPut, strings.Replace(roleURL, roleID, dup, 1), mt, roleBody); status != 409 {
		t.Fatalf("same role name: %d %v", status, m)
	}
	if status, m, _ := call(t, e, http.MethodGet, arm+"/providers/Microsoft.Authorization/roleDefinitions?api-version=2022-04-01&$filter=roleName%20eq%20'Vendor%20Key%20Encrypt/Decrypt'", mt, nil); status != 200 || len(m["value"].([]any)) != 1 {
		t.Fatalf("list roles: %d %v", status, m)
	}

	// Step 4: assignment at key scope.
	keyScope := vaultID + "/keys/org-x--name"
	raURL := func(id string) string {
		return keyScope + "/providers/Microsoft.Authorization/roleAssignments/" + id + "?api-version=2022-04-01"
	}
	rdFull := "/subscriptions/" + tn.SubscriptionID + "/providers/Microsoft.Authorization/roleDefinitions/" + roleID
	// Unknown principal without principalType: PrincipalNotFound.
	status, m, _ = call(t, e, http.MethodPut, raURL(newGUID()), mt, map[string]any{"properties": map[string]any{"roleDefinitionId": rdFull, "principalId": newGUID()}})
	if status != 400 || m["error"].(map[string]any)["code"] != "PrincipalNotFound" {
		t.Fatalf("PrincipalNotFound: %d %v", status, m)
	}
	raID := newGUID()
	status, ra, _ := call(t, e, http.MethodPut, raURL(raID), mt, map[string]any{"properties": map[string]any{
		"roleDefinitionId": rdFull, "principalId": spID, "principalType": "ServicePrincipal"}})
	props, _ := ra["properties"].(map[string]any)
	if status != 201 || ra["name"] != raID || props["scope"] != "/subscriptions/"+tn.SubscriptionID+"/resourceGroups/customer-rg/providers/Microsoft.KeyVault/vaults/custvault/keys/org-x--name" ||
		props["principalId"] != spID || ra["type"] != "Microsoft.Authorization/roleAssignments" {
		t.Fatalf("assignment: %d %v", status, ra)
	}
	status, m, _ = call(t, e, http.MethodPut, raURL(newGUID()), mt, map[string]any{"properties": map[string]any{
		"roleDefinitionId": rdFull, "principalId": spID, "principalType": "ServicePrincipal"}})
	if status != 409 || m["error"].(map[string]any)["code"] != "RoleAssignmentExists" {
		t.Fatalf("duplicate assignment: %d %v", status, m)
	}
	if status, _, _ := call(t, e, http.MethodGet, raURL(raID), mt, nil); status != 200 {
		t.Fatalf("get assignment: %d", status)
	}
	if status, _, _ := call(t, e, http.MethodDelete, strings.Replace(roleURL, "?", "?", 1), mt, nil); status != 409 {
		t.Fatalf("delete role in use: %d", status)
	}

	// The app can now encrypt/decrypt org-x--name, and nothing else.
	kc := keysClient(t, e, "https://custvault.vault.azure.net/", secretCred(t, e, tn.ID))
	pt := []byte("0123456789abcdef0123456789abcdef")
	enc, err := kc.Encrypt(ctx, "org-x--name", "", azkeys.KeyOperationParameters{Algorithm: ptr(azkeys.EncryptionAlgorithmRSAOAEP256), Value: pt}, nil)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := kc.Decrypt(ctx, "org-x--name", enc.KID.Version(), azkeys.KeyOperationParameters{Algorithm: ptr(azkeys.EncryptionAlgorithmRSAOAEP256), Value: enc.Result}, nil)
	if err != nil || !bytes.Equal(dec.Result, pt) {
		t.Fatalf("decrypt: %v", err)
	}
	if _, err := kc.GetKey(ctx, "org-x--name", "", nil); err != nil {
		t.Fatal(err)
	}
	_, err = kc.Encrypt(ctx, "other", "", azkeys.KeyOperationParameters{Algorithm: ptr(azkeys.EncryptionAlgorithmRSAOAEP256), Value: pt}, nil)
	re := respErr(t, err)
	code, inner, msg := innerCode(t, re)
	if re.StatusCode != 403 || code != "Forbidden" || inner != "ForbiddenByRbac" ||
		!strings.Contains(msg, "Action: 'Microsoft.KeyVault/vaults/keys/encrypt/action'") ||
		!strings.Contains(msg, "Resource: '/subscriptions/"+tn.SubscriptionID+"/resourcegroups/customer-rg/providers/microsoft.keyvault/vaults/custvault/keys/other'") ||
		!strings.Contains(msg, "Caller: appid="+app.ClientID+";oid="+spID+";iss=https://sts.windows.net/"+tn.ID+"/") {
		t.Fatalf("other key: %d %s %s %q", re.StatusCode, code, inner, msg)
	}
	// No wrap permission in the custom role.
	_, err = kc.WrapKey(ctx, "org-x--name", "", azkeys.KeyOperationParameters{Algorithm: ptr(azkeys.EncryptionAlgorithmRSAOAEP256), Value: pt}, nil)
	if re := respErr(t, err); re.StatusCode != 403 {
		t.Fatalf("wrap: %v", err)
	}

	// Removing the assignment revokes access for tokens still cached.
	if status, _, _ := call(t, e, http.MethodDelete, raURL(raID), mt, nil); status != 200 {
		t.Fatalf("delete assignment: %d", status)
	}
	_, err = kc.Decrypt(ctx, "org-x--name", "", azkeys.KeyOperationParameters{Algorithm: ptr(azkeys.EncryptionAlgorithmRSAOAEP256), Value: enc.Result}, nil)
	if re := respErr(t, err); re.StatusCode != 403 {
		t.Fatalf("after unassign: %v", err)
	}
	// Revocation: deleting the SP stops new tokens, and (CAE) the token the
	// client holds.
	if status, _, _ := call(t, e, http.MethodDelete, graph+"/"+spID, gt, nil); status != 204 {
		t.Fatalf("delete SP: %d", status)
	}
	_, err = secretCred(t, e, tn.ID).GetToken(ctx, vaultScope)
	var af *azidentity.AuthenticationFailedError
	if err == nil || !strings.Contains(err.Error(), "AADSTS700016") || !asAuthFailed(err, &af) {
		t.Fatalf("after SP delete: %v", err)
	}
	_, err = kc.Decrypt(ctx, "org-x--name", "", azkeys.KeyOperationParameters{Algorithm: ptr(azkeys.EncryptionAlgorithmRSAOAEP256), Value: enc.Result}, nil)
	if err == nil || !strings.Contains(err.Error(), "AADSTS700016") {
		t.Fatalf("cached client after SP delete: %v", err)
	}
}

func TestARMAuthorization(t *testing.T) {
	e := startEmu(t, Options{})
	a := onboard(t, e, "armvault")
	b, err := e.CreateTenant()
	if err != nil {
		t.Fatal(err)
	}
	sub := "https://management.azure.com/subscriptions/" + a.SubscriptionID
	// Another tenant's admin token: wrong issuer for this subscription.
	status, m, _ := call(t, e, http.MethodGet, sub+"?api-version=2022-12-01", b.AdminTokens.Management, nil)
	if status != 401 || m["error"].(map[string]any)["code"] != "InvalidAuthenticationTokenTenant" {
		t.Fatalf("%d %v", status, m)
	}
	// Graph token on ARM: wrong audience.
	status, m, _ = call(t, e, http.MethodGet, sub+"?api-version=2022-12-01", a.AdminTokens.Graph, nil)
	if status != 401 || m["error"].(map[string]any)["code"] != "InvalidAuthenticationTokenAudience" {
		t.Fatalf("%d %v", status, m)
	}
	// No api-version.
	if status, m, _ := call(t, e, http.MethodGet, sub, a.AdminTokens.Management, nil); status != 400 || m["error"].(map[string]any)["code"] != "MissingApiVersionParameter" {
		t.Fatalf("%d %v", status, m)
	}
	// No token.
	if status, _, h := call(t, e, http.MethodGet, sub+"?api-version=1", "", nil); status != 401 || h.Get("WWW-Authenticate") == "" {
		t.Fatalf("%d", status)
	}
	// The app (Crypto User on nothing) cannot write role assignments.
	tok, err := secretCred(t, e, a.ID).GetToken(context.Background(), mgmtScope)
	if err != nil {
		t.Fatal(err)
	}
	status, m, _ = call(t, e, http.MethodPut, sub+"/providers/Microsoft.Authorization/roleAssignments/"+newGUID()+"?api-version=2022-04-01", tok.Token,
		map[string]any{"properties": map[string]any{"roleDefinitionId": roleKVCryptoUser, "principalId": a.spID}})
	if status != 403 || m["error"].(map[string]any)["code"] != "AuthorizationFailed" {
		t.Fatalf("%d %v", status, m)
	}
	// Vault names are global.
	status, m, _ = call(t, e, http.MethodPut, "https://management.azure.com/subscriptions/"+b.SubscriptionID+"/resourceGroups/rg?api-version=1", b.AdminTokens.Management, map[string]any{"location": "eastus"})
	if status != 201 {
		t.Fatalf("%d %v", status, m)
	}
	status, m, _ = call(t, e, http.MethodPut, "https://management.azure.com/subscriptions/"+b.SubscriptionID+"/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/armvault?api-version=1",
		b.AdminTokens.Management, map[string]any{"location": "eastus", "properties": map[string]any{"tenantId": b.ID}})
	if status != 409 || m["error"].(map[string]any)["code"] != "VaultAlreadyExists" {
		t.Fatalf("%d %v", status, m)
	}
	status, m, _ = call(t, e, http.MethodPut, "https://management.azure.com/subscriptions/"+b.SubscriptionID+"/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/a--b?api-version=1",
		b.AdminTokens.Management, map[string]any{"location": "eastus", "properties": map[string]any{"tenantId": b.ID}})
	if status != 400 || m["error"].(map[string]any)["code"] != "VaultNameNotValid" {
		t.Fatalf("%d %v", status, m)
	}
}

func asAuthFailed(err error, target **azidentity.AuthenticationFailedError) bool {
	return errorsAs(err, target)
}

var graphScope = policy.TokenRequestOptions{Scopes: []string{"https://graph.microsoft.com/.default"}}
