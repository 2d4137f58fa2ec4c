package ids

import "testing"

func TestOrderedAndValid(t *testing.T) {
	prev := ""
	for range 10000 {
		id := New("proj_")
		if !Valid("proj_", id) {
			t.Fatalf("invalid id %q", id)
		}
		if id <= prev {
			t.Fatalf("ids not increasing: %q then %q", prev, id)
		}
		prev = id
	}
	for _, bad := range []string{"", "proj_", "file_0123456789abcdefghjkmnpqrs", "proj_0123456789abcdefghjkmnpqrU", "proj_0123456789abcdefghjkmnpqrs1"} {
		if Valid("proj_", bad) {
			t.Errorf("Valid(%q) = true", bad)
		}
	}
}
