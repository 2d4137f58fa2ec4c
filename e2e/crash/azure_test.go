package crash

import (
	"testing"

	"github.com/ekm-dev/ekm/internal/azonboard"
)

// register registers a customer's Azure key with ekm.
func (a admin) register(t *testing.T, c *azonboard.Customer, vaultURI, keyName string) string {
	t.Helper()
	out := a.mustPost(t, "/v1/organization/external_keys", map[string]any{"type": "azure", "name": keyName,
		"tenant_id": c.TenantID, "vault_uri": vaultURI, "key_name": keyName})
	return out["id"].(string)
}
