// Package gcp tests Google Cloud KMS keys end to end against the GCP
// emulator, through the public APIs only (the official OpenAI Go SDK for
// the Admin and Files APIs, ekm's Go client for the crypto API), with both
// of ekm's identities: Google-signed ID tokens of its service account, and
// ekm as its own OIDC issuer (discovery and JWKS fetched from the server
// under test, or uploaded as the provider's jwksJson):
//
//   - the REST bodies docs/gcp.md prints, applied to the emulator as
//     written, then the key registered;
//   - registration: data stored under the key, every missing or wrong
//     onboarding step diagnosed with its step and nothing stored, invalid
//     parameters refused before Google is contacted;
//   - revocation of each kind (IAM binding removed, provider disabled,
//     pool deleted, condition changed to exclude ekm, primary version
//     disabled, version scheduled for destruction, key's IAM policy
//     replaced) refused within the probe interval + 5 s and restored with
//     the same bytes, with the latency of each;
//   - the issuer's key rollover with customers that fetch the JWKS and
//     customers that uploaded it.
package gcp
