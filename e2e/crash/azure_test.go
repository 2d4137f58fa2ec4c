package crash

import (
	"context"
	"strings"
	"testing"

	"github.com/ekm-dev/ekm/emulator/azurecloud"
	"github.com/ekm-dev/ekm/internal/azonboard"
)

// azureEnv is an Azure emulator in the test process and the flags and
// environment that point an ekm child at it, exactly as an operator would.
type azureEnv struct {
	emu  *azurecloud.Emulator
	args []string // --azure-* flags
	env  []string // child environment (the client secret stays out of argv)
}

func startAzure(t *testing.T) *azureEnv {
	t.Helper()
	emu, err := azurecloud.New(azurecloud.Options{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	creds := emu.App()
	return &azureEnv{emu: emu,
		args: []string{"--azure-client-id", creds.ClientID, "--azure-dial-override", emu.Addr(), "--azure-ca-file", emu.CAFile()},
		env:  childEnv("EKM_AZURE_CLIENT_SECRET=" + creds.ClientSecret)}
}

// onboard creates a customer tenant and runs the customer's onboarding
// steps for orgID: a vault and a key <org>--<suffix> ekm may use.
func (z *azureEnv) onboard(t *testing.T, orgID, suffix string) (*azonboard.Customer, azonboard.Onboarding) {
	t.Helper()
	ten, err := z.emu.CreateTenant()
	if err != nil {
		t.Fatal(err)
	}
	c := &azonboard.Customer{HTTP: z.emu.HTTPClient(), TenantID: ten.ID, SubscriptionID: ten.SubscriptionID,
		GraphToken: ten.AdminTokens.Graph, ARMToken: ten.AdminTokens.Management, VaultToken: ten.AdminTokens.Vault}
	vault := "v" + strings.ReplaceAll(ten.ID, "-", "")[:20]
	o, err := c.Onboard(context.Background(), z.emu.App().ClientID, orgID, vault, suffix)
	if err != nil {
		t.Fatal(err)
	}
	return c, o
}

// register registers a customer's Azure key with ekm.
func (a admin) register(t *testing.T, c *azonboard.Customer, vaultURI, keyName string) string {
	t.Helper()
	out := a.mustPost(t, "/v1/organization/external_keys", map[string]any{"type": "azure", "name": keyName,
		"tenant_id": c.TenantID, "vault_uri": vaultURI, "key_name": keyName})
	return out["id"].(string)
}
