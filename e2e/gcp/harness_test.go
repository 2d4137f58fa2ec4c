package gcp

import (
	"os"
	"testing"

	"github.com/openai/openai-go/v3"

	"github.com/ekm-dev/ekm/e2e/e2ekit"
	"github.com/ekm-dev/ekm/ekmtest"
	"github.com/ekm-dev/ekm/emulator/azurecloud"
	"github.com/ekm-dev/ekm/emulator/gcpcloud"
	"github.com/ekm-dev/ekm/kms/gcp/gcptest"
)

// One GCP emulator (and one Azure emulator, which every ekmtest server
// has) per package run.
var (
	emu   *gcpcloud.Emulator
	azemu *azurecloud.Emulator
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var err error
	if emu, err = ekmtest.NewGCPEmulator(); err != nil {
		panic(err)
	}
	defer emu.Close()
	if azemu, err = azurecloud.New(azurecloud.Options{Addr: "127.0.0.1:0"}); err != nil {
		panic(err)
	}
	if err := azemu.Start(); err != nil {
		panic(err)
	}
	defer azemu.Close()
	return m.Run()
}

// start runs an ekm server with the gcp type enabled with identity.
func start(t *testing.T, identity string, o ekmtest.Options) *ekmtest.Env {
	t.Helper()
	o.GCP, o.GCPEmulator, o.Emulator = identity, emu, azemu
	return ekmtest.Start(t, o)
}

// kit: every test ciphertext is bound to "gcp-e2e"; a 503 on creation
// fails the test.
var kit = e2ekit.Suite{AAD: []byte("gcp-e2e")}

// gcpKey is the SDK's registration of a customer's key; set overrides
// fields (by their API names).
func gcpKey(name string, c *gcptest.Customer, set map[string]string) openai.AdminOrganizationExternalKeyNewParams {
	p := c.Params()
	for k, v := range set {
		p[k] = v
	}
	return openai.AdminOrganizationExternalKeyNewParams{OfGcp: &openai.AdminOrganizationExternalKeyNewParamsBodyGcp{
		Name: name, Audience: p["audience"], KmsProjectID: p["kms_project_id"], KmsKeyLocation: p["kms_key_location"],
		KmsKeyRingName: p["kms_key_ring_name"], KmsKeyName: p["kms_key_name"], WorkloadIdentityPoolID: p["workload_identity_pool_id"],
		WorkloadIdentityProviderID: p["workload_identity_provider_id"], WorkloadIdentityProjectNumber: p["workload_identity_project_number"]}}
}

// fixture is one customer key registered with ekm, with a project on it.
type fixture struct {
	*e2ekit.ExternalKey
	cust *gcptest.Customer
	p    *e2ekit.Project
}

// newFixture onboards a customer, registers its key with the OpenAI SDK and
// creates a project on it with a file and a crypto API ciphertext.
func newFixture(t *testing.T, env *ekmtest.Env, name string) *fixture {
	t.Helper()
	cust := env.GCPCustomer(t, nil)
	k := kit.Register(t, env, name, gcpKey(name, cust, nil), 1)
	return &fixture{ExternalKey: k, cust: cust, p: k.Projects[0]}
}
