package oci

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oracle/oci-go-sdk/v65/common"
	"github.com/oracle/oci-go-sdk/v65/identity"
	"github.com/oracle/oci-go-sdk/v65/keymanagement"

	"github.com/ekm-dev/ekm/emulator/ocicloud"
	"github.com/ekm-dev/ekm/internal/dialoverride"
	"github.com/ekm-dev/ekm/internal/ocionboard"
	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/kms/kmstest"
)

// The emulator tests drive the provider through the production code path:
// ekm's identity is the emulator's vendor user, given as an operator gives
// it (tenancy, user, fingerprint and the path of the private key file),
// and only Config.HTTPClient (dial override + CA) differs from real OCI.

var emu *ocicloud.Emulator

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	for _, k := range []string{"OCI_CONFIG_FILE", "OCI_SDK_DEFAULT_RETRY_ENABLED", "OCI_SDK_DEFAULT_CIRCUITBREAKER_ENABLED",
		"OCI_REGION_METADATA", "OCI_DEFAULT_CERTS_PATH", "OCI_DEFAULT_REALM", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"} {
		os.Unsetenv(k)
	}
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

const (
	testRegion = "us-ashburn-1"
	testOrg    = "org-0123456789abcdefghjkmnpq"
)

var testAAD = kms.AAD{OrgID: testOrg, ProjectID: "proj_0123456789abcdefghjkmnpqrs", Version: 1}

func vendorConfig(t testing.TB) Config {
	t.Helper()
	hc, err := dialoverride.NewClient(emu.Addr(), emu.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	v := emu.Vendor()
	return Config{TenancyOCID: v.TenancyOCID, UserOCID: v.UserOCID, Fingerprint: v.Fingerprint, PrivateKeyFile: v.KeyFile,
		GroupOCID: v.GroupOCID, HTTPClient: hc, MaxBackoff: 20 * time.Millisecond, Timeout: 10 * time.Second}
}

func emuDriver(t testing.TB, mod func(*Config)) *Driver {
	t.Helper()
	cfg := vendorConfig(t)
	if mod != nil {
		mod(&cfg)
	}
	d, err := NewDriver(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// customer is one onboarded customer tenancy.
type customer struct {
	t     testing.TB
	admin ocicloud.Credentials
	o     ocionboard.Options
	res   ocionboard.Result
	cl    *ocionboard.Clients
	mgmt  keymanagement.KmsManagementClient
	org   string
}

// onboard creates a customer tenancy and runs the onboarding steps
// (internal/ocionboard: the statements of docs/oci.md) for org.
func onboard(t testing.TB, org string, mod func(*ocionboard.Options)) *customer {
	t.Helper()
	admin, err := emu.CreateTenancy("", testRegion)
	if err != nil {
		t.Fatal(err)
	}
	v := emu.Vendor()
	c := &customer{t: t, admin: admin, org: org}
	c.o = ocionboard.Options{HTTPClient: emu.HTTPClient(), TenancyOCID: admin.TenancyOCID, Region: testRegion, OrgID: org,
		Credentials:       common.NewRawConfigurationProvider(admin.TenancyOCID, admin.UserOCID, testRegion, admin.Fingerprint, admin.PrivateKeyPEM, nil),
		VendorTenancyOCID: v.TenancyOCID, VendorGroupOCID: v.GroupOCID, Protection: "SOFTWARE"}
	if mod != nil {
		mod(&c.o)
	}
	if c.res, err = ocionboard.Run(context.Background(), c.o); err != nil {
		t.Fatal(err)
	}
	if c.cl, err = ocionboard.NewClients(c.o); err != nil {
		t.Fatal(err)
	}
	if c.mgmt, err = c.cl.Management(c.res.ManagementEndpoint); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *customer) params() kms.Params {
	return kms.Params{ParamKeyOCID: c.res.KeyOCID, ParamVaultOCID: c.res.VaultOCID, ParamRegion: testRegion}
}

func (c *customer) open(t testing.TB, d *Driver) *Provider {
	t.Helper()
	p, err := d.open(c.org, c.params())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (c *customer) setPolicy(stmts []string) error {
	ctx := context.Background()
	if c.res.PolicyOCID == "" {
		p, err := c.cl.Identity.CreatePolicy(ctx, identity.CreatePolicyRequest{CreatePolicyDetails: identity.CreatePolicyDetails{
			CompartmentId: &c.admin.TenancyOCID, Name: common.String("ekm-key-access"), Description: common.String("d"), Statements: stmts}})
		if err == nil {
			c.res.PolicyOCID = *p.Id
		}
		return err
	}
	_, err := c.cl.Identity.UpdatePolicy(ctx, identity.UpdatePolicyRequest{PolicyId: &c.res.PolicyOCID, UpdatePolicyDetails: identity.UpdatePolicyDetails{Statements: stmts}})
	return err
}

func (c *customer) deletePolicy() error {
	_, err := c.cl.Identity.DeletePolicy(context.Background(), identity.DeletePolicyRequest{PolicyId: &c.res.PolicyOCID})
	c.res.PolicyOCID = ""
	return err
}

func (c *customer) keyAction(t testing.TB, action string) {
	t.Helper()
	ctx := context.Background()
	id := &c.res.KeyOCID
	var err error
	switch action {
	case "disable":
		_, err = c.mgmt.DisableKey(ctx, keymanagement.DisableKeyRequest{KeyId: id})
	case "enable":
		_, err = c.mgmt.EnableKey(ctx, keymanagement.EnableKeyRequest{KeyId: id})
	case "schedule-deletion":
		_, err = c.mgmt.ScheduleKeyDeletion(ctx, keymanagement.ScheduleKeyDeletionRequest{KeyId: id})
	case "cancel-deletion":
		_, err = c.mgmt.CancelKeyDeletion(ctx, keymanagement.CancelKeyDeletionRequest{KeyId: id})
	case "rotate":
		_, err = c.mgmt.CreateKeyVersion(ctx, keymanagement.CreateKeyVersionRequest{KeyId: id})
	}
	if err != nil {
		t.Fatalf("%s: %v", action, err)
	}
}

func key32() []byte {
	b := make([]byte, 32)
	rand.Read(b)
	return b
}

// TestConformance runs the kms provider suite against the emulator.
func TestConformance(t *testing.T) {
	d := emuDriver(t, nil)
	kmstest.Run(t, func(t *testing.T) kmstest.Harness {
		c := onboard(t, testOrg, nil)
		return kmstest.Harness{
			Provider: c.open(t, d), Driver: d, OrgID: testOrg,
			Rotate: func(ctx context.Context) error {
				_, err := c.mgmt.CreateKeyVersion(ctx, keymanagement.CreateKeyVersionRequest{KeyId: &c.res.KeyOCID})
				return err
			},
			Revoke:  func(context.Context) error { return c.deletePolicy() },
			Restore: func(context.Context) error { return c.setPolicy(c.res.Statements) },
		}
	})
}

func diagOf(t testing.TB, err error) *kms.Error {
	t.Helper()
	var e *kms.Error
	if !errors.As(err, &e) {
		t.Fatalf("not a *kms.Error: %v", err)
	}
	for _, c := range Spec().Codes {
		if c.Code == e.Code {
			if c.Class != e.Class || c.Step != e.Step && e.Step != "" {
				t.Fatalf("%s: class %s step %q, the Spec says %s %q", e.Code, e.Class, e.Step, c.Class, c.Step)
			}
			return e
		}
	}
	t.Fatalf("code %s not in the Spec: %v", e.Code, e)
	return nil
}

func wantDiag(t testing.TB, err error, code string, class kms.Class, step string) *kms.Error {
	t.Helper()
	if err == nil {
		t.Fatalf("want %s, got success", code)
	}
	e := diagOf(t, err)
	if e.Code != code || e.Class != class || e.Step != step {
		t.Fatalf("want %s (%s, step %q), got %s (%s, step %q): %s", code, class, step, e.Code, e.Class, e.Step, e.Message)
	}
	return e
}

// validate runs what registration runs: preflight, round trip, describe.
func validate(t testing.TB, p *Provider) error {
	t.Helper()
	ks := kms.NewKeys(kms.KeysConfig{Registry: kms.NewRegistry(p.d)})
	ps := kms.Params{ParamKeyOCID: p.p.key.raw, ParamVaultOCID: p.p.vault.raw, ParamRegion: p.p.region.id}
	if p.p.version != nil {
		ps[ParamKeyVersionOCID] = p.p.version.raw
	}
	k, err := ks.Open(kms.Ref{ID: "x", OrgID: p.org, Type: Type, Params: ps})
	if err != nil {
		t.Fatal(err)
	}
	_, err = k.Validate(context.Background(), kms.AAD{OrgID: p.org})
	return err
}

// Each onboarding step left out or undone is diagnosed with its step.
func TestDiagnosisPerStep(t *testing.T) {
	d := emuDriver(t, nil)
	ctx := context.Background()
	v := emu.Vendor()

	t.Run("valid", func(t *testing.T) {
		c := onboard(t, testOrg, nil)
		if err := validate(t, c.open(t, d)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("step 2 missing", func(t *testing.T) {
		c := onboard(t, testOrg, func(o *ocionboard.Options) { o.Skip.Policy = true })
		wantDiag(t, validate(t, c.open(t, d)), CodeVaultNotFound, kms.Revoked, StepPolicyOrKey)
	})
	t.Run("step 2 narrowed to another key", func(t *testing.T) {
		c := onboard(t, testOrg, nil)
		p := c.open(t, d)
		w, err := p.Wrap(ctx, key32(), testAAD)
		if err != nil {
			t.Fatal(err)
		}
		other := ocionboard.Statements(v.TenancyOCID, v.GroupOCID, "ekm", c.res.VaultOCID, c.res.VaultOCID[:len(c.res.VaultOCID)-1]+"x")
		if err := c.setPolicy(other); err != nil {
			t.Fatal(err)
		}
		_, err = p.Unwrap(ctx, w, testAAD)
		e := wantDiag(t, err, CodeKeyNotFound, kms.Revoked, StepPolicyOrKey)
		if e.RequestID == "" {
			t.Fatal("no request id")
		}
	})
	t.Run("step 2 grants read, not use", func(t *testing.T) {
		c := onboard(t, testOrg, nil)
		stmts := append([]string(nil), c.res.Statements...)
		stmts[3] = "Admit group ekm_kms of tenancy ekm to read keys in compartment ekm"
		if err := c.setPolicy(stmts); err != nil {
			t.Fatal(err)
		}
		_, err := c.open(t, d).Wrap(ctx, key32(), testAAD)
		wantDiag(t, err, CodeKeyUseNotAdmitted, kms.Revoked, StepPolicy)
	})
	t.Run("step 2 Admit in another compartment", func(t *testing.T) {
		c := onboard(t, testOrg, nil)
		if _, err := c.cl.Identity.CreateCompartment(ctx, identity.CreateCompartmentRequest{CreateCompartmentDetails: identity.CreateCompartmentDetails{
			CompartmentId: &c.admin.TenancyOCID, Name: common.String("other"), Description: common.String("o")}}); err != nil {
			t.Fatal(err)
		}
		if err := c.setPolicy(ocionboard.Statements(v.TenancyOCID, v.GroupOCID, "other", c.res.VaultOCID, c.res.KeyOCID)); err != nil {
			t.Fatal(err)
		}
		wantDiag(t, validate(t, c.open(t, d)), CodeVaultNotFound, kms.Revoked, StepPolicyOrKey)
	})
	t.Run("step 1 key disabled", func(t *testing.T) {
		for _, variant := range []string{"IncorrectState", "InvalidParameter"} {
			s := emu.Settings()
			s.DisabledKeyError = variant
			if err := emu.SetSettings(s); err != nil {
				t.Fatal(err)
			}
			c := onboard(t, testOrg, nil)
			p := c.open(t, d)
			w, err := p.Wrap(ctx, key32(), testAAD)
			if err != nil {
				t.Fatal(err)
			}
			c.keyAction(t, "disable")
			_, err = p.Unwrap(ctx, w, testAAD)
			wantDiag(t, err, CodeKeyDisabled, kms.Revoked, StepKey)
			wantDiag(t, validate(t, p), CodeKeyDisabled, kms.Revoked, StepKey)
			c.keyAction(t, "enable")
			if _, err := p.Unwrap(ctx, w, testAAD); err != nil {
				t.Fatal(err)
			}
		}
		s := emu.Settings()
		s.DisabledKeyError = "IncorrectState"
		emu.SetSettings(s)
	})
	t.Run("step 1 deletion scheduled", func(t *testing.T) {
		c := onboard(t, testOrg, nil)
		p := c.open(t, d)
		c.keyAction(t, "schedule-deletion")
		_, err := p.Wrap(ctx, key32(), testAAD)
		e := wantDiag(t, err, CodeKeyPendingDeletion, kms.Revoked, StepKey)
		if !containsAll(e.Message, "scheduled for deletion on ", "cancel-deletion") {
			t.Fatal(e.Message)
		}
		c.keyAction(t, "cancel-deletion")
		if err := validate(t, p); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("step 1 key not tagged", func(t *testing.T) {
		c := onboard(t, testOrg, func(o *ocionboard.Options) { o.Skip.Tag = true })
		e := wantDiag(t, validate(t, c.open(t, d)), CodeKeyOrgTagMismatch, kms.Invalid, StepKey)
		if e.Param != ParamKeyOCID {
			t.Fatal(e.Param)
		}
	})
	t.Run("step 1 key of another org", func(t *testing.T) {
		// Another organization of this ekm registers a customer's key
		// (ekm's group is admitted for every organization): refused.
		c := onboard(t, testOrg, nil)
		c.org = "org-attacker000000000000000"
		e := wantDiag(t, validate(t, c.open(t, d)), CodeKeyOrgTagMismatch, kms.Invalid, StepKey)
		// Nothing of the owner's key shows: not its organization, nor its
		// state (the tag is judged before anything else).
		c.keyAction(t, "schedule-deletion")
		e2 := wantDiag(t, validate(t, c.open(t, d)), CodeKeyOrgTagMismatch, kms.Invalid, StepKey)
		if strings.Contains(e.Message+e2.Message, testOrg) || e.Message != e2.Message {
			t.Fatalf("the refusal tells the other organization about the key: %q / %q", e.Message, e2.Message)
		}
		c.keyAction(t, "cancel-deletion")
	})
	t.Run("step 1 key not AES-256", func(t *testing.T) {
		c := onboard(t, testOrg, nil)
		k, err := c.mgmt.CreateKey(ctx, keymanagement.CreateKeyRequest{CreateKeyDetails: keymanagement.CreateKeyDetails{
			CompartmentId: &c.res.CompartmentOCID, DisplayName: common.String("aes128"), FreeformTags: map[string]string{TagOrg: testOrg},
			KeyShape: &keymanagement.KeyShape{Algorithm: "AES", Length: common.Int(16)}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.setPolicy(ocionboard.Statements(v.TenancyOCID, v.GroupOCID, "ekm", c.res.VaultOCID, *k.Id)); err != nil {
			t.Fatal(err)
		}
		c.res.KeyOCID = *k.Id
		wantDiag(t, validate(t, c.open(t, d)), CodeKeyNotAES256, kms.Invalid, StepKey)
	})
	t.Run("step 1 key version of another key", func(t *testing.T) {
		c := onboard(t, testOrg, nil)
		other := onboard(t, testOrg, nil)
		ps := c.params()
		ps[ParamKeyVersionOCID] = other.res.KeyVersionOCID
		p, err := d.open(testOrg, ps)
		if err != nil {
			t.Fatal(err)
		}
		wantDiag(t, validate(t, p), CodeKeyVersionNotFound, kms.Invalid, StepKey)
	})
	t.Run("operator key rejected", func(t *testing.T) {
		c := onboard(t, testOrg, nil)
		k, _ := rsa.GenerateKey(rand.Reader, 2048)
		der, _ := x509.MarshalPKCS8PrivateKey(k)
		file := filepath.Join(t.TempDir(), "key.pem")
		os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
		bad := emuDriver(t, func(cfg *Config) { cfg.PrivateKeyFile, cfg.Fingerprint = file, Fingerprint(&k.PublicKey) })
		wantDiag(t, validate(t, c.open(t, bad)), CodeCredentialsRejected, kms.Operator, "")
	})
}

func containsAll(s string, subs ...string) bool {
	for _, x := range subs {
		if !contains(s, x) {
			return false
		}
	}
	return true
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
