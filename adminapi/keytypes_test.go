package adminapi

import (
	"encoding/json"
	"net/http"
	"testing"
)

// Every type the server knows is described from its driver's Spec, with
// whether it is enabled here; registrations are checked against the same
// fields (see TestBadInput).
func TestExternalKeyTypes(t *testing.T) {
	e := newEnv(t)
	_, key, _ := e.org("acme")
	r := e.do(key, "GET", "/v1/organization/external_key_types", "")
	if r.Status != http.StatusOK {
		t.Fatalf("status %d: %s", r.Status, r.Raw)
	}
	var list struct {
		Object string          `json:"object"`
		Data   []keyTypeObject `json:"data"`
	}
	if err := json.Unmarshal([]byte(r.Raw), &list); err != nil {
		t.Fatal(err)
	}
	got := map[string]keyTypeObject{}
	for _, o := range list.Data {
		got[o.Type] = o
	}
	want := map[string]bool{"local": true, flakyType: true, "azure": false, "aws": false, "gcp": false, "oci": false}
	if len(got) != len(want) || list.Object != "list" {
		t.Fatalf("types %v", list.Data)
	}
	for typ, enabled := range want {
		o, ok := got[typ]
		if !ok || o.Enabled != enabled || o.Title == "" || o.Object != "organization.external_key_type" {
			t.Fatalf("%s: %+v", typ, o)
		}
	}
	az := got["azure"]
	if len(az.Steps) != 5 || len(az.Codes) < 30 || len(az.Fields) != 4 || az.Fields[0].Name != "key_name" || !az.Fields[0].Required {
		t.Fatalf("azure described as %+v", az)
	}
	if !got["local"].Development || got["azure"].Development {
		t.Fatal("development flag wrong")
	}
	if r := e.do(key, "GET", "/v1/organization/external_key_types?limit=5", ""); r.Status != http.StatusBadRequest {
		t.Fatalf("unknown query parameter: %d", r.Status)
	}
	if r := e.do("sk-admin-nope", "GET", "/v1/organization/external_key_types", ""); r.Status != http.StatusUnauthorized {
		t.Fatalf("unauthenticated: %d", r.Status)
	}
}
