package azurecloud

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ekm-dev/ekm/internal/dialoverride"
)

// TestControlAPIHostGuard: the control API hands out the app's secret, so
// it must answer only under loopback literals, localhost and the control
// host name — never under an arbitrary IP literal (a DNS-rebinding or
// proxied request could carry one).
func TestControlAPIHostGuard(t *testing.T) {
	e := startEmu(t, Options{})
	secret := e.App().ClientSecret
	for _, host := range []string{"8.8.8.8", "8.8.8.8:443", "[2001:db8::1]:8443", "10.0.0.1", "0.0.0.0", "[::]"} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "https://x/_emulator/app", nil)
		req.Host = host
		e.ServeHTTP(rec, req)
		if rec.Code == http.StatusOK || strings.Contains(rec.Body.String(), secret) {
			t.Errorf("Host %q: control API answered %d", host, rec.Code)
		}
	}
	for _, host := range []string{"127.0.0.1", "127.0.0.1:8443", "[::1]:8443", "localhost", "LOCALHOST:1", "emulator.local", "127.9.9.9"} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "https://x/_emulator/app", nil)
		req.Host = host
		e.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Errorf("Host %q: control API answered %d, want 200", host, rec.Code)
		}
	}
	// Over the wire: the TLS name is the loopback address, the Host header
	// a foreign IP literal.
	hc, err := dialoverride.NewClientFromPEM("", e.CAPEM())
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, e.ControlURL()+"/app", nil)
	req.Host = "8.8.8.8"
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK || strings.Contains(string(b), secret) {
		t.Fatalf("Host 8.8.8.8 over TLS: %d", resp.StatusCode)
	}
}
