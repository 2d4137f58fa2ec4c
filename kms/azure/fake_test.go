package azure

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/internal/dialoverride"
)

// fakeAzure is a minimal, recorded-shape stand-in for Entra's token endpoint
// and one Key Vault, served over TLS under the production host names via a
// dial override. It exists to replay exact error bodies from the reference;
// protocol fidelity is the job of the emulator in emulator/azurecloud.
type fakeAzure struct {
	t       *testing.T
	srv     *httptest.Server
	client  *http.Client
	tenant  string // tenant that owns the vault
	clientS string // accepted client secret

	mu       sync.Mutex
	versions []fakeVersion // key versions, last is current
	enabled  bool
	kty      string
	keyOps   []string
	expires  int64

	// entraFault, if set, answers every token (and discovery) request.
	entraFault func(w http.ResponseWriter, r *http.Request) bool
	// kvFault, if set and returning true, answers an authorised KV request.
	kvFault func(w http.ResponseWriter, r *http.Request) bool

	kvAttempts   atomic.Int32 // authorised Key Vault requests
	tokenCalls   atomic.Int32
	lastKVReqID  atomic.Value // string
	attemptTimes chan time.Time
}

type fakeVersion struct {
	id  string
	key *rsa.PrivateKey
}

const (
	fakeTenant   = "11111111-2222-3333-4444-555555555555"
	fakeClientID = "99999999-8888-7777-6666-555555555555"
	fakeOrg      = "org-0123456789abcdefghjkmnpqrs"
	fakeVault    = "https://ekmtest.vault.azure.net/"
	fakeKey      = fakeOrg + "--kek"
)

var (
	rsaOnce sync.Once
	rsaKeys []*rsa.PrivateKey
)

// testRSAKey hands out pre-generated 2048-bit keys (generation is slow
// under -race).
func testRSAKey(i int) *rsa.PrivateKey {
	rsaOnce.Do(func() {
		for range 3 {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			rsaKeys = append(rsaKeys, k)
		}
	})
	return rsaKeys[i%len(rsaKeys)]
}

func newFakeAzure(t *testing.T) *fakeAzure {
	t.Helper()
	f := &fakeAzure{t: t, tenant: fakeTenant, clientS: "s3cret", enabled: true, kty: "RSA",
		keyOps: []string{"encrypt", "decrypt", "wrapKey", "unwrapKey"}, attemptTimes: make(chan time.Time, 64)}
	f.versions = []fakeVersion{{id: randVersion(), key: testRSAKey(0)}}
	caPEM, cert := testPKI(t, "login.microsoftonline.com", "*.vault.azure.net", "login.chinacloudapi.cn", "*.vault.azure.cn")
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	f.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	c, err := dialoverride.NewClientFromPEM(f.srv.Listener.Addr().String(), caPEM)
	if err != nil {
		t.Fatal(err)
	}
	f.client = c
	return f
}

func randVersion() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (f *fakeAzure) driver(t *testing.T, mod func(*Config)) *Driver {
	t.Helper()
	cfg := Config{ClientID: fakeClientID, ClientSecret: f.clientS, HTTPClient: f.client,
		Retry: RetryConfig{MaxRetries: 2, RetryDelay: time.Millisecond, MaxRetryDelay: 50 * time.Millisecond, TryTimeout: 5 * time.Second}}
	if mod != nil {
		mod(&cfg)
	}
	d, err := NewDriver(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (f *fakeAzure) provider(t *testing.T, d *Driver, tenant string) *Provider {
	t.Helper()
	p, err := d.open(fakeOrg, map[string]string{ParamTenantID: tenant, ParamVaultURI: fakeVault, ParamKeyName: fakeKey})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (f *fakeAzure) rotate() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.versions = append(f.versions, fakeVersion{id: randVersion(), key: testRSAKey(len(f.versions))})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeRaw(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

func (f *fakeAzure) serve(w http.ResponseWriter, r *http.Request) {
	host := strings.ToLower(r.Host)
	switch {
	case strings.HasPrefix(host, "login."):
		f.serveEntra(w, r)
	case strings.HasSuffix(host, ".vault.azure.net"):
		f.serveKV(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (f *fakeAzure) serveEntra(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) < 2 {
		http.NotFound(w, r)
		return
	}
	tenant := parts[0]
	base := "https://" + r.Host + "/" + tenant
	if f.entraFault != nil && f.entraFault(w, r) {
		return
	}
	switch {
	case strings.HasSuffix(r.URL.Path, "/v2.0/.well-known/openid-configuration"):
		writeJSON(w, 200, map[string]any{
			"token_endpoint":         base + "/oauth2/v2.0/token",
			"authorization_endpoint": base + "/oauth2/v2.0/authorize",
			"issuer":                 base + "/v2.0",
		})
	case strings.HasSuffix(r.URL.Path, "/oauth2/v2.0/token"):
		f.tokenCalls.Add(1)
		_ = r.ParseForm()
		if r.PostForm.Get("client_secret") != f.clientS {
			writeRaw(w, 401, `{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.","error_codes":[7000215]}`)
			return
		}
		writeJSON(w, 200, map[string]any{"token_type": "Bearer", "expires_in": 3600, "ext_expires_in": 3600, "access_token": "tok-" + tenant})
	default:
		http.NotFound(w, r)
	}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func (f *fakeAzure) kid(v string) string {
	return "https://ekmtest.vault.azure.net/keys/" + fakeKey + "/" + v
}

func (f *fakeAzure) serveKV(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") == "" {
		w.Header().Set("WWW-Authenticate", `Bearer authorization="https://login.microsoftonline.com/`+f.tenant+`", resource="https://vault.azure.net"`)
		writeRaw(w, 401, `{"error":{"code":"Unauthorized","message":"Request is missing a Bearer or PoP token."}}`)
		return
	}
	f.kvAttempts.Add(1)
	f.lastKVReqID.Store(r.Header.Get("x-ms-client-request-id"))
	select {
	case f.attemptTimes <- time.Now():
	default:
	}
	if f.kvFault != nil && f.kvFault(w, r) {
		return
	}
	// /keys/{name}/[{version}/][op]
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) < 2 || parts[0] != "keys" || !strings.EqualFold(parts[1], fakeKey) {
		writeRaw(w, 404, `{"error":{"code":"KeyNotFound","message":"A key with (name/id) x was not found in this key vault."}}`)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	ver := f.versions[len(f.versions)-1]
	rest := parts[2:]
	if len(rest) > 0 && len(rest[0]) == 32 {
		found := false
		for _, v := range f.versions {
			if v.id == rest[0] {
				ver, found = v, true
			}
		}
		if !found {
			writeRaw(w, 404, `{"error":{"code":"KeyNotFound","message":"A key with (name/id) `+fakeKey+"/"+rest[0]+` was not found in this key vault."}}`)
			return
		}
		rest = rest[1:]
	}
	op := ""
	if len(rest) > 0 {
		op = rest[0]
	}
	switch op {
	case "":
		attrs := map[string]any{"enabled": f.enabled, "created": 1700000000, "updated": 1700000000}
		if f.expires != 0 {
			attrs["exp"] = f.expires
		}
		writeJSON(w, 200, map[string]any{
			"key":        map[string]any{"kid": f.kid(ver.id), "kty": f.kty, "key_ops": f.keyOps, "n": b64(ver.key.N.Bytes()), "e": "AQAB"},
			"attributes": attrs,
		})
	case "encrypt", "decrypt":
		var body struct {
			Alg   string `json:"alg"`
			Value string `json:"value"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		in, err := base64.RawURLEncoding.DecodeString(body.Value)
		if err != nil || body.Alg != "RSA-OAEP-256" {
			writeRaw(w, 400, `{"error":{"code":"BadParameter","message":"bad input"}}`)
			return
		}
		var out []byte
		if op == "encrypt" {
			out, err = rsa.EncryptOAEP(sha256.New(), rand.Reader, &ver.key.PublicKey, in, nil)
		} else {
			out, err = rsa.DecryptOAEP(sha256.New(), nil, ver.key, in, nil)
		}
		if err != nil {
			writeRaw(w, 400, `{"error":{"code":"BadParameter","message":"Decryption failed."}}`)
			return
		}
		writeJSON(w, 200, map[string]any{"kid": f.kid(ver.id), "value": b64(out)})
	default:
		http.NotFound(w, r)
	}
}

// testPKI makes a CA and a leaf for the given DNS names.
func testPKI(t *testing.T, names ...string) ([]byte, tls.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	return caPEM, tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: leafKey}
}

var _ = fmt.Sprintf
