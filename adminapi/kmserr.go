package adminapi

import (
	"context"
	"errors"
	"net/http"
	"slices"

	"github.com/ekm-dev/ekm/apierr"
	"github.com/ekm-dev/ekm/keyring"
	"github.com/ekm-dev/ekm/kms"
)

// diagnosis is what a KMS failure means for the customer.
type diagnosis struct {
	Class   kms.Class
	Code    string
	Message string
	Step    string
}

// diagnose explains a KMS or keyring failure. ok is false for errors that
// did not come from the KMS (e.g. the database), which are internal.
func diagnose(err error) (d diagnosis, ok bool) {
	var ue *keyring.UnavailableError
	var ke *kms.Error
	switch {
	case errors.As(err, &ue):
		d = diagnosis{Class: ue.Class, Code: ue.Code, Message: ue.Message}
		if errors.As(ue.Err, &ke) {
			d.Step = ke.Step
		}
	case errors.As(err, &ke):
		d = diagnosis{Class: ke.Class, Code: ke.Code, Message: ke.Message, Step: ke.Step}
	case errors.Is(err, context.DeadlineExceeded):
		d = diagnosis{Class: kms.Outage, Code: "kms_timeout", Message: "The customer's key management service did not answer in time."}
	default:
		return diagnosis{}, false
	}
	if d.Class == "" {
		d.Class = kms.Outage
	}
	return d, true
}

// retryAfter is the Retry-After (seconds) sent with KMS outage errors.
const retryAfter = 5

// kmsFailure turns a failed live KMS operation into an API error:
//
//   - invalid or revoked: 400, the customer must fix the key or its
//     permissions (code, message and step say how);
//   - outage: 503 with Retry-After, the KMS could not be reached: try again;
//   - operator: 500, ekm's own KMS configuration is wrong.
//
// param names the request field the customer should look at.
func kmsFailure(err error, param string) error {
	d, ok := diagnose(err)
	if !ok {
		return err
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

// localParamByCode names the field behind a local driver's Check codes,
// which carry no Step.
var localParamByCode = map[string]string{
	"invalid_local_key_id": "local_key_id",
	"invalid_key_version":  "key_version",
}

// checkFailure turns a Keyring.Check error into a 400 naming the field.
// Drivers put the offending parameter in Step when they know it.
func checkFailure(err error, typ string) error {
	var ke *kms.Error
	if !errors.As(err, &ke) {
		return err
	}
	param, step := "", ke.Step
	switch {
	case ke.Code == "unsupported_type":
		param = "type"
	case ke.Step != "" && isField(typ, ke.Step):
		param, step = ke.Step, ""
	case localParamByCode[ke.Code] != "" && typ == "local":
		param = localParamByCode[ke.Code]
	}
	return &kmsAPIError{api: apierr.New(http.StatusBadRequest, "invalid_request_error", ke.Code, param, "%s", ke.Message), Step: step}
}

func isField(typ, name string) bool {
	return slices.ContainsFunc(keyTypes[typ], func(f keyField) bool { return f.name == name })
}

// stepParam names the registration field a live failure points at, when
// the driver's step is a field of typ (e.g. tenant_id), else "".
func stepParam(err error, typ string) string {
	if d, ok := diagnose(err); ok && isField(typ, d.Step) {
		return d.Step
	}
	return ""
}
