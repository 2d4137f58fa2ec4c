package auth

import (
	"testing"

	"github.com/ekm-dev/ekm/store"
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
