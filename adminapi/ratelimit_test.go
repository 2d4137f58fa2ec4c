package adminapi

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/ekm-dev/ekm/internal/apispec"
	"github.com/ekm-dev/ekm/store"
)

// The bucket: burst, refill by the clock, wait until the next token, one
// bucket per org, no refill when the clock goes back, full buckets
// forgotten (memory O(active orgs)).
func TestKMSLimiter(t *testing.T) {
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	for _, off := range []KMSRateLimit{{}, {PerSecond: -1, Burst: 5}, {PerSecond: math.NaN(), Burst: 5}, {PerSecond: math.Inf(1), Burst: 5}} {
		if newKMSLimiter(off, clk.Now) != nil {
			t.Errorf("%+v: a limiter, want none", off)
		}
	}
	l := newKMSLimiter(KMSRateLimit{PerSecond: 2, Burst: 3}, clk.Now)
	take := func(org string, want bool, wantWait time.Duration) {
		t.Helper()
		ok, wait := l.take(org)
		if ok != want || (!ok && (wait-wantWait).Abs() > time.Millisecond) {
			t.Fatalf("take(%s) = %v, %v; want %v, %v", org, ok, wait, want, wantWait)
		}
	}
	for range 3 {
		take("org-a", true, 0)
	}
	take("org-a", false, 500*time.Millisecond)
	take("org-b", true, 0) // another org's bucket is full
	clk.Advance(250 * time.Millisecond)
	take("org-a", false, 250*time.Millisecond)
	clk.Advance(250 * time.Millisecond)
	take("org-a", true, 0)
	take("org-a", false, 500*time.Millisecond)
	clk.Advance(-time.Hour) // a clock that goes back refills nothing
	take("org-a", false, 500*time.Millisecond)
	clk.Advance(time.Hour + time.Hour) // refills to the burst, no more
	for range 3 {
		take("org-a", true, 0)
	}
	take("org-a", false, 500*time.Millisecond)

	// 1,000 orgs each make one call; once their buckets are full again
	// (1.5 s here) the next call forgets them all.
	l = newKMSLimiter(KMSRateLimit{PerSecond: 2, Burst: 3}, clk.Now)
	for i := range 1000 {
		take(fmt.Sprintf("org-%d", i), true, 0)
	}
	if n := l.size(); n != 1000 {
		t.Fatalf("%d buckets, want 1000", n)
	}
	clk.Advance(1500 * time.Millisecond)
	take("org-x", true, 0)
	if n := l.size(); n != 1 {
		t.Fatalf("%d buckets after they refilled, want 1 (the last caller's)", n)
	}
}

// rateLimitEnv is an env whose orgs may make 3 KMS-calling requests at
// once, then one every 2 seconds (a Retry-After above the minimum of 1).
func rateLimitEnv(t *testing.T) *env {
	return newEnv(t, func(d *Deps) { d.KMSRate = KMSRateLimit{PerSecond: 0.5, Burst: 3} })
}

// rateLimited asserts err is the org limit's 429: OpenAI's rate limit
// shape (type requests, code rate_limit_exceeded), Retry-After in seconds,
// and no X-Should-Retry (the SDKs retry it after Retry-After by default).
func rateLimited(t *testing.T, err error, orgID, route, retryAfter string) {
	t.Helper()
	ae := apiErr(t, err, http.StatusTooManyRequests)
	if ae.Type != "requests" || ae.Code != "rate_limit_exceeded" || ae.Param != "" {
		t.Fatalf("429: %s", ae.RawJSON())
	}
	if ae.Response.Header.Get("Retry-After") != retryAfter || ae.Response.Header.Get("X-Should-Retry") != "" || ae.Response.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("429 headers %v, want Retry-After %s", ae.Response.Header, retryAfter)
	}
	for _, s := range []string{orgID, route, "per second", "Please try again in " + retryAfter + " second"} {
		if !strings.Contains(ae.Message, s) {
			t.Fatalf("message %q lacks %q", ae.Message, s)
		}
	}
}

// Every Admin API route that makes ekm call a KMS spends a token of the
// calling org's bucket; once it is empty each of them is 429
// rate_limit_exceeded with Retry-After, with no KMS call and nothing
// written; routes that call no KMS, and other orgs, are not held back;
// the bucket refills by the clock, up to its burst.
func TestKMSRateLimit(t *testing.T) {
	e := rateLimitEnv(t)
	ctx := context.Background()
	org, admin, c := e.org("acme")

	// Three calls that reach the KMS empty the bucket.
	fk, fk2 := e.registerFlaky(admin), e.registerFlaky(admin)
	p, err := c.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "p", ExternalKeyID: openai.String(fk)})
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	e.flaky.setHook(func(string) error { calls.Add(1); return nil })
	before := e.snapshot(org.ID, p.ID)
	settingsBefore, _ := e.st.GetOrgSettings(ctx, org.ID)
	nothingDone := func(what string) {
		t.Helper()
		if n := calls.Load(); n != 0 {
			t.Fatalf("%s: %d KMS calls for a refused request", what, n)
		}
		if got := e.snapshot(org.ID, p.ID); got != before {
			t.Fatalf("%s: refused request wrote something: %+v, was %+v", what, got, before)
		}
		got, _ := e.st.GetProject(ctx, org.ID, p.ID)
		recs, _ := e.st.ListProjectKeys(ctx, org.ID, p.ID)
		set, _ := e.st.GetOrgSettings(ctx, org.ID)
		if got.ExternalKeyID != fk || got.CurrentKeyVersion != 1 || len(recs) != 1 || recs[0].ExternalKeyID != fk || set != settingsBefore {
			t.Fatalf("%s: refused request changed the project or settings: %+v %+v %+v", what, got, recs, set)
		}
	}

	// Each KMS-calling route, through the SDK where it has the call.
	_, err = c.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "p2", ExternalKeyID: openai.String(fk)})
	rateLimited(t, err, org.ID, "POST /v1/organization/projects", "2")
	nothingDone("create project")
	_, err = c.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "p3"}) // the operator's key
	rateLimited(t, err, org.ID, "POST /v1/organization/projects", "2")
	_, err = c.Admin.Organization.Projects.Update(ctx, p.ID, openai.AdminOrganizationProjectUpdateParams{ExternalKeyID: openai.String(fk2)})
	rateLimited(t, err, org.ID, "POST /v1/organization/projects/{id}", "2")
	nothingDone("re-key")
	_, err = c.Admin.Organization.ExternalKeys.Validate(ctx, fk)
	rateLimited(t, err, org.ID, "POST /v1/organization/external_keys/{id}/validate", "2")
	nothingDone("validate")
	err = c.Post(ctx, "organization/external_keys", map[string]any{"type": "flaky", "name": "third"}, nil)
	rateLimited(t, err, org.ID, "POST /v1/organization/external_keys", "2")
	nothingDone("register")
	err = c.Post(ctx, "organization/projects/"+p.ID+"/rotate_key", map[string]any{}, nil)
	rateLimited(t, err, org.ID, "POST /v1/organization/projects/{id}/rotate_key", "2")
	nothingDone("rotate")
	err = c.Post(ctx, "organization/settings", map[string]any{"default_external_key_id": fk}, nil)
	rateLimited(t, err, org.ID, "POST /v1/organization/settings", "2")
	nothingDone("default key")

	// Each refusal is as docs/openapi.yaml describes it.
	checked := &http.Client{Transport: apispec.Transport(t, withRequestID{e.srv.Client().Transport})}
	for _, rq := range []struct{ path, body string }{
		{"/v1/organization/external_keys", `{"type":"flaky","name":"x"}`},
		{"/v1/organization/external_keys/" + fk + "/validate", ``},
		{"/v1/organization/projects", `{"name":"x"}`},
		{"/v1/organization/projects/" + p.ID, `{"external_key_id":"` + fk2 + `"}`},
		{"/v1/organization/projects/" + p.ID + "/rotate_key", ``},
		{"/v1/organization/settings", `{"default_external_key_id":"` + fk + `"}`},
	} {
		req, _ := http.NewRequest("POST", e.srv.URL+rq.path, strings.NewReader(rq.body))
		req.Header.Set("Authorization", "Bearer "+admin)
		if rq.body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		res, err := checked.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("POST %s: %d, want 429", rq.path, res.StatusCode)
		}
	}
	nothingDone("checked requests")

	// A malformed request costs nothing and is answered for what it is;
	// so is a request to a key type this server does not run.
	if r := e.do(admin, "POST", "/v1/organization/projects", `{"name":`); r.Status != http.StatusBadRequest {
		t.Fatalf("malformed: %d %s", r.Status, r.Raw)
	}
	if r := e.do(admin, "POST", "/v1/organization/external_keys", `{"type":"azure","name":"x"}`); r.Status != http.StatusBadRequest || r.errField("code") != "unsupported_type" {
		t.Fatalf("disabled type: %d %s", r.Status, r.Raw)
	}
	// A re-key to a malformed key id is answered 404 for that field, not
	// counted (no KMS can be reached with it).
	if r := e.do(admin, "POST", "/v1/organization/projects/"+p.ID, `{"external_key_id":"not-a-key-id"}`); r.Status != http.StatusNotFound || r.errField("param") != "external_key_id" {
		t.Fatalf("re-key to a malformed id: %d %s", r.Status, r.Raw)
	}

	// Routes that call no KMS are not limited: reads, a rename, settings
	// without a new default key, service accounts, archiving.
	if _, err := c.Admin.Organization.Projects.List(ctx, openai.AdminOrganizationProjectListParams{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Admin.Organization.Projects.Get(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Admin.Organization.ExternalKeys.List(ctx, openai.AdminOrganizationExternalKeyListParams{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Admin.Organization.ExternalKeys.Get(ctx, fk); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Admin.Organization.AuditLogs.List(ctx, openai.AdminOrganizationAuditLogListParams{}); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/v1/organization/settings", "/v1/organization/external_key_types"} {
		if r := e.do(admin, "GET", path, ""); r.Status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, r.Status, r.Raw)
		}
	}
	if _, err := c.Admin.Organization.Projects.Update(ctx, p.ID, openai.AdminOrganizationProjectUpdateParams{Name: openai.String("renamed")}); err != nil {
		t.Fatalf("rename: %v", err)
	}
	if r := e.do(admin, "POST", "/v1/organization/settings", `{"ekm_required":false}`); r.Status != http.StatusOK {
		t.Fatalf("settings without a key: %d %s", r.Status, r.Raw)
	}
	if _, err := c.Admin.Organization.Projects.ServiceAccounts.New(ctx, p.ID, openai.AdminOrganizationProjectServiceAccountNewParams{Name: "sa"}); err != nil {
		t.Fatalf("service account: %v", err)
	}
	if calls.Load() != 0 {
		t.Fatalf("%d KMS calls by routes that should make none", calls.Load())
	}
	before = e.snapshot(org.ID, p.ID)
	settingsBefore, _ = e.st.GetOrgSettings(ctx, org.ID)

	// Another org, at the same moment, is not held back.
	orgB, _, cb := e.org("other")
	kb := e.registerLocal(cb, "kb")
	if _, err := cb.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "b", ExternalKeyID: openai.String(kb.ID)}); err != nil {
		t.Fatalf("other org: %v", err)
	}
	if ps, _ := e.st.ListProjects(ctx, orgB.ID, true, store.Page{Limit: 10}); len(ps) != 1 {
		t.Fatalf("other org's projects: %v", ps)
	}

	// Half the wait: still refused, Retry-After counts down.
	e.clk.Advance(time.Second)
	_, err = c.Admin.Organization.ExternalKeys.Validate(ctx, fk)
	rateLimited(t, err, org.ID, "POST /v1/organization/external_keys/{id}/validate", "1")
	nothingDone("validate after 1s")
	// One token later: one call passes (and calls the KMS), the next does not.
	e.clk.Advance(time.Second)
	v, err := c.Admin.Organization.ExternalKeys.Validate(ctx, fk)
	if err != nil || v.Status != "valid" || calls.Load() == 0 {
		t.Fatalf("validate after the wait: %v %v (%d KMS calls)", v, err, calls.Load())
	}
	_, err = c.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "p2", ExternalKeyID: openai.String(fk)})
	rateLimited(t, err, org.ID, "POST /v1/organization/projects", "2")

	// Idle for an hour, the org gets its burst back and no more.
	e.clk.Advance(time.Hour)
	for i := range 3 {
		if _, err := c.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: fmt.Sprint("q", i), ExternalKeyID: openai.String(fk)}); err != nil {
			t.Fatalf("call %d of the burst: %v", i+1, err)
		}
	}
	_, err = c.Admin.Organization.Projects.Update(ctx, p.ID, openai.AdminOrganizationProjectUpdateParams{ExternalKeyID: openai.String(fk2)})
	rateLimited(t, err, org.ID, "POST /v1/organization/projects/{id}", "2")

	// The org limit comes before the rotation's own limit: a rotation
	// refused by it spends nothing of the project's minute.
	e.clk.Advance(2 * time.Second)
	if r := e.do(admin, "POST", "/v1/organization/projects/"+p.ID+"/rotate_key", ""); r.Status != http.StatusOK || r.Body["current_key_version"] != float64(2) {
		t.Fatalf("rotation after the wait: %d %s", r.Status, r.Raw)
	}
	e.clk.Advance(2 * time.Second)
	if r := e.do(admin, "POST", "/v1/organization/projects/"+p.ID+"/rotate_key", ""); r.Status != http.StatusTooManyRequests || r.errField("code") != "rotation_rate_limited" {
		t.Fatalf("second rotation within the minute: %d %s", r.Status, r.Raw)
	}
}

// Concurrent calls of one org never get more than the burst through.
func TestKMSRateLimitConcurrent(t *testing.T) {
	e := rateLimitEnv(t)
	_, admin, _ := e.org("acme")
	const n = 12
	codes := make(chan int, n)
	errs := make(chan error, n)
	for range n {
		go func() {
			req, _ := http.NewRequest("POST", e.srv.URL+"/v1/organization/projects", strings.NewReader(`{"name":"p"}`))
			req.Header.Set("Authorization", "Bearer "+admin)
			req.Header.Set("Content-Type", "application/json")
			res, err := e.srv.Client().Do(req)
			if err != nil {
				errs <- err
				return
			}
			res.Body.Close()
			codes <- res.StatusCode
		}()
	}
	ok, limited := 0, 0
	for range n {
		select {
		case err := <-errs:
			t.Fatal(err)
		case code := <-codes:
			switch code {
			case http.StatusOK:
				ok++
			case http.StatusTooManyRequests:
				limited++
			default:
				t.Fatalf("status %d", code)
			}
		}
	}
	if ok != 3 || limited != n-3 {
		t.Fatalf("%d created, %d limited; want 3 and %d", ok, limited, n-3)
	}
}

// Without a KMSRate (the zero Deps) nothing is limited.
func TestKMSRateLimitOff(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, _, c := e.org("acme")
	for i := range 10 {
		if _, err := c.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: fmt.Sprint("p", i)}); err != nil {
			var ae *openai.Error
			if errors.As(err, &ae) {
				t.Fatalf("call %d: %s", i, ae.RawJSON())
			}
			t.Fatal(err)
		}
	}
}
