package ocicloud

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// FuzzParseAuthorization: the Authorization parser never panics, and what
// it accepts has a key id, a signature, rsa-sha256 and lower-case headers;
// checking such a signature never panics either.
func FuzzParseAuthorization(f *testing.F) {
	f.Add(`Signature version="1",headers="date (request-target) host",keyId="ocid1.tenancy.oc1..a/ocid1.user.oc1..b/aa:bb",algorithm="rsa-sha256",signature="AAAA"`)
	f.Add(`Signature headers="date (request-target) host content-length content-type x-content-sha256",keyId="t/u/f",algorithm="rsa-sha256",signature="YWJj"`)
	f.Add(`Signature keyId="ST$a.b.c",algorithm="rsa-sha256",headers="",signature="AA=="`)
	f.Fuzz(func(t *testing.T, h string) {
		p, err := parseAuthorization(h)
		if err != nil {
			return
		}
		if p.KeyID == "" || len(p.Signature) == 0 || p.Algorithm != "rsa-sha256" {
			t.Fatalf("accepted incomplete %q", h)
		}
		for _, x := range p.Headers {
			if x != strings.ToLower(x) || x == "" {
				t.Fatalf("header %q", x)
			}
		}
		r := httptest.NewRequest("POST", "https://kms.us-ashburn-1.oraclecloud.com/20180608/vaults", strings.NewReader("{}"))
		r.Header.Set("Date", time.Now().UTC().Format(http.TimeFormat))
		_ = checkSigned(r, []byte("{}"), p, time.Now())
		_, _ = signingString(r, p.Headers)
	})
}

// FuzzParseStatement: the policy parser never panics; an accepted
// statement evaluates without panicking and is of a known kind.
func FuzzParseStatement(f *testing.F) {
	f.Add("Admit group ekmkms of tenancy ekm to use keys in compartment apps where target.key.id = 'ocid1.key.oc1.iad.x.aaaa'")
	f.Add("Define tenancy ekm as ocid1.tenancy.oc1..aaaaaaaavendor")
	f.Add("Endorse group ekm-kms to use keys in any-tenancy")
	f.Add("Allow group Administrators to manage all-resources in tenancy")
	f.Add("allow any-user to read vaults in compartment a:b where any {target.vault.id = 'v', all {request.operation != 'X'}}")
	f.Fuzz(func(t *testing.T, s string) {
		st, err := parseStatement(s)
		if err != nil {
			return
		}
		switch st.kind {
		case "allow", "define", "endorse", "admit":
		default:
			t.Fatalf("kind %q", st.kind)
		}
		if st.kind != "define" && (st.verb < verbInspect || st.verb > verbManage) {
			t.Fatalf("verb %d", st.verb)
		}
		if st.cond != nil {
			st.cond.eval(map[string]string{"target.key.id": "k", "target.vault.id": "v"})
		}
	})
}
