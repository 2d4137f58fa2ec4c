// Package onboarding tests the customer's Azure onboarding procedure end to
// end: the steps a customer runs in its own tenant (against the emulator),
// registration with the official OpenAI Go SDK, data stored under the key,
// every refusal with its diagnosis, and revocation and restoration.
package onboarding
