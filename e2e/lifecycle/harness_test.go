package lifecycle

import (
	"context"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"

	"github.com/ekm-dev/ekm/app"
	"github.com/ekm-dev/ekm/e2e/e2ekit"
	"github.com/ekm-dev/ekm/ekmtest"
	"github.com/ekm-dev/ekm/internal/azonboard"
)

// kit: every test ciphertext is bound to "lifecycle-test"; creation calls
// retry a 503 as a real client would.
var kit = e2ekit.Suite{AAD: []byte("lifecycle-test"), Retry: true}

// server runs an app built by ekmtest (NoRun), so that a test can stop it
// and start a fresh process state on the same data directory: nothing
// cached, no Entra token.
type server struct {
	t    *testing.T
	env  *ekmtest.Env
	stop func()
}

func startServer(t *testing.T, o ekmtest.Options) *server {
	t.Helper()
	o.NoRun = true
	s := &server{t: t, env: ekmtest.Start(t, o)}
	s.run(s.env.App)
	t.Cleanup(func() { s.stop() })
	return s
}

func (s *server) run(a *app.App) {
	s.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan string, 1), make(chan error, 1)
	go func() { done <- a.Run(ctx, func(addr string) { ready <- addr }) }()
	select {
	case addr := <-ready:
		s.env.URL = "http://" + addr
	case err := <-done:
		cancel()
		s.t.Fatal(err)
	}
	stopped := false
	s.stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
			a.Close()
		}
	}
}

// restart stops the server and starts a new one with the same config.
func (s *server) restart() {
	s.t.Helper()
	s.stop()
	a, err := app.Open(context.Background(), s.env.App.Config)
	if err != nil {
		s.t.Fatal(err)
	}
	s.env.App = a
	s.run(a)
}

// fixture is one customer key (its own tenant and vault) registered with
// ekm, with projects on it.
type fixture struct {
	*e2ekit.ExternalKey
	cust *azonboard.Customer
	ob   azonboard.Onboarding
}

func azureKey(name string, c *azonboard.Customer, ob azonboard.Onboarding) openai.AdminOrganizationExternalKeyNewParams {
	return openai.AdminOrganizationExternalKeyNewParams{OfAzure: &openai.AdminOrganizationExternalKeyNewParamsBodyAzure{
		Name: name, TenantID: c.TenantID, VaultURI: ob.VaultURI, KeyName: ob.KeyName}}
}

// newFixture onboards a customer tenant, registers its key with the SDK and
// creates n projects on it, each with a file and a crypto API ciphertext.
func newFixture(t *testing.T, env *ekmtest.Env, suffix string, n int) *fixture {
	t.Helper()
	cust, ob := env.Onboard(t, suffix)
	return &fixture{kit.Register(t, env, suffix, azureKey(suffix, cust, ob), n), cust, ob}
}

// vaultHost is the host name of the fixture's vault.
func (f *fixture) vaultHost() string {
	return strings.TrimSuffix(strings.TrimPrefix(f.ob.VaultURI, "https://"), "/")
}
