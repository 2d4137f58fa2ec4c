package client_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/ekm-dev/ekm/client"
)

func TestClientDoesNotFollowRedirects(t *testing.T) {
	var leaked atomic.Bool
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			leaked.Store(true)
		}
	}))
	defer target.Close()
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer redirector.Close()
	c, err := client.New(redirector.URL, "sk-proj-test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Encrypt(context.Background(), []byte("x"), nil); err == nil {
		t.Fatal("a redirect was answered as success")
	}
	if leaked.Load() {
		t.Fatal("the project key followed a redirect")
	}
}
