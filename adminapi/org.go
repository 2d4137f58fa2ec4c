package adminapi

import (
	"context"
	"errors"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ekm-dev/ekm/audit"
	"github.com/ekm-dev/ekm/auth"
	"github.com/ekm-dev/ekm/ids"
	"github.com/ekm-dev/ekm/store"
)

// ErrOrgName reports an unusable organization name.
var ErrOrgName = errors.New("adminapi: organization name must be 1-256 characters of UTF-8, not blank, without control characters")

// CreateOrg creates an org and its first admin key, in one transaction with
// an api_key.created audit event (actor: the system). The key's value is
// returned once and stored only hashed. Used by `ekm org create` and tests.
func CreateOrg(ctx context.Context, st store.Store, name string, now time.Time) (org store.Org, adminKey string, err error) {
	if strings.TrimSpace(name) == "" || utf8.RuneCountInString(name) > maxName || !utf8.ValidString(name) || strings.ContainsFunc(name, unicode.IsControl) {
		return store.Org{}, "", ErrOrgName
	}
	org = store.Org{ID: ids.New(prefixOrg), Name: name, CreatedAt: now}
	value, hash, redacted := newKeyValue(store.KindAdmin)
	k := store.APIKey{ID: ids.New(prefixAPIKey), OrgID: org.ID, Kind: store.KindAdmin, Name: "Initial admin key", Hash: hash, RedactedValue: redacted, CreatedAt: now}
	ev := audit.Record(audit.Entry{OrgID: org.ID, At: now}, audit.NewAPIKeyCreated(k))
	err = st.InTx(ctx, func(q store.Queries) error {
		if err := q.CreateOrg(ctx, org); err != nil {
			return err
		}
		if err := q.CreateAPIKey(ctx, k); err != nil {
			return err
		}
		return q.AppendAudit(ctx, ev)
	})
	if err != nil {
		return store.Org{}, "", err
	}
	return org, value, nil
}

// CreateAdminKey adds an admin key to an existing org, with an
// api_key.created audit event whose actor is the system (the operator, not
// an API key). The value is returned once. It is the operator's way back
// into an org that has lost its admin keys (`ekm org admin-key create`);
// org is store.ErrNotFound if it does not exist.
func CreateAdminKey(ctx context.Context, st store.Store, orgID, name string, now time.Time) (store.APIKey, string, error) {
	if strings.TrimSpace(name) == "" || utf8.RuneCountInString(name) > maxName || !utf8.ValidString(name) || strings.ContainsFunc(name, unicode.IsControl) {
		return store.APIKey{}, "", errors.New("adminapi: key name must be 1-256 characters of UTF-8, not blank, without control characters")
	}
	value, hash, redacted := newKeyValue(store.KindAdmin)
	k := store.APIKey{ID: ids.New(prefixAPIKey), OrgID: orgID, Kind: store.KindAdmin, Name: name, Hash: hash, RedactedValue: redacted, CreatedAt: now}
	ev := audit.Record(audit.Entry{OrgID: orgID, At: now}, audit.NewAPIKeyCreated(k))
	err := st.InTx(ctx, func(q store.Queries) error {
		if _, err := q.GetOrg(ctx, orgID); err != nil {
			return err
		}
		if err := q.CreateAPIKey(ctx, k); err != nil {
			return err
		}
		return q.AppendAudit(ctx, ev)
	})
	if err != nil {
		return store.APIKey{}, "", err
	}
	return k, value, nil
}

// newKeyValue is auth.NewKeyValue with a redaction that keeps only the
// kind's known prefix and the last four characters. (auth.Redact cuts at
// the last '-', which the base64url body may itself contain, and would
// then show most of the key.)
func newKeyValue(kind string) (value string, hash []byte, redacted string) {
	value, hash, _ = auth.NewKeyValue(kind)
	return value, hash, redact(value)
}

func redact(value string) string {
	prefix := auth.AdminPrefix
	if strings.HasPrefix(value, auth.ProjectPrefix) {
		prefix = auth.ProjectPrefix
	}
	if !strings.HasPrefix(value, prefix) || len(value) < len(prefix)+16 {
		return prefix + "****"
	}
	return prefix + "****" + value[len(value)-4:]
}
