package audit_test

import (
	"testing"
	"time"

	"github.com/ekm-dev/ekm/audit"
	"github.com/ekm-dev/ekm/store"
)

// Payloads are stored byte for byte as earlier versions wrote them (keys in
// sorted order), so the audit log reads the same across versions.
func TestPayloadBytes(t *testing.T) {
	id := "x"
	code, step := "key_disabled", "3"
	for _, c := range []struct {
		ev   audit.Event
		want string
	}{
		{audit.NewAPIKeyCreated(store.APIKey{ID: "key_1", Kind: "admin", Name: "n", RedactedValue: "sk-admin-****abcd"}),
			`{"data":{"kind":"admin","name":"n","redacted_value":"sk-admin-****abcd"},"id":"key_1"}`},
		{audit.ServiceAccountCreated{ID: "s", Data: audit.ServiceAccountDetails{Role: "member", Name: "n"}}, `{"data":{"name":"n","role":"member"},"id":"s"}`},
		{audit.ServiceAccountUpdated{ID: "s", ChangesRequested: map[string]any{"name": "b"}, Previous: map[string]any{"name": "a"}},
			`{"changes_requested":{"name":"b"},"id":"s","previous":{"name":"a"}}`},
		{audit.ExternalKeyValidated{ID: "k", Data: audit.ValidationState{Status: "invalid", Code: &code, Step: &step}},
			`{"data":{"code":"key_disabled","status":"invalid","step":"3"},"id":"k"}`},
		{audit.ExternalKeyValidated{ID: "k", Data: audit.ValidationState{Status: "valid"}}, `{"data":{"status":"valid"},"id":"k"}`},
		{audit.ProjectCreated{ID: "p", Data: audit.ProjectDetails{Name: "n", Title: "n", ExternalKeyID: &id}},
			`{"data":{"external_key_id":"x","name":"n","title":"n"},"id":"p"}`},
		{audit.ProjectCreated{ID: "p", Data: audit.ProjectDetails{Name: "n", Title: "n"}}, `{"data":{"external_key_id":null,"name":"n","title":"n"},"id":"p"}`},
		{audit.KeyHealth{Event: audit.TypeExternalKeyUnavailable, ExternalKeyID: "k", Status: "unavailable", Code: "c", Message: "m"},
			`{"code":"c","external_key_id":"k","message":"m","status":"unavailable"}`},
		{audit.ExternalKeyRotated{ExternalKeyID: "k", PreviousVersion: "a", CurrentVersion: "b"}, `{"current_version":"b","external_key_id":"k","previous_version":"a"}`},
		{audit.ExternalKeyRewrapped{ExternalKeyID: "k", ProjectID: "p", Version: 2, From: "a", To: "b"}, `{"external_key_id":"k","from":"a","project_id":"p","to":"b","version":2}`},
		{audit.ProjectKeyRotated{ProjectID: "p", Version: 2, Scheduled: true}, `{"project_id":"p","scheduled":true,"version":2}`},
		{audit.ProjectKeyRotated{ProjectID: "p", Version: 2}, `{"project_id":"p","version":2}`},
		{audit.ProjectReencrypted{ProjectID: "p", Version: 2, Reencrypted: 3, Skipped: 1}, `{"failed":0,"project_id":"p","reencrypted":3,"skipped":1,"version":2}`},
	} {
		rec := audit.Record(audit.Entry{OrgID: "org-a", Actor: "key_1", ProjectID: "p", At: time.Unix(1, 0)}, c.ev)
		if string(rec.Data) != c.want || rec.Type != c.ev.Type() || rec.OrgID != "org-a" || rec.Actor != "key_1" || rec.ProjectID != "p" || len(rec.ID) < 20 {
			t.Errorf("%s: %s, want %s", c.ev.Type(), rec.Data, c.want)
		}
	}
}
