package azurecloud

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/ekm-dev/ekm/emulator/emukit"
	"github.com/ekm-dev/ekm/internal/dialoverride"
)

func fixedClock() func() time.Time {
	t0 := time.Now()
	return func() time.Time { return t0 }
}

func TestThrottling(t *testing.T) {
	s := DefaultSettings()
	s.Throttle = Throttle{WindowSeconds: 10, RSA2048: 4, RSA3072: 2, RSA4096: 2, EC: 4, Create: 2}
	e := startEmu(t, Options{Now: fixedClock(), Settings: &s})
	c := onboard(t, e, "throttled", roleKVCryptoOfficer)
	ctx := context.Background()
	kc := keysClient(t, e, c.vaultURL, secretCred(t, e, c.ID))
	// Budget: create 1/2 + encrypt 1/4 + encrypt 1/4 = one window.
	if _, err := kc.CreateKey(ctx, "k", azkeys.CreateKeyParameters{Kty: ptr(azkeys.KeyTypeRSA)}, nil); err != nil {
		t.Fatal(err)
	}
	params := azkeys.KeyOperationParameters{Algorithm: ptr(azkeys.EncryptionAlgorithmRSAOAEP256), Value: []byte("x")}
	for i := 0; i < 2; i++ {
		if _, err := kc.Encrypt(ctx, "k", "", params, nil); err != nil {
			t.Fatal(err)
		}
	}
	e.ResetCounters()
	_, err := kc.Encrypt(ctx, "k", "", params, nil)
	re := respErr(t, err)
	if re.StatusCode != 429 || re.ErrorCode != "Throttled" {
		t.Fatalf("%d %s", re.StatusCode, re.ErrorCode)
	}
	if got := e.Counters()["kv.encrypt"]; got != 3 { // the SDK retried twice
		t.Fatalf("kv.encrypt = %d, want 3 (1 try + 2 retries)", got)
	}
	if re.RawResponse.Header.Get("Retry-After") != "" {
		t.Fatal("Retry-After sent while disabled")
	}
	// Switch Retry-After on: it names the seconds to the next window.
	s.Throttle.RetryAfter = true
	if err := e.SetSettings(s); err != nil {
		t.Fatal(err)
	}
	status, _, h := call(t, e, http.MethodGet, c.vaultURL+"keys/k/"+apiV, c.AdminTokens.Vault, nil)
	if ra := h.Get("Retry-After"); status != 429 || ra == "" || ra == "0" || len(ra) > 2 {
		t.Fatalf("%d Retry-After %q", status, ra)
	}
	// The next window admits requests again.
	e.AdvanceClock(10 * time.Second)
	if _, err := kc.Encrypt(ctx, "k", "", params, nil); err != nil {
		t.Fatal(err)
	}
}

func TestLimiterWeights(t *testing.T) {
	var l limiter
	th := Throttle{WindowSeconds: 10}
	now := time.Unix(1_000_000, 0)
	// One RSA-3072 op (limit 2) plus two RSA-2048 ops (limit 4) fill the window.
	for i, limit := range []int{2, 4, 4} {
		if ok, _ := l.allow("v", now, th, limit); !ok {
			t.Fatalf("op %d refused", i)
		}
	}
	ok, wait := l.allow("v", now.Add(3*time.Second), th, 4)
	if ok || wait != 7*time.Second {
		t.Fatalf("ok=%v wait=%v", ok, wait)
	}
	if ok, _ := l.allow("other", now, th, 4); !ok {
		t.Fatal("limits must be per vault")
	}
	if ok, _ := l.allow("v", now.Add(10*time.Second), th, 4); !ok {
		t.Fatal("new window refused")
	}
	if ok, _ := l.allow("v", now, Throttle{Disabled: true}, 1); !ok {
		t.Fatal("disabled limiter refused")
	}
}

func TestFaults(t *testing.T) {
	e := startEmu(t, Options{})
	c := onboard(t, e, "faulty", roleKVCryptoOfficer)
	ctx := context.Background()
	cred := secretCred(t, e, c.ID)
	// The key is made without a short per-try timeout: RSA key generation
	// on a loaded machine can take longer than the one the latency fault
	// needs (the fault holds its try for a minute; 2 s cuts it short).
	kcCreate, err := azkeys.NewClient(c.vaultURL, cred, &azkeys.ClientOptions{ClientOptions: sdkOpts(e)})
	if err != nil {
		t.Fatal(err)
	}
	created, err := kcCreate.CreateKey(ctx, "k", azkeys.CreateKeyParameters{Kty: ptr(azkeys.KeyTypeRSA)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	opts := sdkOpts(e)
	opts.Retry.TryTimeout = 2 * time.Second
	kc, err := azkeys.NewClient(c.vaultURL, cred, &azkeys.ClientOptions{ClientOptions: opts})
	if err != nil {
		t.Fatal(err)
	}
	params := azkeys.KeyOperationParameters{Algorithm: ptr(azkeys.EncryptionAlgorithmRSAOAEP256), Value: []byte("x")}
	for _, f := range []Fault{
		{Host: "vault", Operation: "kv.encrypt", Status: 503, Count: 1},
		{Operation: "kv.*", Reset: true, Count: 1},
		{Host: "faulty.vault.azure.net", Operation: "kv.encrypt", Latency: Duration(time.Minute), Count: 1},
	} {
		if _, err := e.InjectFault(f); err != nil {
			t.Fatal(err)
		}
		e.ResetCounters()
		if _, err := kc.Encrypt(ctx, "k", created.Key.KID.Version(), params, nil); err != nil {
			t.Fatalf("fault %+v: %v", f, err)
		}
		if got := e.Counters()["kv.encrypt"]; got != 2 {
			t.Fatalf("fault %+v: kv.encrypt = %d, want 2 (fault + retry)", f, got)
		}
		if len(e.Faults()) != 0 {
			t.Fatal("count-limited fault not consumed")
		}
	}
	// A fault on another host does not apply.
	if _, err := e.InjectFault(Fault{Host: "graph", Status: 500}); err != nil {
		t.Fatal(err)
	}
	e.ResetCounters()
	if _, err := kc.Encrypt(ctx, "k", "", params, nil); err != nil || e.Counters()["kv.encrypt"] != 1 {
		t.Fatalf("graph fault hit the vault: %v %v", err, e.Counters())
	}
	e.ClearFaults()

	// Entra faults produce Entra-shaped bodies.
	if _, err := e.InjectFault(Fault{Operation: "entra.token", Status: 400, ErrorCode: "invalid_request", AADSTS: 50076, Message: "MFA required", Count: 1}); err != nil {
		t.Fatal(err)
	}
	_, err = secretCred(t, e, c.ID).GetToken(ctx, vaultScope)
	if _, m := authFailure(t, err); !hasCode(m, 50076) {
		t.Fatalf("%v", m)
	}
	if _, err := secretCred(t, e, c.ID).GetToken(ctx, vaultScope); err != nil {
		t.Fatal(err)
	}

	// 429 with Retry-After: the SDK waits and retries.
	if _, err := e.InjectFault(Fault{Operation: "kv.decrypt", Status: 429, RetryAfter: "1", Count: 1}); err != nil {
		t.Fatal(err)
	}
	enc, err := kc.Encrypt(ctx, "k", "", params, nil)
	if err != nil {
		t.Fatal(err)
	}
	// MaxRetryDelay must exceed Retry-After, or azcore gives up at once.
	slow := sdkOpts(e)
	slow.Retry.MaxRetryDelay = 5 * time.Second
	kcSlow, err := azkeys.NewClient(c.vaultURL, cred, &azkeys.ClientOptions{ClientOptions: slow})
	if err != nil {
		t.Fatal(err)
	}
	e.ResetCounters()
	if _, err := kcSlow.Decrypt(ctx, "k", enc.KID.Version(), azkeys.KeyOperationParameters{Algorithm: params.Algorithm, Value: enc.Result}, nil); err != nil {
		t.Fatal(err)
	}
	if got := e.Counters()["kv.decrypt"]; got != 2 {
		t.Fatalf("kv.decrypt = %d", got)
	}

	for _, bad := range []Fault{{}, {Status: 200}, {Status: 500, Reset: true}, {Latency: Duration(time.Hour)}, {Status: 500, Probability: 2}, {Status: 500, RetryAfter: "1\r\nX: y"}} {
		if _, err := e.InjectFault(bad); err == nil {
			t.Errorf("invalid fault accepted: %+v", bad)
		}
	}
}

func TestFaultProbability(t *testing.T) {
	var fs emukit.FaultSet[int]
	fs.SetRand(rand.New(rand.NewPCG(1, 2)))
	if _, err := fs.Add(emukit.Fault{Status: 500, Probability: 0.25}, 0); err != nil {
		t.Fatal(err)
	}
	hits := 0
	for i := 0; i < 4000; i++ {
		if _, ok := fs.Match(serviceNames[svcVault], "v.vault.azure.net", "kv.get"); ok {
			hits++
		}
	}
	if hits < 800 || hits > 1200 {
		t.Fatalf("hits = %d of 4000 at p=0.25", hits)
	}
}

func TestPersistenceAcrossRestart(t *testing.T) {
	clearAzureEnv(t)
	dir := t.TempDir()
	ctx := context.Background()
	e1, err := New(Options{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := e1.Start(); err != nil {
		t.Fatal(err)
	}
	c := onboard(t, e1, "persisted", roleKVCryptoOfficer)
	kc := keysClient(t, e1, c.vaultURL, secretCred(t, e1, c.ID))
	if _, err := kc.CreateKey(ctx, "k", azkeys.CreateKeyParameters{Kty: ptr(azkeys.KeyTypeRSA)}, nil); err != nil {
		t.Fatal(err)
	}
	params := azkeys.KeyOperationParameters{Algorithm: ptr(azkeys.EncryptionAlgorithmRSAOAEP256), Value: []byte("secret dek")}
	enc, err := kc.Encrypt(ctx, "k", "", params, nil)
	if err != nil {
		t.Fatal(err)
	}
	ca1, app1 := e1.CAPEM(), e1.App()
	if err := e1.Close(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, stateFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v", err, fi)
	}

	e2 := startEmu(t, Options{StateDir: dir})
	if !bytes.Equal(e2.CAPEM(), ca1) || e2.App().ClientSecret != app1.ClientSecret || e2.App().ClientID != app1.ClientID {
		t.Fatal("CA or app changed across restart")
	}
	if b, err := os.ReadFile(e2.CAFile()); err != nil || !bytes.Equal(b, ca1) {
		t.Fatal("ca.pem changed")
	}
	// An old client config (same CA file) works against the new process.
	hc, err := dialoverride.NewClient(e2.Addr(), filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	opts := sdkOpts(e2)
	opts.Transport = hc
	kc2 := keysClient(t, e2, c.vaultURL, secretCred(t, e2, c.ID))
	dec, err := kc2.Decrypt(ctx, "k", enc.KID.Version(), azkeys.KeyOperationParameters{Algorithm: params.Algorithm, Value: enc.Result}, nil)
	if err != nil || string(dec.Result) != "secret dek" {
		t.Fatalf("decrypt after restart: %v", err)
	}
}

func TestControlAPI(t *testing.T) {
	e := startEmu(t, Options{})
	// Reachable by address with only the CA, as the printed curl does.
	hc, err := dialoverride.NewClientFromPEM("", e.CAPEM())
	if err != nil {
		t.Fatal(err)
	}
	do := func(method, path string, body any) (int, map[string]any) {
		t.Helper()
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, e.ControlURL()+path, rd)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	status, tn := do(http.MethodPost, "/tenants", nil)
	if status != 201 || tn["tenant_id"] == "" || tn["admin_tokens"].(map[string]any)["vault"] == "" {
		t.Fatalf("%d %v", status, tn)
	}
	tid := tn["tenant_id"].(string)
	if status, m := do(http.MethodPost, "/tenants/"+tid+"/service-principals", nil); status != 201 || m["object_id"] == "" {
		t.Fatalf("%d %v", status, m)
	}
	if status, m := do(http.MethodPost, "/tenants/"+tid+"/vaults", map[string]string{"name": "ctlvault"}); status != 201 || m["vault_url"] != "https://ctlvault.vault.azure.net/" {
		t.Fatalf("%d %v", status, m)
	}
	if status, m := do(http.MethodPost, "/tenants/"+tid+"/admin-tokens", nil); status != 200 || m["graph"] == "" {
		t.Fatalf("%d %v", status, m)
	}
	if status, m := do(http.MethodGet, "/tenants", nil); status != 200 || len(m["tenants"].([]any)) != 2 {
		t.Fatalf("%d %v", status, m)
	}
	if status, m := do(http.MethodPost, "/faults", map[string]any{"operation": "kv.get", "status": 503, "latency": "10ms", "count": 2}); status != 201 || m["id"] == "" {
		t.Fatalf("%d %v", status, m)
	}
	if status, _ := do(http.MethodPost, "/faults", map[string]any{"status": 99}); status != 400 {
		t.Fatal(status)
	}
	if status, m := do(http.MethodGet, "/faults", nil); status != 200 || len(m["faults"].([]any)) != 1 {
		t.Fatalf("%d %v", status, m)
	}
	if status, _ := do(http.MethodDelete, "/faults", nil); status != 204 || len(e.Faults()) != 0 {
		t.Fatal(status)
	}
	before := e.Now()
	if status, _ := do(http.MethodPost, "/clock", map[string]any{"advance": "1h"}); status != 200 || e.Now().Sub(before) < time.Hour {
		t.Fatal(status)
	}
	if status, _ := do(http.MethodPost, "/clock", map[string]any{"set": "2030-01-02T03:04:05Z"}); status != 200 || e.Now().Year() != 2030 {
		t.Fatal(status)
	}
	if status, _ := do(http.MethodPost, "/clock", map[string]any{}); status != 400 {
		t.Fatal(status)
	}
	if status, m := do(http.MethodPut, "/settings", map[string]any{"disabled_key_blocks_get": true}); status != 200 || m["disabled_key_blocks_get"] != true || !e.Settings().DisabledKeyBlocksGet {
		t.Fatalf("%d %v", status, m)
	}
	if status, _ := do(http.MethodPut, "/settings", map[string]any{"throttle": map[string]any{"window_seconds": -1}}); status != 400 {
		t.Fatal(status)
	}
	if status, m := do(http.MethodGet, "/counters", nil); status != 200 || m == nil {
		t.Fatal(status)
	}
	if status, m := do(http.MethodGet, "/app", nil); status != 200 || m["client_id"] != e.App().ClientID {
		t.Fatalf("%d %v", status, m)
	}
	if status, _ := do(http.MethodGet, "/nope", nil); status != 404 {
		t.Fatal(status)
	}
	if status, _ := do(http.MethodPost, "/issuers", map[string]any{"issuer": "https://x", "jwks": map[string]any{"keys": []any{}}}); status != 400 {
		t.Fatal(status)
	}
	if status, _ := do(http.MethodPost, "/apps/"+e.App().ClientID+"/federated-credentials", map[string]any{"issuer": "https://x", "subject": "s", "audiences": []string{"api://AzureADTokenExchange"}}); status != 201 {
		t.Fatal(status)
	}
	// The control API is not reachable under an Azure host name.
	if status, _, _ := call(t, e, http.MethodPost, "https://login.microsoftonline.com/_emulator/tenants", "", nil); status == 201 {
		t.Fatal("control API exposed on an Azure host")
	}
}

func TestDisabledKeyBlocksGetSwitch(t *testing.T) {
	e := startEmu(t, Options{})
	c := onboard(t, e, "dkvault")
	kc := adminKeysClient(t, e, c)
	ctx := context.Background()
	if _, err := kc.CreateKey(ctx, "k", azkeys.CreateKeyParameters{Kty: ptr(azkeys.KeyTypeRSA), KeyAttributes: &azkeys.KeyAttributes{Enabled: ptr(false)}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := kc.GetKey(ctx, "k", "", nil); err != nil {
		t.Fatal(err)
	}
	s := e.Settings()
	s.DisabledKeyBlocksGet = true
	if err := e.SetSettings(s); err != nil {
		t.Fatal(err)
	}
	_, err := kc.GetKey(ctx, "k", "", nil)
	if _, inner, _ := innerCode(t, respErr(t, err)); inner != "KeyDisabled" {
		t.Fatalf("inner %s", inner)
	}
}

func TestReadAllowsPublicKeyOpsSwitch(t *testing.T) {
	e := startEmu(t, Options{})
	c := onboard(t, e, "readvault")
	ctx := context.Background()
	if _, err := adminKeysClient(t, e, c).CreateKey(ctx, "k", azkeys.CreateKeyParameters{Kty: ptr(azkeys.KeyTypeRSA)}, nil); err != nil {
		t.Fatal(err)
	}
	readRole := newGUID()
	e.mu.Lock()
	tn := e.st.Tenants[c.ID]
	tn.RoleDefinitions[readRole] = &roleDefinition{ID: readRole, RoleName: "reader", Type: "CustomRole",
		Permissions: []permission{{DataActions: []string{"Microsoft.KeyVault/vaults/keys/read"}}}, AssignableScopes: []string{"/subscriptions/" + c.SubscriptionID}}
	e.mu.Unlock()
	if _, err := e.AssignRole(c.ID, "/subscriptions/"+c.SubscriptionID, readRole, c.spID); err != nil {
		t.Fatal(err)
	}
	kc := keysClient(t, e, c.vaultURL, secretCred(t, e, c.ID))
	params := azkeys.KeyOperationParameters{Algorithm: ptr(azkeys.EncryptionAlgorithmRSAOAEP256), Value: []byte("x")}
	_, err := kc.Encrypt(ctx, "k", "", params, nil)
	if _, inner, msg := innerCode(t, respErr(t, err)); inner != "ForbiddenByRbac" || !strings.Contains(msg, "keys/encrypt/action") {
		t.Fatalf("%s %s", inner, msg)
	}
	s := e.Settings()
	s.ReadAllowsPublicKeyOps = true
	if err := e.SetSettings(s); err != nil {
		t.Fatal(err)
	}
	enc, err := kc.Encrypt(ctx, "k", "", params, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Decrypt is a private-key operation: still refused.
	_, err = kc.Decrypt(ctx, "k", "", azkeys.KeyOperationParameters{Algorithm: params.Algorithm, Value: enc.Result}, nil)
	if respErr(t, err).StatusCode != 403 {
		t.Fatal("decrypt allowed with read only")
	}
}

func TestMainPrintsUsage(t *testing.T) {
	clearAzureEnv(t)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- Main(ctx, Options{StateDir: dir}, pw); pw.Close() }()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Address    string `json:"address"`
		CAFile     string `json:"ca_file"`
		ControlURL string `json:"control_url"`
		Create     string `json:"create_tenant"`
		App        struct {
			ClientID     string `json:"client_id"`
			ClientSecret string `json:"client_secret"`
			CertPath     string `json:"certificate_path"`
			KeyPath      string `json:"key_path"`
			TenantID     string `json:"tenant_id"`
		} `json:"app"`
	}
	if err := json.Unmarshal([]byte(line), &info); err != nil {
		t.Fatalf("%q: %v", line, err)
	}
	if info.CAFile != filepath.Join(dir, "ca.pem") || info.App.ClientID == "" || info.App.ClientSecret == "" || info.App.TenantID == "" ||
		!strings.Contains(info.Create, "curl --cacert") || !strings.HasSuffix(info.ControlURL, "/_emulator") {
		t.Fatalf("%+v", info)
	}
	if fi, err := os.Stat(info.App.KeyPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v", err)
	}
	hc, err := dialoverride.NewClient("", info.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Post(info.ControlURL+"/tenants", "application/json", nil)
	if err != nil || resp.StatusCode != 201 {
		t.Fatalf("create tenant: %v", err)
	}
	resp.Body.Close()
	cancel()
	go io.Copy(io.Discard, pr)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestGarbageNeverBreaks throws malformed requests at every host; the
// emulator must answer each with a 4xx and keep serving.
func TestGarbageNeverBreaks(t *testing.T) {
	e := startEmu(t, Options{})
	c := onboard(t, e, "garbage")
	hosts := []string{"login.microsoftonline.com", "graph.microsoft.com", "management.azure.com", "garbage.vault.azure.net", "x.vault.azure.net"}
	paths := []string{"/", "/%2e%2e/", "/" + c.ID + "/oauth2/v2.0/token", "/v1.0/servicePrincipals(appId='", "/v1.0/servicePrincipals(appId='')",
		"/subscriptions", "/subscriptions//resourceGroups/x", "/subscriptions/" + c.SubscriptionID + "/providers/Microsoft.Authorization/roleAssignments/x/y/z",
		"/keys/k/" + strings.Repeat("a", 32) + "/encrypt", "/keys//create", "/deletedkeys/x/recover", "/keys/" + strings.Repeat("k", 300) + "/create"}
	bodies := []string{"", "{", "null", "[]", `{"kty":5}`, `{"alg":"RSA-OAEP","value":123}`, "grant_type=client_credentials&client_assertion=a.b.c&client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer&client_id=" + e.App().ClientID + "&scope=https://vault.azure.net/.default",
		`{"properties":{"roleDefinitionId":"/x/","principalId":"../.."}}`, strings.Repeat("x", 2<<20)}
	tokens := []string{"", "garbage", c.AdminTokens.Vault, c.AdminTokens.Management, c.AdminTokens.Graph, "a.b.c", "e30.e30.e30"}
	hc := e.HTTPClient()
	r := rand.New(rand.NewPCG(7, 7))
	for i := 0; i < 400; i++ {
		method := []string{"GET", "POST", "PUT", "PATCH", "DELETE"}[r.IntN(5)]
		u := "https://" + hosts[r.IntN(len(hosts))] + paths[r.IntN(len(paths))] + "?api-version=" + []string{"2025-07-01", "x", ""}[r.IntN(3)]
		req, err := http.NewRequest(method, u, strings.NewReader(bodies[r.IntN(len(bodies))]))
		if err != nil {
			t.Fatal(err)
		}
		if tok := tokens[r.IntN(len(tokens))]; tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, u, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			t.Fatalf("%s %s: %d", method, u, resp.StatusCode)
		}
	}
	// Hosts outside the certificate never get past TLS; check the handler.
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "https://unknown.example.com/", nil))
	if rec.Code != http.StatusMisdirectedRequest {
		t.Fatalf("unknown host: %d", rec.Code)
	}
	if _, err := secretCred(t, e, c.ID).GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{"https://vault.azure.net/.default"}}); err != nil {
		t.Fatal(err)
	}
}
