package ocicloud

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oracle/oci-go-sdk/v65/common"
	"github.com/oracle/oci-go-sdk/v65/identity"
	"github.com/oracle/oci-go-sdk/v65/keymanagement"
)

func control(t *testing.T, e *Emulator, method, path string, in, out any) int {
	t.Helper()
	var rd io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, e.ControlURL()+path, rd)
	resp, err := e.HTTPClient().Do(req)
	must(t, err)
	defer resp.Body.Close()
	if out != nil {
		must(t, json.NewDecoder(resp.Body).Decode(out))
	}
	return resp.StatusCode
}

// OCI's error shapes for what no resource answers.
func TestErrors(t *testing.T) {
	cu := newCustomer(t)
	ctx := context.Background()
	// Unknown path, wrong method, bad JSON, missing parameter.
	resp := signed(t, cu.creds, "GET", "https://kms."+testRegion+".oraclecloud.com/20180608/nothing", nil, nil, nil)
	if b := body(t, resp); resp.StatusCode != 404 || !strings.Contains(b, `"NotFound"`) {
		t.Fatal(resp.StatusCode, b)
	}
	resp = signed(t, cu.creds, "DELETE", "https://kms."+testRegion+".oraclecloud.com/20180608/vaults/"+*cu.vault.Id, nil, nil, nil)
	if b := body(t, resp); resp.StatusCode != 405 || !strings.Contains(b, `"MethodNotAllowed"`) {
		t.Fatal(resp.StatusCode, b)
	}
	resp = signed(t, cu.creds, "POST", *cu.vault.CryptoEndpoint+"/20180608/encrypt", []byte(`{"keyId":`), nil, nil)
	if b := body(t, resp); resp.StatusCode != 400 || !strings.Contains(b, `"CannotParseRequest"`) {
		t.Fatal(resp.StatusCode, b)
	}
	_, err := cu.c.Encrypt(ctx, keymanagement.EncryptRequest{EncryptDataDetails: keymanagement.EncryptDataDetails{KeyId: cu.key.Id}})
	wantError(t, err, 400, "MissingParameter")
	// Key routes on the regional KMS host do not exist (the management
	// endpoint is the vault's own).
	resp = signed(t, cu.creds, "GET", "https://kms."+testRegion+".oraclecloud.com/20180608/keys/"+*cu.key.Id, nil, nil, nil)
	if b := body(t, resp); resp.StatusCode != 404 {
		t.Fatal(resp.StatusCode, b)
	}
	// A key through another vault's endpoints: not found.
	other := newCustomer(t)
	_, err = other.m.GetKey(ctx, keymanagement.GetKeyRequest{KeyId: cu.key.Id})
	wantError(t, err, 404, "NotAuthorizedOrNotFound")
	_, err = cu.mgmt(t, *other.vault.ManagementEndpoint).GetKey(ctx, keymanagement.GetKeyRequest{KeyId: cu.key.Id})
	wantError(t, err, 404, "NotAuthorizedOrNotFound")
	// A vault of another region.
	phx := clientsFor(t, cu.creds)
	phx.vc.SetRegion("us-phoenix-1")
	_, err = phx.vc.GetVault(ctx, keymanagement.GetVaultRequest{VaultId: cu.vault.Id})
	wantError(t, err, 404, "NotAuthorizedOrNotFound")
	// Key shapes.
	_, err = cu.m.CreateKey(ctx, keymanagement.CreateKeyRequest{CreateKeyDetails: keymanagement.CreateKeyDetails{
		CompartmentId: &cu.creds.TenancyOCID, DisplayName: common.String("k"), KeyShape: &keymanagement.KeyShape{Algorithm: "AES", Length: common.Int(20)}}})
	wantError(t, err, 400, "InvalidParameter")
	// Lists, paged.
	for range 2 {
		cu.newKey(t, cu.creds.TenancyOCID, "AES", 16)
	}
	l, err := cu.m.ListKeys(ctx, keymanagement.ListKeysRequest{CompartmentId: &cu.creds.TenancyOCID, Limit: common.Int(2)})
	must(t, err)
	if len(l.Items) != 2 || l.OpcNextPage == nil {
		t.Fatalf("page 1: %d items, next %v", len(l.Items), l.OpcNextPage)
	}
	l, err = cu.m.ListKeys(ctx, keymanagement.ListKeysRequest{CompartmentId: &cu.creds.TenancyOCID, Limit: common.Int(2), Page: l.OpcNextPage})
	must(t, err)
	if len(l.Items) != 1 || l.OpcNextPage != nil {
		t.Fatalf("page 2: %d items", len(l.Items))
	}
	vl, err := cu.vc.ListVaults(ctx, keymanagement.ListVaultsRequest{CompartmentId: &cu.creds.TenancyOCID})
	must(t, err)
	if len(vl.Items) != 1 || *vl.Items[0].CryptoEndpoint != *cu.vault.CryptoEndpoint {
		t.Fatalf("%+v", vl.Items)
	}
	// A retried create (same opc-retry-token, same body) returns the first
	// one's resource.
	req := keymanagement.CreateKeyRequest{OpcRetryToken: common.String("tok-1"), CreateKeyDetails: keymanagement.CreateKeyDetails{
		CompartmentId: &cu.creds.TenancyOCID, DisplayName: common.String("k"), KeyShape: &keymanagement.KeyShape{Algorithm: "AES", Length: common.Int(32)}}}
	a, err := cu.m.CreateKey(ctx, req)
	must(t, err)
	b, err := cu.m.CreateKey(ctx, req)
	must(t, err)
	if *a.Id != *b.Id {
		t.Fatal("retry token ignored")
	}
}

// Faults answer in OCI's shape; the request log carries the client's
// opc-request-id, the principal and the associated data; the control API
// reads counters.
func TestFaultsCountersRequestLog(t *testing.T) {
	cu := newCustomer(t)
	ctx := context.Background()
	defer emu.ClearFaults()
	host := strings.TrimPrefix(*cu.vault.CryptoEndpoint, "https://")
	var f Fault
	if s := control(t, emu, "POST", "/faults", Fault{Host: host, Operation: "kms.Encrypt", Status: 429, Count: 1}, &f); s != 201 || f.ID == "" {
		t.Fatal(s)
	}
	_, err := encrypt(cu, *cu.key.Id, []byte("x"), nil)
	wantError(t, err, 429, "TooManyRequests")
	_, err = encrypt(cu, *cu.key.Id, []byte("x"), nil)
	must(t, err) // count 1: gone
	id, _ := emu.InjectFault(Fault{Operation: "kms.*", Status: 500})
	_, err = cu.m.GetKey(ctx, keymanagement.GetKeyRequest{KeyId: cu.key.Id})
	wantError(t, err, 500, "InternalServerError")
	if s := control(t, emu, "DELETE", "/faults/"+id, nil, nil); s != 204 {
		t.Fatal(s)
	}
	emu.InjectFault(Fault{Host: "identity", Status: 503, Count: 1})
	_, err = cu.ic.ListPolicies(ctx, identity.ListPoliciesRequest{CompartmentId: &cu.creds.TenancyOCID})
	wantError(t, err, 503, "ServiceUnavailable")
	emu.InjectFault(Fault{Host: host, Reset: true, Count: 1})
	_, err = encrypt(cu, *cu.key.Id, []byte("x"), nil)
	if err == nil {
		t.Fatal("reset fault: no error")
	}
	emu.InjectFault(Fault{Host: host, Latency: Duration(300 * time.Millisecond), Count: 1})
	start := time.Now()
	_, err = encrypt(cu, *cu.key.Id, []byte("x"), nil)
	if must(t, err); time.Since(start) < 300*time.Millisecond {
		t.Fatal("latency fault not applied")
	}

	ad := map[string]string{"ekm:org": "org-log"}
	resp, err := cu.c.Encrypt(ctx, keymanagement.EncryptRequest{OpcRequestId: common.String("0123456789abcdef0123456789abcdef"),
		EncryptDataDetails: keymanagement.EncryptDataDetails{KeyId: cu.key.Id, Plaintext: b64([]byte("x")), AssociatedData: ad}})
	must(t, err)
	if !strings.HasPrefix(*resp.OpcRequestId, "0123456789abcdef0123456789abcdef/") || strings.Count(*resp.OpcRequestId, "/") != 2 {
		t.Fatalf("opc-request-id %s", *resp.OpcRequestId)
	}
	var log struct{ Requests []Request }
	control(t, emu, "GET", "/requests", nil, &log)
	var found *Request
	for i := range log.Requests {
		if log.Requests[i].OpcRequestID == *resp.OpcRequestId {
			found = &log.Requests[i]
		}
	}
	if found == nil || found.ClientRequestID != "0123456789abcdef0123456789abcdef" || found.Operation != "kms.Encrypt" ||
		found.Principal != cu.creds.UserOCID || found.Resource != *cu.key.Id || found.ResourceTenancy != cu.creds.TenancyOCID ||
		found.KeyVersion != *cu.key.CurrentKeyVersion || found.AssociatedData["ekm:org"] != "org-log" || found.Status != 200 {
		t.Fatalf("%+v", found)
	}
	var counters map[string]int
	control(t, emu, "GET", "/counters", nil, &counters)
	if counters["kms.Encrypt"] < 5 || counters["kms.CreateVault"] < 1 {
		t.Fatalf("%v", counters)
	}
}

// Management calls are throttled per tenancy (Settings.ManagementQuota);
// policy changes take effect after Settings.PolicyDelay.
func TestQuotaAndPolicyDelay(t *testing.T) {
	cu := newCustomer(t)
	ctx := context.Background()
	s := emu.Settings()
	defer emu.SetSettings(s)
	var got Settings
	if st := control(t, emu, "PUT", "/settings", map[string]any{"management_quota": 3, "policy_delay": "1h"}, &got); st != 200 || got.ManagementQuota != 3 {
		t.Fatal(st, got)
	}
	if st := control(t, emu, "PUT", "/settings", map[string]any{"disabled_key_error": "Nope"}, nil); st != 400 {
		t.Fatal(st)
	}
	// The emulator clock keeps running (SetClock sets an offset): start at
	// the beginning of a second, and call until throttled — only calls
	// slower than a third of a second each (a loaded machine) could stay
	// within 3 per second for 20 calls.
	emu.SetClock(emu.Now().Truncate(time.Second).Add(time.Second))
	throttled := false
	for range 20 {
		_, err := cu.m.GetKey(ctx, keymanagement.GetKeyRequest{KeyId: cu.key.Id})
		if st, code := serviceError(err); st == 429 && code == "TooManyRequests" {
			throttled = true
			break
		}
	}
	_, err := encrypt(cu, *cu.key.Id, []byte("x"), nil)
	must(t, err) // crypto is not a management call
	emu.SetClock(time.Now())
	if !throttled {
		t.Fatal("no 429 beyond the quota")
	}
	// The vendor is admitted an hour from now.
	v := emu.Vendor()
	cu.policy(t, cu.creds.TenancyOCID, "Define tenancy ekm as "+v.TenancyOCID, "Define group g as "+v.GroupOCID,
		"Admit group g of tenancy ekm to use keys in tenancy")
	vc := clientsFor(t, v.Credentials).crypto(t, *cu.vault.CryptoEndpoint)
	try := func() error {
		_, err := vc.Encrypt(ctx, keymanagement.EncryptRequest{EncryptDataDetails: keymanagement.EncryptDataDetails{KeyId: cu.key.Id, Plaintext: b64([]byte("x"))}})
		return err
	}
	wantError(t, try(), 404, "NotAuthorizedOrNotFound")
	emu.mu.Lock()
	for _, p := range emu.st.Policies {
		for i := range p.Versions {
			if p.Tenancy == cu.creds.TenancyOCID && p.Versions[i].At.After(time.Now()) {
				p.Versions[i].At = time.Now().Add(-time.Second) // as if the hour had passed
			}
		}
	}
	emu.mu.Unlock()
	must(t, try())
}

// The control API answers only on the listener's own address; OCI's APIs
// only on OCI's host names.
func TestHostGuard(t *testing.T) {
	c := emu.HTTPClient()
	resp, err := c.Get("https://kms." + testRegion + ".oraclecloud.com" + "/_emulator/healthz")
	must(t, err)
	if b := body(t, resp); resp.StatusCode == 200 || strings.Contains(b, "ok") {
		t.Fatalf("control API on an OCI host: %d %s", resp.StatusCode, b)
	}
	var h map[string]string
	if s := control(t, emu, "GET", "/healthz", nil, &h); s != 200 || h["status"] != "ok" {
		t.Fatal(s)
	}
	resp, err = c.Get(strings.Replace(emu.ControlURL(), "/_emulator", "/20180608/vaults", 1))
	must(t, err)
	if resp.StatusCode != 404 {
		t.Fatalf("OCI API on the control host: %d", resp.StatusCode)
	}
	resp.Body.Close()
	req, _ := http.NewRequest("GET", "https://kms."+testRegion+".oraclecloud.com/", nil)
	req.Host = "kms.example.com"
	resp, err = c.Do(req)
	must(t, err)
	if resp.StatusCode != http.StatusMisdirectedRequest {
		t.Fatalf("unknown host: %d", resp.StatusCode)
	}
	resp.Body.Close()
	for _, h := range []string{"kms.eu-frankfurt-1.oraclecloud.com", "identity.us-langley-1.oci.oraclegovcloud.com",
		"abcdefgh2aaxy-crypto.kms.uk-gov-london-1.oraclegovcloud.uk", "abcdefgh2aaxy-management.kms.eu-frankfurt-2.oraclecloud.eu"} {
		if ep, _ := classify(h); ep.svc == svcUnknown {
			t.Errorf("%s not served", h)
		}
	}
	for _, h := range []string{"kms.us-ashburn-1.oraclecloud.com.evil.com", "x.abcdefgh2aaxy-crypto.kms.us-ashburn-1.oraclecloud.com",
		"abcdefgh2aaxy-other.kms.us-ashburn-1.oraclecloud.com", "kms.us-ashburn-1.oraclegovcloud.com", "short-crypto.kms.us-ashburn-1.oraclecloud.com"} {
		if ep, _ := classify(h); ep.svc != svcUnknown {
			t.Errorf("%s served", h)
		}
	}
	if err := Main(context.Background(), Options{Addr: "0.0.0.0:0"}, io.Discard); err == nil {
		t.Fatal("listening beyond loopback accepted")
	}
}

// State survives a restart: the vendor's identity, tenancies, policies,
// vaults and key material.
func TestPersistence(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	e1, err := New(Options{StateDir: dir})
	must(t, err)
	must(t, e1.Start())
	saved := emu
	emu = e1
	defer func() { emu = saved }()
	cu := newCustomer(t)
	v1 := e1.Vendor()
	cu.policy(t, cu.creds.TenancyOCID, "Define tenancy ekm as "+v1.TenancyOCID, "Define group g as "+v1.GroupOCID,
		"Admit group g of tenancy ekm to use keys in tenancy")
	enc, err := encrypt(cu, *cu.key.Id, []byte("persisted"), map[string]string{"a": "b"})
	must(t, err)
	must(t, e1.Close())

	e2, err := New(Options{StateDir: dir})
	must(t, err)
	must(t, e2.Start())
	defer e2.Close()
	emu = e2
	v2 := e2.Vendor()
	if v2.Fingerprint != v1.Fingerprint || v2.GroupOCID != v1.GroupOCID || v2.KeyFile != filepath.Join(dir, "vendor-key.pem") {
		t.Fatalf("vendor changed: %+v", v2)
	}
	vendor := clientsFor(t, v2.Credentials)
	dec, err := vendor.crypto(t, *cu.vault.CryptoEndpoint).Decrypt(context.Background(), keymanagement.DecryptRequest{DecryptDataDetails: keymanagement.DecryptDataDetails{
		KeyId: cu.key.Id, Ciphertext: enc.Ciphertext, AssociatedData: map[string]string{"a": "b"}}})
	must(t, err)
	if *dec.Plaintext != *b64([]byte("persisted")) {
		t.Fatal("plaintext changed")
	}
	var list struct{ Tenancies []map[string]any }
	control(t, e2, "GET", "/tenancies", nil, &list)
	if len(list.Tenancies) != 2 {
		t.Fatalf("%v", list)
	}
	var admin Credentials
	if s := control(t, e2, "GET", "/tenancies/"+cu.creds.TenancyOCID+"/admin", nil, &admin); s != 200 || admin.Fingerprint != cu.creds.Fingerprint {
		t.Fatal(s, admin)
	}
}

// Main prints how to use the emulator and never a private key.
func TestMain_Print(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- Main(ctx, Options{Addr: "127.0.0.1:0"}, pw); pw.Close() }()
	var info struct {
		Address  string `json:"address"`
		CAFile   string `json:"ca_file"`
		Vendor   Vendor `json:"vendor"`
		EkmServe string `json:"ekm_serve"`
	}
	line, err := readLine(pr)
	must(t, err)
	cancel()
	go io.Copy(io.Discard, pr)
	must(t, <-done)
	must(t, json.Unmarshal(line, &info))
	if info.Address == "" || info.Vendor.KeyFile == "" || info.Vendor.PrivateKeyPEM != "" || strings.Contains(string(line), "PRIVATE KEY") ||
		!strings.Contains(info.EkmServe, "--oci-private-key-file") {
		t.Fatalf("%s", line)
	}
}

func readLine(r io.Reader) ([]byte, error) {
	var out []byte
	b := make([]byte, 1)
	for {
		if _, err := r.Read(b); err != nil {
			return out, err
		}
		if b[0] == '\n' {
			return out, nil
		}
		out = append(out, b[0])
	}
}

// The control API's call relay signs as the tenancy's administrator: what
// ekm dev prints for the customer's commands. The request goes through
// authentication and authorization like any other.
func TestCallRelay(t *testing.T) {
	cu := newCustomer(t)
	var out map[string]any
	st := control(t, emu, "POST", "/tenancies/"+cu.creds.TenancyOCID+"/call",
		map[string]any{"method": "POST", "url": *cu.vault.ManagementEndpoint + "/20180608/keys/" + *cu.key.Id + "/actions/disable"}, &out)
	if st != 200 || out["lifecycleState"] != "DISABLED" {
		t.Fatal(st, out)
	}
	other := newCustomer(t)
	st = control(t, emu, "POST", "/tenancies/"+other.creds.TenancyOCID+"/call",
		map[string]any{"method": "POST", "url": *cu.vault.ManagementEndpoint + "/20180608/keys/" + *cu.key.Id + "/actions/enable"}, &out)
	if st != 404 || out["code"] != "NotAuthorizedOrNotFound" {
		t.Fatal(st, out)
	}
	st = control(t, emu, "POST", "/tenancies/"+cu.creds.TenancyOCID+"/call",
		map[string]any{"method": "PUT", "url": "https://identity.us-ashburn-1.oci.oraclecloud.com/20160918/policies/x", "body": map[string]any{"statements": []string{"x"}}}, &out)
	if st != 404 {
		t.Fatal(st, out)
	}
	for _, bad := range []string{"https://example.com/", "http://kms.us-ashburn-1.oraclecloud.com/", emu.ControlURL() + "/healthz"} {
		if st := control(t, emu, "POST", "/tenancies/"+cu.creds.TenancyOCID+"/call", map[string]any{"method": "GET", "url": bad}, nil); st != 400 {
			t.Errorf("%s: %d", bad, st)
		}
	}
}
