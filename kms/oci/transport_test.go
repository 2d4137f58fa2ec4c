package oci

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/emulator/ocicloud"
	"github.com/ekm-dev/ekm/kms"
)

// Every request is one ekm can name to the customer: the opc-request-ids
// the call layer records are those OCI's log shows, and ekm calls only the
// region's KMS host and the vault's own endpoints.
func TestRequestIDsAndHosts(t *testing.T) {
	d := emuDriver(t, nil)
	c := onboard(t, testOrg, nil)
	p := c.open(t, d)
	emu.ResetCounters()
	ci := &kms.CallInfo{}
	ctx := kms.WithCallInfo(context.Background(), ci)
	if err := validate(t, p); err != nil {
		t.Fatal(err)
	}
	w, err := p.Wrap(ctx, key32(), testAAD)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Unwrap(ctx, w, testAAD); err != nil {
		t.Fatal(err)
	}
	if len(ci.RequestIDs) != 2 {
		t.Fatalf("recorded %v", ci.RequestIDs)
	}
	seen := map[string]ocicloud.Request{}
	hosts := map[string]bool{}
	for _, r := range emu.Requests() {
		seen[r.ClientRequestID] = r
		hosts[r.Host] = true
		if r.Principal != emu.Vendor().UserOCID {
			t.Fatalf("request as %s", r.Principal)
		}
	}
	for i, id := range ci.RequestIDs {
		r, ok := seen[id]
		if !ok || !strings.HasPrefix(r.OpcRequestID, id+"/") {
			t.Fatalf("request id %s not in OCI's log", id)
		}
		if want := []string{"kms.Encrypt", "kms.Decrypt"}[i]; r.Operation != want || r.AssociatedData[kms.AADProject] != testAAD.ProjectID ||
			r.AssociatedData[kms.AADOrg] != testOrg || r.AssociatedData[kms.AADVersion] != "1" || r.KeyVersion != w.KeyVersion {
			t.Fatalf("%+v", r)
		}
	}
	want := []string{"kms." + testRegion + ".oraclecloud.com", strings.TrimPrefix(c.res.CryptoEndpoint, "https://"), strings.TrimPrefix(c.res.ManagementEndpoint, "https://")}
	for h := range hosts {
		if !slices.Contains(want, h) {
			t.Fatalf("ekm called %s", h)
		}
	}
	// The vault was read once per validation (fresh) and once on first
	// use, never per encrypt.
	if n := emu.Counters()["kms.GetVault"]; n > 2 {
		t.Fatalf("%d GetVault calls", n)
	}
}

// Throttling and 5xx are retried within the call; what persists is an
// outage, never a revocation; the SDK's own retry switch changes nothing.
func TestTransientFailures(t *testing.T) {
	t.Setenv("OCI_SDK_DEFAULT_RETRY_ENABLED", "true")
	d := emuDriver(t, func(c *Config) { c.MaxAttempts = 3 })
	c := onboard(t, testOrg, nil)
	p := c.open(t, d)
	ctx := context.Background()
	w, err := p.Wrap(ctx, key32(), testAAD)
	if err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(c.res.CryptoEndpoint, "https://")
	defer emu.ClearFaults()
	emu.InjectFault(ocicloud.Fault{Host: host, Operation: "kms.Decrypt", Status: 429, Count: 2})
	if _, err := p.Unwrap(ctx, w, testAAD); err != nil {
		t.Fatalf("two 429s then success: %v", err)
	}
	emu.ResetCounters()
	emu.InjectFault(ocicloud.Fault{Host: host, Operation: "kms.Decrypt", Status: 503})
	_, err = p.Unwrap(ctx, w, testAAD)
	wantDiag(t, err, CodeServiceError, kms.Outage, "")
	if n := emu.Counters()["kms.Decrypt"]; n != 3 {
		t.Fatalf("%d attempts, want 3", n)
	}
	emu.ClearFaults()
	emu.InjectFault(ocicloud.Fault{Host: host, Operation: "kms.Decrypt", Status: 429})
	_, err = p.Unwrap(ctx, w, testAAD)
	wantDiag(t, err, CodeThrottled, kms.Outage, "")
	emu.ClearFaults()
	emu.InjectFault(ocicloud.Fault{Host: host, Reset: true})
	_, err = p.Unwrap(ctx, w, testAAD)
	wantDiag(t, err, CodeConnectionFailed, kms.Outage, "")
	emu.ClearFaults()
	short := emuDriver(t, func(c *Config) { c.Timeout = 300 * time.Millisecond })
	emu.InjectFault(ocicloud.Fault{Host: host, Latency: ocicloud.Duration(2 * time.Second)})
	_, err = c.open(t, short).Wrap(ctx, key32(), testAAD)
	wantDiag(t, err, CodeTimeout, kms.Outage, "")
	emu.ClearFaults()
	// A revocation (404) is never retried, the SDK's switch
	// notwithstanding.
	if err := c.deletePolicy(); err != nil {
		t.Fatal(err)
	}
	emu.ResetCounters()
	_, err = p.Unwrap(ctx, w, testAAD)
	wantDiag(t, err, CodeVaultNotFound, kms.Revoked, StepPolicyOrKey)
	if n := emu.Counters()["kms.Decrypt"]; n != 1 {
		t.Fatalf("%d decrypts", n)
	}
	// Tampered and mis-bound wraps are invalid, not revoked.
	if err := c.setPolicy(c.res.Statements); err != nil {
		t.Fatal(err)
	}
	bad := w
	bad.Ciphertext = slices.Clone(w.Ciphertext)
	bad.Ciphertext[10] ^= 1
	_, err = p.Unwrap(ctx, bad, testAAD)
	wantDiag(t, err, CodeInvalidCiphertext, kms.Invalid, "")
	bad = w
	bad.Algorithm = "AWS-KMS-SYMMETRIC+ekm-ctx-v1"
	_, err = p.Unwrap(ctx, bad, testAAD)
	wantDiag(t, err, CodeWrongKey, kms.Invalid, "")
	bad = w
	bad.KeyVersion = strings.Replace(w.KeyVersion, ".iad.", ".phx.", 1)
	_, err = p.Unwrap(ctx, bad, testAAD)
	wantDiag(t, err, CodeWrongKey, kms.Invalid, "")
}

// The driver's own configuration is checked at start: a fingerprint that
// is not the key's would make OCI refuse every request.
func TestNewDriverConfig(t *testing.T) {
	good := vendorConfig(t)
	if _, err := NewDriver(good); err != nil {
		t.Fatal(err)
	}
	k, _ := rsa.GenerateKey(rand.Reader, 2048)
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	other := filepath.Join(t.TempDir(), "other.pem")
	os.WriteFile(other, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	for name, mod := range map[string]func(*Config){
		"fingerprint of another key": func(c *Config) { c.PrivateKeyFile = other },
		"no key file":                func(c *Config) { c.PrivateKeyFile = "" },
		"missing key file":           func(c *Config) { c.PrivateKeyFile = filepath.Join(t.TempDir(), "none") },
		"bad fingerprint":            func(c *Config) { c.Fingerprint = "AB:CD" },
		"bad tenancy":                func(c *Config) { c.TenancyOCID = "ocid1.user.oc1..aaaa" },
		"bad group":                  func(c *Config) { c.GroupOCID = "" },
		"bad user":                   func(c *Config) { c.UserOCID = "x" },
		"unknown realm":              func(c *Config) { c.Realms = []string{"oc99"} },
		"unknown auth":               func(c *Config) { c.Auth = "password" },
	} {
		cfg := good
		mod(&cfg)
		if _, err := NewDriver(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	d := emuDriver(t, nil)
	s := d.Spec()
	if s.Identity[IdentityTenancyOCID] != good.TenancyOCID || s.Identity[IdentityGroupOCID] != good.GroupOCID || s.Algorithm != Algorithm {
		t.Fatalf("%+v", s.Identity)
	}
	// Only the hosts a client is pinned to are reached.
	vc, err := d.vaultClient(region{"us-ashburn-1", "oc1", "iad"})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := http.NewRequest("GET", "https://169.254.169.254/opc/v2/instance", nil)
	if err := vc.Interceptor(r); err == nil {
		t.Fatal("interceptor let another host through")
	}
}
