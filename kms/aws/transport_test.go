package aws

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/emulator/awscloud"
	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/kms/kmstest"
)

// TestTransient: throttling, 5xx, timeouts and resets are outages, retried
// at most MaxAttempts times per request.
func TestTransient(t *testing.T) {
	ctx := context.Background()
	const attempts = 3
	d := emuDriver(t, func(c *Config) { c.MaxAttempts, c.Timeout = attempts, 700*time.Millisecond })
	c := onboard(t, newOrg(), nil)
	p := c.open(t, d, "")
	w := mustWrap(t, p) // warms the session
	count := func(f func() error) (int, error) {
		emu.ResetCounters()
		err := f()
		return emu.Counters()["kms.Decrypt"], err
	}
	unwrap := func() error { _, err := p.Unwrap(ctx, w, testAAD); return err }
	for _, tc := range []struct {
		name  string
		fault awscloud.Fault
		want  wantErr
		tries int
	}{
		{"throttled", awscloud.Fault{Host: "kms", Operation: "kms.Decrypt", Status: 400, ErrorCode: "ThrottlingException"}, wantErr{kms.Outage, CodeThrottled, ""}, attempts},
		{"429", awscloud.Fault{Host: "kms", Operation: "kms.Decrypt", Status: 429}, wantErr{kms.Outage, CodeThrottled, ""}, attempts},
		{"500", awscloud.Fault{Host: "kms", Operation: "kms.Decrypt", Status: 500}, wantErr{kms.Outage, CodeServiceError, ""}, attempts},
		{"503", awscloud.Fault{Host: "kms", Operation: "kms.Decrypt", Status: 503}, wantErr{kms.Outage, CodeServiceError, ""}, attempts},
		{"timeout", awscloud.Fault{Host: "kms", Operation: "kms.Decrypt", Latency: awscloud.Duration(5 * time.Second)}, wantErr{kms.Outage, CodeTimeout, ""}, 1},
		{"reset", awscloud.Fault{Host: "kms", Operation: "kms.Decrypt", Reset: true}, wantErr{kms.Outage, CodeConnectionFailed, ""}, attempts},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := emu.InjectFault(tc.fault)
			if err != nil {
				t.Fatal(err)
			}
			n, err := count(unwrap)
			emu.RemoveFault(id)
			checkErr(t, tc.name, err, tc.want)
			if n != tc.tries {
				t.Fatalf("%d attempts, want %d", n, tc.tries)
			}
		})
	}
	t.Run("recovers within retries", func(t *testing.T) {
		if _, err := emu.InjectFault(awscloud.Fault{Host: "kms", Operation: "kms.Decrypt", Status: 503, Count: attempts - 1}); err != nil {
			t.Fatal(err)
		}
		if n, err := count(unwrap); err != nil || n != attempts {
			t.Fatalf("%v after %d attempts", err, n)
		}
	})
	t.Run("STS throttled on a new session", func(t *testing.T) {
		id, err := emu.InjectFault(awscloud.Fault{Host: "sts", Operation: "sts.AssumeRole", Status: 400, ErrorCode: "Throttling"})
		if err != nil {
			t.Fatal(err)
		}
		defer emu.RemoveFault(id)
		c2 := onboard(t, newOrg(), nil)
		_, err = c2.open(t, d, "").Wrap(ctx, key32(), testAAD)
		checkErr(t, "wrap", err, wantErr{kms.Outage, CodeThrottled, ""})
	})
}

// requests is the emulator's request log without the drivers' background
// identity lookups (sts:GetCallerIdentity, at start).
func requests() []awscloud.Request {
	var out []awscloud.Request
	for _, r := range emu.Requests() {
		if r.Operation != "sts.GetCallerIdentity" {
			out = append(out, r)
		}
	}
	return out
}

// TestRequestIDs: every STS and KMS response's x-amzn-RequestId is recorded
// in the call's kms.CallInfo, in order, failures included, and the error
// names the last one.
func TestRequestIDs(t *testing.T) {
	ctx := context.Background()
	d := emuDriver(t, nil)
	c := onboard(t, newOrg(), nil)
	p := c.open(t, d, "")
	emu.ResetCounters()
	ci := &kms.CallInfo{}
	if _, err := p.Wrap(kms.WithCallInfo(ctx, ci), key32(), testAAD); err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, r := range requests() {
		want = append(want, r.Operation+" "+r.RequestID)
	}
	var got []string
	for _, id := range ci.RequestIDs {
		i := slices.IndexFunc(emu.Requests(), func(r awscloud.Request) bool { return r.RequestID == id })
		if i < 0 {
			t.Fatalf("recorded id %q is not in the emulator's log", id)
		}
		got = append(got, emu.Requests()[i].Operation+" "+id)
	}
	if !slices.Equal(got, want) || len(got) != 2 || !strings.HasPrefix(got[0], "sts.AssumeRole ") || !strings.HasPrefix(got[1], "kms.Encrypt ") {
		t.Fatalf("recorded %v, emulator saw %v", got, want)
	}

	// A failure with retries: each attempt's id, and the error names the last.
	if err := c.detach(); err != nil {
		t.Fatal(err)
	}
	emu.ResetCounters()
	ci = &kms.CallInfo{}
	_, err := p.Wrap(kms.WithCallInfo(ctx, ci), key32(), testAAD)
	var ke *kms.Error
	if !errors.As(err, &ke) || ke.Code != CodePermissionMissing {
		t.Fatalf("wrap without permission: %v", err)
	}
	var ids []string
	for _, r := range requests() {
		ids = append(ids, r.RequestID)
	}
	// kms.Encrypt (denied), then sts.AssumeRole (ekm checks the role); the
	// error names the last of those. Then the same two again with the org's
	// context alone: ekm checks whether only this project is refused
	// (kms.ScopeProject); here the whole key is, so the scope stays the key.
	if !slices.Equal(ci.RequestIDs, ids) || len(ids) != 4 || ke.RequestID != ids[1] || ke.Scope != "" {
		t.Fatalf("recorded %v (error names %q, scope %q), emulator saw %v", ci.RequestIDs, ke.RequestID, ke.Scope, ids)
	}
}

// TestOnlyRealEndpoints: endpoint variables of a developer's or operator's
// environment never redirect ekm, and FIPS is the operator's choice.
func TestOnlyRealEndpoints(t *testing.T) {
	ctx := context.Background()
	t.Setenv("AWS_ENDPOINT_URL", "https://127.0.0.1:1")
	t.Setenv("AWS_ENDPOINT_URL_KMS", "https://evil.example.com")
	t.Setenv("AWS_ENDPOINT_URL_STS", "https://evil.example.com")
	t.Setenv("AWS_USE_FIPS_ENDPOINT", "true")
	for _, fips := range []bool{false, true} {
		d := emuDriver(t, func(c *Config) { c.FIPS = fips })
		c := onboard(t, newOrg(), nil)
		emu.ResetCounters()
		if _, err := c.open(t, d, "").Wrap(ctx, key32(), testAAD); err != nil {
			t.Fatal(err)
		}
		want := []string{"sts." + region + ".amazonaws.com", "kms." + region + ".amazonaws.com"}
		if fips {
			want = []string{"sts-fips." + region + ".amazonaws.com", "kms-fips." + region + ".amazonaws.com"}
		}
		var hosts []string
		for _, r := range requests() {
			hosts = append(hosts, r.Host)
		}
		if !slices.Equal(hosts, want) {
			t.Fatalf("FIPS %v: hosts %v, want %v", fips, hosts, want)
		}
	}
}

// TestOwnCredentials: ekm's own identity comes from the SDK's default chain;
// when it is missing or rejected the failure is the operator's.
func TestOwnCredentials(t *testing.T) {
	ctx := context.Background()
	c := onboard(t, newOrg(), nil)
	t.Run("identity", func(t *testing.T) {
		d := emuDriver(t, nil)
		id, err := d.Identity(ctx)
		if err != nil || id.ARN != emu.Vendor().ARN || id.Account != emu.Vendor().AccountID {
			t.Fatalf("Identity = %+v, %v", id, err)
		}
		if s := d.Spec(); s.Identity[IdentityPrincipalARN] != emu.Vendor().ARN {
			t.Fatalf("Spec identity %v", s.Identity)
		}
		d2 := emuDriver(t, func(c *Config) {
			c.PrincipalARN = "arn:aws:iam::" + emu.Vendor().AccountID + ":role/path/EnterpriseKeyManagement"
		})
		if s := d2.Spec(); s.Identity[IdentityPrincipalARN] != d2.cfg.PrincipalARN {
			t.Fatalf("configured principal not in the Spec: %v", s.Identity)
		}
		if _, err := NewDriver(ctx, Config{PrincipalARN: "arn:aws:iam::1:role/x"}); err == nil {
			t.Fatal("malformed principal ARN accepted")
		}
	})
	t.Run("rejected", func(t *testing.T) {
		t.Setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
		d := emuDriver(t, nil)
		_, err := c.open(t, d, "").Wrap(ctx, key32(), testAAD)
		checkErr(t, "wrap", err, wantErr{kms.Operator, CodeCredentialsRejected, ""}, "not a problem with your key")
	})
	t.Run("missing", func(t *testing.T) {
		t.Setenv("AWS_ACCESS_KEY_ID", "")
		t.Setenv("AWS_SECRET_ACCESS_KEY", "")
		d := emuDriver(t, nil)
		err := c.open(t, d, "").Preflight(ctx)
		checkErr(t, "preflight", err, wantErr{kms.Operator, CodeCredentialsMissing, ""})
	})
	t.Run("unknown partition", func(t *testing.T) {
		if _, err := NewDriver(ctx, Config{Partitions: []string{"aws-mars"}}); err == nil {
			t.Fatal("unknown partition accepted")
		}
	})
}

// BenchmarkWrapUnwrap measures one Wrap+Unwrap round trip through the SDK
// (SigV4, TLS over loopback, policy evaluation in the emulator, a cached
// role session), with the in-process local provider as the baseline.
func BenchmarkWrapUnwrap(b *testing.B) {
	kmstest.BenchWrapUnwrap(b, testOrg, testAAD, "aws-emulator", func(b *testing.B) kms.Provider {
		s := awscloud.DefaultSettings()
		s.Quotas.Disabled = true // measure the client, not AWS's quotas
		if err := emu.SetSettings(s); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { emu.SetSettings(awscloud.DefaultSettings()) })
		c := onboard(b, newOrg(), nil)
		return c.open(b, emuDriver(b, nil), "")
	})
}
