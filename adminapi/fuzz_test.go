package adminapi

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/ekm-dev/ekm/apierr"
	"github.com/ekm-dev/ekm/ids"
	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/kms/aws"
	"github.com/ekm-dev/ekm/kms/azure"
	"github.com/ekm-dev/ekm/kms/gcp"
	"github.com/ekm-dev/ekm/kms/local"
	"github.com/ekm-dev/ekm/kms/oci"
	"github.com/ekm-dev/ekm/secret"
)

// Seed corpora live in testdata/fuzz/<FuzzName>/.

// badRequest asserts a decoder error is a 400 in OpenAI's shape.
func badRequest(t *testing.T, err error) {
	t.Helper()
	var ae *apierr.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || ae.Message == "" {
		t.Fatalf("decoder error is not a 400 API error: %#v", err)
	}
	if p, ok := ae.Param.(string); ok && utf8.RuneCountInString(p) > maxID+1 {
		t.Fatalf("param echoes too much input: %q", p)
	}
}

func checkName(t *testing.T, s string) {
	t.Helper()
	if strings.TrimSpace(s) == "" || utf8.RuneCountInString(s) > maxName {
		t.Fatalf("accepted name %q", s)
	}
}

// fuzzRegistry describes every built-in type, as a server does.
var fuzzRegistry = kms.NewRegistry(local.NewDriver(secret.New())).Describe(azure.Spec(), aws.Spec(), gcp.Spec(), oci.Spec())

func FuzzDecodeExternalKeyCreate(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := decodeExternalKeyCreate(b, fuzzRegistry)
		if err != nil {
			badRequest(t, err)
			return
		}
		if !typeRE.MatchString(req.Type) || req.Purpose != purposeEKM {
			t.Fatalf("accepted type %q purpose %q", req.Type, req.Purpose)
		}
		checkName(t, req.Name)
		spec, _, known := fuzzRegistry.Spec(req.Type)
		for k, v := range req.Params {
			if v == "" || utf8.RuneCountInString(v) > maxLong || k == "type" || k == "name" || k == "purpose" {
				t.Fatalf("accepted param %q=%q", k, v)
			}
			if _, isField := spec.Field(k); known && !isField {
				t.Fatalf("accepted unknown field %q for %s", k, req.Type)
			}
		}
		for _, fd := range spec.Fields {
			if fd.Required && req.Params[fd.Name] == "" {
				t.Fatalf("accepted %s without %s", req.Type, fd.Name)
			}
		}
	})
}

func FuzzDecodeProjectBodies(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		if req, err := decodeProjectCreate(b); err != nil {
			badRequest(t, err)
		} else {
			checkName(t, req.Name)
			if utf8.RuneCountInString(req.ExternalKeyID) > maxID {
				t.Fatalf("accepted external_key_id %q", req.ExternalKeyID)
			}
		}
		if req, err := decodeProjectUpdate(b); err != nil {
			badRequest(t, err)
		} else {
			if req.Name != nil {
				checkName(t, *req.Name)
			}
			if req.ExternalKeyID != nil && (*req.ExternalKeyID == "" || utf8.RuneCountInString(*req.ExternalKeyID) > maxID) {
				t.Fatalf("accepted external_key_id %q", *req.ExternalKeyID)
			}
		}
	})
}

func FuzzParseListQuery(f *testing.F) {
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		if lq, err := parseList(q, prefixProject, true, "include_archived"); err != nil {
			badRequest(t, err)
		} else {
			if lq.Page.Limit < 1 || lq.Page.Limit > maxLimit || (lq.Page.After != "" && !ids.Valid(prefixProject, lq.Page.After)) {
				t.Fatalf("accepted page %+v", lq.Page)
			}
			for k := range lq.Extra {
				if k != "include_archived" {
					t.Fatalf("passed through %q", k)
				}
			}
		}
		if f, err := parseAuditQuery(q); err != nil {
			badRequest(t, err)
		} else {
			if f.Limit < 1 || f.Limit > maxLimit || len(f.Types) > maxFilterValues || len(f.ProjectIDs) > maxFilterValues {
				t.Fatalf("accepted filter %+v", f)
			}
			for _, id := range f.ProjectIDs {
				if !ids.Valid(prefixProject, id) {
					t.Fatalf("accepted project id %q", id)
				}
			}
			if (f.After != "" && !ids.Valid(prefixAudit, f.After)) || (f.Before != "" && !ids.Valid(prefixAudit, f.Before)) {
				t.Fatalf("accepted cursors %q %q", f.After, f.Before)
			}
		}
	})
}

func FuzzDecodeServiceAccountAndKeyUpdates(f *testing.F) {
	for _, s := range []string{`{"name":"x"}`, `{"role":"member"}`, `{"role":"owner"}`, `{"scopes":[]}`, `{"scopes":["a"]}`, `{"expires_in_seconds":1}`, `{}`, `[]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if req, err := decodeServiceAccountUpdate(b); err != nil {
			badRequest(t, err)
		} else {
			if req.Name != nil {
				checkName(t, *req.Name)
			}
			if req.Role != nil && *req.Role != roleMember {
				t.Fatalf("accepted role %q", *req.Role)
			}
		}
		if err := decodeProjectKeyUpdate(b); err != nil {
			badRequest(t, err)
		}
	})
}
