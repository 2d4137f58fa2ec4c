package onboarding_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/ekm-dev/ekm/e2e/e2ekit"
	"github.com/ekm-dev/ekm/ekmtest"
	"github.com/ekm-dev/ekm/internal/azonboard"
	"github.com/ekm-dev/ekm/kms/azure"
)

func azureKey(name string, c *azonboard.Customer, vaultURI, keyName string) openai.AdminOrganizationExternalKeyNewParams {
	return openai.AdminOrganizationExternalKeyNewParams{OfAzure: &openai.AdminOrganizationExternalKeyNewParamsBodyAzure{
		Name: name, TenantID: c.TenantID, VaultURI: vaultURI, KeyName: keyName,
	}}
}

func TestSeedProcedure(t *testing.T) {
	env := ekmtest.Start(t, ekmtest.Options{ProbeInterval: time.Hour, CacheTTL: 500 * time.Millisecond})
	ctx := context.Background()
	admin := env.Admin()

	// Steps 1-4 in the customer's tenant, as plain HTTP calls.
	cust, ob := env.Onboard(t, "main")

	// Register the key and create an EKM project with the official SDK.
	ek, err := admin.Admin.Organization.ExternalKeys.New(ctx, azureKey("prod", cust, ob.VaultURI, ob.KeyName))
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	if ek.Type != "azure" || ek.TenantID != cust.TenantID || ek.KeyName != ob.KeyName || ek.WorkspaceID != env.OrgID {
		t.Fatalf("external key object: %s", ek.RawJSON())
	}
	v, err := admin.Admin.Organization.ExternalKeys.Validate(ctx, ek.ID)
	if err != nil || v.Status != "valid" {
		t.Fatalf("validate = %v, %v", v, err)
	}
	proj, err := admin.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "ekm", ExternalKeyID: openai.String(ek.ID)})
	if err != nil {
		t.Fatalf("create project: %v", err)
	}
	if proj.ExternalKeyID != ek.ID {
		t.Fatalf("project not on the key: %s", proj.RawJSON())
	}
	sa, err := admin.Admin.Organization.Projects.ServiceAccounts.New(ctx, proj.ID, openai.AdminOrganizationProjectServiceAccountNewParams{Name: "backend"})
	if err != nil {
		t.Fatal(err)
	}
	data := env.Client(sa.APIKey.Value)

	content := bytes.Repeat([]byte("customer secret content "), 4000)
	f, err := data.Files.New(ctx, openai.FileNewParams{File: openai.File(bytes.NewReader(content), "plans.txt", "text/plain"), Purpose: openai.FilePurposeAssistants})
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	download := func() ([]byte, error) {
		resp, err := data.Files.Content(ctx, f.ID)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		return io.ReadAll(resp.Body)
	}
	got, err := download()
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("download: %v (equal=%v)", err, bytes.Equal(got, content))
	}

	// Every refusal names what to fix, and stores nothing.
	t.Run("Refusals", func(t *testing.T) { refusals(t, env, cust, ob) })

	// The customer removes the role assignment: once the cached project key
	// expires, reads fail with the key-unavailable error.
	if err := cust.Unassign(ctx, ob.AssignmentID); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	var refusal *openai.Error
	for time.Now().Before(deadline) {
		b, err := download()
		if err == nil {
			if !bytes.Equal(b, content) {
				t.Fatal("wrong bytes while still cached")
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		refusal = e2ekit.APIErr(t, err)
		break
	}
	if refusal == nil {
		t.Fatal("reads still succeed 10 s after the role assignment was removed")
	}
	if refusal.StatusCode != http.StatusForbidden || refusal.Code != "customer_key_unavailable" {
		t.Fatalf("refusal = %d %q: %s", refusal.StatusCode, refusal.Code, refusal.Message)
	}
	if strings.Contains(refusal.RawJSON(), "customer secret") {
		t.Fatal("refusal leaks content")
	}
	got2, err := admin.Admin.Organization.ExternalKeys.Get(ctx, ek.ID)
	if err != nil || !strings.Contains(got2.RawJSON(), `"unavailable"`) {
		t.Fatalf("external key after revocation: %v %s", err, got2.RawJSON())
	}

	// The assignment restored (and validated): the same bytes come back.
	if _, err := cust.Assign(ctx, cust.KeyScope(ob.ResourceGroup, ob.Vault, ob.KeyName), ob.RoleDefinitionID, ob.ServicePrincipalID); err != nil {
		t.Fatal(err)
	}
	if v, err := admin.Admin.Organization.ExternalKeys.Validate(ctx, ek.ID); err != nil || v.Status != "valid" {
		t.Fatalf("validate after restore = %v, %v", v.RawJSON(), err)
	}
	got, err = download()
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("download after restore: %v", err)
	}
}

func refusals(t *testing.T, env *ekmtest.Env, cust *azonboard.Customer, ob azonboard.Onboarding) {
	ctx := context.Background()
	admin := env.Admin()
	appID := env.Emu.App().ClientID
	before := e2ekit.CountExternalKeys(t, env)

	// A fresh tenant that skipped step 1 (no service principal for our app).
	noSP := env.Customer(t)
	noSPVault := "nosp" + strings.ReplaceAll(noSP.TenantID, "-", "")[:16]
	noSPURI, err := noSP.CreateVault(ctx, "rg", noSPVault)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := noSP.CreateKey(ctx, noSPURI, env.OrgID+"--k", "RSA", 2048); err != nil {
		t.Fatal(err)
	}

	// In the onboarded tenant: keys with something wrong.
	mk := func(name, kty string) string {
		if _, err := cust.CreateKey(ctx, ob.VaultURI, env.OrgID+"--"+name, kty, 2048); err != nil {
			t.Fatal(err)
		}
		return env.OrgID + "--" + name
	}
	assign := func(scopeKey, role string) {
		if _, err := cust.Assign(ctx, cust.KeyScope(ob.ResourceGroup, ob.Vault, scopeKey), role, ob.ServicePrincipalID); err != nil {
			t.Fatal(err)
		}
	}
	noDecryptRole, err := cust.PutRole(ctx, azonboard.NewGUID(), "no decrypt", []string{"Microsoft.KeyVault/vaults/keys/read", "Microsoft.KeyVault/vaults/keys/encrypt/action"})
	if err != nil {
		t.Fatal(err)
	}
	noDecrypt := mk("nodecrypt", "RSA")
	assign(noDecrypt, noDecryptRole)
	elsewhere := mk("elsewhere", "RSA")
	other := mk("other", "RSA")
	assign(other, ob.RoleDefinitionID) // the assignment is at another key
	ecKey := mk("ec", "EC")
	assign(ecKey, ob.RoleDefinitionID)
	disabled := mk("disabled", "RSA")
	assign(disabled, ob.RoleDefinitionID)
	if err := cust.UpdateKey(ctx, ob.VaultURI, disabled, map[string]any{"attributes": map[string]any{"enabled": false}}); err != nil {
		t.Fatal(err)
	}
	_ = appID

	for _, tc := range []struct {
		name       string
		c          *azonboard.Customer
		vault, key string
		code, step string
	}{
		{"missing service principal", noSP, noSPURI, env.OrgID + "--k", azure.CodeServicePrincipalMissing, azure.StepServicePrincipal},
		{"role without decrypt", cust, ob.VaultURI, noDecrypt, azure.CodeForbiddenByRBAC, azure.StepRoleOrAssignment},
		{"assignment at another key", cust, ob.VaultURI, elsewhere, azure.CodeForbiddenByRBAC, azure.StepRoleOrAssignment},
		{"key named for another org", cust, ob.VaultURI, "org-0000000000000000000000other--k", azure.CodeKeyNameOrgMismatch, ""},
		{"non-RSA key", cust, ob.VaultURI, ecKey, azure.CodeKeyTypeUnsupported, azure.StepKey},
		{"disabled key", cust, ob.VaultURI, disabled, azure.CodeKeyDisabled, azure.StepKey},
		{"vault_uri not a vault", cust, "https://evil.example.com/", ob.KeyName, azure.CodeInvalidVaultURI, ""},
		{"vault_uri lookalike", cust, "https://" + ob.Vault + ".vault.azure.net.evil.com/", ob.KeyName, azure.CodeInvalidVaultURI, ""},
		{"vault_uri with port", cust, "https://" + ob.Vault + ".vault.azure.net:8443/", ob.KeyName, azure.CodeInvalidVaultURI, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			counters := env.Emu.Counters()
			_, err := admin.Admin.Organization.ExternalKeys.New(ctx, azureKey(tc.name, tc.c, tc.vault, tc.key))
			e2ekit.CheckRefused(t, err, e2ekit.Refusal{Code: tc.code, Step: tc.step}, "eyJ")
			if strings.HasPrefix(tc.code, "invalid_") || tc.code == azure.CodeKeyNameOrgMismatch {
				// Refused before anything is dialled.
				if after := env.Emu.Counters(); total(after) != total(counters) {
					t.Fatalf("a statically invalid registration reached Azure: %v -> %v", counters, after)
				}
			}
		})
	}
	if after := e2ekit.CountExternalKeys(t, env); after != before {
		t.Fatalf("refused registrations stored keys: %d -> %d", before, after)
	}
}

func total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
