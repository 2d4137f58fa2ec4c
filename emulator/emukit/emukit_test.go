package emukit

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestIsControlHost(t *testing.T) {
	for _, h := range []string{"127.0.0.1", "127.0.0.1:8443", "[::1]:1", "::1", "localhost", "LocalHost.:80", "emulator.local", "127.200.0.1", "[::ffff:127.0.0.1]:9"} {
		if !IsControlHost(HostName(h)) {
			t.Errorf("%q refused", h)
		}
	}
	for _, h := range []string{"8.8.8.8", "8.8.8.8:443", "10.0.0.1", "0.0.0.0", "[::]:1", "[2001:db8::1]:443", "192.168.1.1", "kms.us-east-1.amazonaws.com", "localhost.evil.com", "emulator.local.evil", ""} {
		if IsControlHost(HostName(h)) {
			t.Errorf("%q accepted", h)
		}
	}
}

func TestCheckLoopbackListen(t *testing.T) {
	for _, a := range []string{"", "127.0.0.1:0", "[::1]:8443", "localhost:1"} {
		if err := CheckLoopbackListen(a); err != nil {
			t.Errorf("%q: %v", a, err)
		}
	}
	for _, a := range []string{"0.0.0.0:0", "[::]:0", "192.0.2.1:8443", "example.com:8443", "nonsense"} {
		if err := CheckLoopbackListen(a); err == nil {
			t.Errorf("%q accepted", a)
		}
	}
}

func TestCertNames(t *testing.T) {
	names := []string{"*.us-east-1.amazonaws.com", "iam.amazonaws.com", "*.vault.azure.net"}
	for host, want := range map[string]bool{
		"kms.us-east-1.amazonaws.com":      true,
		"kms-fips.us-east-1.amazonaws.com": true,
		"KMS.US-EAST-1.AMAZONAWS.COM.":     true,
		"iam.amazonaws.com":                true,
		"a.b.us-east-1.amazonaws.com":      false, // one label only
		"us-east-1.amazonaws.com":          false,
		"kms.eu-west-1.amazonaws.com":      false,
		"x.vault.azure.net":                true,
		"sts.amazonaws.com":                false,
	} {
		if got := Covers(names, host); got != want {
			t.Errorf("Covers(%q) = %v", host, got)
		}
	}
	for _, bad := range [][]string{{"*.com"}, {"a.*.com"}, {"**.x.com"}, {""}, {"a..b"}, {"A_B.com"}} {
		if ValidateDNSNames(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	// Covers agrees with crypto/x509.
	certDER, keyDER, err := NewCA("test CA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ca, err := ParseCA(certDER, keyDER)
	if err != nil {
		t.Fatal(err)
	}
	der, _, err := NewServerCert(ca, "t", names, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	for _, h := range []string{"kms.us-east-1.amazonaws.com", "a.b.us-east-1.amazonaws.com", "x.vault.azure.net", "sts.amazonaws.com"} {
		if (c.VerifyHostname(h) == nil) != Covers(names, h) {
			t.Errorf("%s: Covers disagrees with x509", h)
		}
	}
	if _, _, err := NewServerCert(ca, "t", []string{"*.com"}, nil, time.Now()); err == nil {
		t.Fatal("bad name accepted")
	}
}

func TestServeAndClient(t *testing.T) {
	certDER, keyDER, _ := NewCA("test CA", time.Now())
	ca, _ := ParseCA(certDER, keyDER)
	files := NewFiles("")
	s, err := Serve(ServerConfig{Name: "test emulator", CA: ca, DNSNames: []string{"kms.us-east-1.amazonaws.com"},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Host) }),
		BeforeServe: func() error {
			if err := files.Prepare("emukit-test-"); err != nil {
				return err
			}
			return files.Write("ca.pem", ca.PEM(), 0o644)
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer files.Cleanup()
	defer s.Close()
	if b, err := os.ReadFile(files.Path("ca.pem")); err != nil || !bytes.Equal(b, ca.PEM()) {
		t.Fatal("ca.pem not written")
	}
	resp, err := s.HTTPClient().Get("https://kms.us-east-1.amazonaws.com/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "kms.us-east-1.amazonaws.com" {
		t.Fatalf("%q", b)
	}
	if _, err := s.HTTPClient().Get("https://kms.eu-west-1.amazonaws.com/"); err == nil {
		t.Fatal("host outside the certificate accepted")
	}
	if DialAddr("0.0.0.0:5") != "127.0.0.1:5" || DialAddr("[::1]:5") != "[::1]:5" {
		t.Fatal("DialAddr")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	files.Cleanup()
	if _, err := os.Stat(files.Dir()); !os.IsNotExist(err) {
		t.Fatal("temp dir left behind")
	}
}

func TestFaultSet(t *testing.T) {
	var fs FaultSet[string]
	fs.SetRand(rand.New(rand.NewPCG(1, 2)))
	if _, err := fs.Add(Fault{Status: 99}, ""); err == nil {
		t.Fatal("bad status accepted")
	}
	for _, bad := range []Fault{{}, {Status: 200}, {Status: 500, Reset: true}, {Latency: Duration(time.Hour)}, {Status: 500, Probability: 2}, {Status: 500, RetryAfter: "1\r\nX: y"}, {Status: 500, Count: -1}} {
		if _, err := fs.Add(bad, ""); err == nil {
			t.Errorf("invalid fault accepted: %+v", bad)
		}
	}
	id, err := fs.Add(Fault{Host: "kms", Operation: "kms.Decrypt", Status: 500, Count: 2}, "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := fs.Match("sts", "sts.amazonaws.com", "kms.Decrypt"); ok {
		t.Fatal("wrong service matched")
	}
	if fe, ok := fs.Match("kms", "kms.us-east-1.amazonaws.com", "kms.Decrypt"); !ok || fe.Ext != "x" || fe.Fault.ID != id {
		t.Fatal("no match")
	}
	if l := fs.List(); len(l) != 1 || l[0].Fault.Count != 1 {
		t.Fatalf("%+v", l)
	}
	if _, err := fs.Add(Fault{Host: "kms.us-east-1.amazonaws.com", Operation: "kms.*", Status: 503}, ""); err != nil {
		t.Fatal(err)
	}
	if fe, ok := fs.Match("kms", "KMS.us-east-1.amazonaws.com", "kms.Encrypt"); !ok || fe.Fault.Status != 503 {
		t.Fatal("host/prefix match")
	}
	fs.Clear()
	if _, err := fs.Add(Fault{Status: 500, Probability: 0.25}, ""); err != nil {
		t.Fatal(err)
	}
	hits := 0
	for range 4000 {
		if _, ok := fs.Match("kms", "h", "op"); ok {
			hits++
		}
	}
	if hits < 800 || hits > 1200 {
		t.Fatalf("hits = %d of 4000 at p=0.25", hits)
	}
	l := fs.List()
	if !fs.Remove(l[0].Fault.ID) || fs.Remove("nope") {
		t.Fatal("remove")
	}
}

func TestApplyReset(t *testing.T) {
	defer func() {
		if v := recover(); v != http.ErrAbortHandler {
			t.Fatalf("recovered %v", v)
		}
	}()
	Apply(httptest.NewRequest("GET", "/", nil), Fault{Reset: true})
}

func TestApplyLatencyAbandoned(t *testing.T) {
	r := httptest.NewRequest("GET", "/", nil)
	ctx, cancel := context.WithCancel(r.Context())
	cancel()
	defer func() {
		if v := recover(); v != http.ErrAbortHandler {
			t.Fatalf("recovered %v", v)
		}
	}()
	Apply(r.WithContext(ctx), Fault{Latency: Duration(time.Minute)})
}

func TestRingAndCounters(t *testing.T) {
	l := NewRing[int](3)
	for i := range 5 {
		l.Add(i)
	}
	if got := l.Snapshot(); len(got) != 3 || got[0] != 2 || got[2] != 4 {
		t.Fatalf("%v", got)
	}
	l.Reset()
	if len(l.Snapshot()) != 0 {
		t.Fatal("reset")
	}
	var c Counters
	c.Inc("a")
	c.Inc("a")
	if c.Snapshot()["a"] != 2 {
		t.Fatal("counters")
	}
	c.Reset()
	if len(c.Snapshot()) != 0 {
		t.Fatal("reset")
	}
}

func TestClockAndControl(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewClock(func() time.Time { return t0 })
	c.Advance(time.Hour)
	if !c.Now().Equal(t0.Add(time.Hour)) {
		t.Fatal("advance")
	}
	rec := httptest.NewRecorder()
	ServeClock(rec, httptest.NewRequest("POST", "/", strings.NewReader(`{"set":"2031-01-01T00:00:00Z"}`)), c)
	if rec.Code != 200 || c.Now().Year() != 2031 {
		t.Fatal(rec.Code, rec.Body)
	}
	rec = httptest.NewRecorder()
	ServeClock(rec, httptest.NewRequest("POST", "/", strings.NewReader(`{"advance":"1h","set":"2031-01-01T00:00:00Z"}`)), c)
	if rec.Code != 400 {
		t.Fatal(rec.Code)
	}
	rec = httptest.NewRecorder()
	ServeClock(rec, httptest.NewRequest("POST", "/", strings.NewReader(`{"advance":60}`)), c)
	if rec.Code != 200 || c.Now().Minute() != 1 {
		t.Fatal(rec.Code, c.Now())
	}
	if ShellQuote("/a/b") != "/a/b" || ShellQuote("a b") != "'a b'" || ShellQuote("it's") != `'it'\''s'` || ShellQuote("") != "''" {
		t.Fatal("ShellQuote")
	}
}

func TestStateFile(t *testing.T) {
	dir := t.TempDir()
	sf := StateFile{Path: filepath.Join(dir, "state.json")}
	var v map[string]int
	if found, err := sf.Load(&v); found || err != nil {
		t.Fatal(found, err)
	}
	if err := sf.Save(map[string]int{"a": 1}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(sf.Path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatal(err)
	}
	if found, err := sf.Load(&v); !found || err != nil || v["a"] != 1 {
		t.Fatal(found, err, v)
	}
	os.WriteFile(sf.Path, []byte("{"), 0o600)
	if _, err := sf.Load(&v); err == nil {
		t.Fatal("corrupt file accepted")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("temp files left: %v", ents)
	}
	var none StateFile
	if err := none.Save(1); err != nil {
		t.Fatal(err)
	}
	if err := ReadJSON(httptest.NewRequest("POST", "/", strings.NewReader(" ")), &v); !errors.Is(err, ErrEmptyBody) {
		t.Fatal(err)
	}
}
