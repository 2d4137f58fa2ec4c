package dialoverride

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testCA issues a server certificate for dnsNames signed by a fresh CA and
// returns the CA PEM.
func testCA(t *testing.T, dnsNames ...string) (tls.Certificate, []byte) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: dnsNames[0]},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: dnsNames, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: leafKey},
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
}

func startServer(t *testing.T, cert tls.Certificate) (*httptest.Server, chan string) {
	t.Helper()
	seen := make(chan string, 10)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Host + "|" + r.TLS.ServerName
		io.WriteString(w, "ok")
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, seen
}

func TestOverrideKeepsHostNameForTLS(t *testing.T) {
	cert, caPEM := testCA(t, "*.vault.azure.net", "login.microsoftonline.com")
	srv, seen := startServer(t, cert)
	c, err := NewClientFromPEM(srv.Listener.Addr().String(), caPEM)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"https://myvault.vault.azure.net/keys", "https://login.microsoftonline.com/x"} {
		resp, err := c.Get(u)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		resp.Body.Close()
		host := strings.TrimPrefix(u, "https://")
		host = host[:strings.Index(host, "/")]
		if got := <-seen; got != host+"|"+host {
			t.Fatalf("server saw %q, want host and SNI %q", got, host)
		}
	}
}

func TestOverrideStillVerifiesHostName(t *testing.T) {
	cert, caPEM := testCA(t, "other.example")
	srv, _ := startServer(t, cert)
	c, err := NewClientFromPEM(srv.Listener.Addr().String(), caPEM)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Get("https://myvault.vault.azure.net/")
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("want certificate name error, got %v", err)
	}
}

func TestOverrideWithoutCAFailsVerification(t *testing.T) {
	cert, _ := testCA(t, "*.vault.azure.net")
	srv, _ := startServer(t, cert)
	c, err := NewClient(srv.Listener.Addr().String(), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get("https://myvault.vault.azure.net/"); err == nil {
		t.Fatal("untrusted CA accepted")
	}
}

func TestCAFile(t *testing.T) {
	cert, caPEM := testCA(t, "graph.microsoft.com")
	srv, _ := startServer(t, cert)
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := NewClient(srv.Listener.Addr().String(), path)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Get("https://graph.microsoft.com/v1.0/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

func TestProductionClient(t *testing.T) {
	c, err := NewClient("", "")
	if err != nil {
		t.Fatal(err)
	}
	tr := c.Transport.(*http.Transport)
	if tr.TLSClientConfig.RootCAs != nil {
		t.Fatal("production client must use the system roots")
	}
	if tr.Proxy == nil {
		t.Fatal("production client must honour proxy settings")
	}
	if c.Timeout == 0 || tr.TLSHandshakeTimeout == 0 {
		t.Fatal("production client needs timeouts")
	}
}

func TestInvalidInputs(t *testing.T) {
	for _, addr := range []string{"nohostport", ":443", "h:0", "h:99999", "h:x"} {
		if _, err := NewClient(addr, ""); err == nil {
			t.Errorf("override %q accepted", addr)
		}
	}
	if _, err := NewClientFromPEM("", []byte("not a pem")); err == nil {
		t.Error("garbage CA accepted")
	}
	if _, err := NewClient("", filepath.Join(t.TempDir(), "missing.pem")); err == nil {
		t.Error("missing CA file accepted")
	}
}

func TestTransportOptions(t *testing.T) {
	cert, caPEM := testCA(t, "kms.eu-west-1.amazonaws.com")
	srv, hosts := startServer(t, cert)
	opt, err := TransportOptionsFromPEM(srv.Listener.Addr().String(), caPEM)
	if err != nil {
		t.Fatal(err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	opt(tr)
	if tr.Proxy != nil {
		t.Fatal("proxy left on in override mode")
	}
	resp, err := (&http.Client{Transport: tr}).Get("https://kms.eu-west-1.amazonaws.com/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if h := <-hosts; h != "kms.eu-west-1.amazonaws.com|kms.eu-west-1.amazonaws.com" {
		t.Fatalf("server saw host %q", h)
	}
	// Another name on the same dial target fails verification.
	if _, err := (&http.Client{Transport: tr}).Get("https://sts.eu-west-1.amazonaws.com/"); err == nil {
		t.Fatal("certificate for another name accepted")
	}
	// No arguments: the transport is left as it was.
	none, err := TransportOptions("", "")
	if err != nil {
		t.Fatal(err)
	}
	tr2 := http.DefaultTransport.(*http.Transport).Clone()
	none(tr2)
	if tr2.Proxy == nil || tr2.TLSClientConfig != nil && tr2.TLSClientConfig.RootCAs != nil {
		t.Fatal("empty options changed the transport")
	}
	if _, err := TransportOptions("h:0", ""); err == nil {
		t.Fatal("bad override accepted")
	}
	if _, err := TransportOptionsFromPEM("", []byte("junk")); err == nil {
		t.Fatal("garbage CA accepted")
	}
}
