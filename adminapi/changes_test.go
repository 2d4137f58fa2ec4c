package adminapi

import (
	"context"
	"sync"
	"testing"

	"github.com/ekm-dev/ekm/cluster"
)

// Deleting an admin key, a project API key or a service account publishes
// it on the change log (every replica drops what it caches of the key), and
// this replica's subscribers have seen it when the response arrives.
func TestDeletionsArePublished(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	seen := map[string]string{} // object id → kind
	e.svc.Changes().Subscribe("", func(_ context.Context, c cluster.Change) {
		mu.Lock()
		seen[c.ObjectID] = c.Kind
		mu.Unlock()
	})
	saw := func(id, kind string) {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		if seen[id] != kind {
			t.Fatalf("%s: published %q before the answer, want %q", id, seen[id], kind)
		}
	}
	o, key, _ := e.org("acme")
	_ = o
	r := e.do(key, "POST", "/v1/organization/admin_api_keys", `{"name":"second"}`)
	second, _ := r.Body["id"].(string)
	if r := e.do(key, "DELETE", "/v1/organization/admin_api_keys/"+second, ""); r.Status != 200 {
		t.Fatalf("delete admin key: %d %s", r.Status, r.Raw)
	}
	saw(second, cluster.APIKeyDeleted)

	p := e.do(key, "POST", "/v1/organization/projects", `{"name":"p"}`)
	pid, _ := p.Body["id"].(string)
	newSA := func() (sa, apiKey string) {
		t.Helper()
		r := e.do(key, "POST", "/v1/organization/projects/"+pid+"/service_accounts", `{"name":"svc"}`)
		k, _ := r.Body["api_key"].(map[string]any)
		sa, _ = r.Body["id"].(string)
		apiKey, _ = k["id"].(string)
		if sa == "" || apiKey == "" {
			t.Fatalf("service account: %s", r.Raw)
		}
		return sa, apiKey
	}
	_, k1 := newSA()
	if r := e.do(key, "DELETE", "/v1/organization/projects/"+pid+"/api_keys/"+k1, ""); r.Status != 200 {
		t.Fatalf("delete project key: %d %s", r.Status, r.Raw)
	}
	saw(k1, cluster.APIKeyDeleted)

	sa, k2 := newSA()
	if r := e.do(key, "DELETE", "/v1/organization/projects/"+pid+"/service_accounts/"+sa, ""); r.Status != 200 {
		t.Fatalf("delete service account: %d %s", r.Status, r.Raw)
	}
	saw(sa, cluster.ServiceAccountDeleted)
	saw(k2, cluster.APIKeyDeleted)
}
