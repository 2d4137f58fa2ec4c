package lifecycle

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/ekmtest"
	"github.com/ekm-dev/ekm/emulator/azurecloud"
)

// outageKMSTimeout bounds one KMS call (retries included) in these tests;
// the latency fault is well beyond it.
const outageKMSTimeout = time.Second

// refusedTemporarily asserts a retryable refusal: 503
// customer_key_temporarily_unavailable, never a revocation or a 500.
func refusedTemporarily(t *testing.T, r result, what string) {
	t.Helper()
	if r.ok || r.status != http.StatusServiceUnavailable || r.code != codeTemporary {
		t.Fatalf("%s: want 503 %s, got %v", what, codeTemporary, r)
	}
}

// waitStatusNeverUnavailable waits for status and fails if the key is ever
// seen unavailable on the way: an outage is not a revocation.
func (f *fixture) waitStatusNeverUnavailable(status string, timeout time.Duration) {
	f.t.Helper()
	waitFor(f.t, timeout, "external key "+f.ekID+" to be "+status, func() bool {
		v := f.key()
		if v.Status == "unavailable" {
			f.t.Fatalf("an outage marked the key unavailable: %+v", v.StatusDetail)
		}
		return v.Status == status
	})
}

// neverRevoked asserts that nothing recorded a revocation of the key.
func (f *fixture) neverRevoked() {
	f.t.Helper()
	if u := f.env.App.Keyring.Unavailable(f.ekID); u != nil {
		f.t.Fatalf("keyring gate closed by an outage: %v", u)
	}
	if evs := keyEvents(f.t, f.env, "external_key.unavailable", f.ekID); len(evs) != 0 {
		f.t.Fatalf("external_key.unavailable recorded for an outage: %+v", evs)
	}
}

// TestOutage: for each kind of KMS failure, project keys already cached keep
// serving the same bytes, a project whose key is not cached is refused as
// retryable (503), the key shows degraded and never unavailable, and it is
// valid again once the fault clears.
func TestOutage(t *testing.T) {
	s := startServer(t, ekmtest.Options{ProbeInterval: 300 * time.Millisecond, KMSTimeout: outageKMSTimeout})
	env := s.env
	t.Run("vault", func(t *testing.T) { vaultOutages(t, env) })

	// Entra's token endpoint down. A running server holds a Key Vault token
	// (valid for an hour) and needs none; a server that starts during the
	// outage has neither tokens nor cached keys, and must degrade, not
	// revoke. After the others: the fault hits every tenant of the emulator.
	t.Run("token endpoint down", func(t *testing.T) {
		f := newFixture(t, env, "out-token", 2)
		cached, cold := f.projects[0], f.projects[1]
		f.mustRead(cached, "before the outage")
		env.App.Keyring.EvictProject(cold.id)
		id, err := env.Emu.InjectFault(azurecloud.Fault{Host: "login", Status: http.StatusServiceUnavailable})
		if err != nil {
			t.Fatal(err)
		}
		f.mustRead(cached, "cached key, token endpoint down")
		f.mustRead(cold, "uncached key with a cached token, token endpoint down")
		if v := f.key(); v.Status != "valid" {
			t.Fatalf("status %s with a cached token", v.Status)
		}

		s.restart()
		refusedTemporarily(t, f.read(cached), "after a restart, token endpoint down")
		f.waitStatusNeverUnavailable("degraded", 15*time.Second)
		refusedTemporarily(t, f.read(cold), "after a restart, degraded")

		env.Emu.RemoveFault(id)
		f.waitStatusNeverUnavailable("valid", 15*time.Second)
		f.mustReadEventually(cached, "after the outage")
		f.mustReadEventually(cold, "after the outage")
		f.neverRevoked()
	})
}

// vaultOutages runs each Key Vault fault kind. Each kind has its own
// customer and vault and its fault is scoped to that vault's host, so the
// kinds run in parallel.
func vaultOutages(t *testing.T, env *ekmtest.Env) {
	for _, tc := range []struct {
		name  string
		fault azurecloud.Fault
	}{
		{"latency beyond the KMS timeout", azurecloud.Fault{Latency: azurecloud.Duration(3 * outageKMSTimeout)}},
		{"503", azurecloud.Fault{Status: http.StatusServiceUnavailable}},
		{"500", azurecloud.Fault{Status: http.StatusInternalServerError}},
		// Retry-After beyond the SDK's longest retry delay: ekm gives up at once.
		{"429 with Retry-After", azurecloud.Fault{Status: http.StatusTooManyRequests, RetryAfter: "30"}},
		{"429 without Retry-After", azurecloud.Fault{Status: http.StatusTooManyRequests}},
		{"connection reset", azurecloud.Fault{Reset: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, env, "out-"+slug(tc.name), 2)
			cached, cold := f.projects[0], f.projects[1]
			f.mustRead(cached, "before the outage")
			f.waitStatus("valid", 10*time.Second)
			env.App.Keyring.EvictProject(cold.id)

			fault := tc.fault
			fault.Host = f.vaultHost()
			id, err := env.Emu.InjectFault(fault)
			if err != nil {
				t.Fatal(err)
			}
			f.mustRead(cached, "cached key during the outage")
			refusedTemporarily(t, f.read(cold), "uncached key during the outage")
			f.waitStatusNeverUnavailable("degraded", 15*time.Second)
			f.mustRead(cached, "cached key while degraded")
			refusedTemporarily(t, f.read(cold), "uncached key while degraded")

			env.Emu.RemoveFault(id)
			f.waitStatusNeverUnavailable("valid", 15*time.Second)
			f.mustReadEventually(cold, "after the outage")
			f.mustReadEventually(cached, "after the outage")
			f.neverRevoked()
			if evs := keyEvents(t, env, "external_key.degraded", f.ekID); len(evs) != 1 {
				t.Fatalf("external_key.degraded events = %d", len(evs))
			}
		})
	}
}

// TestOutageHardTTL: during a long outage a cached project key serves until
// its hard TTL, then reads are refused as retryable; never as revoked.
func TestOutageHardTTL(t *testing.T) {
	const ttl = 2 * time.Second
	env := ekmtest.Start(t, ekmtest.Options{ProbeInterval: 300 * time.Millisecond, KMSTimeout: outageKMSTimeout, CacheTTL: ttl})
	f := newFixture(t, env, "ttl", 1)
	p := f.projects[0]
	f.waitStatus("valid", 10*time.Second)
	// Fill the cache now, so the TTL runs from here.
	env.App.Keyring.EvictProject(p.id)
	f.mustRead(p, "filling the cache")
	filled := time.Now()
	id, err := env.Emu.InjectFault(azurecloud.Fault{Host: f.vaultHost(), Status: http.StatusServiceUnavailable})
	if err != nil {
		t.Fatal(err)
	}
	f.mustRead(p, "within the TTL, during the outage")
	var r result
	waitFor(t, ttl+10*time.Second, "the cached key to expire", func() bool {
		r = f.read(p)
		return !r.ok
	})
	served := time.Since(filled)
	refusedTemporarily(t, r, "after the TTL, during the outage")
	t.Logf("cached key served through the outage for %v (cache TTL %v)", served.Round(time.Millisecond), ttl)
	if served < ttl-poll {
		t.Errorf("cached key dropped after %v, before its TTL %v", served, ttl)
	}
	f.waitStatusNeverUnavailable("degraded", 10*time.Second)
	env.Emu.RemoveFault(id)
	f.waitStatusNeverUnavailable("valid", 15*time.Second)
	f.mustRead(p, "after the outage")
	f.neverRevoked()
}

func slug(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else if !strings.HasSuffix(b.String(), "-") {
			b.WriteByte('-')
		}
	}
	return strings.Trim(b.String(), "-")
}
