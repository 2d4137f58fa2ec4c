package oci

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/oracle/oci-go-sdk/v65/common"
	"github.com/oracle/oci-go-sdk/v65/keymanagement"

	"github.com/ekm-dev/ekm/e2e/e2ekit"
	"github.com/ekm-dev/ekm/ekmtest"
	"github.com/ekm-dev/ekm/internal/ocionboard"
	"github.com/ekm-dev/ekm/kms/oci"
)

// TestOnboarding: every missing or wrong onboarding step is refused with
// its diagnosis and nothing is stored; then the key is registered with the
// official OpenAI SDK, a project is created on it, and the Files and crypto
// APIs work under it, the project key wrapped with the project's
// associated data; every OCI request ekm made is in the audit log with its
// opc-request-id.
func TestOnboarding(t *testing.T) {
	env := start(t, ekmtest.Options{ProbeInterval: time.Hour, CacheTTL: time.Minute})
	ctx := context.Background()
	admin := env.Admin()

	t.Run("Refusals", func(t *testing.T) { refusals(t, env) })

	env.OCI.ResetCounters() // the audit check below looks at this org's requests only
	cust := env.OnboardOCI(t, nil)
	ek, err := admin.Admin.Organization.ExternalKeys.New(ctx, ociKey("prod", cust, ""))
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	if ek.Type != "oci" || ek.KeyOcid != cust.Result.KeyOCID || ek.VaultOcid != cust.Result.VaultOCID || ek.Region != ekmtest.OCIRegion ||
		ek.WorkspaceID != env.OrgID {
		t.Fatalf("external key object: %s", ek.RawJSON())
	}
	if v := e2ekit.KeyObject(t, env, ek.ID); v.Status != "valid" || v.CurrentKEKVersion != cust.Result.KeyVersionOCID {
		t.Fatalf("external key health: %+v", v)
	}
	if v, err := admin.Admin.Organization.ExternalKeys.Validate(ctx, ek.ID); err != nil || v.Status != "valid" {
		t.Fatalf("validate = %v, %v", v, err)
	}
	proj, err := admin.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "ekm", ExternalKeyID: openai.String(ek.ID)})
	if err != nil {
		t.Fatalf("create project: %v", err)
	}
	e2ekit.CheckDataPlane(t, env, e2ekit.ServiceAccountKey(t, env, proj.ID))

	// The project key's wrap is bound to the project: OCI saw ekm's
	// associated data with the org, project and version, on the
	// registered key, from ekm's user.
	sawProject := false
	for _, r := range env.OCI.Requests() {
		if r.Operation == "kms.Encrypt" && r.AssociatedData["ekm:project"] == proj.ID {
			sawProject = r.AssociatedData["ekm:org"] == env.OrgID && r.AssociatedData["ekm:version"] == "1" && r.Resource == cust.Result.KeyOCID &&
				r.Principal == env.OCI.Vendor().UserOCID && r.KeyVersion == cust.Result.KeyVersionOCID
		}
	}
	if !sawProject {
		t.Fatal("no Encrypt with the project's associated data")
	}
	auditKMSCalls(t, env)

	t.Run("pinned key version", func(t *testing.T) {
		c := env.OnboardOCI(t, nil)
		p := ociKey("pinned", c, "")
		p.OfOci.KeyVersionOcid = openai.String(c.Result.KeyVersionOCID)
		ek, err := admin.Admin.Organization.ExternalKeys.New(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if ek.KeyVersionOcid != c.Result.KeyVersionOCID {
			t.Fatalf("%s", ek.RawJSON())
		}
		// A rotation leaves the pinned version in use.
		if _, err := c.Management(t).CreateKeyVersion(ctx, keymanagement.CreateKeyVersionRequest{KeyId: &c.Result.KeyOCID}); err != nil {
			t.Fatal(err)
		}
		if v, err := admin.Admin.Organization.ExternalKeys.Validate(ctx, ek.ID); err != nil || v.Status != "valid" {
			t.Fatalf("validate = %v, %v", v, err)
		}
		if v := e2ekit.KeyObject(t, env, ek.ID); v.CurrentKEKVersion != c.Result.KeyVersionOCID {
			t.Fatalf("current version %s, pinned %s", v.CurrentKEKVersion, c.Result.KeyVersionOCID)
		}
	})
}

func refusals(t *testing.T, env *ekmtest.Env) {
	ctx := context.Background()
	admin := env.Admin()
	before := e2ekit.CountExternalKeys(t, env)
	vendor := env.OCI.Vendor().UserOCID
	ociCalls := func() int {
		n := 0
		for _, r := range env.OCI.Requests() {
			if r.Principal == vendor {
				n++
			}
		}
		return n
	}
	v := env.OCI.Vendor()

	ok := env.OnboardOCI(t, nil)
	noPolicy := env.OnboardOCI(t, func(o *ocionboard.Options) { o.Skip.Policy = true })
	narrowed := env.OnboardOCI(t, nil)
	e2ekit.Check(t, narrowed.SetPolicy(ctx, ocionboard.Statements(v.TenancyOCID, v.GroupOCID, "ekm", narrowed.Result.VaultOCID, ok.Result.KeyOCID)))
	readOnly := env.OnboardOCI(t, nil)
	ro := slices.Clone(readOnly.Result.Statements)
	ro[3] = strings.Replace(ro[3], "to use keys", "to read keys", 1)
	e2ekit.Check(t, readOnly.SetPolicy(ctx, ro))
	disabled := env.OnboardOCI(t, nil)
	_, err := disabled.Management(t).DisableKey(ctx, keymanagement.DisableKeyRequest{KeyId: &disabled.Result.KeyOCID})
	e2ekit.Check(t, err)
	pending := env.OnboardOCI(t, nil)
	_, err = pending.Management(t).ScheduleKeyDeletion(ctx, keymanagement.ScheduleKeyDeletionRequest{KeyId: &pending.Result.KeyOCID})
	e2ekit.Check(t, err)
	untagged := env.OnboardOCI(t, func(o *ocionboard.Options) { o.Skip.Tag = true })
	otherOrg := env.OnboardOCI(t, func(o *ocionboard.Options) { o.OrgID = "org-0000000000000000000000other" })
	aes128 := env.OnboardOCI(t, nil)
	k128, err := aes128.Management(t).CreateKey(ctx, keymanagement.CreateKeyRequest{CreateKeyDetails: keymanagement.CreateKeyDetails{
		CompartmentId: &aes128.Result.CompartmentOCID, DisplayName: common.String("aes128"), FreeformTags: map[string]string{oci.TagOrg: env.OrgID},
		KeyShape: &keymanagement.KeyShape{Algorithm: "AES", Length: common.Int(16)}}})
	e2ekit.Check(t, err)
	e2ekit.Check(t, aes128.SetPolicy(ctx, ocionboard.Statements(v.TenancyOCID, v.GroupOCID, "ekm", aes128.Result.VaultOCID, *k128.Id)))
	missing := ok.Result.KeyOCID[:len(ok.Result.KeyOCID)-4] + "aaaa"
	keyOCID := ok.Result.KeyOCID

	for _, tc := range []struct {
		name, keyOCID, vaultOCID, region string
		c                                *ekmtest.OCICustomer
		code, step, param                string
		static                           bool // refused before any OCI call
	}{
		{name: "step 1: no such key", c: ok, keyOCID: missing, code: oci.CodeKeyNotFound, step: oci.StepPolicyOrKey},
		{name: "step 1: key disabled", c: disabled, code: oci.CodeKeyDisabled, step: oci.StepKey},
		{name: "step 1: key pending deletion", c: pending, code: oci.CodeKeyPendingDeletion, step: oci.StepKey},
		{name: "step 1: key not tagged with the org", c: untagged, code: oci.CodeKeyOrgTagMismatch, step: oci.StepKey, param: "key_ocid"},
		{name: "step 1: key tagged with another org", c: otherOrg, code: oci.CodeKeyOrgTagMismatch, step: oci.StepKey, param: "key_ocid"},
		{name: "step 1: AES-128 key", c: aes128, keyOCID: *k128.Id, code: oci.CodeKeyNotAES256, step: oci.StepKey, param: "key_ocid"},
		{name: "step 2: no policy", c: noPolicy, code: oci.CodeVaultNotFound, step: oci.StepPolicyOrKey},
		{name: "step 2: Admit names another key", c: narrowed, code: oci.CodeKeyNotFound, step: oci.StepPolicyOrKey},
		{name: "step 2: Admit grants read keys only", c: readOnly, code: oci.CodeKeyUseNotAdmitted, step: oci.StepPolicy},
		{name: "vault OCID as key", c: ok, keyOCID: ok.Result.VaultOCID, code: oci.CodeInvalidKeyOCID, param: "key_ocid", static: true},
		{name: "URL as key", c: ok, keyOCID: "https://169.254.169.254/opc/v2", code: oci.CodeInvalidKeyOCID, param: "key_ocid", static: true},
		{name: "key of another region", c: ok, region: "eu-frankfurt-1", code: oci.CodeRegionMismatch, param: "key_ocid", static: true},
		{name: "realm not enabled", c: ok, region: "us-langley-1", code: oci.CodeRealmNotEnabled, param: "region", static: true},
		{name: "region not OCI's", c: ok, region: "us-east-1", code: oci.CodeInvalidRegion, param: "region", static: true},
		{name: "region injection", c: ok, keyOCID: strings.Replace(keyOCID, ".iad.", ".iad.evil.example/", 1), code: oci.CodeInvalidKeyOCID, param: "key_ocid", static: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := ociKey(tc.name, tc.c, tc.keyOCID)
			if tc.region != "" {
				p.OfOci.Region = tc.region
			}
			calls := ociCalls()
			_, err := admin.Admin.Organization.ExternalKeys.New(ctx, p)
			e2ekit.CheckRefused(t, err, e2ekit.Refusal{Code: tc.code, Step: tc.step, Param: tc.param}, "PRIVATE KEY")
			if tc.static && ociCalls() != calls {
				t.Fatalf("a statically invalid registration reached OCI")
			}
		})
	}
	if after := e2ekit.CountExternalKeys(t, env); after != before {
		t.Fatalf("refused registrations stored keys: %d -> %d", before, after)
	}
}

// auditKMSCalls checks that every OCI request ekm made (signed as its
// user) is named by a kms.call event of the org's audit log, by the
// opc-request-id ekm sent and OCI echoed.
func auditKMSCalls(t *testing.T, env *ekmtest.Env) {
	t.Helper()
	vendor := env.OCI.Vendor().UserOCID
	sent := map[string]string{}
	for _, r := range env.OCI.Requests() {
		if r.Principal == vendor && r.ResourceTenancy != "" {
			if r.ClientRequestID == "" || !strings.HasPrefix(r.OpcRequestID, r.ClientRequestID+"/") {
				t.Fatalf("request without ekm's opc-request-id: %+v", r)
			}
			sent[r.ClientRequestID] = r.Operation
		}
	}
	e2ekit.WaitKMSCallsAudited(t, env, "OCI", sent)
}
