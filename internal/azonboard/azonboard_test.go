package azonboard_test

import (
	"context"
	"errors"
	"testing"

	"github.com/ekm-dev/ekm/emulator/azure"
	"github.com/ekm-dev/ekm/internal/azonboard"
)

func TestOnboardAgainstEmulator(t *testing.T) {
	e, err := azure.New(azure.Options{Addr: "127.0.0.1:0"})
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
