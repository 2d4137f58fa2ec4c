// Package lifecycle tests the key lifecycle end to end against the Azure
// emulator, through the public APIs only (the official OpenAI Go SDK for the
// Admin and Files APIs, ekm's Go client for the crypto API):
//
//   - revocation of each kind (role assignment deleted, decrypt removed from
//     the role, key disabled, key deleted, service principal deleted) is
//     enforced within the probe interval, and restoring access brings back
//     the same bytes;
//   - KMS outages of each kind (latency beyond the KMS timeout, 5xx, 429
//     with and without Retry-After, connection resets, the token endpoint
//     down) are bridged from cache up to the hard TTL, answered as
//     retryable, and never taken for a revocation;
//   - a customer KEK rotation is detected and every project key rewrapped,
//     after which the old version can be disabled; a project re-keyed to
//     another external key survives the old key being disabled;
//   - every KMS call is audited with the request id Key Vault saw;
//   - KMS load follows keys, projects and intervals, not request rate.
//
// docs/lifecycle.md states the guarantees these tests check.
package lifecycle
