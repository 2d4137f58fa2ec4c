package gcp

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/ekm-dev/ekm/e2e/e2ekit"
	"github.com/ekm-dev/ekm/ekmtest"
	"github.com/ekm-dev/ekm/internal/gcponboard"
	kmsgcp "github.com/ekm-dev/ekm/kms/gcp"
	"github.com/ekm-dev/ekm/kms/gcp/gcptest"
)

// TestOnboarding, for each of ekm's identities: the customer's steps,
// registration with the official SDK, a project with a file and crypto API
// data under the key, every kms.call audited with ids the customer finds in
// its own logs, and every wrong or missing step refused with its diagnosis
// and nothing stored.
func TestOnboarding(t *testing.T) {
	for _, id := range []string{ekmtest.GCPGoogle, ekmtest.GCPIssuer} {
		t.Run(id, func(t *testing.T) {
			env := start(t, id, ekmtest.Options{ProbeInterval: time.Hour})
			onboarding(t, env)
			t.Run("Refusals", func(t *testing.T) { refusals(t, env) })
		})
	}
}

func onboarding(t *testing.T, env *ekmtest.Env) {
	ctx := context.Background()
	admin := env.Admin()
	cust := env.GCPCustomer(t, nil)
	emu.ResetCounters()
	ek, err := admin.Admin.Organization.ExternalKeys.New(ctx, gcpKey("prod", cust, nil))
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	if ek.Type != "gcp" || ek.Audience != env.OrgID || ek.KmsProjectID != cust.Config.ProjectID || ek.KmsKeyName != "kek" ||
		ek.WorkloadIdentityProjectNumber != cust.Config.ProjectNumber || ek.WorkspaceID != env.OrgID {
		t.Fatalf("external key object: %s", ek.RawJSON())
	}
	// Registration ran the live check: token exchange, get the key, an
	// encrypt and decrypt round trip.
	c := emu.Counters()
	if c["sts.token"] < 1 || c["kms.key.get"] < 1 || c["kms.encrypt"] < 1 || c["kms.decrypt"] < 1 {
		t.Fatalf("registration's calls: %v", c)
	}
	v, err := admin.Admin.Organization.ExternalKeys.Validate(ctx, ek.ID)
	if err != nil || v.Status != "valid" {
		t.Fatalf("validate = %v, %v", v, err)
	}
	proj, err := admin.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "ekm", ExternalKeyID: openai.String(ek.ID)})
	if err != nil || proj.ExternalKeyID != ek.ID {
		t.Fatalf("create project: %v", err)
	}
	e2ekit.CheckDataPlane(t, env, e2ekit.ServiceAccountKey(t, env, proj.ID))

	// Every request ekm sent to Google is in a kms.call event, by the id the
	// customer's logs show (the emulator's request log here; Cloud Audit
	// Logs' callerSuppliedUserAgent in production).
	sent := map[string]string{}
	for _, r := range emu.Requests() {
		if r.ClientRequestID != "" && (strings.HasPrefix(r.Operation, "kms.") || r.Operation == "sts.token") && r.Status == 200 {
			sent[r.ClientRequestID] = r.Operation
		}
	}
	audited := map[string]bool{}
	var missing []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, e := range e2ekit.AuditEvents(t, env, "kms.call") {
			audited[e.Field("request_id")] = true
			for _, id := range strings.Fields(strings.Trim(e.Field("request_ids"), "[]")) {
				audited[id] = true
			}
		}
		missing = missing[:0]
		for id, op := range sent {
			if !audited[id] {
				missing = append(missing, op+" "+id)
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("requests in no kms.call event: %v (audited %v)", missing, audited)
		}
		time.Sleep(e2ekit.Poll)
	}
	if len(sent) < 4 {
		t.Fatalf("requests seen by the emulator: %v", sent)
	}
}

func refusals(t *testing.T, env *ekmtest.Env) {
	ctx := context.Background()
	admin := env.Admin()
	count := func() int {
		page, err := admin.Admin.Organization.ExternalKeys.List(ctx, openai.AdminOrganizationExternalKeyListParams{Limit: openai.Int(100)})
		e2ekit.Check(t, err)
		return len(page.Data)
	}
	before := count()
	id := env.GCPIdentity(t)
	member := func(c *gcptest.Customer) string {
		return kmsgcp.Member(c.Config.ProjectNumber, c.Config.PoolID, id["subject"])
	}
	type tc struct {
		name       string
		onboard    func(*gcponboard.Config)
		after      func(t *testing.T, c *gcptest.Customer) map[string]string
		code, step string
		static     bool // refused before any call to Google
	}
	cases := []tc{
		{name: "step 1 missing (no pool)", onboard: func(c *gcponboard.Config) { c.SkipPool = true },
			code: kmsgcp.CodeProviderNotFound, step: "1"},
		{name: "provider trusts another issuer", onboard: func(c *gcponboard.Config) { c.Issuer = "https://issuer.example.com" },
			code: kmsgcp.CodeIssuerMismatch, step: "1"},
		{name: "provider allows another audience", after: func(t *testing.T, c *gcptest.Customer) map[string]string {
			e2ekit.Check(t, c.SetAllowedAudiences(ctx, "org-someone-else"))
			return nil
		}, code: kmsgcp.CodeAudienceNotAllowed, step: "1"},
		{name: "condition excludes ekm", onboard: func(c *gcponboard.Config) { c.Subject = "not-ekm" },
			code: kmsgcp.CodeConditionRejected, step: "1"},
		{name: "step 2 missing (no key)", onboard: func(c *gcponboard.Config) { c.SkipKey, c.SkipGrant = true, true },
			code: kmsgcp.CodePermissionDenied, step: "3"},
		{name: "step 3 missing (no grant)", onboard: func(c *gcponboard.Config) { c.SkipGrant = true },
			code: kmsgcp.CodePermissionDenied, step: "3"},
		{name: "viewer role only", onboard: func(c *gcponboard.Config) { c.SkipGrant = true },
			after: func(t *testing.T, c *gcptest.Customer) map[string]string {
				e2ekit.Check(t, c.AddMember(ctx, c.KeyName(), member(c), []string{kmsgcp.RoleViewer}))
				return nil
			}, code: kmsgcp.CodePermissionDenied, step: "3"},
		{name: "key for signing", after: func(t *testing.T, c *gcptest.Customer) map[string]string {
			_, err := c.CreateKey(ctx, "signing", "ASYMMETRIC_SIGN", member(c), gcponboard.Roles(false))
			e2ekit.Check(t, err)
			return map[string]string{"kms_key_name": "signing"}
		}, code: kmsgcp.CodeWrongPurpose, step: "2"},
		{name: "primary version disabled", after: func(t *testing.T, c *gcptest.Customer) map[string]string {
			e2ekit.Check(t, c.SetVersionState(ctx, c.KeyName()+"/cryptoKeyVersions/1", "DISABLED"))
			return nil
		}, code: kmsgcp.CodeKeyVersionDisabled, step: "2"},
		{name: "audience of another org", static: true, code: "org_mismatch",
			after: func(*testing.T, *gcptest.Customer) map[string]string {
				return map[string]string{"audience": "org-0000000000000000000000other"}
			}},
		{name: "key version pinned", static: true, code: kmsgcp.CodeKeyVersionUnsupported,
			after: func(*testing.T, *gcptest.Customer) map[string]string {
				return map[string]string{"kms_key_version": "1"}
			}},
		{name: "project id with a path", static: true, code: kmsgcp.CodeInvalidProjectID,
			after: func(*testing.T, *gcptest.Customer) map[string]string {
				return map[string]string{"kms_project_id": "acme/../../v1/projects/evil"}
			}},
		{name: "project id instead of number", static: true, code: kmsgcp.CodeInvalidProjectNumber,
			after: func(*testing.T, *gcptest.Customer) map[string]string {
				return map[string]string{"workload_identity_project_number": "acme-prod"}
			}},
		{name: "full key name instead of its id", static: true, code: kmsgcp.CodeInvalidKeyName,
			after: func(t *testing.T, c *gcptest.Customer) map[string]string {
				return map[string]string{"kms_key_name": c.KeyName()}
			}},
		{name: "reserved pool id", static: true, code: kmsgcp.CodeInvalidPoolID,
			after: func(*testing.T, *gcptest.Customer) map[string]string {
				return map[string]string{"workload_identity_pool_id": "gcp-pool"}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := env.GCPCustomer(t, tc.onboard)
			var set map[string]string
			if tc.after != nil {
				set = tc.after(t, c)
			}
			counters := emu.Counters()
			var p openai.AdminOrganizationExternalKeyNewParams
			if set != nil && set["kms_key_version"] != "" {
				p = gcpKey(tc.name, c, nil)
				p.OfGcp.KmsKeyVersion = openai.String(set["kms_key_version"])
			} else {
				p = gcpKey(tc.name, c, set)
			}
			_, err := admin.Admin.Organization.ExternalKeys.New(ctx, p)
			e := e2ekit.APIErr(t, err)
			if e.StatusCode != http.StatusBadRequest || e.Code != tc.code {
				t.Fatalf("got %d %q (%s), want 400 %q", e.StatusCode, e.Code, e.Message, tc.code)
			}
			if e.Message == "" || strings.Contains(e.Message, "eyJ") || strings.Contains(e.Message, "ya29.") {
				t.Fatalf("message missing or leaks a token: %q", e.Message)
			}
			if tc.step != "" && !strings.Contains(e.RawJSON(), `"step":"`+tc.step+`"`) {
				t.Fatalf("diagnosis does not name step %s: %s", tc.step, e.RawJSON())
			}
			if tc.static {
				after := emu.Counters()
				for _, op := range []string{"sts.token", "kms.encrypt", "kms.key.get", "iamcredentials.generateidtoken"} {
					if after[op] != counters[op] {
						t.Fatalf("a statically invalid registration reached Google (%s): %v -> %v", op, counters[op], after[op])
					}
				}
			}
			t.Logf("%s: %s", tc.code, e.Message)
		})
	}
	if after := count(); after != before {
		t.Fatalf("refused registrations stored keys: %d -> %d", before, after)
	}
}
