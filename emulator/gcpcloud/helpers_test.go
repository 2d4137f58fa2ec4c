package gcpcloud

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/auth/credentials/externalaccount"
	"cloud.google.com/go/auth/httptransport"
	kms "cloud.google.com/go/kms/apiv1"
	"google.golang.org/api/option"

	"github.com/ekm-dev/ekm/internal/gcponboard"
)

// One emulator per package run, on a frozen clock that tests move.
var (
	emu        *Emulator
	baseTime   = time.Now().Truncate(time.Second)
	issuerKey  *rsa.PrivateKey
	otherKey   *rsa.PrivateKey
	issuerSrv  *httptest.Server // an external issuer STS fetches over https
	testIssuer = "https://issuer.ekm.test"
)

const (
	issuerKid = "test-key-1"
	ekmSub    = "ekm-subject-1"
)

func TestMain(m *testing.M) {
	for _, v := range []string{"GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_QUOTA_PROJECT", "GOOGLE_AUTH_TRUST_BOUNDARY_ENABLED",
		"GOOGLE_API_USE_CLIENT_CERTIFICATE", "GOOGLE_CLOUD_UNIVERSE_DOMAIN", "GCE_METADATA_HOST"} {
		os.Unsetenv(v)
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var err error
	if issuerKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		panic(err)
	}
	if otherKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		panic(err)
	}
	jwks, _ := json.Marshal(jwkSet{Keys: []jwk{rsaJWK(&issuerKey.PublicKey, issuerKid)}})
	mux := http.NewServeMux()
	issuerSrv = httptest.NewTLSServer(mux)
	defer issuerSrv.Close()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"issuer": issuerSrv.URL, "jwks_uri": issuerSrv.URL + "/jwks"})
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, r *http.Request) { w.Write(jwks) })

	emu, err = New(Options{Now: func() time.Time { return baseTime }, IssuerHTTPClient: issuerSrv.Client()})
	if err != nil {
		panic(err)
	}
	if err := emu.Start(); err != nil {
		panic(err)
	}
	defer emu.Close()
	if err := emu.RegisterIssuer(testIssuer, jwks); err != nil {
		panic(err)
	}
	return m.Run()
}

// advance moves the clock and moves it back when the test ends.
func advance(t *testing.T, d time.Duration) {
	emu.AdvanceClock(d)
	t.Cleanup(func() { emu.AdvanceClock(-d) })
}

type customer struct {
	proj Project
	res  gcponboard.Result
	cfg  gcponboard.Config
}

// newCustomer creates a project and runs the onboarding (pool, provider,
// key, grant) for ekm's test issuer and subject.
func newCustomer(t *testing.T, mod func(*gcponboard.Config)) *customer {
	t.Helper()
	p, err := emu.CreateProject()
	if err != nil {
		t.Fatal(err)
	}
	cfg := gcponboard.Config{HTTP: emu.HTTPClient(), Token: p.AdminToken, ProjectID: p.ID, ProjectNumber: p.Number,
		PoolID: "ekm-pool", ProviderID: "ekm-oidc", Issuer: testIssuer, Subject: ekmSub, Audience: "org-" + p.ID,
		KeyRing: "ekm", Key: "kek"}
	if mod != nil {
		mod(&cfg)
	}
	res, err := gcponboard.Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &customer{proj: p, res: res, cfg: cfg}
}

// subjectToken signs an ID token of the test issuer for c; set overrides
// claims (a nil value deletes one).
func subjectToken(t *testing.T, c *customer, set map[string]any) string {
	t.Helper()
	now := emu.Now()
	claims := map[string]any{"iss": testIssuer, "sub": ekmSub, "aud": c.cfg.Audience, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	key, kid := issuerKey, issuerKid
	for k, v := range set {
		switch k {
		case "_key":
			key = v.(*rsa.PrivateKey)
		case "_kid":
			kid = v.(string)
		default:
			if v == nil {
				delete(claims, k)
			} else {
				claims[k] = v
			}
		}
	}
	tok, err := signRS256(key, kid, claims)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// stsRaw posts a token exchange and returns the status and body.
func stsRaw(t *testing.T, audience, subject string, mod func(url.Values)) (int, map[string]any) {
	t.Helper()
	f := url.Values{"grant_type": {grantTokenExchange}, "audience": {audience}, "scope": {scopeCloudPlatform},
		"requested_token_type": {tokenTypeAccessToken}, "subject_token": {subject}, "subject_token_type": {tokenTypeJWT}}
	if mod != nil {
		mod(f)
	}
	resp, err := emu.HTTPClient().PostForm("https://sts.googleapis.com/v1/token", f)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

// fedToken exchanges a subject token for a federated access token.
func fedToken(t *testing.T, c *customer) string {
	t.Helper()
	st, m := stsRaw(t, c.res.STSAudience, subjectToken(t, c, nil), nil)
	if st != 200 {
		t.Fatalf("sts: %d %v", st, m)
	}
	return m["access_token"].(string)
}

// api calls a Google JSON API with a bearer token; body may be a string
// or a value to marshal.
func api(t *testing.T, method, u, token string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, u, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := emu.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

func kmsURL(name string) string { return "https://cloudkms.googleapis.com/v1/" + name }

// errOf returns error.status and error.message of a Google error body.
func errOf(m map[string]any) (string, string) {
	e, _ := m["error"].(map[string]any)
	s, _ := e["status"].(string)
	msg, _ := e["message"].(string)
	return s, msg
}

func wantErr(t *testing.T, st int, m map[string]any, wantStatus int, wantCode, wantMsg string) {
	t.Helper()
	code, msg := errOf(m)
	if st != wantStatus || code != wantCode || !strings.Contains(msg, wantMsg) {
		t.Fatalf("got %d %s %q, want %d %s containing %q", st, code, msg, wantStatus, wantCode, wantMsg)
	}
}

type supplier func() string

func (s supplier) SubjectToken(context.Context, *externalaccount.RequestOptions) (string, error) {
	return s(), nil
}

// gapicClient is the KMS gapic REST client authenticated by workload
// identity federation (cloud.google.com/go/auth externalaccount) for c,
// through the emulator's HTTP client only.
func gapicClient(t *testing.T, c *customer, subj func() string) *kms.KeyManagementClient {
	t.Helper()
	if subj == nil {
		subj = func() string { return subjectToken(t, c, nil) }
	}
	creds, err := externalaccount.NewCredentials(&externalaccount.Options{
		Audience: c.res.STSAudience, SubjectTokenType: tokenTypeJWT, Scopes: []string{scopeCloudPlatform},
		SubjectTokenProvider: supplier(subj), Client: emu.HTTPClient(),
	})
	if err != nil {
		t.Fatal(err)
	}
	hc, err := httptransport.NewClient(&httptransport.Options{Credentials: creds, BaseRoundTripper: emu.HTTPClient().Transport})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kms.NewKeyManagementRESTClient(context.Background(), option.WithHTTPClient(hc))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(fmt.Sprint(err))
	}
	return v
}
