package oci

import (
	"os"
	"testing"

	"github.com/openai/openai-go/v3"

	"github.com/ekm-dev/ekm/e2e/e2ekit"
	"github.com/ekm-dev/ekm/ekmtest"
	"github.com/ekm-dev/ekm/emulator/ocicloud"
)

// emu is the package's one OCI emulator: each test works in tenancies of
// its own, with a server of its own.
var emu *ocicloud.Emulator

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	e, err := ocicloud.New(ocicloud.Options{})
	if err != nil {
		panic(err)
	}
	if err := e.Start(); err != nil {
		panic(err)
	}
	defer e.Close()
	emu = e
	return m.Run()
}

// start starts a server with the oci key type against the package's
// emulator.
func start(t *testing.T, o ekmtest.Options) *ekmtest.Env {
	t.Helper()
	o.OCI, o.OCIEmulator = true, emu
	return ekmtest.Start(t, o)
}

// kit: every test ciphertext is bound to "oci-e2e"; creation calls retry a
// 503 as a real client would.
var kit = e2ekit.Suite{AAD: []byte("oci-e2e"), Retry: true}

func ociKey(name string, c *ekmtest.OCICustomer, keyOCID string) openai.AdminOrganizationExternalKeyNewParams {
	if keyOCID == "" {
		keyOCID = c.Result.KeyOCID
	}
	return openai.AdminOrganizationExternalKeyNewParams{OfOci: &openai.AdminOrganizationExternalKeyNewParamsBodyOci{
		Name: name, KeyOcid: keyOCID, VaultOcid: c.Result.VaultOCID, Region: ekmtest.OCIRegion}}
}

// fixture is one customer tenancy's key registered with ekm, with projects.
type fixture struct {
	*e2ekit.ExternalKey
	cust *ekmtest.OCICustomer
}

// register registers the customer's key (keyOCID, or its onboarded key)
// with the OpenAI SDK and creates n projects on it, each with a file and a
// crypto API ciphertext.
func register(t *testing.T, env *ekmtest.Env, cust *ekmtest.OCICustomer, name, keyOCID string, n int) *fixture {
	t.Helper()
	return &fixture{kit.Register(t, env, name, ociKey(name, cust, keyOCID), n), cust}
}
