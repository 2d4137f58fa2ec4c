package ocicloud

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/oracle/oci-go-sdk/v65/common"
	"github.com/oracle/oci-go-sdk/v65/keymanagement"
)

// signed builds a request as the SDK sends it, signed with creds; mod may
// change it after signing.
func signed(t *testing.T, creds Credentials, method, url string, body []byte, signer common.HTTPRequestSigner, mod func(*http.Request)) *http.Response {
	t.Helper()
	r, err := http.NewRequest(method, url, bytes.NewReader(body))
	must(t, err)
	r.Header.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	r.Header.Set("Content-Type", "application/json")
	if body != nil {
		r.ContentLength = int64(len(body))
		r.Header.Set("Content-Length", strconv.Itoa(len(body)))
	}
	if signer == nil {
		signer = common.DefaultRequestSigner(provider(creds))
	}
	must(t, signer.Sign(r))
	if mod != nil {
		mod(r)
	}
	resp, err := emu.HTTPClient().Do(r)
	must(t, err)
	return resp
}

func body(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return string(b)
}

// Every request is authenticated by its HTTP signature; anything wrong is
// the same 401 NotAuthenticated, with OCI's exact body.
func TestSignatureRejections(t *testing.T) {
	cu := newCustomer(t)
	getURL := "https://kms." + testRegion + ".oraclecloud.com/20180608/vaults/" + *cu.vault.Id
	encURL := *cu.vault.CryptoEndpoint + "/20180608/encrypt"
	encBody := []byte(`{"keyId":"` + *cu.key.Id + `","plaintext":"aGk="}`)
	const want401 = `{ "code" : "NotAuthenticated", "message" : "The required information to complete authentication was not provided or was incorrect." }`

	if resp := signed(t, cu.creds, "GET", getURL, nil, nil, nil); resp.StatusCode != 200 {
		t.Fatalf("valid GET: %d %s", resp.StatusCode, body(t, resp))
	}
	if resp := signed(t, cu.creds, "POST", encURL, encBody, nil, nil); resp.StatusCode != 200 {
		t.Fatalf("valid POST: %d %s", resp.StatusCode, body(t, resp))
	}
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	wrongKey := cu.creds
	wrongKey.PrivateKeyPEM = privatePEM(other)
	unknownFP := cu.creds
	unknownFP.Fingerprint = strings.Repeat("ab:", 15) + "ab"
	otherUser := cu.creds
	otherUser.UserOCID = emu.Vendor().UserOCID
	cases := []struct {
		name   string
		method string
		creds  Credentials
		signer common.HTTPRequestSigner
		mod    func(*http.Request)
	}{
		{"no authorization", "GET", cu.creds, nil, func(r *http.Request) { r.Header.Del("Authorization") }},
		{"other private key", "GET", wrongKey, nil, nil},
		{"unknown fingerprint", "GET", unknownFP, nil, nil},
		{"user of another tenancy", "GET", otherUser, nil, nil},
		{"date skewed", "GET", cu.creds, nil, func(r *http.Request) {
			r.Header.Set("Date", time.Now().Add(-6*time.Minute).UTC().Format(http.TimeFormat))
		}},
		{"path changed", "GET", cu.creds, nil, func(r *http.Request) { r.URL.RawQuery = "x=1" }},
		{"host changed", "GET", cu.creds, nil, func(r *http.Request) { r.Host = "kms.us-phoenix-1.oraclecloud.com" }},
		{"body changed", "POST", cu.creds, nil, func(r *http.Request) {
			b := bytes.Replace(encBody, []byte("aGk="), []byte("aGl="), 1)
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
		}},
		{"body hash not signed", "POST", cu.creds,
			common.RequestSigner(provider(cu.creds), []string{"date", "(request-target)", "host"}, []string{"content-length", "content-type"}), nil},
		{"host not signed", "GET", cu.creds, common.RequestSigner(provider(cu.creds), []string{"date", "(request-target)"}, nil), nil},
		{"algorithm", "GET", cu.creds, nil, func(r *http.Request) {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), `algorithm="rsa-sha256"`, `algorithm="hmac-sha256"`, 1))
		}},
		{"session token key id", "GET", cu.creds, nil, func(r *http.Request) {
			h := r.Header.Get("Authorization")
			i := strings.Index(h, `keyId="`)
			j := strings.Index(h[i+7:], `"`)
			r.Header.Set("Authorization", h[:i+7]+"ST$eyJhbGciOiJub25lIn0.e30."+h[i+7+j:])
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u, b := getURL, []byte(nil)
			if tc.method == "POST" {
				u, b = encURL, encBody
			}
			resp := signed(t, tc.creds, tc.method, u, b, tc.signer, tc.mod)
			if got := body(t, resp); resp.StatusCode != 401 || got != want401 {
				t.Fatalf("%d %s", resp.StatusCode, got)
			}
			if resp.Header.Get("opc-request-id") == "" {
				t.Fatal("no opc-request-id")
			}
		})
	}

	// Through the SDK: an unknown key is a ServiceError 401 NotAuthenticated.
	cl := clientsFor(t, unknownFP)
	_, err := cl.vc.GetVault(context.Background(), keymanagement.GetVaultRequest{VaultId: cu.vault.Id})
	wantError(t, err, 401, "NotAuthenticated")

	// The emulator's clock decides the window.
	emu.AdvanceClock(10 * time.Minute)
	resp := signed(t, cu.creds, "GET", getURL, nil, nil, nil)
	emu.AdvanceClock(-10 * time.Minute)
	if resp.StatusCode != 401 {
		t.Fatalf("skewed clock: %d", resp.StatusCode)
	}
}

func TestParseAuthorization(t *testing.T) {
	good := `Signature version="1",headers="date (request-target) host",keyId="t/u/f",algorithm="rsa-sha256",signature="AAAA"`
	p, err := parseAuthorization(good)
	if err != nil || p.KeyID != "t/u/f" || len(p.Headers) != 3 || p.Headers[1] != "(request-target)" {
		t.Fatal(p, err)
	}
	reordered := `Signature signature="AAAA", keyId="t/u/f", algorithm="rsa-sha256", headers="Date Host"`
	if p, err := parseAuthorization(reordered); err != nil || p.Headers[0] != "date" {
		t.Fatal(p, err)
	}
	for _, bad := range []string{
		"", "Bearer x", `Signature keyId="a"`,
		`Signature version="1",headers="date",keyId="t/u/f",algorithm="rsa-sha256",signature="AAAA",keyId="x"`,
		`Signature headers="date",keyId="t/u/f",algorithm="rsa-sha512",signature="AAAA"`,
		`Signature headers="date",keyId="t/u/f",algorithm="rsa-sha256",signature="!!"`,
		`Signature headers="date",keyId="t/u/f",algorithm="rsa-sha256",signature="AAAA`,
		`Signature headers=date,keyId="t/u/f",algorithm="rsa-sha256",signature="AAAA"`,
		`Signature headers="date" keyId="t/u/f"`,
		`Signature version="2",headers="date",keyId="t/u/f",algorithm="rsa-sha256",signature="AAAA"`,
		"Signature " + strings.Repeat("x", maxAuthorization),
	} {
		if _, err := parseAuthorization(bad); err == nil {
			t.Errorf("accepted %q", truncate(bad, 80))
		}
	}
	if _, _, _, ok := splitKeyID("a/b"); ok {
		t.Fatal("two-part key id accepted")
	}
}
