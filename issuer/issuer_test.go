package issuer

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func newIssuer(t *testing.T, url string) (*Issuer, string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "issuer.json")
	if created, err := EnsureKeyFile(file, time.Now()); err != nil || !created {
		t.Fatalf("EnsureKeyFile: %v %v", created, err)
	}
	i, err := New(Config{URL: url, KeyFile: file, ReloadInterval: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	return i, file
}

// verify checks tok against the JWKS as a relying party would and returns
// its header kid and claims.
func verify(t *testing.T, tok string, jwks []byte) (string, map[string]any) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", tok)
	}
	dec := func(s string) []byte {
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	var hdr map[string]string
	var claims map[string]any
	if json.Unmarshal(dec(parts[0]), &hdr) != nil || json.Unmarshal(dec(parts[1]), &claims) != nil {
		t.Fatal("bad JWT JSON")
	}
	if hdr["alg"] != "RS256" || hdr["typ"] != "JWT" {
		t.Fatalf("header %v", hdr)
	}
	var set struct{ Keys []JWK }
	if err := json.Unmarshal(jwks, &set); err != nil {
		t.Fatal(err)
	}
	for _, k := range set.Keys {
		if k.Kid != hdr["kid"] {
			continue
		}
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(dec(k.N)), E: int(new(big.Int).SetBytes(dec(k.E)).Int64())}
		sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
		if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], dec(parts[2])); err != nil {
			t.Fatalf("signature: %v", err)
		}
		return hdr["kid"], claims
	}
	t.Fatalf("kid %s not in the JWKS %s", hdr["kid"], jwks)
	return "", nil
}

func TestTokenClaims(t *testing.T) {
	i, file := newIssuer(t, "https://ekm.example.com/")
	if i.URL() != "https://ekm.example.com" {
		t.Fatalf("URL %q", i.URL())
	}
	tok, err := i.IDToken(context.Background(), "org-abc")
	if err != nil {
		t.Fatal(err)
	}
	jwks, _ := i.JWKS()
	_, c := verify(t, tok, jwks)
	iat, exp := c["iat"].(float64), c["exp"].(float64)
	if c["iss"] != "https://ekm.example.com" || c["sub"] != "ekm" || c["aud"] != "org-abc" || exp-iat != DefaultTokenLifetime.Seconds() || c["jti"] == "" {
		t.Fatalf("claims %v", c)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", fi.Mode(), err)
	}
	if strings.Contains(string(jwks), "x5c") || strings.Contains(string(jwks), `"d"`) {
		t.Fatalf("JWKS carries x5c or private parts: %s", jwks)
	}
	if _, err := i.IDToken(context.Background(), ""); err == nil {
		t.Fatal("empty audience signed")
	}
}

// Key rollover without breaking anyone: add (published, not signing),
// activate after the overlap (both published), retire the old key.
func TestRollover(t *testing.T) {
	i, file := newIssuer(t, "https://ekm.example.com")
	ctx := context.Background()
	tok1, _ := i.IDToken(ctx, "org-a")
	jwks1, _ := i.JWKS()
	kid1, _ := verify(t, tok1, jwks1)

	ks, err := ReadKeySet(file)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	next, err := ks.Add(now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ks.Add(now); err == nil {
		t.Fatal("a second next key was added")
	}
	if _, err := ks.Activate(now.Add(time.Hour), DefaultMinOverlap); err == nil || !strings.Contains(err.Error(), "overlap") {
		t.Fatalf("activation before the overlap: %v", err)
	}
	if err := ks.Save(file); err != nil {
		t.Fatal(err)
	}
	// Running issuer follows the file: both keys published, old one signs.
	jwks2, _ := i.JWKS()
	tok2, _ := i.IDToken(ctx, "org-a")
	if kid, _ := verify(t, tok2, jwks2); kid != kid1 || !strings.Contains(string(jwks2), next.ID) {
		t.Fatalf("after add: signs with %s, JWKS %s", kid, jwks2)
	}
	// A relying party that fetched the JWKS before activation verifies
	// tokens signed after it.
	if _, err := ks.Activate(now.Add(DefaultMinOverlap), DefaultMinOverlap); err != nil {
		t.Fatal(err)
	}
	if err := ks.Save(file); err != nil {
		t.Fatal(err)
	}
	tok3, _ := i.IDToken(ctx, "org-a")
	if kid, _ := verify(t, tok3, jwks2); kid != next.ID {
		t.Fatalf("after activate: signs with %s, want %s", kid, next.ID)
	}
	jwks3, _ := i.JWKS()
	verify(t, tok1, jwks3) // old tokens still verify
	if _, err := ks.Retire(now.Add(DefaultMinOverlap), time.Hour); err == nil {
		t.Fatal("retired a key that signed a moment ago")
	}
	dropped, err := ks.Retire(now.Add(DefaultMinOverlap+2*time.Hour), time.Hour)
	if err != nil || len(dropped) != 1 || dropped[0] != kid1 {
		t.Fatalf("retire: %v %v", dropped, err)
	}
	if err := ks.Save(file); err != nil {
		t.Fatal(err)
	}
	jwks4, _ := i.JWKS()
	if strings.Contains(string(jwks4), kid1) {
		t.Fatal("retired key still published")
	}
	if _, err := ks.Retire(now.Add(48*time.Hour), 0); err == nil {
		t.Fatal("retire without a previous key succeeded")
	}
}

// One creator wins when several replicas start at once; all read one key.
func TestEnsureKeyFileRace(t *testing.T) {
	file := filepath.Join(t.TempDir(), "sub", "issuer.json")
	var wg sync.WaitGroup
	created := make(chan bool, 8)
	for range 8 {
		wg.Go(func() {
			c, err := EnsureKeyFile(file, time.Now())
			if err != nil {
				t.Error(err)
			}
			created <- c
		})
	}
	wg.Wait()
	close(created)
	n := 0
	for c := range created {
		if c {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d creators won", n)
	}
	if _, err := ReadKeySet(file); err != nil {
		t.Fatal(err)
	}
}

func TestBadFilesAndURLs(t *testing.T) {
	k1, _ := NewKey(StateActive, time.Now())
	k2, _ := NewKey(StateActive, time.Now())
	for name, ks := range map[string]*KeySet{
		"two active": {Keys: []*Key{k1, k2}},
		"none":       {},
	} {
		if _, err := ParseKeySet(ks.Marshal()); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
	bad := *k1
	bad.ID = "not-the-thumbprint"
	if _, err := ParseKeySet((&KeySet{Keys: []*Key{&bad}}).Marshal()); err == nil {
		t.Error("kid that is not the thumbprint accepted")
	}
	for _, u := range []string{"http://ekm.example.com", "https://", "https://ekm.example.com?x=1", "https://ekm.example.com#f",
		"https://user@ekm.example.com", "ekm.example.com"} {
		if _, err := CheckURL(u); err == nil {
			t.Errorf("issuer URL %q accepted", u)
		}
	}
	// A file that turns bad keeps the last good keys in use.
	i, file := newIssuer(t, "https://ekm.example.com")
	if err := os.WriteFile(file, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := i.IDToken(context.Background(), "org-a"); err != nil {
		t.Fatalf("a broken file stopped signing: %v", err)
	}
	if i.Err() == nil {
		t.Fatal("the broken file is not reported")
	}
	if _, err := New(Config{URL: "https://ekm.example.com", KeyFile: filepath.Join(t.TempDir(), "missing.json")}); err == nil {
		t.Fatal("issuer without a key file")
	}
}

func TestRoutes(t *testing.T) {
	i, _ := newIssuer(t, "https://vendor.example.com/ekm")
	mux := http.NewServeMux()
	for _, r := range i.Routes() {
		mux.Handle(r.Pattern, r.Handler)
	}
	srv := httptest.NewServer(mux)
	defer srv.Close()
	get := func(path string) (int, map[string]any) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		if resp.StatusCode == 200 && (resp.Header.Get("Content-Type") != "application/json" || !strings.Contains(resp.Header.Get("Cache-Control"), "max-age")) {
			t.Fatalf("headers %v", resp.Header)
		}
		return resp.StatusCode, m
	}
	st, disc := get("/ekm/.well-known/openid-configuration")
	if st != 200 || disc["issuer"] != "https://vendor.example.com/ekm" || disc["jwks_uri"] != "https://vendor.example.com/ekm/.well-known/jwks.json" {
		t.Fatalf("discovery %d %v", st, disc)
	}
	st, jwks := get("/ekm/.well-known/jwks.json")
	if keys, _ := jwks["keys"].([]any); st != 200 || len(keys) != 1 {
		t.Fatalf("jwks %d %v", st, jwks)
	}
	if st, _ := get("/.well-known/openid-configuration"); st != 404 {
		t.Fatalf("discovery outside the issuer path: %d", st)
	}
}

// A key file that turns bad is logged once (it keeps old keys signing,
// which the operator must know), its repair once; a file other users may
// read is warned about.
func TestKeyFileTroubleIsLogged(t *testing.T) {
	file := filepath.Join(t.TempDir(), "issuer.json")
	if _, err := EnsureKeyFile(file, time.Now()); err != nil {
		t.Fatal(err)
	}
	good, _ := os.ReadFile(file)
	var logs bytes.Buffer
	i, err := New(Config{URL: "https://ekm.example.com", KeyFile: file, ReloadInterval: time.Nanosecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if logs.Len() != 0 {
		t.Fatalf("a good file logged: %s", logs.String())
	}
	if err := os.WriteFile(file, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := i.IDToken(context.Background(), "org-a"); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(logs.String(), "level=ERROR"); n != 1 || !strings.Contains(logs.String(), "keeps signing") {
		t.Fatalf("a broken file: %d error lines: %s", n, logs.String())
	}
	if err := os.WriteFile(file+".new", good, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(file+".new", file); err != nil {
		t.Fatal(err)
	}
	if _, err := i.IDToken(context.Background(), "org-a"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "readable again") || !strings.Contains(logs.String(), "chmod 600") || i.Err() != nil {
		t.Fatalf("after the repair (mode 0644): %v %s", i.Err(), logs.String())
	}
}

// Two rollovers at once: the second is refused while the first holds the
// file, rather than one silently dropping the other's key.
func TestUpdateIsExclusive(t *testing.T) {
	file := filepath.Join(t.TempDir(), "issuer.json")
	if _, err := EnsureKeyFile(file, time.Now()); err != nil {
		t.Fatal(err)
	}
	inside, done := make(chan struct{}), make(chan error)
	release := make(chan struct{})
	go func() {
		done <- Update(file, func(ks *KeySet) error {
			close(inside)
			<-release
			_, err := ks.Add(time.Now())
			return err
		})
	}()
	<-inside
	err := Update(file, func(ks *KeySet) error { t.Error("a second update ran"); return nil })
	if err == nil || !strings.Contains(err.Error(), "another process") {
		t.Fatalf("concurrent update: %v", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := Update(file, func(ks *KeySet) error { _, err := ks.Activate(time.Now(), 0); return err }); err != nil {
		t.Fatalf("update after the first: %v", err)
	}
	ks, err := ReadKeySet(file)
	if err != nil || len(ks.Keys) != 2 {
		t.Fatalf("keys after both: %v %v", ks, err)
	}
}
