package gcpcloud

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"hash/crc32"
	"net/http"
	"strings"
	"testing"

	"cloud.google.com/go/auth"
	"cloud.google.com/go/auth/credentials"
	"cloud.google.com/go/auth/httptransport"
	"cloud.google.com/go/kms/apiv1/kmspb"
	"github.com/googleapis/gax-go/v2/apierror"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"golang.org/x/oauth2/google/externalaccount"
	cloudkms "google.golang.org/api/cloudkms/v1"
	"google.golang.org/api/iamcredentials/v1"
	"google.golang.org/api/option"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/ekm-dev/ekm/internal/gcponboard"
)

func crc(b []byte) int64 { return int64(crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli))) }

// The gapic REST client, authenticated by workload identity federation,
// encrypts and decrypts with AAD and CRC32C on both sides.
func TestGapicEncryptDecryptWithAADAndCRC(t *testing.T) {
	c := newCustomer(t, nil)
	cl := gapicClient(t, c, nil)
	ctx := context.Background()
	pt, aad := []byte("project key bytes"), []byte("org-1/proj-1")
	enc, err := cl.Encrypt(ctx, &kmspb.EncryptRequest{Name: c.res.KeyName, Plaintext: pt, AdditionalAuthenticatedData: aad,
		PlaintextCrc32C: wrapperspb.Int64(crc(pt)), AdditionalAuthenticatedDataCrc32C: wrapperspb.Int64(crc(aad))})
	if err != nil {
		t.Fatal(err)
	}
	if !enc.VerifiedPlaintextCrc32C || !enc.VerifiedAdditionalAuthenticatedDataCrc32C {
		t.Fatalf("verified flags false: %v", enc)
	}
	if enc.CiphertextCrc32C.GetValue() != crc(enc.Ciphertext) {
		t.Fatal("ciphertext CRC32C does not match")
	}
	if enc.Name != c.res.KeyName+"/cryptoKeyVersions/1" || enc.ProtectionLevel != kmspb.ProtectionLevel_SOFTWARE {
		t.Fatalf("name %q protection %v", enc.Name, enc.ProtectionLevel)
	}
	dec, err := cl.Decrypt(ctx, &kmspb.DecryptRequest{Name: c.res.KeyName, Ciphertext: enc.Ciphertext, AdditionalAuthenticatedData: aad,
		CiphertextCrc32C: wrapperspb.Int64(crc(enc.Ciphertext)), AdditionalAuthenticatedDataCrc32C: wrapperspb.Int64(crc(aad))})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dec.Plaintext, pt) || dec.PlaintextCrc32C.GetValue() != crc(pt) || !dec.UsedPrimary {
		t.Fatalf("decrypt: %v", dec)
	}
	// The key, with its primary version, needs roles/cloudkms.viewer (granted by the onboarding).
	k, err := cl.GetCryptoKey(ctx, &kmspb.GetCryptoKeyRequest{Name: c.res.KeyName})
	if err != nil {
		t.Fatal(err)
	}
	if k.Purpose != kmspb.CryptoKey_ENCRYPT_DECRYPT || k.Primary.GetState() != kmspb.CryptoKeyVersion_ENABLED {
		t.Fatalf("key: %v", k)
	}
	// The request log names the federated principal.
	found := false
	for _, r := range emu.Requests() {
		found = found || r.Operation == "kms.decrypt" && r.Principal == "principal:"+strings.TrimPrefix(c.res.Member, "principal:") && r.RequestID != ""
	}
	if !found {
		t.Fatal("request log lacks the decrypt by the federated principal")
	}
}

// x/oauth2's externalaccount with the discovery client: enums as names,
// int64 as strings.
func TestDiscoveryClientWithOAuth2ExternalAccount(t *testing.T) {
	c := newCustomer(t, nil)
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, emu.HTTPClient())
	ts, err := externalaccount.NewTokenSource(ctx, externalaccount.Config{
		Audience: c.res.STSAudience, SubjectTokenType: tokenTypeJWT, Scopes: []string{scopeCloudPlatform},
		SubjectTokenSupplier: oauthSupplier(func() string { return subjectToken(t, c, nil) }),
	})
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &oauth2.Transport{Source: ts, Base: emu.HTTPClient().Transport}}
	svc, err := cloudkms.NewService(ctx, option.WithHTTPClient(hc))
	if err != nil {
		t.Fatal(err)
	}
	keys := svc.Projects.Locations.KeyRings.CryptoKeys
	pt := []byte("hello")
	enc, err := keys.Encrypt(c.res.KeyName, &cloudkms.EncryptRequest{Plaintext: base64.StdEncoding.EncodeToString(pt),
		PlaintextCrc32c: crc(pt)}).Do()
	if err != nil {
		t.Fatal(err)
	}
	ctb, _ := base64.StdEncoding.DecodeString(enc.Ciphertext)
	if !enc.VerifiedPlaintextCrc32c || enc.CiphertextCrc32c != crc(ctb) || enc.ProtectionLevel != "SOFTWARE" {
		t.Fatalf("encrypt: %+v", enc)
	}
	dec, err := keys.Decrypt(c.res.KeyName, &cloudkms.DecryptRequest{Ciphertext: enc.Ciphertext}).Do()
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := base64.StdEncoding.DecodeString(dec.Plaintext); string(got) != "hello" || dec.PlaintextCrc32c != crc(pt) {
		t.Fatalf("decrypt: %+v", dec)
	}
	k, err := keys.Get(c.res.KeyName).Do()
	if err != nil {
		t.Fatal(err)
	}
	if k.Purpose != "ENCRYPT_DECRYPT" || k.Primary.State != "ENABLED" || k.VersionTemplate.Algorithm != "GOOGLE_SYMMETRIC_ENCRYPTION" {
		t.Fatalf("key: %+v", k)
	}
}

type oauthSupplier func() string

func (s oauthSupplier) SubjectToken(context.Context, externalaccount.SupplierOptions) (string, error) {
	return s(), nil
}

// The vendor's service-account key file through ADC (JWT-bearer grant),
// generateIdToken, and that Google-signed token accepted by a provider
// whose issuer is accounts.google.com: way (a), as OpenAI does it.
func TestVendorServiceAccountIDTokenAcceptedByGoogleIssuerProvider(t *testing.T) {
	v := emu.Vendor()
	creds, err := credentials.DetectDefault(&credentials.DetectOptions{CredentialsJSON: v.KeyJSON,
		Scopes: []string{scopeCloudPlatform}, Client: emu.HTTPClient()})
	if err != nil {
		t.Fatal(err)
	}
	hc, err := httptransport.NewClient(&httptransport.Options{Credentials: creds, BaseRoundTripper: emu.HTTPClient().Transport})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ic, err := iamcredentials.NewService(ctx, option.WithHTTPClient(hc))
	if err != nil {
		t.Fatal(err)
	}
	var c *customer
	c = newCustomer(t, func(cfg *gcponboard.Config) {
		cfg.Issuer, cfg.Subject = googleIssuer, v.UniqueID
	})
	idTok := func() string {
		r, err := ic.Projects.ServiceAccounts.GenerateIdToken("projects/-/serviceAccounts/"+v.ServiceAccountEmail,
			&iamcredentials.GenerateIdTokenRequest{Audience: c.cfg.Audience, IncludeEmail: true}).Do()
		if err != nil {
			t.Fatal(err)
		}
		return r.Token
	}
	tok := idTok()
	jt, err := parseJWT(tok)
	if err != nil {
		t.Fatal(err)
	}
	if jt.Claims["iss"] != googleIssuer || jt.Claims["sub"] != v.UniqueID || jt.Claims["azp"] != v.UniqueID ||
		jt.Claims["email"] != v.ServiceAccountEmail || jt.Claims["aud"] != c.cfg.Audience {
		t.Fatalf("claims: %v", jt.Claims)
	}
	cl := gapicClient(t, c, idTok)
	if _, err := cl.Encrypt(ctx, &kmspb.EncryptRequest{Name: c.res.KeyName, Plaintext: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	// x/oauth2/google with the same key file reaches the token endpoint too.
	gctx := context.WithValue(ctx, oauth2.HTTPClient, emu.HTTPClient())
	gc, err := google.CredentialsFromJSON(gctx, v.KeyJSON, scopeCloudPlatform)
	if err != nil {
		t.Fatal(err)
	}
	if tk, err := gc.TokenSource.Token(); err != nil || !strings.HasPrefix(tk.AccessToken, "ya29.") {
		t.Fatalf("x/oauth2 token: %v %v", tk, err)
	}
}

// Permission denied reaches the gapic client as an APIError naming the
// permission, with Google's ErrorInfo reason.
func TestGapicPermissionDenied(t *testing.T) {
	c := newCustomer(t, func(cfg *gcponboard.Config) { cfg.SkipGrant = true })
	cl := gapicClient(t, c, nil)
	_, err := cl.Encrypt(context.Background(), &kmspb.EncryptRequest{Name: c.res.KeyName, Plaintext: []byte("x")})
	var ae *apierror.APIError
	if !errors.As(err, &ae) || ae.HTTPCode() != 403 || ae.Reason() != "IAM_PERMISSION_DENIED" ||
		!strings.Contains(ae.Error(), "Permission 'cloudkms.cryptoKeyVersions.useToEncrypt' denied on resource '"+c.res.KeyName+"' (or it may not exist).") {
		t.Fatalf("got %v", err)
	}
}

// The JWT-bearer grant with a target_audience (what
// cloud.google.com/go/auth/credentials/idtoken does with a key file; its
// 2LO provider takes no HTTP client, so the test drives auth's
// New2LOTokenProvider with the same options plus the emulator's client)
// answers a Google-signed ID token that STS accepts for a provider
// trusting accounts.google.com.
func TestIDTokenFromKeyFileThroughSTS(t *testing.T) {
	v := emu.Vendor()
	c := newCustomer(t, func(cfg *gcponboard.Config) { cfg.Issuer, cfg.Subject = googleIssuer, v.UniqueID })
	var kf struct {
		Email string `json:"client_email"`
		Key   string `json:"private_key"`
		KeyID string `json:"private_key_id"`
		URL   string `json:"token_uri"`
	}
	if err := json.Unmarshal(v.KeyJSON, &kf); err != nil {
		t.Fatal(err)
	}
	tp, err := auth.New2LOTokenProvider(&auth.Options2LO{Email: kf.Email, PrivateKey: []byte(kf.Key), PrivateKeyID: kf.KeyID,
		TokenURL: kf.URL, UseIDToken: true, PrivateClaims: map[string]any{"target_audience": c.cfg.Audience}, Client: emu.HTTPClient()})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tp.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st, m := stsRaw(t, c.res.STSAudience, tok.Value, nil); st != 200 {
		t.Fatalf("sts: %d %v", st, m)
	}
}

// A service account's self-signed JWT (UseSelfSignedJWT) is accepted as
// a bearer token.
func TestSelfSignedJWT(t *testing.T) {
	v := emu.Vendor()
	creds, err := credentials.DetectDefault(&credentials.DetectOptions{CredentialsJSON: v.KeyJSON,
		Scopes: []string{scopeCloudPlatform}, UseSelfSignedJWT: true, Client: emu.HTTPClient()})
	if err != nil {
		t.Fatal(err)
	}
	hc, err := httptransport.NewClient(&httptransport.Options{Credentials: creds, BaseRoundTripper: emu.HTTPClient().Transport})
	if err != nil {
		t.Fatal(err)
	}
	ic, err := iamcredentials.NewService(context.Background(), option.WithHTTPClient(hc))
	if err != nil {
		t.Fatal(err)
	}
	before := emu.Counters()["oauth2.token"]
	if _, err := ic.Projects.ServiceAccounts.GenerateIdToken("projects/-/serviceAccounts/"+v.ServiceAccountEmail,
		&iamcredentials.GenerateIdTokenRequest{Audience: "org-x"}).Do(); err != nil {
		t.Fatal(err)
	}
	if emu.Counters()["oauth2.token"] != before {
		t.Fatal("the self-signed JWT went through the token endpoint")
	}
}
