package adminapi

import (
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ekm-dev/ekm/apierr"
	"github.com/ekm-dev/ekm/ids"
	"github.com/ekm-dev/ekm/store"
)

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
	if _, ok := q["limit"]; ok {
		n, err := parseLimit(q.Get("limit"))
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
	if _, ok := q["limit"]; ok {
		n, err := parseLimit(q.Get("limit"))
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
