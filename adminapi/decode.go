package adminapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ekm-dev/ekm/apierr"
	"github.com/ekm-dev/ekm/ids"
	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/store"
)

// Length limits of request fields, in characters.
const (
	maxName  = 256  // names of keys, projects, service accounts
	maxShort = 256  // provider identifiers (tenant ids, regions, key names)
	maxLong  = 2048 // ARNs, URIs, OCIDs
	maxID    = 64   // ekm object ids
	maxType  = 64
)

// readBody reads the request body up to the configured limit.
func (a *api) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.maxBody))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, apierr.TooLarge(a.maxBody)
	}
	if err != nil {
		return nil, apierr.BadRequest("", "The request body could not be read.")
	}
	return b, nil
}

// object is a request body: exactly one JSON object. Fields are decoded one
// by one so that every error can name the offending field.
type object map[string]json.RawMessage

func invalidJSON(format string, args ...any) *apierr.Error {
	return apierr.New(http.StatusBadRequest, "invalid_request_error", "invalid_json", "", format, args...)
}

func decodeObject(b []byte) (object, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	var o object
	if err := dec.Decode(&o); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) {
			return nil, invalidJSON("The request body must be a JSON object.")
		}
		return nil, invalidJSON("We could not parse the JSON body of your request. The body must be a single JSON object.")
	}
	if o == nil {
		return nil, invalidJSON("The request body must be a JSON object.")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, invalidJSON("The request body must contain exactly one JSON object.")
	}
	return o, nil
}

// only refuses any field not in allowed, naming the first (in sorted order,
// so the answer is deterministic).
func (o object) only(allowed ...string) error {
	var unknown []string
	for k := range o {
		if !slices.Contains(allowed, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	slices.Sort(unknown)
	return apierr.New(http.StatusBadRequest, "invalid_request_error", "unknown_parameter", clip(unknown[0]),
		"Unrecognized request argument supplied: %s", clip(unknown[0]))
}

// clip bounds a caller-supplied string echoed in an error.
func clip(s string) string {
	if utf8.RuneCountInString(s) <= maxID {
		return s
	}
	r := []rune(s)
	return string(r[:maxID]) + "…"
}

func isNull(raw json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(raw), []byte("null")) }

// str returns a string field; absent and null are "not present".
func (o object) str(name string, max int) (string, bool, error) {
	raw, ok := o[name]
	if !ok || isNull(raw) {
		return "", false, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false, apierr.New(http.StatusBadRequest, "invalid_request_error", "invalid_type", name, "Invalid type for '%s': expected a string.", name)
	}
	if n := utf8.RuneCountInString(s); n > max {
		return "", false, apierr.New(http.StatusBadRequest, "invalid_request_error", "string_above_max_length", name, "Invalid '%s': string too long. Expected a string with maximum length %d, but got a string with length %d instead.", name, max, n)
	}
	if strings.ContainsFunc(s, unicode.IsControl) {
		return "", false, apierr.BadRequest(name, "Invalid '%s': control characters are not allowed.", name)
	}
	return s, true, nil
}

// requiredStr is str for a field that must be present and not blank.
func (o object) requiredStr(name string, max int) (string, error) {
	s, ok, err := o.str(name, max)
	if err != nil {
		return "", err
	}
	if !ok || strings.TrimSpace(s) == "" {
		return "", apierr.Missing(name)
	}
	return s, nil
}

// name is an optional display name: when present it must not be blank.
func (o object) name(field string) (string, bool, error) {
	s, ok, err := o.str(field, maxName)
	if err == nil && ok && strings.TrimSpace(s) == "" {
		err = apierr.BadRequest(field, "Invalid '%s': must not be empty.", field)
	}
	return s, ok, err
}

func (o object) boolean(name string) (bool, bool, error) {
	raw, ok := o[name]
	if !ok || isNull(raw) {
		return false, false, nil
	}
	var b bool
	if err := json.Unmarshal(raw, &b); err != nil {
		return false, false, apierr.New(http.StatusBadRequest, "invalid_request_error", "invalid_type", name, "Invalid type for '%s': expected a boolean.", name)
	}
	return b, true, nil
}

// unsupported refuses fields of the OpenAI contract that ekm does not
// implement, rather than silently ignoring what the caller asked for.
func (o object) unsupported(fields ...string) error {
	for _, f := range fields {
		if raw, ok := o[f]; ok && !isNull(raw) {
			return apierr.New(http.StatusBadRequest, "invalid_request_error", "unsupported_parameter", f, "'%s' is not supported by this server.", f)
		}
	}
	return nil
}

// --- external keys ---

type keyField struct {
	name     string
	max      int
	required bool
}

// keyTypes lists the provider fields of each registration type, as in the
// OpenAI SDK (AdminOrganizationExternalKeyNewParamsBody*), plus ekm's local
// type. Whether a type can actually be registered depends on the KMS drivers
// this server runs (Keyring.Check).
var keyTypes = map[string][]keyField{
	"azure": {{"key_name", maxShort, true}, {"tenant_id", maxShort, true}, {"vault_uri", maxLong, true}, {"key_version", maxShort, false}},
	"aws":   {{"external_id", maxShort, true}, {"kms_arn", maxLong, true}, {"role_arn", maxLong, true}},
	"gcp": {{"audience", maxLong, true}, {"kms_key_location", maxShort, true}, {"kms_key_name", maxShort, true},
		{"kms_key_ring_name", maxShort, true}, {"kms_project_id", maxShort, true}, {"workload_identity_pool_id", maxShort, true},
		{"workload_identity_project_number", maxShort, true}, {"workload_identity_provider_id", maxShort, true}, {"kms_key_version", maxShort, false}},
	"oci": {{"key_ocid", maxLong, true}, {"region", maxShort, true}, {"vault_ocid", maxLong, true}, {"key_version_ocid", maxLong, false}},
	// local_key_id is not accepted: the server always picks a fresh random
	// one, because local KEKs are derived from the id alone and a chosen id
	// could name another org's (or the operator's default) local KEK.
	"local": {{"key_version", maxShort, false}},
}

// Purposes of external keys.
const (
	purposeEKM = "ekm"
	purposePSP = "psp_decryption"
)

var (
	typeRE  = regexp.MustCompile(`^[a-z0-9_]{1,64}$`)
	fieldRE = regexp.MustCompile(`^[a-z0-9_]{1,64}$`)
)

// extKeyRequest is a decoded external key registration.
type extKeyRequest struct {
	Type    string
	Name    string
	Purpose string
	Params  kms.Params
}

// decodeExternalKeyCreate decodes POST /external_keys. It checks shape only;
// the KMS driver then checks the values (Keyring.Check).
func decodeExternalKeyCreate(b []byte) (extKeyRequest, error) {
	var req extKeyRequest
	o, err := decodeObject(b)
	if err != nil {
		return req, err
	}
	if req.Type, err = o.requiredStr("type", maxType); err != nil {
		return req, err
	}
	if !typeRE.MatchString(req.Type) {
		return req, apierr.New(http.StatusBadRequest, "invalid_request_error", "unsupported_type", "type", "Invalid 'type': %q is not a supported external key type.", clip(req.Type))
	}
	if req.Name, err = o.requiredStr("name", maxName); err != nil {
		return req, err
	}
	p, ok, err := o.str("purpose", maxType)
	switch {
	case err != nil:
		return req, err
	case !ok || p == purposeEKM:
		req.Purpose = purposeEKM
	case p == purposePSP:
		// ekm never decrypts payment data for a processor; accepting the
		// purpose would promise a feature that does not exist.
		return req, apierr.New(http.StatusBadRequest, "invalid_request_error", "unsupported_purpose", "purpose", "Invalid 'purpose': 'psp_decryption' is not supported by this server; external keys protect project data (purpose 'ekm').")
	default:
		return req, apierr.BadRequest("purpose", "Invalid 'purpose': expected 'ekm'.")
	}
	req.Params = kms.Params{}
	fields, known := keyTypes[req.Type]
	if !known {
		// A type this build does not describe: pass its fields through as
		// strings; Keyring.Check refuses it unless a driver serves it.
		for k := range o {
			if k == "type" || k == "name" || k == "purpose" {
				continue
			}
			if !fieldRE.MatchString(k) {
				return req, apierr.New(http.StatusBadRequest, "invalid_request_error", "unknown_parameter", clip(k), "Unrecognized request argument supplied: %s", clip(k))
			}
			v, ok, err := o.str(k, maxLong)
			if err != nil {
				return req, err
			}
			if ok && v != "" {
				req.Params[k] = v
			}
		}
		return req, nil
	}
	allowed := []string{"type", "name", "purpose"}
	for _, f := range fields {
		allowed = append(allowed, f.name)
	}
	if err := o.only(allowed...); err != nil {
		return req, err
	}
	for _, f := range fields {
		v, ok, err := o.str(f.name, f.max)
		if err != nil {
			return req, err
		}
		if !ok || v == "" {
			if f.required {
				return req, apierr.Missing(f.name)
			}
			continue
		}
		req.Params[f.name] = v
	}
	return req, nil
}

// --- projects ---

type projectCreate struct {
	Name          string
	ExternalKeyID string // "" = the operator's default key
}

func decodeProjectCreate(b []byte) (projectCreate, error) {
	var req projectCreate
	o, err := decodeObject(b)
	if err != nil {
		return req, err
	}
	if err := o.only("name", "external_key_id", "geography", "residency"); err != nil {
		return req, err
	}
	if err := o.unsupported("geography", "residency"); err != nil {
		return req, err
	}
	if req.Name, err = o.requiredStr("name", maxName); err != nil {
		return req, err
	}
	req.ExternalKeyID, _, err = o.externalKeyID()
	return req, err
}

// externalKeyID reads external_key_id: absent or null means "not given".
func (o object) externalKeyID() (string, bool, error) {
	id, ok, err := o.str("external_key_id", maxID)
	if err == nil && ok && id == "" {
		err = apierr.BadRequest("external_key_id", "Invalid 'external_key_id': must be an external key id (extkey_…).")
	}
	return id, ok && err == nil, err
}

type projectUpdate struct {
	Name          *string
	ExternalKeyID *string
}

func decodeProjectUpdate(b []byte) (projectUpdate, error) {
	var req projectUpdate
	o, err := decodeObject(b)
	if err != nil {
		return req, err
	}
	if err := o.only("name", "external_key_id", "geography"); err != nil {
		return req, err
	}
	if err := o.unsupported("geography"); err != nil {
		return req, err
	}
	if n, ok, err := o.name("name"); err != nil {
		return req, err
	} else if ok {
		req.Name = &n
	}
	if id, ok, err := o.externalKeyID(); err != nil {
		return req, err
	} else if ok {
		req.ExternalKeyID = &id
	}
	return req, nil
}

// --- API keys and service accounts ---

func decodeAdminKeyCreate(b []byte) (string, error) {
	o, err := decodeObject(b)
	if err != nil {
		return "", err
	}
	if err := o.only("name", "expires_in_seconds"); err != nil {
		return "", err
	}
	if err := o.unsupported("expires_in_seconds"); err != nil {
		return "", err
	}
	return o.requiredStr("name", maxName)
}

func decodeServiceAccountCreate(b []byte) (string, error) {
	o, err := decodeObject(b)
	if err != nil {
		return "", err
	}
	if err := o.only("name", "create_service_account_only", "expires_in_seconds"); err != nil {
		return "", err
	}
	if err := o.unsupported("expires_in_seconds"); err != nil {
		return "", err
	}
	// A service account exists here only to own a project key.
	if only, _, err := o.boolean("create_service_account_only"); err != nil {
		return "", err
	} else if only {
		return "", apierr.New(http.StatusBadRequest, "invalid_request_error", "unsupported_parameter", "create_service_account_only", "'create_service_account_only' is not supported by this server: a service account is created with its API key.")
	}
	return o.requiredStr("name", maxName)
}

// saUpdate is a decoded service account update; nil fields are unchanged.
type saUpdate struct {
	Name *string
	Role *string
}

// Service account roles. ekm's service accounts are all members: a project
// key can use its project's data plane and nothing else, and no role of
// ekm's would let it do more.
const roleMember = "member"

func decodeServiceAccountUpdate(b []byte) (saUpdate, error) {
	var req saUpdate
	o, err := decodeObject(b)
	if err != nil {
		return req, err
	}
	if err := o.only("name", "role"); err != nil {
		return req, err
	}
	if n, ok, err := o.name("name"); err != nil {
		return req, err
	} else if ok {
		req.Name = &n
	}
	role, ok, err := o.str("role", maxType)
	switch {
	case err != nil:
		return req, err
	case !ok:
	case role == roleMember:
		req.Role = &role
	case role == "owner":
		return req, apierr.New(http.StatusBadRequest, "invalid_request_error", "unsupported_role", "role", "Invalid 'role': 'owner' is not supported by this server; service accounts are members of their project.")
	default:
		return req, apierr.BadRequest("role", "Invalid 'role': expected 'member' or 'owner'.")
	}
	return req, nil
}

// decodeProjectKeyUpdate decodes POST …/api_keys/{key_id}. ekm keys have no
// scopes and do not expire, so the only update it can honour is "scopes":
// [], which in OpenAI's contract means all permissions: what the key already
// has.
func decodeProjectKeyUpdate(b []byte) error {
	o, err := decodeObject(b)
	if err != nil {
		return err
	}
	if err := o.only("scopes", "expires_in_seconds"); err != nil {
		return err
	}
	if err := o.unsupported("expires_in_seconds"); err != nil {
		return err
	}
	raw, ok := o["scopes"]
	if !ok {
		return apierr.New(http.StatusBadRequest, "invalid_request_error", "missing_required_parameter", "scopes", "Provide at least one of 'scopes' or 'expires_in_seconds'.")
	}
	var scopes []string
	if isNull(raw) || json.Unmarshal(raw, &scopes) != nil {
		return apierr.New(http.StatusBadRequest, "invalid_request_error", "invalid_type", "scopes", "Invalid type for 'scopes': expected an array of strings.")
	}
	if len(scopes) > 0 {
		return apierr.New(http.StatusBadRequest, "invalid_request_error", "unsupported_parameter", "scopes", "Restricting a key's 'scopes' is not supported by this server; project keys have all permissions on their project.")
	}
	return nil
}

// --- list queries ---

const (
	defaultLimit = 20
	maxLimit     = 100
)

// listQuery is a parsed cursor-page request.
type listQuery struct {
	Page  store.Page // Limit is what the caller asked for (1-100)
	Extra url.Values // the list's own filters, still to be parsed
}

// parseList parses after, limit, order (when withOrder) and lets through the
// named extra parameters; anything else is refused.
func parseList(q url.Values, prefix string, withOrder bool, extra ...string) (listQuery, error) {
	lq := listQuery{Page: store.Page{Limit: defaultLimit}, Extra: url.Values{}}
	allowed := append([]string{"after", "limit"}, extra...)
	if withOrder {
		allowed = append(allowed, "order")
	}
	if err := onlyQuery(q, allowed); err != nil {
		return lq, err
	}
	if v := q.Get("limit"); v != "" {
		n, err := parseLimit(v)
		if err != nil {
			return lq, err
		}
		lq.Page.Limit = n
	}
	if v := q.Get("after"); v != "" {
		if !ids.Valid(prefix, v) {
			return lq, apierr.BadRequest("after", "Invalid 'after': expected an id of the listed objects (%s…).", prefix)
		}
		lq.Page.After = v
	}
	switch q.Get("order") {
	case "", "asc":
	case "desc":
		lq.Page.Desc = true
	default:
		return lq, apierr.BadRequest("order", "Invalid 'order': expected 'asc' or 'desc'.")
	}
	for _, k := range extra {
		if vs, ok := q[k]; ok {
			lq.Extra[k] = vs
		}
	}
	return lq, nil
}

// onlyQuery refuses unknown and repeated scalar parameters. Array parameters
// (names ending in "[]") may repeat.
func onlyQuery(q url.Values, allowed []string) error {
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !slices.Contains(allowed, k) {
			return apierr.New(http.StatusBadRequest, "invalid_request_error", "unknown_parameter", clip(k), "Unrecognized query parameter: %s", clip(k))
		}
		if !strings.HasSuffix(k, "[]") && len(q[k]) > 1 {
			return apierr.BadRequest(k, "Invalid '%s': given more than once.", k)
		}
	}
	return nil
}

func parseLimit(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxLimit {
		return 0, apierr.BadRequest("limit", "Invalid 'limit': expected an integer between 1 and %d.", maxLimit)
	}
	return n, nil
}

func parseBool(name, v string) (bool, error) {
	switch v {
	case "true":
		return true, nil
	case "false", "":
		return false, nil
	}
	return false, apierr.BadRequest(name, "Invalid '%s': expected 'true' or 'false'.", name)
}

// Audit query limits.
const (
	maxFilterValues = 100
	// maxUnix is the end of year 9999, far beyond any event and small enough
	// that the store's millisecond arithmetic cannot overflow.
	maxUnix = 253402300799
)

var eventTypeRE = regexp.MustCompile(`^[a-z0-9_.]{1,64}$`)

// parseAuditQuery parses GET /audit_logs. Array filters use the SDK's
// bracket form (event_types[]=…); type[] is accepted as an alias.
func parseAuditQuery(q url.Values) (store.AuditFilter, error) {
	f := store.AuditFilter{Limit: defaultLimit}
	bounds := []string{"effective_at[gt]", "effective_at[gte]", "effective_at[lt]", "effective_at[lte]"}
	allowed := append([]string{"after", "before", "limit", "event_types[]", "type[]", "project_ids[]"}, bounds...)
	if err := onlyQuery(q, allowed); err != nil {
		return f, err
	}
	if v := q.Get("limit"); v != "" {
		n, err := parseLimit(v)
		if err != nil {
			return f, err
		}
		f.Limit = n
	}
	for _, k := range []string{"after", "before"} {
		v := q.Get(k)
		if v == "" {
			continue
		}
		if !ids.Valid(prefixAudit, v) {
			return f, apierr.BadRequest(k, "Invalid '%s': expected an audit log id (%s…).", k, prefixAudit)
		}
		if k == "after" {
			f.After = v
		} else {
			f.Before = v
		}
	}
	for _, k := range []string{"event_types[]", "type[]"} {
		for _, v := range q[k] {
			if !eventTypeRE.MatchString(v) {
				return f, apierr.BadRequest(k, "Invalid '%s': %q is not an event type.", k, clip(v))
			}
			if !slices.Contains(f.Types, v) {
				f.Types = append(f.Types, v)
			}
		}
		if len(f.Types) > maxFilterValues {
			return f, apierr.BadRequest(k, "Invalid '%s': at most %d values.", k, maxFilterValues)
		}
	}
	if vs := q["project_ids[]"]; len(vs) > maxFilterValues {
		return f, apierr.BadRequest("project_ids[]", "Invalid 'project_ids[]': at most %d values.", maxFilterValues)
	}
	for _, v := range q["project_ids[]"] {
		if !ids.Valid(prefixProject, v) {
			return f, apierr.BadRequest("project_ids[]", "Invalid 'project_ids[]': %q is not a project id.", clip(v))
		}
		f.ProjectIDs = append(f.ProjectIDs, v)
	}
	dst := []**time.Time{&f.GT, &f.GTE, &f.LT, &f.LTE}
	for i, k := range bounds {
		v := q.Get(k)
		if v == "" {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 || n > maxUnix {
			return f, apierr.BadRequest(k, "Invalid '%s': expected a Unix timestamp in seconds.", k)
		}
		t := time.Unix(n, 0)
		*dst[i] = &t
	}
	return f, nil
}
