package e2ekit

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/ekm-dev/ekm/ekmtest"
)

// RevocationBound is the product's guarantee: a revocation is enforced
// within one probe interval (plus the KMS round trip), here with 5 s of
// margin for a loaded CI machine.
func RevocationBound(probeInterval time.Duration) time.Duration {
	return probeInterval + 5*time.Second
}

// Revocations runs a suite's revocation kinds alike and keeps the latency
// of each (docs/PERFORMANCE.md).
type Revocations struct {
	// ProbeInterval is the server's; the guarantee is relative to it.
	ProbeInterval time.Duration
	// Refusals is how many reads after the first refusal must be refused
	// too.
	Refusals int
	// ReadEventually: after access is restored, a read may fail as
	// retryable before it succeeds (MustReadEventually); without it the
	// first read must succeed.
	ReadEventually bool

	latencies []latency
}

type latency struct {
	kind string
	d    time.Duration
}

// Check warms p's key, runs the customer's revoke, and checks that reads
// are refused with customer_key_unavailable within the bound, that nothing
// is served after the first refusal and no refusal carries plaintext, that
// the key shows unavailable with the diagnosis code and one
// external_key.unavailable event; then runs restore and checks that the key
// is valid again, the same bytes are read back, and one
// external_key.restored event is recorded.
func (rs *Revocations) Check(k *ExternalKey, p *Project, kind, code string, revoke, restore func()) {
	t := k.T
	t.Helper()
	bound := RevocationBound(rs.ProbeInterval)
	// Warm: the project key is cached (creation primed it; reads hit).
	k.MustRead(p, "before revocation")
	k.WaitStatus("valid", 10*time.Second)

	t0 := time.Now()
	revoke()
	var refusal Result
	WaitFor(t, bound+5*time.Second, "the first refusal", func() bool {
		refusal = k.Read(p)
		return !refusal.OK
	})
	d := time.Since(t0)
	rs.latencies = append(rs.latencies, latency{kind, d})
	t.Logf("%s: first refusal %v after the customer's action", kind, d.Round(time.Millisecond))
	if refusal.Status != http.StatusForbidden || refusal.Code != CodeRevoked {
		t.Fatalf("refusal = %v", refusal)
	}
	if d > bound {
		t.Errorf("revocation took %v, guarantee is %v", d, bound)
	}
	// Nothing is served while access is withdrawn, and refusals carry no
	// plaintext.
	for range rs.Refusals {
		r := k.Read(p)
		if r.OK || r.Code != CodeRevoked {
			t.Fatalf("read after refusal: %v", r)
		}
		if strings.Contains(r.Body, "plaintext of") || strings.Contains(r.Body, "secret "+p.ID) {
			t.Fatalf("refusal carries plaintext: %s", r.Body)
		}
	}
	v := k.WaitStatus("unavailable", 10*time.Second)
	if v.StatusDetail == nil || v.StatusDetail.Code != code {
		t.Fatalf("status_detail = %+v, want code %s", v.StatusDetail, code)
	}
	if evs := KeyEvents(t, k.Env, "external_key.unavailable", k.ID); len(evs) != 1 || evs[0].Field("code") != code {
		t.Fatalf("external_key.unavailable events = %+v", evs)
	}

	restore()
	k.WaitStatus("valid", 15*time.Second)
	if rs.ReadEventually {
		k.MustReadEventually(p, "after restoring access")
	} else {
		k.MustRead(p, "after restoring access")
	}
	if evs := KeyEvents(t, k.Env, "external_key.restored", k.ID); len(evs) != 1 {
		t.Fatalf("external_key.restored events = %+v", evs)
	}
}

// LogLatencies logs the latency of each kind checked.
func (rs *Revocations) LogLatencies(t testing.TB) {
	t.Helper()
	var b strings.Builder
	for _, l := range rs.latencies {
		fmt.Fprintf(&b, "\n  %-40s %v", l.kind, l.d.Round(time.Millisecond))
	}
	t.Logf("revocation latency (probe interval %v):%s", rs.ProbeInterval, b.String())
}

// RefusedTemporarily asserts a retryable refusal: 503
// customer_key_temporarily_unavailable, never a revocation or a 500.
func RefusedTemporarily(t testing.TB, r Result, what string) {
	t.Helper()
	if r.OK || r.Status != http.StatusServiceUnavailable || r.Code != CodeTemporary {
		t.Fatalf("%s: want 503 %s, got %v", what, CodeTemporary, r)
	}
}

// CheckOutage checks a KMS fault that is not the customer's doing on a key
// with two projects: the first project's key, cached, keeps serving the
// same bytes; the second's, evicted, is refused as retryable (503); the key
// shows degraded (never unavailable), and valid again once inject's
// returned remove has cleared the fault; nothing records a revocation.
func (k *ExternalKey) CheckOutage(inject func() (remove func())) {
	k.T.Helper()
	cached, cold := k.Projects[0], k.Projects[1]
	k.MustRead(cached, "before the outage")
	k.Env.App.Keyring.EvictProject(cold.ID)
	remove := inject()
	defer remove()
	k.MustRead(cached, "cached key during the outage")
	RefusedTemporarily(k.T, k.Read(cold), "uncached key during the outage")
	k.WaitStatusNeverUnavailable("degraded", 15*time.Second)
	k.MustRead(cached, "cached key, key degraded")
	remove()
	k.WaitStatusNeverUnavailable("valid", 15*time.Second)
	k.MustReadEventually(cold, "after the outage")
	k.NeverRevoked()
}

// Refusal is the diagnosis a refused registration must carry.
type Refusal struct {
	Code  string
	Step  string // the onboarding step named, if any
	Param string // the request field at fault, if any
}

// CheckRefused checks that a registration was refused 400 with the
// refusal's code, step and param, and a message that names none of
// secrets; it logs the diagnosis.
func CheckRefused(t testing.TB, err error, want Refusal, secrets ...string) {
	t.Helper()
	e := APIErr(t, err)
	if e.StatusCode != http.StatusBadRequest || e.Code != want.Code {
		t.Fatalf("got %d %q (%s), want 400 %q", e.StatusCode, e.Code, e.Message, want.Code)
	}
	leaks := e.Message == ""
	for _, s := range secrets {
		leaks = leaks || strings.Contains(e.Message, s)
	}
	if leaks {
		t.Fatalf("message missing or leaks a credential: %q", e.Message)
	}
	if want.Step != "" && !strings.Contains(e.RawJSON(), `"step":"`+want.Step+`"`) {
		t.Fatalf("diagnosis does not name step %s: %s", want.Step, e.RawJSON())
	}
	if want.Param != "" && e.Param != want.Param {
		t.Fatalf("param %q, want %q", e.Param, want.Param)
	}
	t.Logf("%s: %s", e.Code, e.Message)
}

// CheckDataPlane checks the Files API (a 96 KB file "plans.txt" uploaded
// and downloaded with the same bytes) and the crypto API (a round trip
// bound to its context, refused under another, a data key) for a project's
// API key, and returns the file's id.
func CheckDataPlane(t testing.TB, env *ekmtest.Env, apiKey string) string {
	t.Helper()
	ctx := context.Background()
	data := env.Client(apiKey)

	// Files API.
	content := bytes.Repeat([]byte("customer secret content "), 4000)
	f, err := data.Files.New(ctx, openai.FileNewParams{File: openai.File(bytes.NewReader(content), "plans.txt", "text/plain"), Purpose: openai.FilePurposeAssistants})
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	resp, err := data.Files.Content(ctx, f.ID)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(got, content) {
		t.Fatal("download returned other bytes")
	}

	// Crypto API (ekm's extension, through its Go client).
	cc := Crypto(t, env, apiKey)
	ct, err := cc.Encrypt(ctx, []byte("card 4111"), []byte("ctx"))
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := cc.Decrypt(ctx, ct.Ciphertext, []byte("ctx")); err != nil || string(pt) != "card 4111" {
		t.Fatalf("decrypt: %q %v", pt, err)
	}
	if _, err := cc.Decrypt(ctx, ct.Ciphertext, []byte("other")); err == nil {
		t.Fatal("decrypt with another context succeeded")
	}
	dk, err := cc.DataKey(ctx, nil)
	if err != nil || len(dk.Plaintext.Bytes()) != 32 || len(dk.Wrapped) == 0 {
		t.Fatalf("data key: %v", err)
	}
	return f.ID
}

// WaitKMSCallsAudited waits until each request ekm sent to the cloud (sent:
// request id → operation, as the emulator logged it) is named in a kms.call
// event of the org's audit log; sent must not be empty.
func WaitKMSCallsAudited(t testing.TB, env *ekmtest.Env, what string, sent map[string]string) {
	t.Helper()
	if len(sent) == 0 {
		t.Fatal("the emulator saw no request from ekm")
	}
	var missing []string
	WaitFor(t, 10*time.Second, "a kms.call event for every "+what+" request", func() bool {
		recorded := map[string]bool{}
		admin := env.Admin()
		it := admin.Admin.Organization.AuditLogs.ListAutoPaging(context.Background(),
			openai.AdminOrganizationAuditLogListParams{EventTypes: []string{"kms.call"}, Limit: openai.Int(100)})
		for it.Next() {
			raw := it.Current().RawJSON()
			for id := range sent {
				if strings.Contains(raw, `"`+id+`"`) {
					recorded[id] = true
				}
			}
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
		missing = missing[:0]
		for id, op := range sent {
			if !recorded[id] {
				missing = append(missing, op+" "+id)
			}
		}
		slices.Sort(missing)
		return len(missing) == 0
	})
}
