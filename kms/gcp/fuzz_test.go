package gcp

import (
	"errors"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/api/googleapi"

	"github.com/ekm-dev/ekm/kms"
)

// Seed corpora live in testdata/fuzz/<FuzzName>/.

// The identifier rules, written out independently of params.go so that a
// change there is caught here: nothing accepted may steer a URL path.
var (
	fuzzProject  = regexp.MustCompile(`^([a-z0-9.-]+:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$`)
	fuzzLocation = regexp.MustCompile(`^[a-z][a-z0-9-]*[a-z0-9]$`)
	fuzzKMSID    = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,63}$`)
	fuzzNumber   = regexp.MustCompile(`^[1-9][0-9]{0,18}$`)
	fuzzPool     = regexp.MustCompile(`^[a-z0-9-]{4,32}$`)
	fuzzAudience = regexp.MustCompile(`^[A-Za-z0-9_-]{1,256}$`)
	fuzzSA       = regexp.MustCompile(`^[a-z][a-z0-9-]+@[a-z][a-z0-9-]+\.iam\.gserviceaccount\.com$`)
)

func validCodes() map[string]kms.Class {
	m := map[string]kms.Class{}
	for _, c := range Spec().Codes {
		m[c.Code] = c.Class
	}
	return m
}

// FuzzCheck drives Check with arbitrary registration params: whatever it
// accepts is well-formed, and the URLs and STS audience built from it
// stay on Google's hosts with exactly the expected path.
func FuzzCheck(f *testing.F) {
	d, err := NewDriver(Config{Identity: brokenIdentity{}})
	if err != nil {
		f.Fatal(err)
	}
	codes := validCodes()
	f.Fuzz(func(t *testing.T, aud, project, location, ring, key, number, pool, provider, sa, extraName, extraValue string) {
		p := kms.Params{ParamAudience: aud, ParamKMSProjectID: project, ParamKMSKeyLocation: location, ParamKMSKeyRingName: ring,
			ParamKMSKeyName: key, ParamWorkloadIdentityProjectNumber: number, ParamWorkloadIdentityPoolID: pool, ParamWorkloadIdentityProviderID: provider}
		if sa != "" {
			p[ParamServiceAccountEmail] = sa
		}
		if extraName != "" {
			p[extraName] = extraValue
		}
		out, err := d.Check("org-x", p)
		if err != nil {
			var ke *kms.Error
			if !errors.As(err, &ke) || ke.Class != kms.Invalid || codes[ke.Code] != kms.Invalid || ke.Message == "" {
				t.Fatalf("refusal is not a listed Invalid kms.Error: %#v", err)
			}
			return
		}
		if !fuzzAudience.MatchString(out[ParamAudience]) || !fuzzProject.MatchString(out[ParamKMSProjectID]) ||
			!fuzzLocation.MatchString(out[ParamKMSKeyLocation]) || !fuzzKMSID.MatchString(out[ParamKMSKeyRingName]) ||
			!fuzzKMSID.MatchString(out[ParamKMSKeyName]) || !fuzzNumber.MatchString(out[ParamWorkloadIdentityProjectNumber]) ||
			!fuzzPool.MatchString(out[ParamWorkloadIdentityPoolID]) || !fuzzPool.MatchString(out[ParamWorkloadIdentityProviderID]) ||
			strings.HasPrefix(out[ParamWorkloadIdentityPoolID], "gcp-") || strings.HasPrefix(out[ParamWorkloadIdentityProviderID], "gcp-") {
			t.Fatalf("accepted %q", out)
		}
		if s := out[ParamServiceAccountEmail]; s != "" && !fuzzSA.MatchString(s) {
			t.Fatalf("accepted service account %q", s)
		}
		r, err := checkParams(out)
		if err != nil {
			t.Fatalf("Check's output fails Check: %v", err)
		}
		for _, u := range []string{"https://cloudkms.googleapis.com/v1/" + r.keyName() + ":encrypt",
			"https://iam.googleapis.com/v1/" + strings.TrimPrefix(r.providerName(), "//iam.googleapis.com/")} {
			pu, err := url.Parse(u)
			if err != nil || pu.RawQuery != "" || pu.Fragment != "" || pu.User != nil ||
				(pu.Host != "cloudkms.googleapis.com" && pu.Host != "iam.googleapis.com") || strings.Contains(pu.Path, "/../") || strings.Contains(pu.Path, "/./") ||
				strings.Count(pu.Path, "/") != strings.Count(u, "/")-2 {
				t.Fatalf("params %q build URL %q", out, u)
			}
		}
		if len(strings.Split(r.keyName(), "/")) != 8 || len(strings.Split(r.providerName(), "/")) != 11 {
			t.Fatalf("names %q %q", r.keyName(), r.providerName())
		}
	})
}

// FuzzDiagnose feeds arbitrary STS and Cloud KMS error answers to the
// diagnosis: it never panics, always returns a code listed in the Spec
// with the listed class and a step among the Spec's, and never echoes
// more than a bounded, valid excerpt of the body.
func FuzzDiagnose(f *testing.F) {
	d, err := NewDriver(Config{Identity: brokenIdentity{}})
	if err != nil {
		f.Fatal(err)
	}
	codes := validCodes()
	steps := map[string]bool{"": true, StepFederation: true, StepKey: true, StepGrant: true}
	ref := keyRef{project: "acme-prod", location: "global", ring: "ekm", key: "kek", projectNumber: "123", pool: "ekm-pool", provider: "ekm-oidc", audience: "org-x"}
	key := fedKey{provider: ref.providerName(), audience: "org-x", serviceAccount: "ekm-kms@acme-prod.iam.gserviceaccount.com"}
	f.Fuzz(func(t *testing.T, status int, body string, op uint8) {
		status = 100 + ((status-100)%500+500)%500
		check := func(e *kms.Error) {
			if e == nil {
				t.Fatal("nil diagnosis")
			}
			if class, ok := codes[e.Code]; !ok || class != e.Class {
				t.Fatalf("code %q class %q not listed (Spec: %q)", e.Code, e.Class, class)
			}
			if !steps[e.Step] || e.Message == "" || len(e.Message) > 2048 {
				t.Fatalf("step %q message %q", e.Step, e.Message)
			}
			if utf8.ValidString(body) && len(body) > 400 && strings.Contains(e.Message, body) {
				t.Fatal("the whole body is echoed")
			}
		}
		check(d.stsDiagnosis(key, httpFailure{status: status, body: []byte(body)}))
		check(impersonationDiagnosis(key, httpFailure{status: status, body: []byte(body)}))
		ops := []operation{opEncrypt, opDecrypt, opGet}
		g := diag{ref: ref, name: ref.keyName(), op: ops[int(op)%len(ops)]}
		check(g.diagnose(&googleapi.Error{Code: status, Body: body}))
	})
}

// FuzzVersionOf: a recorded version is accepted only as a decimal
// version of this very key.
func FuzzVersionOf(f *testing.F) {
	const key = "projects/acme-prod/locations/global/keyRings/ekm/cryptoKeys/kek"
	f.Fuzz(func(t *testing.T, name string) {
		v, ok := versionOf(key, name)
		if !ok {
			return
		}
		if name != key+"/cryptoKeyVersions/"+v || !regexp.MustCompile(`^[1-9][0-9]{0,18}$`).MatchString(v) {
			t.Fatalf("accepted %q as version %q", name, v)
		}
	})
}
