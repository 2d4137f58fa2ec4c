package azonboard_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/ekm-dev/ekm/emulator/azurecloud"
	"github.com/ekm-dev/ekm/internal/azonboard"
)

// newCustomer starts an emulator and returns it with the admin of a new
// customer tenant.
func newCustomer(t *testing.T) (*azurecloud.Emulator, *azonboard.Customer) {
	t.Helper()
	e, err := azurecloud.New(azurecloud.Options{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	ten, err := e.CreateTenant()
	if err != nil {
		t.Fatal(err)
	}
	c := &azonboard.Customer{HTTP: e.HTTPClient(), TenantID: ten.ID, SubscriptionID: ten.SubscriptionID,
		GraphToken: ten.AdminTokens.Graph, ARMToken: ten.AdminTokens.Management, VaultToken: ten.AdminTokens.Vault}
	return e, c
}

func TestOnboardAgainstEmulator(t *testing.T) {
	e, c := newCustomer(t)
	ctx := context.Background()
	o, err := c.Onboard(ctx, e.App().ClientID, "org-0123456789abcdefghjkmnpqrs", "acmevault", "main")
	if err != nil {
		t.Fatal(err)
	}
	if o.ServicePrincipalID == "" || o.KeyID == "" || o.AssignmentID == "" {
		t.Fatalf("incomplete onboarding %+v", o)
	}
	// Step 1 again reuses the existing service principal (Graph answers 409).
	sp, err := c.CreateServicePrincipal(ctx, e.App().ClientID)
	if err != nil || sp != o.ServicePrincipalID {
		t.Fatalf("second SP create = %q, %v; want %q", sp, err, o.ServicePrincipalID)
	}
	// A foreign token is refused.
	bad := *c
	bad.ARMToken = "not-a-token"
	if _, err := bad.PutRole(ctx, azonboard.NewGUID(), "x", azonboard.DataActions); !errors.As(err, new(*azonboard.Error)) {
		t.Fatalf("bad token: %v", err)
	}
}

func TestKeyLifecycleHelpers(t *testing.T) {
	e, c := newCustomer(t)
	ctx := context.Background()
	o, err := c.Onboard(ctx, e.App().ClientID, "org-0123456789abcdefghjkmnpqrs", "helpvault", "main")
	if err != nil {
		t.Fatal(err)
	}
	if g := azonboard.RoleGUID(o.RoleDefinitionID); len(g) != 36 || !strings.HasSuffix(o.RoleDefinitionID, "/"+g) {
		t.Fatalf("role guid %q of %q", g, o.RoleDefinitionID)
	}
	old := azonboard.KeyVersion(o.KeyID)
	kid, err := c.RotateKey(ctx, o.VaultURI, o.KeyName)
	if err != nil || azonboard.KeyVersion(kid) == old || len(old) != 32 {
		t.Fatalf("rotate = %q, %v (old %q)", kid, err, old)
	}
	if err := c.UpdateKeyVersion(ctx, o.VaultURI, o.KeyName, old, map[string]any{"attributes": map[string]any{"enabled": false}}); err != nil {
		t.Fatal(err)
	}
	enabled := func(version string) bool {
		req, _ := http.NewRequest(http.MethodGet, o.VaultURI+"keys/"+o.KeyName+"/"+version+"?api-version=7.5", nil)
		req.Header.Set("Authorization", "Bearer "+c.VaultToken)
		resp, err := c.HTTP.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b struct {
			Attributes struct {
				Enabled bool `json:"enabled"`
			} `json:"attributes"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&b); err != nil || resp.StatusCode != 200 {
			t.Fatalf("get %s: %d %v", version, resp.StatusCode, err)
		}
		return b.Attributes.Enabled
	}
	if enabled(old) || !enabled(azonboard.KeyVersion(kid)) {
		t.Fatal("only the old version should be disabled")
	}
	if err := c.DeleteKey(ctx, o.VaultURI, o.KeyName); err != nil {
		t.Fatal(err)
	}
	if err := c.RecoverKey(ctx, o.VaultURI, o.KeyName); err != nil {
		t.Fatal(err)
	}
	if !enabled(azonboard.KeyVersion(kid)) {
		t.Fatal("recovered key lost its current version")
	}
	if err := c.RecoverKey(ctx, o.VaultURI, o.KeyName); !errors.As(err, new(*azonboard.Error)) {
		t.Fatalf("recovering a key that is not deleted: %v", err)
	}
}
