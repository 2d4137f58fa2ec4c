package auth

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ekm-dev/ekm/store"
	"github.com/ekm-dev/ekm/store/sqlstore"
)

func TestRedactShowsOnlyPrefixAndLastFour(t *testing.T) {
	for range 200 {
		for _, kind := range []string{store.KindAdmin, store.KindProject} {
			v, _, red := NewKeyValue(kind)
			prefix := AdminPrefix
			if kind == store.KindProject {
				prefix = ProjectPrefix
			}
			if red != prefix+"****"+v[len(v)-4:] {
				t.Fatalf("Redact(%q) = %q", v, red)
			}
		}
	}
	if got := Redact("sk-admin-a-b-c-d-e-f-g-h-i-j-k-l"); got != "sk-admin-****-k-l" {
		t.Fatalf("Redact with dashes = %q", got)
	}
}

// TestAuthenticateMessages: the scheme is case-insensitive, and a refusal
// says what was wrong, naming the kind of key sent when it is the other
// kind.
func TestAuthenticateMessages(t *testing.T) {
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, filepath.Join(t.TempDir(), "ekm.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Now()
	if err := st.CreateOrg(ctx, store.Org{ID: "org-a", Name: "a", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	value, hash, red := NewKeyValue(store.KindAdmin)
	if err := st.CreateAPIKey(ctx, store.APIKey{ID: "key_a", OrgID: "org-a", Kind: store.KindAdmin, Name: "a", Hash: hash, RedactedValue: red, CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	auth := func(header, kind string) (store.APIKey, error) {
		r, _ := http.NewRequest("GET", "/", nil)
		if header != "" {
			r.Header.Set("Authorization", header)
		}
		return Authenticate(ctx, st, r, kind)
	}
	for _, h := range []string{"Bearer " + value, "bearer " + value, "BEARER " + value, "Bearer   " + value} {
		if k, err := auth(h, store.KindAdmin); err != nil || k.ID != "key_a" {
			t.Errorf("%q: %v", h[:10], err)
		}
	}
	projValue, _, _ := NewKeyValue(store.KindProject)
	for _, c := range []struct{ header, kind, want string }{
		{"", store.KindAdmin, "didn't provide an API key"},
		{"Basic abc", store.KindAdmin, "must be 'Bearer <key>'"},
		{"Bearer " + value, store.KindProject, "this is an admin key (sk-admin-…). The Files and crypto APIs need a project API key (sk-proj-…)"},
		{"Bearer " + projValue, store.KindAdmin, "this is a project API key (sk-proj-…). The Admin API needs an admin key (sk-admin-…)"},
		{"Bearer sk-abc", store.KindAdmin, "not an ekm key"},
		{"Bearer " + value + "x", store.KindAdmin, "no such key"},
	} {
		_, err := auth(c.header, c.kind)
		var ae *Error
		if !errors.As(err, &ae) || !errors.Is(err, ErrUnauthorized) || !strings.Contains(ae.Message, c.want) {
			t.Errorf("%q as %s: %v, want a message with %q", c.header, c.kind, err, c.want)
		}
		if strings.Contains(err.Error(), "an project") {
			t.Errorf("%v", err)
		}
	}
}
