package gcpcloud

import (
	"strings"
	"testing"
)

// The parsers fed by callers: CEL (provider writes and exchanges), JWTs
// and JWK sets (subject tokens, jwksJson, fetched JWKS), resource names,
// policy members and STS audiences. Seed corpora live in testdata/fuzz.

func FuzzCEL(f *testing.F) {
	for _, s := range []string{`assertion.sub == "105900137572174660365"`, `attribute.tier in ['a', "b"] && !(google.subject != 'x')`,
		`assertion['aud'].startsWith("org-") || assertion.email.endsWith('@x.com')`, `'admins' in google.groups`, `((((`, `"\'`, `a.b.c(`} {
		f.Add(s)
	}
	env := celEnv{"assertion": map[string]any{"sub": "s", "aud": "org-1", "groups": []any{"a"}, "n": 1.0, "m": map[string]any{"k": "v"}},
		"google": map[string]any{"subject": "s"}, "attribute": map[string]any{"tier": "gold"}}
	f.Fuzz(func(t *testing.T, src string) {
		n, err := parseCEL(src, "assertion", "google", "attribute")
		if err != nil {
			return
		}
		v, err := evalCEL(n, env)
		if err == nil {
			switch v.(type) {
			case string, bool, float64, nil, []any, map[string]any, map[string]string, []string:
			default:
				t.Fatalf("unexpected value type %T", v)
			}
		}
	})
}

func FuzzParseJWT(f *testing.F) {
	f.Add("eyJhbGciOiJSUzI1NiIsImtpZCI6ImsifQ.eyJzdWIiOiJ4In0.c2ln")
	f.Add("a.b.c")
	f.Add("eyJ9.e30.")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := parseJWT(s)
		if err != nil {
			return
		}
		if tok.Claims == nil {
			t.Fatal("nil claims without error")
		}
		claimAudiences(tok.Claims)
		claimTime(tok.Claims, "exp")
		verifyJWT(tok, nil)
	})
}

func FuzzParseJWKS(f *testing.F) {
	f.Add(`{"keys":[{"kty":"RSA","kid":"k","n":"AQAB","e":"AQAB"}]}`, true)
	f.Add(`{"keys":[{"kty":"EC","crv":"P-256","x":"AAAA","y":"AAAA"}]}`, false)
	f.Add(`{"keys":[]}`, false)
	f.Fuzz(func(t *testing.T, s string, uploaded bool) {
		keys, err := parseJWKS([]byte(s), uploaded)
		if err == nil && len(keys) == 0 {
			t.Fatal("no keys without error")
		}
	})
}

func FuzzResourceNames(f *testing.F) {
	for _, s := range []string{"projects/p-123456/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1",
		"projects/123/locations/global/workloadIdentityPools/pool-1/providers/prov-1",
		"principal://iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/pool-1/subject/abc",
		"principalSet://iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/pool-1/attribute.tier/gold",
		"//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/pool-1/providers/prov-1", "serviceAccount:a@b.c", "projects//x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if n, err := parseKMSName(s); err == nil {
			if n.String() != s {
				t.Fatalf("round trip: %q -> %q", s, n.String())
			}
		}
		if n, err := parseWIPName(s); err == nil {
			if !strings.Contains(s, n.Pool) {
				t.Fatal("pool not in name")
			}
		}
		if n, ok := parseSTSAudience(s); ok && n.Provider == "" {
			t.Fatal("audience without provider")
		}
		parseMember(s)
		splitVerb(s)
	})
}
