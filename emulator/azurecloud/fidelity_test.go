package azurecloud

// Fidelity fixes found by driving the emulator with another language's
// official Key Vault SDK (issue 14): versionless key ids with an empty
// version segment, the CAE client capability in any letter case, Key Vault
// data actions from Azure's published list, the documented settings bounds
// and MSAL's instance discovery.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// Other SDKs build crypto URLs from a versionless key id as
// "/keys/{name}/{version}/{op}" with an empty version; Key Vault serves the
// current version.
func TestEmptyVersionSegmentUsesCurrentVersion(t *testing.T) {
	e := startEmu(t, Options{})
	c := onboard(t, e, "emptyver", roleKVCryptoUser)
	if _, err := e.CreateKey("emptyver", "k", "RSA", 2048); err != nil {
		t.Fatal(err)
	}
	rot, err := adminKeysClient(t, e, c).RotateKey(context.Background(), "k", nil)
	if err != nil {
		t.Fatal(err)
	}
	current := rot.Key.KID.Version()
	tok := appToken(t, e, c.ID, false)
	base := "https://emptyver.vault.azure.net/keys/k/"
	pt := base64.RawURLEncoding.EncodeToString([]byte("sixteen byte key"))
	op := func(path string, body map[string]string) map[string]any {
		t.Helper()
		st, m, _ := call(t, e, http.MethodPost, base+path+"?api-version=7.5", tok, body)
		if st != http.StatusOK {
			t.Fatalf("POST %s: %d %v", path, st, m)
		}
		kid, _ := m["kid"].(string)
		if !strings.HasSuffix(kid, "/keys/k/"+current) {
			t.Fatalf("POST %s: kid %q, want the current version %s", path, kid, current)
		}
		return m
	}
	enc := op("/encrypt", map[string]string{"alg": "RSA-OAEP-256", "value": pt})
	dec := op("/decrypt", map[string]string{"alg": "RSA-OAEP-256", "value": enc["value"].(string)})
	if dec["value"] != pt {
		t.Fatalf("decrypt: %v", dec)
	}
	wrapped := op("/wrapkey", map[string]string{"alg": "RSA-OAEP", "value": pt})
	if un := op("/unwrapkey", map[string]string{"alg": "RSA-OAEP", "value": wrapped["value"].(string)}); un["value"] != pt {
		t.Fatalf("unwrap: %v", un)
	}
	// The versioned and single-slash forms still work; a version that is not
	// 32 hex digits is still an unknown path.
	op("/encrypt", map[string]string{"alg": "RSA-OAEP-256", "value": pt})
	if st, m, _ := call(t, e, http.MethodPost, base+"nothex/encrypt?api-version=7.5", tok, map[string]string{"alg": "RSA-OAEP-256", "value": pt}); st != http.StatusNotFound {
		t.Fatalf("bad version segment: %d %v", st, m)
	}
}

// tokenWithClaims asks for a Key Vault token of the emulator's app with the
// given claims request parameter and returns the token and its payload.
func tokenWithClaims(t *testing.T, e *Emulator, tenantID, claims string) (string, map[string]any) {
	t.Helper()
	a := e.App()
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {a.ClientID}, "client_secret": {a.ClientSecret},
		"scope": {"https://vault.azure.net/.default"}, "claims": {claims}}
	resp, err := e.HTTPClient().PostForm("https://login.microsoftonline.com/"+tenantID+"/oauth2/v2.0/token", form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
		t.Fatalf("token: %d %v", resp.StatusCode, err)
	}
	parts := strings.Split(out.AccessToken, ".")
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	var payload map[string]any
	if err != nil || json.Unmarshal(raw, &payload) != nil {
		t.Fatalf("token payload: %v", err)
	}
	return out.AccessToken, payload
}

// The client capability is matched case-insensitively, as Entra does: a
// client that declares "cp1" gets a CAE-capable token, and a deleted service
// principal triggers the claims challenge for it too.
func TestClientCapabilityAnyCase(t *testing.T) {
	e := startEmu(t, Options{})
	c := onboard(t, e, "cp1case", roleKVCryptoUser)
	if _, err := e.CreateKey("cp1case", "k", "RSA", 2048); err != nil {
		t.Fatal(err)
	}
	var toks []string
	for _, v := range []string{"CP1", "cp1", "Cp1"} {
		tok, payload := tokenWithClaims(t, e, c.ID, fmt.Sprintf(`{"access_token":{"xms_cc":{"values":[%q]}}}`, v))
		if cc, _ := payload["xms_cc"].([]any); len(cc) != 1 {
			t.Fatalf("capability %q: token xms_cc = %v", v, payload["xms_cc"])
		}
		toks = append(toks, tok)
	}
	if _, payload := tokenWithClaims(t, e, c.ID, `{"access_token":{"xms_cc":{"values":["CP2"]}}}`); payload["xms_cc"] != nil {
		t.Fatalf("CP2 is not CP1: %v", payload["xms_cc"])
	}
	if err := e.DeleteServicePrincipal(c.ID, c.spID); err != nil {
		t.Fatal(err)
	}
	for i, tok := range toks {
		st, m, h := call(t, e, http.MethodGet, "https://cp1case.vault.azure.net/keys/k?api-version=7.5", tok, nil)
		if st != http.StatusUnauthorized || !strings.Contains(h.Get("WWW-Authenticate"), `error="insufficient_claims"`) {
			t.Fatalf("token %d of a deleted SP: %d %v %q", i, st, m, h.Get("WWW-Authenticate"))
		}
	}
}

// publishedKeyVaultDataActions are the data actions of the Microsoft.KeyVault
// resource provider for vaults (keys and key rotation policies), as Azure
// publishes them: "Azure permissions for Security", section
// Microsoft.KeyVault, https://learn.microsoft.com/azure/role-based-access-control/permissions/security#microsoftkeyvault
// (MicrosoftDocs/azure-docs, articles/role-based-access-control/permissions/security.md).
var publishedKeyVaultDataActions = []string{
	"Microsoft.KeyVault/vaults/keyrotationpolicies/read",
	"Microsoft.KeyVault/vaults/keyrotationpolicies/write",
	"Microsoft.KeyVault/vaults/keys/read",
	"Microsoft.KeyVault/vaults/keys/update/action",
	"Microsoft.KeyVault/vaults/keys/create/action",
	"Microsoft.KeyVault/vaults/keys/import/action",
	"Microsoft.KeyVault/vaults/keys/recover/action",
	"Microsoft.KeyVault/vaults/keys/restore/action",
	"Microsoft.KeyVault/vaults/keys/delete",
	"Microsoft.KeyVault/vaults/keys/backup/action",
	"Microsoft.KeyVault/vaults/keys/purge/action",
	"Microsoft.KeyVault/vaults/keys/encrypt/action",
	"Microsoft.KeyVault/vaults/keys/decrypt/action",
	"Microsoft.KeyVault/vaults/keys/wrap/action",
	"Microsoft.KeyVault/vaults/keys/unwrap/action",
	"Microsoft.KeyVault/vaults/keys/sign/action",
	"Microsoft.KeyVault/vaults/keys/verify/action",
	"Microsoft.KeyVault/vaults/keys/release/action",
	"Microsoft.KeyVault/vaults/keys/rotate/action",
	"Microsoft.KeyVault/vaults/secrets/readMetadata/action",
}

func published(action string) bool {
	for _, a := range publishedKeyVaultDataActions {
		if a == action {
			return true
		}
	}
	return false
}

// Every data action the emulator checks is one Azure publishes, and every
// data action of a built-in Key Vault role is published or a wildcard that
// matches a published one.
func TestDataActionsArePublished(t *testing.T) {
	v := strings.Repeat("a", 32)
	routes := []struct{ method, path string }{
		{"GET", "/keys"}, {"GET", "/keys/k"}, {"GET", "/keys/k/"}, {"GET", "/keys/k/" + v}, {"GET", "/keys/k/versions"},
		{"POST", "/keys/k/create"}, {"PUT", "/keys/k"}, {"PATCH", "/keys/k/" + v}, {"POST", "/keys/k/rotate"}, {"DELETE", "/keys/k"},
		{"GET", "/deletedkeys"}, {"GET", "/deletedkeys/k"}, {"DELETE", "/deletedkeys/k"}, {"POST", "/deletedkeys/k/recover"},
		{"POST", "/keys/k/backup"}, {"POST", "/keys/restore"}, {"POST", "/keys/k/release"}, {"POST", "/keys/k/" + v + "/release"},
		{"GET", "/keys/k/rotationpolicy"}, {"PUT", "/keys/k/rotationpolicy"},
	}
	for op := range cryptoOps {
		routes = append(routes, struct{ method, path string }{"POST", "/keys/k/" + op},
			struct{ method, path string }{"POST", "/keys/k/" + v + "/" + op}, struct{ method, path string }{"POST", "/keys/k//" + op})
	}
	for _, r := range routes {
		rt, ok := parseKVRoute(r.method, r.path)
		if !ok {
			t.Errorf("%s %s: not routed", r.method, r.path)
			continue
		}
		if !published(rt.action) {
			t.Errorf("%s %s (%s): data action %q is not in Azure's published list", r.method, r.path, rt.op, rt.action)
		}
	}
	for _, rd := range builtinRoles {
		for _, p := range rd.Permissions {
			for _, a := range append(append([]string{}, p.DataActions...), p.NotDataActions...) {
				matched := false
				for _, pub := range publishedKeyVaultDataActions {
					matched = matched || actionMatches(a, pub)
				}
				if !matched || (!strings.Contains(a, "*") && !published(a)) {
					t.Errorf("role %s: data action %q is not a published one", rd.RoleName, a)
				}
			}
		}
	}
}

// publishedManagedHSMDataActions are Managed HSM's local RBAC data actions
// as Managed HSM publishes them: the built-in role definitions a pool
// lists (GET /providers/Microsoft.Authorization/roleDefinitions) and the
// SDKs' KnownDataAction enumeration ("Local RBAC built-in roles for
// Managed HSM" in Azure's documentation).
var publishedManagedHSMDataActions = []string{
	"keys/read/action", "keys/write/action", "keys/delete", "keys/create", "keys/rotate/action", "keys/import/action",
	"keys/release/action", "keys/backup/action", "keys/restore/action", "keys/encrypt/action", "keys/decrypt/action",
	"keys/wrap/action", "keys/unwrap/action", "keys/sign/action", "keys/verify/action", "keys/derive/action", "keys/export/action",
	"keys/deletedKeys/read/action", "keys/deletedKeys/delete", "keys/deletedKeys/recover/action", "rng/action",
	"roleAssignments/read/action", "roleAssignments/write/action", "roleAssignments/delete/action",
	"roleDefinitions/read/action", "roleDefinitions/write/action", "roleDefinitions/delete/action",
	"securitydomain/download/action", "securitydomain/download/read", "securitydomain/upload/action", "securitydomain/upload/read",
	"securitydomain/transferkey/read", "backup/start/action", "backup/status/action", "restore/start/action", "restore/status/action",
}

// Every Managed HSM data action the emulator checks or grants is published.
func TestManagedHSMDataActionsArePublished(t *testing.T) {
	pub := map[string]bool{}
	for _, a := range publishedManagedHSMDataActions {
		pub["Microsoft.KeyVault/managedHsm/"+a] = true
	}
	for op, a := range hsmOpActions {
		if !pub[a] {
			t.Errorf("%s: %q is not a published Managed HSM data action", op, a)
		}
	}
	for _, path := range []string{"//providers/Microsoft.Authorization/roleAssignments", "/keys/providers/Microsoft.Authorization/roleDefinitions/x"} {
		for _, m := range []string{"GET", "PUT", "DELETE"} {
			if rt, ok := parseHSMAdminRoute(m, path); ok && !pub[rt.action] {
				t.Errorf("%s %s: %q is not published", m, path, rt.action)
			}
		}
	}
	for _, rd := range builtinHSMRoles {
		for _, a := range rd.Permissions[0].DataActions {
			if !pub[a] {
				t.Errorf("role %s: %q is not published", rd.RoleName, a)
			}
		}
	}
}

// Key Vault Crypto Officer (keys/*) manages soft-deleted keys; Crypto User
// may read them (keys/read) but not purge them (keys/purge/action).
func TestCryptoOfficerManagesDeletedKeys(t *testing.T) {
	e := startEmu(t, Options{})
	ctx := context.Background()
	c := onboard(t, e, "officer", roleKVCryptoOfficer)
	for _, n := range []string{"k1", "k2"} {
		if _, err := e.CreateKey("officer", n, "RSA", 2048); err != nil {
			t.Fatal(err)
		}
	}
	kc := keysClient(t, e, c.vaultURL, secretCred(t, e, c.ID))
	for _, n := range []string{"k1", "k2"} {
		if _, err := kc.DeleteKey(ctx, n, nil); err != nil {
			t.Fatalf("delete %s: %v", n, err)
		}
	}
	pager := kc.NewListDeletedKeyPropertiesPager(nil)
	n := 0
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatalf("list deleted keys as Crypto Officer: %v", err)
		}
		n += len(page.Value)
	}
	if n != 2 {
		t.Fatalf("deleted keys: %d", n)
	}
	if _, err := kc.GetDeletedKey(ctx, "k1", nil); err != nil {
		t.Fatalf("get deleted key: %v", err)
	}
	if _, err := kc.RecoverDeletedKey(ctx, "k1", nil); err != nil {
		t.Fatalf("recover: %v", err)
	}

	// A Crypto User of another vault reads deleted keys but cannot purge.
	u := onboard(t, e, "cryptouser", roleKVCryptoUser)
	if _, err := e.CreateKey("cryptouser", "k", "RSA", 2048); err != nil {
		t.Fatal(err)
	}
	if _, err := adminKeysClient(t, e, u).DeleteKey(ctx, "k", nil); err != nil {
		t.Fatal(err)
	}
	uc := keysClient(t, e, u.vaultURL, secretCred(t, e, u.ID))
	if _, err := uc.GetDeletedKey(ctx, "k", nil); err != nil {
		t.Fatalf("Crypto User reading a deleted key: %v", err)
	}
	_, err := uc.PurgeDeletedKey(ctx, "k", nil)
	if err == nil {
		t.Fatal("Crypto User purged a key")
	}
	if re := respErr(t, err); re.StatusCode != http.StatusForbidden {
		t.Fatalf("purge as Crypto User: %v", err)
	} else if _, inner, msg := innerCode(t, re); inner != "ForbiddenByRbac" || !strings.Contains(msg, "Microsoft.KeyVault/vaults/keys/purge/action") {
		t.Fatalf("purge denial %s: %s", inner, msg)
	}

	if _, err := kc.PurgeDeletedKey(ctx, "k2", nil); err != nil {
		t.Fatalf("purge as Crypto Officer: %v", err)
	}
	if _, err := kc.GetDeletedKey(ctx, "k2", nil); err == nil || respErr(t, err).StatusCode != http.StatusNotFound {
		t.Fatalf("purged key still there: %v", err)
	}
	if _, err := kc.GetKey(ctx, "k1", "", nil); err != nil {
		t.Fatalf("recovered key: %v", err)
	}
}

// PUT /settings enforces the documented bounds at their edges, merges a
// partial body onto the current settings, and the docs list every setting
// and the bounds.
func TestSettingsBoundsDocumented(t *testing.T) {
	e := startEmu(t, Options{})
	put := func(body string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPut, e.ControlURL()+"/settings", strings.NewReader(body))
		resp, err := e.HTTPClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, c := range []struct {
		body string
		want int
	}{
		{fmt.Sprintf(`{"throttle":{"rsa_2048":%d}}`, MinThrottleLimit-1), 400},
		{fmt.Sprintf(`{"throttle":{"rsa_2048":%d}}`, MinThrottleLimit), 200},
		{fmt.Sprintf(`{"throttle":{"ec":%d}}`, MaxThrottleLimit), 200},
		{fmt.Sprintf(`{"throttle":{"create":%d}}`, MaxThrottleLimit+1), 400},
		{fmt.Sprintf(`{"throttle":{"window_seconds":%d}}`, MinWindowSeconds-1), 400},
		{fmt.Sprintf(`{"throttle":{"window_seconds":%d}}`, MaxWindowSeconds), 200},
		{fmt.Sprintf(`{"throttle":{"window_seconds":%d}}`, MaxWindowSeconds+1), 400},
		{`{"disabled_key_blocks_get":true}`, 200},
		{`{"throttle":5}`, 400},
		{``, 400},
	} {
		if got := put(c.body); got != c.want {
			t.Errorf("PUT /settings %s: %d, want %d", c.body, got, c.want)
		}
	}
	s := e.Settings()
	if s.Throttle.RSA2048 != MinThrottleLimit || s.Throttle.EC != MaxThrottleLimit || s.Throttle.WindowSeconds != MaxWindowSeconds ||
		!s.DisabledKeyBlocksGet || s.Throttle.RSA3072 != DefaultSettings().Throttle.RSA3072 {
		t.Fatalf("settings after partial updates: %+v", s)
	}

	doc := readDoc(t)
	_, settings, _ := strings.Cut(doc, "**Settings**")
	settings, _, _ = strings.Cut(settings, "## Go API")
	for _, f := range jsonFields(reflect.TypeOf(Settings{}), "") {
		if !strings.Contains(settings, "`"+f+"`") && !strings.Contains(settings, "`"+f[strings.LastIndex(f, ".")+1:]+"`") {
			t.Errorf("docs/emulator-azure.md: setting %s is not documented", f)
		}
	}
	for _, b := range []string{fmt.Sprintf("%d..%d", MinThrottleLimit, MaxThrottleLimit), fmt.Sprintf("%d..%d", MinWindowSeconds, MaxWindowSeconds)} {
		if !strings.Contains(settings, b) {
			t.Errorf("docs/emulator-azure.md: the settings bound %s is not documented", b)
		}
	}
}

func jsonFields(rt reflect.Type, prefix string) []string {
	var out []string
	for i := range rt.NumField() {
		f := rt.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.Type.Kind() == reflect.Struct {
			out = append(out, jsonFields(f.Type, prefix+name+".")...)
			continue
		}
		out = append(out, prefix+name)
	}
	return out
}

func readDoc(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../docs/emulator-azure.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// MSAL Go trusts login.microsoftonline.com, so it resolves the authority's
// endpoints without instance discovery; its token cache still asks instance
// discovery for the host's aliases once per client before the first token.
// A transient failure there is tolerated; with DisableInstanceDiscovery no
// request is made. The docs say so.
func TestInstanceDiscoveryFromTokenCache(t *testing.T) {
	e := startEmu(t, Options{})
	c := onboard(t, e, "instdisc")
	ctx := context.Background()
	scope := policy.TokenRequestOptions{Scopes: []string{"https://vault.azure.net/.default"}}
	a := e.App()
	newCred := func(disable bool) *azidentity.ClientSecretCredential {
		cred, err := azidentity.NewClientSecretCredential(c.ID, a.ClientID, a.ClientSecret,
			&azidentity.ClientSecretCredentialOptions{ClientOptions: sdkOpts(e), DisableInstanceDiscovery: disable})
		if err != nil {
			t.Fatal(err)
		}
		return cred
	}

	e.ResetCounters()
	cred := newCred(false)
	for range 2 {
		if _, err := cred.GetToken(ctx, scope); err != nil {
			t.Fatal(err)
		}
	}
	if got := e.Counters()["entra.instance_discovery"]; got != 1 {
		t.Fatalf("instance discovery requests for one client: %d, want 1", got)
	}
	for _, r := range e.Requests() {
		if r.Operation == "entra.instance_discovery" && r.Host != "login.microsoftonline.com" {
			t.Fatalf("instance discovery at %s", r.Host)
		}
	}

	e.ResetCounters()
	if _, err := newCred(true).GetToken(ctx, scope); err != nil {
		t.Fatal(err)
	}
	if got := e.Counters()["entra.instance_discovery"]; got != 0 {
		t.Fatalf("instance discovery with DisableInstanceDiscovery: %d", got)
	}

	if _, err := e.InjectFault(Fault{Operation: "entra.instance_discovery", Status: 500}); err != nil {
		t.Fatal(err)
	}
	if _, err := newCred(false).GetToken(ctx, scope); err != nil {
		t.Fatalf("a failing instance discovery must not stop the token: %v", err)
	}
	e.ClearFaults()

	doc := readDoc(t)
	if strings.Contains(doc, "MSAL skips instance discovery because") {
		t.Error("docs/emulator-azure.md still says MSAL skips instance discovery")
	}
	if !strings.Contains(doc, "/common/discovery/instance") || !strings.Contains(doc, "DisableInstanceDiscovery") {
		t.Error("docs/emulator-azure.md does not describe MSAL's instance discovery request")
	}
}
