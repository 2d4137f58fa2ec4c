package lifecycle

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/e2e/e2ekit"
	"github.com/ekm-dev/ekm/ekmtest"
	"github.com/ekm-dev/ekm/emulator/azurecloud"
)

// outageKMSTimeout bounds one KMS call (retries included) in these tests;
// the latency fault is well beyond it.
const outageKMSTimeout = time.Second

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
		cached, cold := f.Projects[0], f.Projects[1]
		f.MustRead(cached, "before the outage")
		env.App.Keyring.EvictProject(cold.ID)
		id, err := env.Emu.InjectFault(azurecloud.Fault{Host: "login", Status: http.StatusServiceUnavailable})
		if err != nil {
			t.Fatal(err)
		}
		f.MustRead(cached, "cached key, token endpoint down")
		f.MustRead(cold, "uncached key with a cached token, token endpoint down")
		if v := f.View(); v.Status != "valid" {
			t.Fatalf("status %s with a cached token", v.Status)
		}

		s.restart()
		e2ekit.RefusedTemporarily(t, f.Read(cached), "after a restart, token endpoint down")
		f.WaitStatusNeverUnavailable("degraded", 15*time.Second)
		e2ekit.RefusedTemporarily(t, f.Read(cold), "after a restart, degraded")

		env.Emu.RemoveFault(id)
		f.WaitStatusNeverUnavailable("valid", 15*time.Second)
		f.MustReadEventually(cached, "after the outage")
		f.MustReadEventually(cold, "after the outage")
		f.NeverRevoked()
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
			cached, cold := f.Projects[0], f.Projects[1]
			f.MustRead(cached, "before the outage")
			f.WaitStatus("valid", 10*time.Second)
			env.App.Keyring.EvictProject(cold.ID)

			fault := tc.fault
			fault.Host = f.vaultHost()
			id, err := env.Emu.InjectFault(fault)
			if err != nil {
				t.Fatal(err)
			}
			f.MustRead(cached, "cached key during the outage")
			e2ekit.RefusedTemporarily(t, f.Read(cold), "uncached key during the outage")
			f.WaitStatusNeverUnavailable("degraded", 15*time.Second)
			f.MustRead(cached, "cached key while degraded")
			e2ekit.RefusedTemporarily(t, f.Read(cold), "uncached key while degraded")

			env.Emu.RemoveFault(id)
			f.WaitStatusNeverUnavailable("valid", 15*time.Second)
			f.MustReadEventually(cold, "after the outage")
			f.MustReadEventually(cached, "after the outage")
			f.NeverRevoked()
			if evs := e2ekit.KeyEvents(t, env, "external_key.degraded", f.ID); len(evs) != 1 {
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
	p := f.Projects[0]
	f.WaitStatus("valid", 10*time.Second)
	// Fill the cache now, so the TTL runs from here.
	env.App.Keyring.EvictProject(p.ID)
	f.MustRead(p, "filling the cache")
	filled := time.Now()
	id, err := env.Emu.InjectFault(azurecloud.Fault{Host: f.vaultHost(), Status: http.StatusServiceUnavailable})
	if err != nil {
		t.Fatal(err)
	}
	f.MustRead(p, "within the TTL, during the outage")
	var r e2ekit.Result
	e2ekit.WaitFor(t, ttl+10*time.Second, "the cached key to expire", func() bool {
		r = f.Read(p)
		return !r.OK
	})
	served := time.Since(filled)
	e2ekit.RefusedTemporarily(t, r, "after the TTL, during the outage")
	t.Logf("cached key served through the outage for %v (cache TTL %v)", served.Round(time.Millisecond), ttl)
	if served < ttl-e2ekit.Poll {
		t.Errorf("cached key dropped after %v, before its TTL %v", served, ttl)
	}
	f.WaitStatusNeverUnavailable("degraded", 10*time.Second)
	env.Emu.RemoveFault(id)
	f.WaitStatusNeverUnavailable("valid", 15*time.Second)
	f.MustRead(p, "after the outage")
	f.NeverRevoked()
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
