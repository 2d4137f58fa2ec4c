package gcp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/e2e/e2ekit"
	"github.com/ekm-dev/ekm/ekmtest"
	"github.com/ekm-dev/ekm/internal/gcponboard"
)

// restBlock is one ```http block of docs/gcp.md: a request as the
// customer sends it, with $VARIABLES.
type restBlock struct {
	tag     string // "" (the onboarding path), "jwks", "register"
	method  string
	url     string
	headers map[string]string
	body    string
}

var fenceRE = regexp.MustCompile("(?s)```http( [a-z]+)?\n(.*?)\n```")

func docBlocks(t *testing.T) []restBlock {
	t.Helper()
	b, err := os.ReadFile("../../docs/gcp.md")
	e2ekit.Check(t, err)
	var out []restBlock
	for _, m := range fenceRE.FindAllStringSubmatch(string(b), -1) {
		rb := restBlock{tag: strings.TrimSpace(m[1]), headers: map[string]string{}}
		sc := bufio.NewScanner(strings.NewReader(m[2]))
		sc.Buffer(make([]byte, 1<<16), 1<<20)
		sc.Scan()
		first := strings.Fields(sc.Text())
		if len(first) != 2 {
			t.Fatalf("bad request line %q", sc.Text())
		}
		rb.method, rb.url = first[0], first[1]
		for sc.Scan() && sc.Text() != "" {
			k, v, ok := strings.Cut(sc.Text(), ": ")
			if !ok {
				t.Fatalf("bad header %q", sc.Text())
			}
			rb.headers[k] = v
		}
		var body []string
		for sc.Scan() {
			body = append(body, sc.Text())
		}
		rb.body = strings.Join(body, "\n")
		out = append(out, rb)
	}
	return out
}

// expand replaces $NAME by vars[NAME], longest names first.
func expand(s string, vars map[string]string) string {
	names := make([]string, 0, len(vars))
	for k := range vars {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool { return len(names[i]) > len(names[j]) })
	for _, k := range names {
		s = strings.ReplaceAll(s, "$"+k, vars[k])
	}
	return s
}

// The docs' REST bodies are exactly gcponboard's (which ekm dev and the
// tests run), placeholders included.
func TestDocsBodiesMatchOnboarding(t *testing.T) {
	want := []string{gcponboard.PoolBody("ekm"), gcponboard.ProviderBody("$EKM_ISSUER", "$ORG_ID", "$EKM_SUBJECT"),
		gcponboard.KeyRingBody(), gcponboard.CryptoKeyBody(), "",
		gcponboard.SetIamPolicyBody(nil, "$ETAG", gcponboard.Member("$PROJECT_NUMBER", "$POOL_ID", "$EKM_SUBJECT"), gcponboard.Roles(false))}
	var got []string
	for _, b := range docBlocks(t) {
		if b.tag == "" {
			got = append(got, b.body)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("docs/gcp.md has %d onboarding requests, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("request %d body:\n docs: %s\n want: %s", i+1, got[i], want[i])
		}
	}
}

// TestDocs runs docs/gcp.md's REST requests against the emulator as
// written (variables substituted as the table says), then its
// registration request against ekm: for each identity, and with ekm's
// JWKS uploaded (the jwks block) while its issuer is unreachable.
func TestDocs(t *testing.T) {
	for _, tc := range []struct {
		name, identity string
		uploadJWKS     bool
	}{{"google", ekmtest.GCPGoogle, false}, {"issuer fetched", ekmtest.GCPIssuer, false}, {"issuer uploaded", ekmtest.GCPIssuer, true}} {
		t.Run(tc.name, func(t *testing.T) {
			env := start(t, tc.identity, ekmtest.Options{ProbeInterval: time.Hour})
			p, err := emu.CreateProject()
			e2ekit.Check(t, err)
			vars := map[string]string{"PROJECT_ID": p.ID, "PROJECT_NUMBER": p.Number, "POOL_ID": "ekm-pool", "PROVIDER_ID": "ekm-oidc",
				"LOCATION": "us-east1", "KEY_RING": "ekm", "KEY": "kek", "ORG_ID": env.OrgID, "TOKEN": p.AdminToken,
				"EKM_URL": env.URL, "EKM_ADMIN_KEY": env.AdminKey}
			// ekm's identity, where the docs say to find it.
			var types struct {
				Data []struct {
					Type     string            `json:"type"`
					Identity map[string]string `json:"identity"`
				} `json:"data"`
			}
			call(t, env.HTTPClient(), "GET", env.URL+"/v1/organization/external_key_types", map[string]string{"Authorization": "Bearer " + env.AdminKey}, "", &types)
			for _, kt := range types.Data {
				if kt.Type == "gcp" {
					vars["EKM_ISSUER"], vars["EKM_SUBJECT"] = kt.Identity["issuer"], kt.Identity["subject"]
				}
			}
			if vars["EKM_ISSUER"] == "" || vars["EKM_SUBJECT"] == "" {
				t.Fatalf("external_key_types: %+v", types)
			}
			for _, b := range docBlocks(t) {
				switch {
				case b.tag == "jwks" && !tc.uploadJWKS:
					continue
				case b.tag == "jwks":
					// The operator's JWKS (`ekm issuer jwks` prints the same),
					// then the issuer goes out of Google's reach.
					resp, err := env.HTTPClient().Get(env.URL + "/.well-known/jwks.json")
					e2ekit.Check(t, err)
					jwks, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					s, _ := json.Marshal(string(bytes.TrimSpace(jwks)))
					vars["EKM_JWKS_AS_JSON_STRING"] = string(s[1 : len(s)-1])
					env.SetGCPIssuerReachable(t, false)
				}
				if strings.Contains(b.body, "$ETAG") && vars["ETAG"] == "" {
					t.Fatal("setIamPolicy before getIamPolicy gave an etag")
				}
				hc := emu.HTTPClient()
				if b.tag == "register" {
					hc = env.HTTPClient()
				}
				headers := map[string]string{}
				for k, v := range b.headers {
					headers[k] = expand(v, vars)
				}
				var out map[string]any
				call(t, hc, b.method, expand(b.url, vars), headers, expand(b.body, vars), &out)
				if etag, ok := out["etag"].(string); ok && strings.HasSuffix(b.url, ":getIamPolicy") {
					vars["ETAG"] = etag
				}
				if b.tag == "register" {
					if out["object"] != "organization.external_key" || out["type"] != "gcp" {
						t.Fatalf("registration answered %v", out)
					}
					admin := env.Admin()
					v, err := admin.Admin.Organization.ExternalKeys.Validate(context.Background(), out["id"].(string))
					if err != nil || v.Status != "valid" {
						t.Fatalf("validate: %v %v", v, err)
					}
				}
			}
		})
	}
}

func call(t *testing.T, hc *http.Client, method, url string, headers map[string]string, body string, out any) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	e2ekit.Check(t, err)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	e2ekit.Check(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("%s %s: %d %s", method, url, resp.StatusCode, b)
	}
	if out != nil && len(b) > 0 {
		e2ekit.Check(t, json.Unmarshal(b, out))
	}
}
