package adminapi

import (
	"context"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
)

// TestKeyValueAnswersAreNotCached: the two answers that carry a key's value
// say Cache-Control: no-store.
func TestKeyValueAnswersAreNotCached(t *testing.T) {
	e := newEnv(t)
	_, key, c := e.org("acme")
	r := e.do(key, "POST", "/v1/organization/admin_api_keys", `{"name":"ci"}`)
	if r.Status != 200 || r.Body["value"] == nil || r.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("admin key creation: %d, Cache-Control %q", r.Status, r.Header.Get("Cache-Control"))
	}
	p, err := c.Admin.Organization.Projects.New(context.Background(), openai.AdminOrganizationProjectNewParams{Name: "p"})
	if err != nil {
		t.Fatal(err)
	}
	r = e.do(key, "POST", "/v1/organization/projects/"+p.ID+"/service_accounts", `{"name":"sa"}`)
	if r.Status != 200 || r.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("service account creation: %d, Cache-Control %q", r.Status, r.Header.Get("Cache-Control"))
	}
}

// TestLastUsedAt: a key's use shows in last_used_at (to the minute) once
// the tracker has flushed; an unused key's stays null.
func TestLastUsedAt(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, key, c := e.org("acme")
	unused, err := c.Admin.Organization.AdminAPIKeys.New(ctx, openai.AdminOrganizationAdminAPIKeyNewParams{Name: "unused"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "p"})
	if err != nil {
		t.Fatal(err)
	}
	sa, err := c.Admin.Organization.Projects.ServiceAccounts.New(ctx, p.ID, openai.AdminOrganizationProjectServiceAccountNewParams{Name: "sa"})
	if err != nil {
		t.Fatal(err)
	}
	if r := e.do(sa.APIKey.Value, "POST", "/v1/crypto/encrypt", `{"plaintext":"aGk="}`); r.Status != 200 {
		t.Fatalf("encrypt: %d %s", r.Status, r.Raw)
	}
	pk, err := c.Admin.Organization.Projects.APIKeys.Get(ctx, p.ID, sa.APIKey.ID)
	if err != nil || pk.JSON.LastUsedAt.Raw() != "null" {
		t.Fatalf("before a flush: %v %s", err, pk.RawJSON())
	}
	if err := e.lastUsed.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	minute := e.clk.Now().Truncate(time.Minute).Unix()
	pk, err = c.Admin.Organization.Projects.APIKeys.Get(ctx, p.ID, sa.APIKey.ID)
	if err != nil || pk.LastUsedAt != minute {
		t.Fatalf("project key after a flush: %v %s, want last_used_at %d", err, pk.RawJSON(), minute)
	}
	keys, err := c.Admin.Organization.AdminAPIKeys.List(ctx, openai.AdminOrganizationAdminAPIKeyListParams{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys.Data {
		switch {
		case k.ID == unused.ID && k.JSON.LastUsedAt.Raw() != "null":
			t.Fatalf("unused admin key: %s", k.RawJSON())
		case k.ID != unused.ID && k.LastUsedAt != minute:
			t.Fatalf("used admin key: %s, want last_used_at %d", k.RawJSON(), minute)
		}
	}
	// A minute later, a use moves it on.
	e.clk.Advance(90 * time.Second)
	if r := e.do(sa.APIKey.Value, "POST", "/v1/crypto/encrypt", `{"plaintext":"aGk="}`); r.Status != 200 {
		t.Fatal(r.Raw)
	}
	if err := e.lastUsed.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	pk, err = c.Admin.Organization.Projects.APIKeys.Get(ctx, p.ID, sa.APIKey.ID)
	if want := e.clk.Now().Truncate(time.Minute).Unix(); err != nil || pk.LastUsedAt != want {
		t.Fatalf("after another use: %v %s, want %d", err, pk.RawJSON(), want)
	}
	_ = key
}
