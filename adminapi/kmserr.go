package adminapi

import (
	"errors"
	"net/http"

	"github.com/ekm-dev/ekm/apierr"
	"github.com/ekm-dev/ekm/kms"
	"github.com/ekm-dev/ekm/lifecycle"
)

// retryAfter is the Retry-After (seconds) sent with KMS outage errors.
const retryAfter = 5

// kmsFailure turns a failed KMS operation into an API error, from its
// diagnosis (kms.Diagnose):
//
//   - invalid or revoked: 400, the customer must fix the key or its
//     permissions (code, message and step say how);
//   - outage: 503 with Retry-After, the KMS could not be reached: try again;
//   - operator: 500, ekm's own KMS configuration is wrong.
//
// param names the request field the customer should look at; "" (a
// registration) means the registration parameter the diagnosis names. When
// the request field is given and the diagnosis names a registration
// parameter of the key (e.g. tenant_id), that parameter is the step to fix.
// Errors that did not come from a KMS are returned unchanged (internal).
func kmsFailure(err error, param string) error {
	d, ok := kms.Diagnose(err)
	if !ok {
		return err
	}
	switch {
	case param == "":
		param = d.Param
	case d.Step == "":
		d.Step = d.Param
	}
	var e *apierr.Error
	switch d.Class {
	case kms.Invalid, kms.Revoked:
		e = apierr.New(http.StatusBadRequest, "invalid_request_error", d.Code, param, "%s", d.Message)
	case kms.Operator:
		e = apierr.New(http.StatusInternalServerError, "server_error", d.Code, "", "%s", d.Message)
	default:
		e = apierr.New(http.StatusServiceUnavailable, "server_error", d.Code, param, "%s", d.Message)
		e.RetryAfter = retryAfter
	}
	return &kmsAPIError{api: e, Step: d.Step}
}

// serviceErr maps what the lifecycle service refused to the API; a store
// miss of the object the path names is a 404 for kind and id.
func serviceErr(err error, kind, id string) error {
	var le *lifecycle.Error
	if !errors.As(err, &le) {
		return storeErr(err, kind, id)
	}
	switch le.Kind {
	case lifecycle.NotFound:
		return apierr.New(http.StatusNotFound, "invalid_request_error", le.Code, le.Param, "%s", le.Message)
	case lifecycle.Conflict:
		return apierr.Conflict(le.Code, "%s", le.Message)
	case lifecycle.Invalid:
		return apierr.New(http.StatusBadRequest, "invalid_request_error", le.Code, le.Param, "%s", le.Message)
	default:
		return kmsFailure(le.Err, le.Param)
	}
}
