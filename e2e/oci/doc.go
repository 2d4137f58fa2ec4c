// Package oci tests the oci key type end to end against the OCI emulator,
// through the public APIs only (the official OpenAI Go SDK for the Admin and
// Files APIs, ekm's Go client for the crypto API), with the server wired as
// `ekm serve --oci-tenancy … --oci-user … --oci-fingerprint …
// --oci-private-key-file … --oci-group … --oci-dial-override … --oci-ca-file …`,
// ekm's identity given as an operator gives it:
//
//   - onboarding: the customer's steps (internal/ocionboard, and the exact
//     policy statements docs/oci.md prints, applied with the OCI SDK),
//     registration with the OpenAI SDK, every missing or wrong step refused
//     with its diagnosis and nothing stored, then a project, files and the
//     crypto API, with every KMS request in the audit log;
//   - revocation of each kind (Admit policy removed, Admit narrowed to
//     another key, key disabled, key deletion scheduled then cancelled) is
//     enforced within the probe interval + 5 s, and restoring access brings
//     back the same bytes; the latency of each kind is logged;
//   - OCI outages (429, 5xx, latency, resets) are bridged from cache and
//     never taken for a revocation.
package oci
