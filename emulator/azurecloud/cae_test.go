package azurecloud

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/ekm-dev/ekm/emulator/emukit"
)

// appToken asks the token endpoint for a Key Vault token of the emulator's
// app, with or without MSAL's client-capability claims.
func appToken(t *testing.T, e *Emulator, tenantID string, cp1 bool) string {
	t.Helper()
	a := e.App()
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {a.ClientID}, "client_secret": {a.ClientSecret},
		"scope": {"https://vault.azure.net/.default openid offline_access profile"}}
	if cp1 {
		form.Set("claims", `{"access_token":{"xms_cc":{"values":["CP1"]}}}`)
	}
	resp, err := e.HTTPClient().PostForm("https://login.microsoftonline.com/"+tenantID+"/oauth2/v2.0/token", form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 || out.AccessToken == "" {
		t.Fatalf("token: %d %v", resp.StatusCode, err)
	}
	return out.AccessToken
}

// A deleted service principal's CAE-capable token is refused by Key Vault
// with a claims challenge; a token of a client without CAE stays valid until
// it expires, as in Azure.
func TestDeletedServicePrincipalClaimsChallenge(t *testing.T) {
	e := startEmu(t, Options{})
	c := onboard(t, e, "caevault", roleKVCryptoUser)
	if _, err := e.CreateKey("caevault", "k", "RSA", 2048); err != nil {
		t.Fatal(err)
	}
	getKey := "https://caevault.vault.azure.net/keys/k?api-version=7.5"
	cae, plain := appToken(t, e, c.ID, true), appToken(t, e, c.ID, false)
	for _, tok := range []string{cae, plain} {
		if st, m, _ := call(t, e, http.MethodGet, getKey, tok, nil); st != 200 {
			t.Fatalf("before deletion: %d %v", st, m)
		}
	}

	// The SDK client has a cached token when the SP goes away.
	kc := keysClient(t, e, c.vaultURL, secretCred(t, e, c.ID))
	if _, err := kc.GetKey(context.Background(), "k", "", nil); err != nil {
		t.Fatal(err)
	}
	if err := e.DeleteServicePrincipal(c.ID, c.spID); err != nil {
		t.Fatal(err)
	}

	st, m, h := call(t, e, http.MethodGet, getKey, cae, nil)
	if st != http.StatusUnauthorized {
		t.Fatalf("CAE token of a deleted SP: %d %v", st, m)
	}
	ch := h.Get("WWW-Authenticate")
	if !strings.HasPrefix(ch, "Bearer ") || !strings.Contains(ch, `error="insufficient_claims"`) {
		t.Fatalf("challenge %q", ch)
	}
	_, enc, _ := strings.Cut(ch, `claims="`)
	enc, _, _ = strings.Cut(enc, `"`)
	raw, err := base64.StdEncoding.DecodeString(enc)
	var claims map[string]map[string]map[string]any
	if err != nil || json.Unmarshal(raw, &claims) != nil || claims["access_token"]["nbf"]["essential"] != true {
		t.Fatalf("claims %q: %v", raw, err)
	}
	if st, m, _ := call(t, e, http.MethodGet, getKey, plain, nil); st != 200 {
		t.Fatalf("non-CAE token must stay valid until it expires: %d %v", st, m)
	}

	// The SDK answers the challenge with a fresh token request, which Entra
	// refuses: the caller learns that the service principal is gone.
	before := e.Counters()["entra.token"]
	_, err = kc.GetKey(context.Background(), "k", "", nil)
	if err == nil || !strings.Contains(err.Error(), "AADSTS700016") {
		t.Fatalf("SDK after SP deletion: %v", err)
	}
	if e.Counters()["entra.token"] <= before {
		t.Fatal("the claims challenge did not cause a token request")
	}

	// The customer re-creates the SP (a new object id) and assigns the role
	// again: the same client works again.
	sp, err := e.CreateServicePrincipal(c.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	scope := "/subscriptions/" + c.SubscriptionID + "/resourceGroups/rg1/providers/Microsoft.KeyVault/vaults/caevault"
	if _, err := e.AssignRole(c.ID, scope, roleKVCryptoUser, sp); err != nil {
		t.Fatal(err)
	}
	if _, err := kc.GetKey(context.Background(), "k", "", nil); err != nil {
		t.Fatalf("after re-onboarding: %v", err)
	}
}

func TestRequestLog(t *testing.T) {
	e := startEmu(t, Options{})
	c := onboard(t, e, "reqlogvault", roleKVCryptoUser)
	if _, err := e.CreateKey("reqlogvault", "k", "RSA", 2048); err != nil {
		t.Fatal(err)
	}
	e.ResetCounters()
	kc := keysClient(t, e, c.vaultURL, secretCred(t, e, c.ID))
	const id = "6f1c1b52-0d2f-4f7c-9a55-3c1b1f3e9d01"
	ctx := withClientRequestID(context.Background(), id)
	if _, err := kc.GetKey(ctx, "k", "", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := kc.GetKey(context.Background(), "missing", "", nil); err == nil {
		t.Fatal("missing key found")
	}
	var got []Request
	for _, r := range e.Requests() {
		if r.ClientRequestID == id {
			got = append(got, r)
		}
	}
	// The SDK sends the first request without a token to get the challenge,
	// then again with one; both carry the caller's id.
	if len(got) != 2 || got[0].Operation != "kv.challenge" || got[0].Status != 401 ||
		got[1].Operation != "kv.get" || got[1].Status != 200 || got[1].Host != "reqlogvault.vault.azure.net" {
		t.Fatalf("log for %s: %+v", id, got)
	}
	last := e.Requests()[len(e.Requests())-1]
	if last.Operation != "kv.get" || last.Status != 404 {
		t.Fatalf("last entry %+v", last)
	}
	for _, r := range e.Requests() {
		if r.Host == "" || r.At.IsZero() {
			t.Fatalf("incomplete entry %+v", r)
		}
	}
	e.ResetCounters()
	if n := len(e.Requests()); n != 0 {
		t.Fatalf("%d entries after reset", n)
	}
}

func TestRequestLogBounded(t *testing.T) {
	var l emukit.Ring[Request]
	const maxRequestLog = emukit.MaxRequestLog
	for i := range maxRequestLog + 5 {
		l.Add(Request{Status: i})
	}
	got := l.Snapshot()
	if len(got) != maxRequestLog || got[0].Status != 5 || got[len(got)-1].Status != maxRequestLog+4 {
		t.Fatalf("len %d first %d last %d", len(got), got[0].Status, got[len(got)-1].Status)
	}
}

func withClientRequestID(ctx context.Context, id string) context.Context {
	return policy.WithHTTPHeader(ctx, http.Header{"x-ms-client-request-id": {id}})
}
