package azurecloud

import (
	"context"
	"io"
	"strings"
	"testing"
)

func TestMainRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", "[::]:0", "192.0.2.1:8443", "example.com:8443"} {
		err := Main(context.Background(), Options{Addr: addr}, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "loopback") {
			t.Errorf("Main(%s) = %v, want a refusal", addr, err)
		}
	}
}
