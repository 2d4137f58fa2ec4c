// Package aws tests the aws key type end to end against the AWS emulator,
// through the public APIs only (the official OpenAI Go SDK for the Admin and
// Files APIs, ekm's Go client for the crypto API), with the server wired as
// `ekm serve --aws --aws-dial-override … --aws-ca-file …` and its own AWS
// identity in the AWS_* environment, as an operator runs it:
//
//   - onboarding: the customer's steps (internal/awsonboard, and the exact
//     documents docs/aws.md prints, applied through the SDK), registration
//     with the OpenAI SDK, every missing or wrong step refused with its
//     diagnosis and nothing stored, then a project, files and the crypto
//     API;
//   - revocation of each kind (trust policy external id changed, role
//     policy detached, role deleted, key disabled, key scheduled for
//     deletion then cancelled, key policy deny, grant revoked, alias
//     re-pointed) is enforced within the probe interval + 5 s, and restoring
//     access brings back the same bytes; the latency of each kind is logged;
//   - a per-project deny by encryption context in the key policy.
package aws
