package azurecloud

import (
	"net/http"
	"testing"
)

func FuzzParseJWT(f *testing.F) {
	for _, s := range []string{"a.b.c", "e30.e30.e30", "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjF9.AA", "..", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := parseJWT(s)
		if err != nil {
			return
		}
		tok.num("exp")
		tok.audiences()
		tok.verify(nil)
	})
}

func FuzzKVRoute(f *testing.F) {
	for _, s := range []string{"/keys", "/keys/k/", "/keys/k/0123456789abcdef0123456789abcdef/encrypt", "/deletedkeys/k/recover", "//", "/keys/k/versions/"} {
		f.Add("POST", s)
		f.Add("GET", s)
	}
	f.Fuzz(func(t *testing.T, method, path string) {
		rt, ok := parseKVRoute(method, path)
		if ok && (rt.action == "" || rt.op == "") {
			t.Fatalf("route without action: %+v", rt)
		}
	})
}

func FuzzGlob(f *testing.F) {
	f.Add("Microsoft.KeyVault/vaults/keys/*", "Microsoft.KeyVault/vaults/keys/read")
	f.Add("*/read", "a/b/read")
	f.Fuzz(func(t *testing.T, p, s string) {
		if globMatch(p, s) && p == "" && s != "" {
			t.Fatal("empty pattern matched")
		}
		if !globMatch(s, s) && !containsStar(s) {
			t.Fatalf("%q does not match itself", s)
		}
	})
}

func containsStar(s string) bool {
	for _, c := range s {
		if c == '*' {
			return true
		}
	}
	return false
}

func TestGlobAndScopes(t *testing.T) {
	for _, tc := range []struct {
		p, s string
		want bool
	}{
		{"Microsoft.KeyVault/vaults/keys/*", "Microsoft.KeyVault/vaults/keys/encrypt/action", true},
		{"microsoft.keyvault/vaults/*", "Microsoft.KeyVault/vaults/keys/read", true},
		{"Microsoft.KeyVault/vaults/*/read", "Microsoft.KeyVault/vaults/keys/read", true},
		{"Microsoft.KeyVault/vaults/*/read", "Microsoft.KeyVault/vaults/keys/decrypt/action", false},
		{"Microsoft.KeyVault/vaults/keys/read", "Microsoft.KeyVault/vaults/keys/readx", false},
		{"*", "anything", true},
	} {
		if got := actionMatches(tc.p, tc.s); got != tc.want {
			t.Errorf("%s ~ %s = %v", tc.p, tc.s, got)
		}
	}
	for _, tc := range []struct {
		scope, res string
		want       bool
	}{
		{"/subscriptions/S", "/subscriptions/s/resourceGroups/rg", true},
		{"/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/v/keys/k", "/subscriptions/s/resourcegroups/rg/providers/microsoft.keyvault/vaults/v/keys/k", true},
		{"/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/v/keys/k", "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/v/keys/k2", false},
		{"/subscriptions/s/resourceGroups/rg", "/subscriptions/s/resourceGroups/rg2", false},
		{"/", "/subscriptions/s", true},
	} {
		if got := scopeCovers(tc.scope, tc.res); got != tc.want {
			t.Errorf("%s covers %s = %v", tc.scope, tc.res, got)
		}
	}
	if _, ok := parseKVRoute(http.MethodGet, "/keys/k/"); !ok {
		t.Error("trailing-slash get not routed")
	}
}
