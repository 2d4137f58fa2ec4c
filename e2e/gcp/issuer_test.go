package gcp

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/app"
	"github.com/ekm-dev/ekm/e2e/e2ekit"
	"github.com/ekm-dev/ekm/ekmtest"
	"github.com/ekm-dev/ekm/issuer"
	kmsgcp "github.com/ekm-dev/ekm/kms/gcp"
	"github.com/ekm-dev/ekm/kms/gcp/gcptest"
)

// TestIssuer: ekm as its own OIDC issuer. A customer's provider either
// fetches ekm's discovery document and JWKS from the server (Google STS
// does, through the emulator's issuer client) or holds ekm's JWKS uploaded
// as jwksJson, which also works when the issuer is not reachable. The
// signing key rolls over while the server runs (the key file changed as
// `ekm issuer rotate` changes it) without breaking either kind of
// customer, except one that ignored the notice to re-upload the JWKS,
// which is told exactly that.
func TestIssuer(t *testing.T) {
	ctx := context.Background()
	env := start(t, ekmtest.GCPIssuer, ekmtest.Options{ProbeInterval: 300 * time.Millisecond})
	admin := env.Admin()
	jwks := func() string {
		t.Helper()
		resp, err := env.HTTPClient().Get(env.URL + "/.well-known/jwks.json")
		e2ekit.Check(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET jwks: %d %s", resp.StatusCode, b)
		}
		return string(b)
	}
	keyCount := func() int {
		var set struct{ Keys []json.RawMessage }
		e2ekit.Check(t, json.Unmarshal([]byte(jwks()), &set))
		return len(set.Keys)
	}
	register := func(c *gcptest.Customer, name string) string {
		t.Helper()
		ek, err := admin.Admin.Organization.ExternalKeys.New(ctx, gcpKey(name, c, nil))
		if err != nil {
			t.Fatalf("register %s: %v", name, err)
		}
		return ek.ID
	}
	validate := func(id string) string {
		t.Helper()
		v, err := admin.Admin.Organization.ExternalKeys.Validate(ctx, id)
		e2ekit.Check(t, err)
		return v.RawJSON()
	}

	// Discovery: Google fetches ekm's discovery document and JWKS.
	fetching := env.GCPCustomer(t, nil)
	before := env.GCPIssuerFetches()
	fetchingID := register(fetching, "fetching")
	if env.GCPIssuerFetches() < before+2 {
		t.Fatal("Google did not fetch ekm's discovery document and JWKS")
	}
	// Uploaded JWKS (jwksJson): works with the issuer unreachable.
	uploading, lagging := env.GCPCustomer(t, nil), env.GCPCustomer(t, nil)
	for _, c := range []*gcptest.Customer{uploading, lagging} {
		e2ekit.Check(t, c.SetJWKS(ctx, jwks()))
	}
	env.SetGCPIssuerReachable(t, false)
	uploadingID, laggingID := register(uploading, "uploading"), register(lagging, "lagging")
	_, err := admin.Admin.Organization.ExternalKeys.New(ctx, gcpKey("unreachable", env.GCPCustomer(t, nil), nil))
	if e := e2ekit.APIErr(t, err); e.StatusCode != http.StatusServiceUnavailable || e.Code != kmsgcp.CodeIssuerUnreachable || !strings.Contains(e.Message, "jwksJson") {
		t.Fatalf("unreachable issuer without jwksJson: %d %s %s", e.StatusCode, e.Code, e.Message)
	}
	env.SetGCPIssuerReachable(t, true)

	// Rollover, as `ekm issuer rotate add|activate|retire` does it.
	file := app.GCPIssuerKeyFile(env.App.Config)
	step := func(do func(ks *issuer.KeySet) error) {
		t.Helper()
		ks, err := issuer.ReadKeySet(file)
		e2ekit.Check(t, err)
		e2ekit.Check(t, do(ks))
		e2ekit.Check(t, ks.Save(file))
	}
	step(func(ks *issuer.KeySet) error { _, err := ks.Add(time.Now()); return err })
	e2ekit.WaitFor(t, 5*time.Second, "the server to publish the new key", func() bool { return keyCount() == 2 })
	e2ekit.Check(t, uploading.SetJWKS(ctx, jwks())) // the customer follows the notice; lagging does not
	step(func(ks *issuer.KeySet) error { _, err := ks.Activate(time.Now(), 0); return err })
	var laggingAnswer string
	e2ekit.WaitFor(t, 10*time.Second, "the customer that kept the old JWKS to be refused", func() bool {
		laggingAnswer = validate(laggingID)
		return strings.Contains(laggingAnswer, `"invalid"`)
	})
	if !strings.Contains(laggingAnswer, kmsgcp.CodeJWKSMismatch) {
		t.Fatalf("lagging customer: %s", laggingAnswer)
	}
	for name, id := range map[string]string{"fetching": fetchingID, "uploading": uploadingID} {
		if v := validate(id); !strings.Contains(v, `"status":"valid"`) {
			t.Fatalf("%s customer after activation: %s", name, v)
		}
	}
	step(func(ks *issuer.KeySet) error { _, err := ks.Retire(time.Now(), 0); return err })
	e2ekit.WaitFor(t, 5*time.Second, "the server to drop the old key", func() bool { return keyCount() == 1 })
	for name, id := range map[string]string{"fetching": fetchingID, "uploading": uploadingID} {
		if v := validate(id); !strings.Contains(v, `"status":"valid"`) {
			t.Fatalf("%s customer after retirement: %s", name, v)
		}
	}
	// The lagging customer re-uploads: restored.
	e2ekit.Check(t, lagging.SetJWKS(ctx, jwks()))
	if v := validate(laggingID); !strings.Contains(v, `"status":"valid"`) {
		t.Fatalf("lagging customer after re-upload: %s", v)
	}
	// The discovery document names the issuer and its JWKS, unauthenticated.
	resp, err := env.HTTPClient().Get(env.URL + "/.well-known/openid-configuration")
	e2ekit.Check(t, err)
	var disc map[string]any
	e2ekit.Check(t, json.NewDecoder(resp.Body).Decode(&disc))
	resp.Body.Close()
	if disc["issuer"] != env.GCPIssuerURL || disc["jwks_uri"] != env.GCPIssuerURL+"/.well-known/jwks.json" {
		t.Fatalf("discovery %v", disc)
	}
}
