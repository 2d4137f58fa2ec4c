package gcp

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/emulator/gcpcloud"
	"github.com/ekm-dev/ekm/internal/gcponboard"
	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/kms/gcp/gcptest"
	"github.com/ekm-dev/ekm/kms/kmstest"
)

// The conformance suite, once per identity way.
func TestConformance(t *testing.T) {
	for _, w := range []way{wayGoogle, wayIssuer} {
		t.Run(string(w), func(t *testing.T) {
			d := newDriver(t, w, nil)
			kmstest.Run(t, func(t *testing.T) kmstest.Harness {
				c := onboard(t, d, nil)
				p := open(t, d, c)
				member := d.member(p.ref)
				return kmstest.Harness{
					Provider: p, Driver: d, OrgID: testOrg,
					Rotate:  func(ctx context.Context) error { _, err := c.Rotate(ctx); return err },
					Revoke:  func(ctx context.Context) error { return c.RemoveMember(ctx, c.KeyName(), member) },
					Restore: func(ctx context.Context) error { return c.AddMember(ctx, c.KeyName(), member, gcponboard.Roles(false)) },
				}
			})
		})
	}
}

// The AAD Cloud KMS binds is exactly kms.AAD.Bytes(): the customer, with
// its own credentials, decrypts ekm's wrap given the documented AAD, and
// not without it.
func TestAADIsCanonicalBytes(t *testing.T) {
	d := newDriver(t, wayIssuer, nil)
	c := onboard(t, d, nil)
	p := open(t, d, c)
	ctx := context.Background()
	pt := bytes.Repeat([]byte{7}, 32)
	w, err := p.Wrap(ctx, pt, testAAD)
	must(t, err)
	if w.Algorithm != Algorithm || w.KeyVersion != c.KeyName()+"/cryptoKeyVersions/1" {
		t.Fatalf("wrapped %+v", w)
	}
	var out struct {
		Plaintext string `json:"plaintext"`
	}
	body := map[string]string{"ciphertext": base64.StdEncoding.EncodeToString(w.Ciphertext),
		"additionalAuthenticatedData": base64.StdEncoding.EncodeToString([]byte(`{"ekm:org":"` + testOrg + `","ekm:project":"proj_gcptest","ekm:version":"1"}`))}
	must(t, c.Do(ctx, "POST", gcponboard.KMSBase+c.KeyName()+":decrypt", body, &out))
	if got, _ := base64.StdEncoding.DecodeString(out.Plaintext); !bytes.Equal(got, pt) {
		t.Fatal("customer-side decrypt with the documented AAD returned other bytes")
	}
	delete(body, "additionalAuthenticatedData")
	if err := c.Do(ctx, "POST", gcponboard.KMSBase+c.KeyName()+":decrypt", body, nil); err == nil {
		t.Fatal("decrypt without AAD succeeded")
	}
}

// Every request is recorded with the id it carried; the emulator's
// request log (like Cloud Audit Logs' callerSuppliedUserAgent) shows it.
func TestRequestIDs(t *testing.T) {
	d := newDriver(t, wayIssuer, nil)
	c := onboard(t, d, nil)
	p := open(t, d, c)
	ci := &kms.CallInfo{}
	ctx := kms.WithCallInfo(context.Background(), ci)
	emu.ResetCounters()
	_, err := p.Wrap(ctx, make([]byte, 32), testAAD)
	must(t, err)
	if len(ci.RequestIDs) != 2 { // the token exchange, then the encrypt
		t.Fatalf("recorded ids %v", ci.RequestIDs)
	}
	ops := map[string]string{}
	for _, r := range emu.Requests() {
		ops[r.ClientRequestID] = r.Operation
	}
	if ops[ci.RequestIDs[0]] != "sts.token" || ops[ci.RequestIDs[1]] != "kms.encrypt" {
		t.Fatalf("request log by client id: %v, ids %v", ops, ci.RequestIDs)
	}
	// A failure carries the id of its last request.
	must(t, c.RemoveMember(context.Background(), c.KeyName(), d.member(p.ref)))
	ci2 := &kms.CallInfo{}
	_, err = p.Wrap(kms.WithCallInfo(context.Background(), ci2), make([]byte, 32), testAAD)
	e := kmsErr(t, err, CodePermissionDenied, StepGrant)
	if e.RequestID == "" || e.RequestID != ci2.RequestID {
		t.Fatalf("error request id %q, recorded %v", e.RequestID, ci2.RequestIDs)
	}
}

// Federated tokens are reused until the trust recheck is due; a recheck
// that cannot reach STS keeps the valid token; one STS refuses ends access.
func TestFederatedTokenCacheAndRecheck(t *testing.T) {
	now := time.Now()
	clock := func() time.Time { return now }
	d := newDriver(t, wayIssuer, func(c *Config) { c.Now = clock; c.TrustRecheck = time.Minute })
	c := onboard(t, d, nil)
	p := open(t, d, c)
	ctx := context.Background()
	before := counter("sts.token")
	for range 5 {
		_, err := p.Wrap(ctx, make([]byte, 32), testAAD)
		must(t, err)
	}
	if n := counter("sts.token") - before; n != 1 {
		t.Fatalf("%d token exchanges for 5 wraps within the recheck interval", n)
	}
	// STS down at the recheck: the valid token keeps serving.
	now = now.Add(2 * time.Minute)
	fault(t, gcpcloud.Fault{Operation: "sts.token", Status: 503})
	_, err := p.Wrap(ctx, make([]byte, 32), testAAD)
	must(t, err)
	emu.ClearFaults()
	// The provider disabled: Google still honours the issued token, ekm
	// refuses at the next recheck.
	must(t, c.SetProviderDisabled(ctx, true))
	_, err = p.Wrap(ctx, make([]byte, 32), testAAD)
	must(t, err) // within the recheck interval
	now = now.Add(2 * time.Minute)
	_, err = p.Wrap(ctx, make([]byte, 32), testAAD)
	kmsErr(t, err, CodeProviderNotFound, StepFederation)
	must(t, c.SetProviderDisabled(ctx, false))
	_, err = p.Wrap(ctx, make([]byte, 32), testAAD)
	must(t, err)
	// Near expiry the token is replaced whatever the recheck says.
	d2 := newDriver(t, wayIssuer, func(c *Config) { c.Now = clock; c.TrustRecheck = 24 * time.Hour })
	p2 := open(t, d2, c)
	_, err = p2.Wrap(ctx, make([]byte, 32), testAAD)
	must(t, err)
	before = counter("sts.token")
	now = now.Add(14 * time.Minute) // the issuer's tokens live 15 min; the federated one is capped at that
	_, err = p2.Wrap(ctx, make([]byte, 32), testAAD)
	must(t, err)
	if counter("sts.token") != before+1 {
		t.Fatal("a token near expiry was not replaced")
	}
}

// A pool disabled after the token was issued: Cloud KMS refuses the token
// (401); the provider exchanges again and explains the refusal.
func TestPoolDisabledWithCachedToken(t *testing.T) {
	d := newDriver(t, wayGoogle, func(c *Config) { c.TrustRecheck = time.Hour })
	c := onboard(t, d, nil)
	p := open(t, d, c)
	ctx := context.Background()
	w, err := p.Wrap(ctx, make([]byte, 32), testAAD)
	must(t, err)
	must(t, c.SetPoolDisabled(ctx, true))
	_, err = p.Unwrap(ctx, w, testAAD)
	kmsErr(t, err, CodeProviderNotFound, StepFederation)
	must(t, c.SetPoolDisabled(ctx, false))
	_, err = p.Unwrap(ctx, w, testAAD)
	must(t, err)
	must(t, c.DeletePool(ctx))
	_, err = p.Unwrap(ctx, w, testAAD)
	kmsErr(t, err, CodeProviderNotFound, StepFederation)
	must(t, c.UndeletePool(ctx))
	_, err = p.Unwrap(ctx, w, testAAD)
	must(t, err)
}

// Each onboarding step done wrong is diagnosed at registration (the
// validation registration runs), naming the step and what to fix.
func TestDiagnosisPerStep(t *testing.T) {
	ctx := context.Background()
	for _, w := range []way{wayGoogle, wayIssuer} {
		t.Run(string(w), func(t *testing.T) {
			d := newDriver(t, w, nil)
			id := d.identity.Describe()
			cases := []struct {
				name       string
				onboard    func(*gcponboard.Config)
				after      func(t *testing.T, c *gcptest.Customer, p *Provider)
				code, step string
				contains   string
			}{
				{name: "no pool", onboard: func(c *gcponboard.Config) { c.SkipPool = true },
					code: CodeProviderNotFound, step: StepFederation, contains: "ekm-oidc"},
				{name: "provider disabled", after: func(t *testing.T, c *gcptest.Customer, _ *Provider) { must(t, c.SetProviderDisabled(ctx, true)) },
					code: CodeProviderNotFound, step: StepFederation},
				{name: "pool deleted", after: func(t *testing.T, c *gcptest.Customer, _ *Provider) { must(t, c.DeletePool(ctx)) },
					code: CodeProviderNotFound, step: StepFederation},
				{name: "audience not allowed", after: func(t *testing.T, c *gcptest.Customer, _ *Provider) {
					must(t, c.SetAllowedAudiences(ctx, "org-someoneelse"))
				}, code: CodeAudienceNotAllowed, step: StepFederation, contains: testOrg},
				{name: "issuer mismatch", onboard: func(c *gcponboard.Config) { c.Issuer = "https://other.example.com" },
					code: CodeIssuerMismatch, step: StepFederation, contains: id["issuer"]},
				{name: "condition excludes ekm", onboard: func(c *gcponboard.Config) { c.Subject = "someone-else" },
					code: CodeConditionRejected, step: StepFederation, contains: id["subject"]},
				{name: "jwks without ekm's key", after: func(t *testing.T, c *gcptest.Customer, _ *Provider) {
					must(t, c.SetJWKS(ctx, `{"keys":[{"kty":"RSA","alg":"RS256","use":"sig","kid":"other","n":"`+otherModulus+`","e":"AQAB"}]}`))
				}, code: CodeJWKSMismatch, step: StepFederation},
				{name: "no key", onboard: func(c *gcponboard.Config) { c.SkipKey, c.SkipGrant = true, true },
					after: func(t *testing.T, c *gcptest.Customer, p *Provider) {
						// Key ring made, viewer granted on it: Google then says 404.
						must(t, c.Do(ctx, "POST", gcponboard.KMSBase+"projects/"+c.Config.ProjectID+"/locations/us-east1/keyRings?keyRingId=ekm", map[string]any{}, nil))
						must(t, c.AddMember(ctx, c.RingName(), d.member(p.ref), gcponboard.Roles(false)))
					}, code: CodeKeyNotFound, step: StepKey},
				{name: "no key and no access", onboard: func(c *gcponboard.Config) { c.SkipKey, c.SkipGrant = true, true },
					code: CodePermissionDenied, step: StepGrant, contains: "cloudkms.cryptoKeys.get"},
				{name: "no grant", onboard: func(c *gcponboard.Config) { c.SkipGrant = true },
					code: CodePermissionDenied, step: StepGrant, contains: RoleViewer},
				{name: "viewer only", onboard: func(c *gcponboard.Config) { c.SkipGrant = true },
					after: func(t *testing.T, c *gcptest.Customer, p *Provider) {
						must(t, c.AddMember(ctx, c.KeyName(), d.member(p.ref), []string{RoleViewer}))
					}, code: CodePermissionDenied, step: StepGrant, contains: "cloudkms.cryptoKeyVersions.useToEncrypt"},
				{name: "primary disabled", after: func(t *testing.T, c *gcptest.Customer, _ *Provider) {
					must(t, c.SetVersionState(ctx, c.KeyName()+"/cryptoKeyVersions/1", "DISABLED"))
				}, code: CodeKeyVersionDisabled, step: StepKey, contains: "cryptoKeyVersions/1"},
				{name: "primary scheduled for destruction", after: func(t *testing.T, c *gcptest.Customer, _ *Provider) {
					must(t, c.DestroyVersion(ctx, c.KeyName()+"/cryptoKeyVersions/1"))
				}, code: CodeKeyVersionDestroyed, step: StepKey, contains: "DESTROY_SCHEDULED"},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					c := onboard(t, d, tc.onboard)
					p := open(t, d, c)
					if tc.after != nil {
						tc.after(t, c, p)
					}
					e := kmsErr(t, validate(ctx, p), tc.code, tc.step)
					if !strings.Contains(e.Message, tc.contains) {
						t.Fatalf("message %q does not name %q", e.Message, tc.contains)
					}
				})
			}
		})
	}
}

// otherModulus is the base64url modulus of an RSA key ekm does not hold.
var otherModulus = strings.Repeat("w", 342) + "Q"

func TestWrongPurpose(t *testing.T) {
	ctx := context.Background()
	d := newDriver(t, wayIssuer, nil)
	c := onboard(t, d, nil)
	p := open(t, d, c)
	_, err := c.CreateKey(ctx, "signing", "ASYMMETRIC_SIGN", d.member(p.ref), gcponboard.Roles(false))
	must(t, err)
	params := c.Params()
	params[ParamKMSKeyName] = "signing"
	p2, err := d.open(params)
	must(t, err)
	kmsErr(t, validate(ctx, p2), CodeWrongPurpose, StepKey)
	// Encrypt without the preflight: Google's FAILED_PRECONDITION says it too.
	_, err = p2.Wrap(ctx, make([]byte, 32), testAAD)
	kmsErr(t, err, CodeWrongPurpose, StepKey)
}

// Old data stays readable after rotation as long as its version is
// enabled; disabling or scheduling destruction of that version is
// diagnosed on unwrap; restoring brings back the same bytes.
func TestVersionStatesOnUnwrap(t *testing.T) {
	ctx := context.Background()
	d := newDriver(t, wayGoogle, nil)
	c := onboard(t, d, nil)
	p := open(t, d, c)
	pt := bytes.Repeat([]byte{1}, 32)
	w, err := p.Wrap(ctx, pt, testAAD)
	must(t, err)
	v2, err := c.Rotate(ctx)
	must(t, err)
	w2, err := p.Wrap(ctx, pt, testAAD)
	must(t, err)
	if w2.KeyVersion != v2.Name {
		t.Fatalf("wrap after rotation used %s, want %s", w2.KeyVersion, v2.Name)
	}
	must(t, c.SetVersionState(ctx, w.KeyVersion, "DISABLED"))
	_, err = p.Unwrap(ctx, w, testAAD)
	kmsErr(t, err, CodeKeyVersionDisabled, StepKey)
	if _, err := p.Unwrap(ctx, w2, testAAD); err != nil {
		t.Fatalf("the new version stopped working: %v", err)
	}
	must(t, c.SetVersionState(ctx, w.KeyVersion, "ENABLED"))
	must(t, c.DestroyVersion(ctx, w.KeyVersion))
	_, err = p.Unwrap(ctx, w, testAAD)
	kmsErr(t, err, CodeKeyVersionDestroyed, StepKey)
	must(t, c.RestoreVersion(ctx, w.KeyVersion))
	must(t, c.SetVersionState(ctx, w.KeyVersion, "ENABLED"))
	got, err := p.Unwrap(ctx, w, testAAD)
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("after restore: %v", err)
	}
}

// Impersonation (a customer's preference): ekm's principal impersonates
// the customer's service account, which holds the roles on the key.
func TestImpersonation(t *testing.T) {
	ctx := context.Background()
	d := newDriver(t, wayIssuer, nil)
	c := onboard(t, d, func(c *gcponboard.Config) { c.SkipGrant = true })
	direct := Member(c.Config.ProjectNumber, c.Config.PoolID, d.identity.Describe()["subject"])
	// The emulator knows roles/iam.serviceAccountTokenCreator (Google's
	// recommended role for federation is roles/iam.workloadIdentityUser).
	sa, err := c.CreateServiceAccount(ctx, "ekm-kms-"+randID(2), direct, "roles/iam.serviceAccountTokenCreator")
	must(t, err)
	must(t, c.AddMember(ctx, c.KeyName(), "serviceAccount:"+sa, gcponboard.Roles(false)))
	params := c.Params()
	params[ParamServiceAccountEmail] = sa
	ps, err := d.Check(testOrg, params)
	must(t, err)
	p, err := d.open(ps)
	must(t, err)
	must(t, validate(ctx, p))
	if n := counter("iamcredentials.generateaccesstoken"); n == 0 {
		t.Fatal("no impersonation happened")
	}
	must(t, c.SetServiceAccountMembers(ctx, sa, "roles/iam.serviceAccountTokenCreator"))
	p2, err := newDriver(t, wayIssuer, nil).open(ps) // no cached token
	must(t, err)
	e := kmsErr(t, validate(ctx, p2), CodeImpersonationDenied, StepGrant)
	if !strings.Contains(e.Message, sa) {
		t.Fatalf("message does not name the service account: %s", e.Message)
	}
	// Without impersonation rights on the key, the SA's own denial names it.
	must(t, c.SetServiceAccountMembers(ctx, sa, "roles/iam.serviceAccountTokenCreator", direct))
	must(t, c.RemoveMember(ctx, c.KeyName(), "serviceAccount:"+sa))
	e = kmsErr(t, validate(ctx, p2), CodePermissionDenied, StepGrant)
	if !strings.Contains(e.Message, "serviceAccount:"+sa) {
		t.Fatalf("message does not name the service account: %s", e.Message)
	}
}

// Transient failures: 503 and integrity corruption are retried; 429 and
// persistent failures are outages; an STS outage without a cached token
// is an outage too. API disabled is step 2.
func TestTransientAndOperator(t *testing.T) {
	ctx := context.Background()
	d := newDriver(t, wayIssuer, func(c *Config) { c.TrustRecheck = time.Hour })
	c := onboard(t, d, nil)
	p := open(t, d, c)
	w, err := p.Wrap(ctx, make([]byte, 32), testAAD)
	must(t, err)
	t.Run("503 once is retried", func(t *testing.T) {
		fault(t, gcpcloud.Fault{Operation: "kms.decrypt", Status: 503, Count: 1})
		_, err := p.Unwrap(ctx, w, testAAD)
		must(t, err)
	})
	t.Run("integrity corruption once is retried", func(t *testing.T) {
		for _, f := range []gcpcloud.Fault{{Operation: "kms.encrypt", Corrupt: "ciphertext_crc32c", Count: 1},
			{Operation: "kms.encrypt", Corrupt: "unverified", Count: 1}, {Operation: "kms.decrypt", Corrupt: "plaintext_crc32c", Count: 1}} {
			fault(t, f)
			_, err := p.Wrap(ctx, make([]byte, 32), testAAD)
			must(t, err)
			_, err = p.Unwrap(ctx, w, testAAD)
			must(t, err)
		}
	})
	t.Run("persistent corruption", func(t *testing.T) {
		fault(t, gcpcloud.Fault{Operation: "kms.decrypt", Corrupt: "plaintext_crc32c"})
		_, err := p.Unwrap(ctx, w, testAAD)
		kmsErr(t, err, CodeIntegrityCheckFailed, "")
	})
	t.Run("429", func(t *testing.T) {
		fault(t, gcpcloud.Fault{Operation: "kms.decrypt", Status: 429})
		_, err := p.Unwrap(ctx, w, testAAD)
		kmsErr(t, err, CodeThrottled, "")
	})
	t.Run("5xx", func(t *testing.T) {
		fault(t, gcpcloud.Fault{Operation: "kms.decrypt", Status: 500})
		_, err := p.Unwrap(ctx, w, testAAD)
		kmsErr(t, err, CodeServiceError, "")
	})
	t.Run("api disabled", func(t *testing.T) {
		fault(t, gcpcloud.Fault{Operation: "kms.decrypt", Status: 403, ErrorCode: "PERMISSION_DENIED",
			Message: "Cloud Key Management Service (KMS) API has not been used in project 123 before or it is disabled."})
		_, err := p.Unwrap(ctx, w, testAAD)
		kmsErr(t, err, CodeAPIDisabled, StepKey)
	})
	t.Run("sts down without a cached token", func(t *testing.T) {
		fault(t, gcpcloud.Fault{Operation: "sts.token", Status: 503})
		p2 := open(t, newDriver(t, wayIssuer, nil), c)
		_, err := p2.Unwrap(ctx, w, testAAD)
		kmsErr(t, err, CodeSTSUnavailable, "")
	})
	t.Run("connection reset", func(t *testing.T) {
		fault(t, gcpcloud.Fault{Operation: "kms.decrypt", Reset: true})
		_, err := p.Unwrap(ctx, w, testAAD)
		if ke := kmsErr(t, err, codeOf(err), ""); ke.Class != kms.Outage {
			t.Fatalf("reset classified %s", ke.Class)
		}
	})
	t.Run("tampered ciphertext", func(t *testing.T) {
		bad := w
		bad.Ciphertext = bytes.Clone(w.Ciphertext)
		bad.Ciphertext[len(bad.Ciphertext)-3] ^= 1
		_, err := p.Unwrap(ctx, bad, testAAD)
		kmsErr(t, err, CodeInvalidCiphertext, "")
	})
	t.Run("foreign version", func(t *testing.T) {
		bad := w
		bad.KeyVersion = "projects/x/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1"
		_, err := p.Unwrap(ctx, bad, testAAD)
		kmsErr(t, err, CodeWrongKey, "")
	})
}

func codeOf(err error) string {
	var e *kms.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// ekm's own identity broken is the operator's problem, never a revocation.
func TestIdentityBroken(t *testing.T) {
	ctx := context.Background()
	v := emu.Vendor()
	t.Run("google: no getOpenIdToken on the service account", func(t *testing.T) {
		// Another service account of the vendor, which may not mint tokens
		// for the vendor's ekm account.
		id, err := NewGoogleIdentity(GoogleIdentityConfig{CredentialsJSON: v.KeyJSON, ServiceAccount: "other-sa@" + v.ProjectID + ".iam.gserviceaccount.com",
			Subject: "123", HTTPClient: emu.HTTPClient()})
		must(t, err)
		d, err := NewDriver(Config{Identity: id, HTTPClient: emu.HTTPClient()})
		must(t, err)
		c := onboard(t, newDriver(t, wayGoogle, nil), nil)
		e := kmsErr(t, validate(ctx, open(t, d, c)), CodeIdentityFailed, "")
		if !strings.Contains(e.Message, "getOpenIdToken") {
			t.Fatalf("message: %s", e.Message)
		}
	})
	t.Run("google: identity endpoint down", func(t *testing.T) {
		d := newDriver(t, wayGoogle, nil)
		c := onboard(t, d, nil)
		fault(t, gcpcloud.Fault{Operation: "iamcredentials.generateidtoken", Status: 503})
		kmsErr(t, validate(ctx, open(t, d, c)), CodeIdentityUnavailable, "")
	})
	t.Run("issuer: key file unusable", func(t *testing.T) {
		_, err := NewDriver(Config{})
		if err == nil {
			t.Fatal("a driver without identity was built")
		}
		d, err := NewDriver(Config{Identity: brokenIdentity{}, HTTPClient: emu.HTTPClient()})
		must(t, err)
		c := onboard(t, newDriver(t, wayIssuer, nil), nil)
		kmsErr(t, validate(ctx, open(t, d, c)), CodeIdentityFailed, "")
	})
}

type brokenIdentity struct{}

func (brokenIdentity) IDToken(context.Context, string) (string, error) {
	return "", &IdentityError{Message: "issuer key file unreadable"}
}
func (brokenIdentity) Describe() map[string]string {
	return map[string]string{"issuer": issuerURL, "subject": "ekm-test"}
}

func TestSpecIdentity(t *testing.T) {
	s := newDriver(t, wayGoogle, nil).Spec()
	v := emu.Vendor()
	if s.Identity["issuer"] != GoogleIssuer || s.Identity["subject"] != v.UniqueID || s.Identity["service_account"] != v.ServiceAccountEmail {
		t.Fatalf("google identity %v", s.Identity)
	}
	s = newDriver(t, wayIssuer, nil).Spec()
	if s.Identity["issuer"] != issuerURL || s.Identity["subject"] != "ekm-test" || s.Identity["jwks_uri"] != issuerURL+"/.well-known/jwks.json" {
		t.Fatalf("issuer identity %v", s.Identity)
	}
	if len(Spec().OrgBound) != 1 || Spec().OrgBound[0] != ParamAudience || Spec().Algorithm != Algorithm || Spec().Identity != nil {
		t.Fatalf("spec %+v", Spec())
	}
}
