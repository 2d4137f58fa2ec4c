package azure

import (
	"errors"
	"strings"
	"testing"

	"github.com/ekm-dev/ekm/kms"
)

func testDriver(t *testing.T, clouds ...Cloud) *Driver {
	t.Helper()
	d, err := NewDriver(Config{ClientID: fakeClientID, ClientSecret: "x", Clouds: clouds})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestCheckAccepts(t *testing.T) {
	d := testDriver(t, CloudPublic, CloudChina, CloudGovernment)
	for _, tc := range []struct{ tenant, vault, key, wantVault string }{
		{fakeTenant, "https://ekmtest.vault.azure.net/", fakeKey, "https://ekmtest.vault.azure.net/"},
		{strings.ToUpper(fakeTenant), "https://EKMTest.Vault.Azure.NET", fakeKey, "https://ekmtest.vault.azure.net/"},
		{fakeTenant, "HTTPS://abc.vault.azure.cn/", fakeKey, "https://abc.vault.azure.cn/"},
		{fakeTenant, "https://abc.vault.usgovcloudapi.net/", fakeKey, "https://abc.vault.usgovcloudapi.net/"},
		{fakeTenant, "https://my-hsm1.managedhsm.azure.net/", fakeKey, "https://my-hsm1.managedhsm.azure.net/"},
		{fakeTenant, "https://a1b.vault.azure.net/", fakeKey, "https://a1b.vault.azure.net/"},
		{fakeTenant, "https://a23456789012345678901234.vault.azure.net/", fakeKey, "https://a23456789012345678901234.vault.azure.net/"},
		{fakeTenant, fakeVault, strings.ToUpper(fakeOrg) + "--K", fakeVault},
		{fakeTenant, fakeVault, fakeOrg + "--" + strings.Repeat("a", 127-len(fakeOrg)-2), fakeVault},
	} {
		p := kms.Params{ParamTenantID: tc.tenant, ParamVaultURI: tc.vault, ParamKeyName: tc.key}
		got, err := d.Check(fakeOrg, p)
		if err != nil {
			t.Errorf("Check(%v) = %v", p, err)
			continue
		}
		if got[ParamTenantID] != strings.ToLower(tc.tenant) || got[ParamVaultURI] != tc.wantVault || got[ParamKeyName] != tc.key || len(got) != 3 {
			t.Errorf("Check(%v) = %v", p, got)
		}
	}
	// key_version empty is the same as absent.
	if _, err := d.Check(fakeOrg, kms.Params{ParamTenantID: fakeTenant, ParamVaultURI: fakeVault, ParamKeyName: fakeKey, ParamKeyVersion: ""}); err != nil {
		t.Errorf("empty key_version: %v", err)
	}
}

func TestCheckRefuses(t *testing.T) {
	d := testDriver(t) // public cloud only
	good := func() kms.Params {
		return kms.Params{ParamTenantID: fakeTenant, ParamVaultURI: fakeVault, ParamKeyName: fakeKey}
	}
	with := func(k, v string) kms.Params { p := good(); p[k] = v; return p }
	without := func(k string) kms.Params { p := good(); delete(p, k); return p }
	vault := func(v string) kms.Params { return with(ParamVaultURI, v) }
	cases := []struct {
		name string
		org  string
		p    kms.Params
		code string
	}{
		{"tenant domain", fakeOrg, with(ParamTenantID, "contoso.onmicrosoft.com"), CodeInvalidTenantID},
		{"tenant short", fakeOrg, with(ParamTenantID, "1111-2222"), CodeInvalidTenantID},
		{"tenant braces", fakeOrg, with(ParamTenantID, "{"+fakeTenant+"}"), CodeInvalidTenantID},
		{"tenant common", fakeOrg, with(ParamTenantID, "common"), CodeInvalidTenantID},
		{"tenant path", fakeOrg, with(ParamTenantID, fakeTenant+"/x"), CodeInvalidTenantID},
		{"missing tenant", fakeOrg, without(ParamTenantID), CodeMissingParameter},
		{"missing vault", fakeOrg, without(ParamVaultURI), CodeMissingParameter},
		{"missing key", fakeOrg, without(ParamKeyName), CodeMissingParameter},
		{"evil host", fakeOrg, vault("https://evil.com/"), CodeInvalidVaultURI},
		{"suffix attack", fakeOrg, vault("https://x.vault.azure.net.evil.com/"), CodeInvalidVaultURI},
		{"trailing dot", fakeOrg, vault("https://ekmtest.vault.azure.net./"), CodeInvalidVaultURI},
		{"port", fakeOrg, vault("https://ekmtest.vault.azure.net:444/"), CodeInvalidVaultURI},
		{"port 443", fakeOrg, vault("https://ekmtest.vault.azure.net:443/"), CodeInvalidVaultURI},
		{"userinfo", fakeOrg, vault("https://user@ekmtest.vault.azure.net/"), CodeInvalidVaultURI},
		{"userinfo host", fakeOrg, vault("https://ekmtest.vault.azure.net@evil.com/"), CodeInvalidVaultURI},
		{"http", fakeOrg, vault("http://ekmtest.vault.azure.net/"), CodeInvalidVaultURI},
		{"no scheme", fakeOrg, vault("ekmtest.vault.azure.net"), CodeInvalidVaultURI},
		{"ipv4", fakeOrg, vault("https://127.0.0.1/"), CodeInvalidVaultURI},
		{"ipv6", fakeOrg, vault("https://[::1]/"), CodeInvalidVaultURI},
		{"metadata ip", fakeOrg, vault("https://169.254.169.254/"), CodeInvalidVaultURI},
		{"path", fakeOrg, vault("https://ekmtest.vault.azure.net/keys/x"), CodeInvalidVaultURI},
		{"double slash", fakeOrg, vault("https://ekmtest.vault.azure.net//"), CodeInvalidVaultURI},
		{"query", fakeOrg, vault("https://ekmtest.vault.azure.net/?a=b"), CodeInvalidVaultURI},
		{"empty query", fakeOrg, vault("https://ekmtest.vault.azure.net/?"), CodeInvalidVaultURI},
		{"fragment", fakeOrg, vault("https://ekmtest.vault.azure.net/#x"), CodeInvalidVaultURI},
		{"whitespace", fakeOrg, vault(" https://ekmtest.vault.azure.net/"), CodeInvalidVaultURI},
		{"newline", fakeOrg, vault("https://ekmtest.vault.azure.net/\n"), CodeInvalidVaultURI},
		{"percent", fakeOrg, vault("https://ekm%74est.vault.azure.net/"), CodeInvalidVaultURI},
		{"bare suffix", fakeOrg, vault("https://vault.azure.net/"), CodeInvalidVaultURI},
		{"nested name", fakeOrg, vault("https://a.bcd.vault.azure.net/"), CodeInvalidVaultURI},
		{"name short", fakeOrg, vault("https://ab.vault.azure.net/"), CodeInvalidVaultURI},
		{"name long", fakeOrg, vault("https://a234567890123456789012345.vault.azure.net/"), CodeInvalidVaultURI},
		{"name digit first", fakeOrg, vault("https://1abc.vault.azure.net/"), CodeInvalidVaultURI},
		{"name hyphen end", fakeOrg, vault("https://abc-.vault.azure.net/"), CodeInvalidVaultURI},
		{"name double hyphen", fakeOrg, vault("https://ab--c.vault.azure.net/"), CodeInvalidVaultURI},
		{"name underscore", fakeOrg, vault("https://ab_c.vault.azure.net/"), CodeInvalidVaultURI},
		{"unicode", fakeOrg, vault("https://ekmtést.vault.azure.net/"), CodeInvalidVaultURI},
		{"retired german cloud", fakeOrg, vault("https://abc.vault.microsoftazure.de/"), CodeInvalidVaultURI},
		{"china not enabled", fakeOrg, vault("https://abc.vault.azure.cn/"), CodeCloudNotEnabled},
		{"key other org", fakeOrg, with(ParamKeyName, "org-zzzzzzzzzzzzzzzzzzzzzzzzzz--kek"), CodeKeyNameOrgMismatch},
		{"key no prefix", fakeOrg, with(ParamKeyName, "kek"), CodeKeyNameOrgMismatch},
		{"key single hyphen", fakeOrg, with(ParamKeyName, fakeOrg+"-kek"), CodeKeyNameOrgMismatch},
		{"key prefix only", fakeOrg, with(ParamKeyName, fakeOrg+"--"), CodeKeyNameOrgMismatch},
		{"key org prefix of other", fakeOrg, with(ParamKeyName, fakeOrg+"x--kek"), CodeKeyNameOrgMismatch},
		{"key bad chars", fakeOrg, with(ParamKeyName, fakeOrg+"--k_1"), CodeInvalidKeyName},
		{"key slash", fakeOrg, with(ParamKeyName, fakeOrg+"--k/1"), CodeInvalidKeyName},
		{"key too long", fakeOrg, with(ParamKeyName, fakeOrg+"--"+strings.Repeat("a", 128-len(fakeOrg)-2)), CodeInvalidKeyName},
		{"key_version pinned", fakeOrg, with(ParamKeyVersion, "0123456789abcdef0123456789abcdef"), CodeKeyVersionNotSupported},
		{"unknown param", fakeOrg, with("endpoint", "https://evil.com/"), CodeUnknownParameter},
		{"oversized", fakeOrg, with(ParamVaultURI, "https://"+strings.Repeat("a", 300)), CodeParameterTooLong},
		{"org with double hyphen", "org--x", good(), CodeInvalidOrgID},
		{"empty org", "", good(), CodeInvalidOrgID},
	}
	for _, tc := range cases {
		_, err := d.Check(tc.org, tc.p)
		var ke *kms.Error
		if !errors.As(err, &ke) || ke.Class != kms.Invalid || ke.Code != tc.code || ke.Message == "" {
			t.Errorf("%s: Check = %v, want Invalid %s", tc.name, err, tc.code)
		}
		// Open must refuse the same params: nothing unchecked is dialled.
		if _, err := d.Open(tc.org, tc.p); kms.ClassOf(err) != kms.Invalid {
			t.Errorf("%s: Open = %v", tc.name, err)
		}
	}
}

func TestCheckErrorNamesParameter(t *testing.T) {
	d := testDriver(t)
	_, err := d.Check(fakeOrg, kms.Params{ParamTenantID: fakeTenant, ParamVaultURI: "https://evil.com/", ParamKeyName: fakeKey})
	var ke *kms.Error
	if !errors.As(err, &ke) || ke.Param != ParamVaultURI {
		t.Fatalf("Param = %q", ke.Param)
	}
}

func TestNewDriverConfig(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no client id":       {ClientSecret: "x"},
		"client id not guid": {ClientID: "ekm", ClientSecret: "x"},
		"no credential":      {ClientID: fakeClientID},
		"two credentials":    {ClientID: fakeClientID, ClientSecret: "x", FederatedTokenFile: "/nonexistent"},
		"password only":      {ClientID: fakeClientID, ClientSecret: "x", CertificatePassword: "p"},
		"missing cert":       {ClientID: fakeClientID, CertificateFile: "/nonexistent/cert.pem"},
		"missing token":      {ClientID: fakeClientID, FederatedTokenFile: "/nonexistent/token"},
		"unknown cloud":      {ClientID: fakeClientID, ClientSecret: "x", Clouds: []Cloud{"mars"}},
	} {
		if _, err := NewDriver(cfg); err == nil {
			t.Errorf("%s: NewDriver succeeded", name)
		} else if strings.Contains(err.Error(), "x\"") {
			t.Errorf("%s: error leaks secret: %v", name, err)
		}
	}
}
