// Package e2ekit is what the end-to-end suites under e2e/ share, so that
// each suite keeps only what is specific to its cloud:
//
//   - waiting and error helpers (WaitFor, Check, APIErr, RetryUnavailable);
//   - an external key registered through the official OpenAI SDK, with
//     projects, each holding a file (Files API) and a crypto API
//     ciphertext, read back and compared byte for byte (ExternalKey,
//     Project, Result);
//   - the external key object's health and the audit log, read through the
//     SDK (KeyView, Event, AuditEvents, KeyEvents);
//   - the checks several suites run alike: a revocation refused within its
//     bound and restored (Revocations), an outage bridged from cache and
//     never taken for a revocation (ExternalKey.CheckOutage), a refused
//     registration (CheckRefused), the Files and crypto APIs under a new
//     key (CheckDataPlane);
//   - ekm as a child process for the suites that kill it (BuildEKM, Proc,
//     StartServer, Tool, AzureChild).
//
// Every client it makes of the server under test is ekmtest's
// (Env.Client, Env.HTTPClient), so its traffic is checked against
// docs/openapi.yaml (internal/apispec) like the rest of the suites'. Only
// e2e tests import it; it imports testing.
package e2ekit

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
)

// Error codes of the data plane (docs/API.md).
const (
	CodeRevoked   = "customer_key_unavailable"
	CodeTemporary = "customer_key_temporarily_unavailable"
)

// Poll is how often tests look at the system while waiting for a state.
const Poll = 50 * time.Millisecond

// WaitFor polls cond until it holds, failing the test after timeout, and
// returns how long it took.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	tick := time.NewTicker(Poll)
	defer tick.Stop()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
	return time.Since(start)
}

// Check fails the test on err.
func Check(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// APIErr returns the OpenAI-shaped error of an SDK call.
func APIErr(t testing.TB, err error) *openai.Error {
	t.Helper()
	var e *openai.Error
	if !errors.As(err, &e) {
		t.Fatalf("want an API error, got %v", err)
	}
	return e
}

// RetryUnavailable retries a call answered 503 (retryable by contract: the
// KMS was slow or unreachable), as a real client would. On a loaded 2-core
// machine running -race, the tests' short KMS timeout is sometimes hit by
// calls that have nothing to do with the fault under test.
func RetryUnavailable(call func() error) error {
	var err error
	for range 5 {
		err = call()
		var e *openai.Error
		if !errors.As(err, &e) || e.StatusCode != http.StatusServiceUnavailable {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
	return err
}
