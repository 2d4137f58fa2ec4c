package adminapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/ekm-dev/ekm/apierr"
	"github.com/ekm-dev/ekm/httpx"
)

// Length limits of request fields, in characters.
const (
	maxName  = 256  // names of keys, projects, service accounts
	maxShort = 256  // provider identifiers (tenant ids, regions, key names)
	maxLong  = 2048 // ARNs, URIs, OCIDs
	maxID    = 64   // ekm object ids
	maxType  = 64
)

// readBody reads the request body up to the configured limit, within the
// body timeout.
func (a *api) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	b, err := httpx.ReadBody(w, r, a.maxBody, a.bodyTimeout)
	switch {
	case err == nil:
		return b, nil
	case errors.Is(err, httpx.ErrBodyTooLarge):
		return nil, apierr.TooLarge(a.maxBody)
	case errors.Is(err, httpx.ErrBodyTimeout):
		return nil, apierr.RequestTimeout(a.bodyTimeout)
	}
	return nil, apierr.BadRequest("", "The request body could not be read.")
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
	// encoding/json keeps the last of duplicate names silently: refuse
	// them, the caller cannot have meant both values.
	if path, dup := httpx.DuplicateKey(b); dup {
		return nil, apierr.New(http.StatusBadRequest, "invalid_request_error", "invalid_json", clip(path), "Duplicate parameter '%s' in the JSON body.", clip(path))
	}
	// encoding/json turns invalid UTF-8 into U+FFFD silently: refuse it,
	// naming the field.
	for _, k := range sortedKeys(o) {
		if !utf8.Valid(o[k]) {
			return nil, apierr.BadRequest(clip(k), "Invalid '%s': not valid UTF-8.", clip(strings.ToValidUTF8(k, "\uFFFD")))
		}
	}
	return o, nil
}

func sortedKeys(o object) []string {
	ks := make([]string, 0, len(o))
	for k := range o {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// loneSurrogate reports whether decoding raw (a JSON string) replaced an
// escaped lone UTF-16 surrogate (\ud800) with U+FFFD: the U+FFFD in s was
// not in the request, neither as such nor escaped.
func loneSurrogate(raw json.RawMessage, s string) bool {
	if !strings.ContainsRune(s, utf8.RuneError) {
		return false
	}
	return !bytes.Contains(raw, []byte("\uFFFD")) && !bytes.Contains(raw, []byte("\ufffd")) && !bytes.Contains(raw, []byte(string(utf8.RuneError)))
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
	if loneSurrogate(raw, s) {
		return "", false, apierr.BadRequest(name, "Invalid '%s': not valid UTF-8 (a lone UTF-16 surrogate).", name)
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
