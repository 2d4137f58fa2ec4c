package gcponboard_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/emulator/gcpcloud"
	"github.com/ekm-dev/ekm/internal/gcponboard"
)

var emu *gcpcloud.Emulator

func TestMain(m *testing.M) {
	base := time.Now().Truncate(time.Second)
	var err error
	emu, err = gcpcloud.New(gcpcloud.Options{Now: func() time.Time { return base }})
	if err != nil {
		panic(err)
	}
	if err := emu.Start(); err != nil {
		panic(err)
	}
	code := m.Run()
	emu.Close()
	os.Exit(code)
}

func config(t *testing.T) gcponboard.Config {
	t.Helper()
	p, err := emu.CreateProject()
	if err != nil {
		t.Fatal(err)
	}
	v := emu.Vendor()
	return gcponboard.Config{HTTP: emu.HTTPClient(), Token: p.AdminToken, ProjectID: p.ID, ProjectNumber: p.Number,
		PoolID: "ekm-pool", ProviderID: "ekm-provider", Issuer: "https://accounts.google.com", Subject: v.UniqueID,
		Audience: "org-0123456789abcdefghjkmnpqrs", Location: "us-east1", KeyRing: "ekm", Key: "kek"}
}

// exchange runs the STS exchange with a Google-signed ID token of the
// vendor's service account, then encrypts with the federated token.
func exchange(t *testing.T, cfg gcponboard.Config, res gcponboard.Result) (int, string) {
	t.Helper()
	idTok, err := emu.GoogleIDToken(emu.Vendor().ServiceAccountEmail, cfg.Audience, false)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := emu.HTTPClient().PostForm("https://sts.googleapis.com/v1/token", url.Values{
		"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "audience": {res.STSAudience},
		"scope": {"https://www.googleapis.com/auth/cloud-platform"}, "requested_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
		"subject_token": {idTok}, "subject_token_type": {"urn:ietf:params:oauth:token-type:jwt"}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	if resp.StatusCode != 200 {
		t.Fatalf("sts: %d %v", resp.StatusCode, m)
	}
	req, _ := http.NewRequest("POST", gcponboard.KMSBase+res.KeyName+":encrypt", strings.NewReader(`{"plaintext":"aGVsbG8="}`))
	req.Header.Set("Authorization", "Bearer "+m["access_token"].(string))
	resp2, err := emu.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	var out map[string]any
	json.NewDecoder(resp2.Body).Decode(&out)
	name, _ := out["name"].(string)
	return resp2.StatusCode, name
}

func TestRunAllSteps(t *testing.T) {
	cfg := config(t)
	res, err := gcponboard.Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := "//iam.googleapis.com/projects/" + cfg.ProjectNumber + "/locations/global/workloadIdentityPools/ekm-pool/providers/ekm-provider"
	if res.STSAudience != want || res.KeyName != "projects/"+cfg.ProjectID+"/locations/us-east1/keyRings/ekm/cryptoKeys/kek" ||
		res.Member != "principal://iam.googleapis.com/projects/"+cfg.ProjectNumber+"/locations/global/workloadIdentityPools/ekm-pool/subject/"+cfg.Subject {
		t.Fatalf("result: %+v", res)
	}
	if st, name := exchange(t, cfg, res); st != 200 || name != res.KeyName+"/cryptoKeyVersions/1" {
		t.Fatalf("encrypt: %d %q", st, name)
	}
	// Run is repeatable: existing resources count as done, the grant is merged.
	if _, err := gcponboard.Run(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
}

// Each step is skippable: without the grant ekm is denied; granting later
// (the other steps skipped) completes the onboarding.
func TestRunSkippedSteps(t *testing.T) {
	cfg := config(t)
	cfg.SkipGrant = true
	res, err := gcponboard.Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := exchange(t, cfg, res); st != 403 {
		t.Fatalf("without grant: %d", st)
	}
	cfg.SkipGrant, cfg.SkipPool, cfg.SkipKey = false, true, true
	if _, err := gcponboard.Run(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	if st, _ := exchange(t, cfg, res); st != 200 {
		t.Fatalf("after grant: %d", st)
	}
	// Skipping the key step when the key does not exist fails at the grant, with Google's error.
	cfg2 := config(t)
	cfg2.SkipKey = true
	_, err = gcponboard.Run(context.Background(), cfg2)
	var e *gcponboard.Error
	if !errors.As(err, &e) || e.Step != "get key policy" || e.Status != 404 {
		t.Fatalf("missing key: %v", err)
	}
}

func TestRunValidation(t *testing.T) {
	cfg := config(t)
	cfg.Token = ""
	if _, err := gcponboard.Run(context.Background(), cfg); err == nil {
		t.Fatal("no token accepted")
	}
	cfg = config(t)
	cfg.PoolID = "gcp-reserved"
	_, err := gcponboard.Run(context.Background(), cfg)
	var e *gcponboard.Error
	if !errors.As(err, &e) || e.Status != 400 || !strings.Contains(e.Body, "INVALID_ARGUMENT") {
		t.Fatalf("reserved pool id: %v", err)
	}
}

// The exported bodies are valid JSON with the placeholders the docs print.
func TestBodies(t *testing.T) {
	for name, b := range map[string]string{
		"pool":     gcponboard.PoolBody("ekm"),
		"provider": gcponboard.ProviderBody("<ISSUER>", "<ORG_ID>", "<SUBJECT>"),
		"keyring":  gcponboard.KeyRingBody(),
		"key":      gcponboard.CryptoKeyBody(),
		"policy":   gcponboard.SetIamPolicyBody(nil, "<ETAG>", gcponboard.Member("<PROJECT_NUMBER>", "<POOL_ID>", "<SUBJECT>"), gcponboard.Roles(false)),
	} {
		if !json.Valid([]byte(b)) {
			t.Fatalf("%s: invalid JSON %s", name, b)
		}
	}
	if got := gcponboard.ProviderBody("<ISSUER>", "<ORG_ID>", "<SUBJECT>"); got !=
		`{"attributeCondition":"assertion.sub == \"<SUBJECT>\"","attributeMapping":{"google.subject":"assertion.sub"},"displayName":"ekm","oidc":{"allowedAudiences":["<ORG_ID>"],"issuerUri":"<ISSUER>"}}` {
		t.Fatalf("provider body: %s", got)
	}
	bs := gcponboard.AddMember([]gcponboard.Binding{{Role: gcponboard.RoleViewer, Members: []string{"user:a@b.c"}}}, "principal://x", gcponboard.Roles(false))
	if len(bs) != 2 || len(bs[0].Members) != 2 || bs[1].Role != gcponboard.RoleEncrypterDecrypter {
		t.Fatalf("merge: %+v", bs)
	}
}
