package adminapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/ekm-dev/ekm/apierr"
	"github.com/ekm-dev/ekm/keyring"
	"github.com/ekm-dev/ekm/kms"
)

func TestKMSErrorMapping(t *testing.T) {
	tenant := &kms.Error{Class: kms.Invalid, Code: "invalid_tenant_id", Param: "tenant_id", Message: "tenant_id must be a GUID"}
	// A driver's error naming a field becomes that param, not a step.
	var ke *kmsAPIError
	if err := kmsFailure(tenant, ""); !errors.As(err, &ke) || ke.api.Param != "tenant_id" || ke.Step != "" || ke.api.Status != 400 || ke.api.Code != "invalid_tenant_id" {
		t.Fatalf("kmsFailure(param): %#v", err)
	}
	// An onboarding step stays a step, and names no param.
	if err := kmsFailure(&kms.Error{Class: kms.Revoked, Code: "role_missing", Step: "4"}, ""); !errors.As(err, &ke) || ke.api.Param != nil || ke.Step != "4" {
		t.Fatalf("kmsFailure(step): %#v", err)
	}
	// Errors that are not from the KMS stay internal.
	plain := errors.New("database is down")
	if err := kmsFailure(plain, "x"); err != plain {
		t.Fatalf("kmsFailure(plain) = %v", err)
	}
	if err := serviceErr(plain, "project", "proj_x"); err != plain {
		t.Fatalf("serviceErr(plain) = %v", err)
	}
	cases := []struct {
		err    error
		status int
		code   string
	}{
		{&keyring.UnavailableError{Class: kms.Revoked, Code: "key_disabled", Message: "m", Err: &kms.Error{Step: "3"}}, 400, "key_disabled"},
		{&keyring.UnavailableError{Class: kms.Outage, Code: "kms_timeout", Message: "m"}, 503, "kms_timeout"},
		{fmt.Errorf("wrap: %w", context.DeadlineExceeded), 503, "kms_timeout"},
		{&kms.Error{Class: kms.Operator, Code: "ekm_misconfigured", Message: "m"}, 500, "ekm_misconfigured"},
	}
	for _, tc := range cases {
		var ae *apierr.Error
		if err := kmsFailure(tc.err, "external_key_id"); !errors.As(err, &ae) || ae.Status != tc.status || ae.Code != tc.code {
			t.Errorf("%v → %#v", tc.err, err)
		}
		if tc.status == http.StatusServiceUnavailable && ae.RetryAfter == 0 {
			t.Errorf("%v: no Retry-After", tc.err)
		}
	}
	if err := kmsFailure(cases[0].err, ""); !errors.As(err, &ke) || ke.Step != "3" {
		t.Fatalf("step lost: %#v", err)
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"sk-admin-bzq-qB0AH5_3nRg969xJDZ9j9GYjP-f1INgKOG9q-Yo": "sk-admin-****q-Yo",
		"sk-proj-abcdefghijklmnopqrstuvwxyz-0123456789ABCDEF":  "sk-proj-****CDEF",
		"sk-admin-short": "sk-admin-****",
	} {
		if got := redact(in); got != want {
			t.Errorf("redact(%q) = %q, want %q", in, got, want)
		}
	}
	for range 200 {
		v, _, r := newKeyValue("admin")
		if r != "sk-admin-****"+v[len(v)-4:] {
			t.Fatalf("redacted %q as %q", v, r)
		}
	}
}
