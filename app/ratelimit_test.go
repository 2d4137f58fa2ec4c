package app_test

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/ekm-dev/ekm/adminapi"
	"github.com/ekm-dev/ekm/app"
	"github.com/ekm-dev/ekm/lifecycle/lifecycletest"
)

// openHandler opens an app for cfg and serves its handler (no background
// workers), with an org and an SDK client of its admin key that does not
// retry.
func openHandler(t *testing.T, cfg app.Config) (*app.App, openai.Client) {
	t.Helper()
	cfg.DataDir = t.TempDir()
	cfg.Logger = slog.New(slog.DiscardHandler)
	a, err := app.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	srv := httptest.NewServer(a.Handler)
	t.Cleanup(srv.Close)
	_, key, err := adminapi.CreateOrg(context.Background(), a.Store, "acme", a.Config.Now())
	if err != nil {
		t.Fatal(err)
	}
	return a, openai.NewClient(option.WithBaseURL(srv.URL+"/v1/"), option.WithAdminAPIKey(key), option.WithMaxRetries(0))
}

// The server's Admin API limits each org's calls that reach a KMS as
// Config says (here: 2 at once, then 1 a second), on its own clock, with
// the whole middleware around the 429 (X-Request-Id).
func TestAdminKMSRateLimitWired(t *testing.T) {
	clk := lifecycletest.NewClock(time.Unix(1_800_000_000, 0))
	_, c := openHandler(t, app.Config{AdminKMSRate: 1, AdminKMSBurst: 2, Now: clk.Now})
	ctx := context.Background()
	create := func() error {
		_, err := c.Admin.Organization.Projects.New(ctx, openai.AdminOrganizationProjectNewParams{Name: "p"})
		return err
	}
	for i := range 2 {
		if err := create(); err != nil {
			t.Fatalf("call %d: %v", i+1, err)
		}
	}
	var ae *openai.Error
	if err := create(); !errors.As(err, &ae) || ae.StatusCode != http.StatusTooManyRequests || ae.Code != "rate_limit_exceeded" ||
		ae.Response.Header.Get("Retry-After") != "1" || ae.Response.Header.Get("X-Request-Id") == "" {
		t.Fatalf("third call: %v", err)
	}
	clk.Advance(time.Second)
	if err := create(); err != nil {
		t.Fatalf("after a second: %v", err)
	}
}

// Config{} limits at the documented defaults; a negative rate is no limit.
func TestAdminKMSRateLimitDefaultsAndOff(t *testing.T) {
	clk := lifecycletest.NewClock(time.Unix(1_800_000_000, 0))
	a, _ := openHandler(t, app.Config{Now: clk.Now})
	if a.Config.AdminKMSRate != app.DefaultAdminKMSRate || a.Config.AdminKMSBurst != app.DefaultAdminKMSBurst ||
		app.DefaultAdminKMSRate != 5 || app.DefaultAdminKMSBurst != 50 {
		t.Fatalf("defaults: rate %v burst %d", a.Config.AdminKMSRate, a.Config.AdminKMSBurst)
	}
	_, c := openHandler(t, app.Config{AdminKMSRate: app.NoAdminKMSLimit, AdminKMSBurst: 1, Now: clk.Now})
	for i := range 3 {
		if _, err := c.Admin.Organization.Projects.New(context.Background(), openai.AdminOrganizationProjectNewParams{Name: "p"}); err != nil {
			t.Fatalf("call %d without a limit: %v", i+1, err)
		}
	}
}

// A rate or burst that makes no sense is refused before anything is
// created.
func TestAdminKMSRateLimitRefusesBadValues(t *testing.T) {
	for _, tc := range []struct {
		rate  float64
		burst int
		flag  string
	}{
		{math.NaN(), 0, "--admin-kms-rate"},
		{math.Inf(1), 0, "--admin-kms-rate"},
		{0.0001, 0, "--admin-kms-rate"},
		{5, -1, "--admin-kms-burst"},
	} {
		dir := filepath.Join(t.TempDir(), "data")
		_, err := app.Open(context.Background(), app.Config{DataDir: dir, AdminKMSRate: tc.rate, AdminKMSBurst: tc.burst, Logger: slog.New(slog.DiscardHandler)})
		if err == nil || !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("rate %v burst %d: %v, want an error naming %s", tc.rate, tc.burst, err, tc.flag)
		}
		if _, serr := os.Stat(dir); !errors.Is(serr, os.ErrNotExist) {
			t.Errorf("rate %v burst %d: the data dir was created", tc.rate, tc.burst)
		}
	}
}
