// Package apierr writes errors in OpenAI's wire shape:
//
//	{"error":{"message":"…","type":"…","param":"…","code":"…"}}
//
// Every handler reports failures through *Error so that status, type and code
// stay consistent across the Admin API, the Files API and the crypto API.
package apierr

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Error is an API error. Message must be safe to show to the caller.
type Error struct {
	Status  int    `json:"-"`
	Message string `json:"message"`
	Type    string `json:"type"`
	Param   any    `json:"param"` // string or nil, as OpenAI sends null
	Code    any    `json:"code"`  // string or nil
	// RetryAfter, when > 0, is sent as a Retry-After header (seconds).
	RetryAfter int `json:"-"`
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Type, e.Message) }

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// New builds an error.
func New(status int, typ, code, param, format string, args ...any) *Error {
	return &Error{Status: status, Type: typ, Code: nilIfEmpty(code), Param: nilIfEmpty(param), Message: fmt.Sprintf(format, args...)}
}

// Common constructors.
func BadRequest(param, format string, args ...any) *Error {
	return New(http.StatusBadRequest, "invalid_request_error", "invalid_value", param, format, args...)
}
func Missing(param string) *Error {
	return New(http.StatusBadRequest, "invalid_request_error", "missing_required_parameter", param, "Missing required parameter: '%s'.", param)
}
func NotFound(kind, id string) *Error {
	return New(http.StatusNotFound, "invalid_request_error", "not_found", "", "No %s found with id '%s'.", kind, id)
}
func Conflict(code, format string, args ...any) *Error {
	return New(http.StatusConflict, "invalid_request_error", code, "", format, args...)
}
func Unauthorized(format string, args ...any) *Error {
	return New(http.StatusUnauthorized, "invalid_request_error", "invalid_api_key", "", format, args...)
}
func TooLarge(limit int64) *Error {
	return New(http.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large", "", "Request body exceeds the limit of %d bytes.", limit)
}
func RequestTimeout(limit time.Duration) *Error {
	return New(http.StatusRequestTimeout, "invalid_request_error", "request_timeout", "", "The request body was not received within %s.", limit)
}
func Internal() *Error {
	return New(http.StatusInternalServerError, "server_error", "internal_error", "", "The server had an error while processing your request.")
}

// Write sends err as JSON. Errors that are not *Error become a generic 500
// so that internal details never reach the caller; log them before calling.
func Write(w http.ResponseWriter, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = Internal()
	}
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(struct {
		Error *Error `json:"error"`
	}{e})
}
