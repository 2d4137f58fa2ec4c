package kms

import (
	"context"
	"errors"
)

// Diagnosis is what a failed KMS operation means, in one place for every
// caller: its class (and so the key's health), a stable code, a message
// safe to show the customer, and the onboarding step and registration
// parameter to fix.
type Diagnosis struct {
	Class   Class
	Code    string
	Message string
	Step    string
	Param   string
	// Scope: "" the whole key, ScopeProject one project (see Error.Scope).
	Scope string
}

// Retryable reports whether trying again later may succeed.
func (d Diagnosis) Retryable() bool { return d.Class == Outage }

// Diagnoser is implemented by errors that carry a KMS diagnosis of their
// own (e.g. the keyring's error for a key whose use is refused).
type Diagnoser interface {
	Diagnosis() Diagnosis
}

// Diagnose explains err. ok is false for errors that did not come from a
// KMS (a database failure, say): those are internal, not the customer's.
func Diagnose(err error) (d Diagnosis, ok bool) {
	var dg Diagnoser
	var e *Error
	switch {
	case err == nil:
		return Diagnosis{}, false
	case errors.As(err, &dg):
		d = dg.Diagnosis()
	case errors.As(err, &e):
		d = Diagnosis{Class: e.Class, Code: e.Code, Message: e.Message, Step: e.Step, Param: e.Param, Scope: e.Scope}
	case errors.Is(err, context.DeadlineExceeded):
		d = Diagnosis{Class: Outage, Code: CodeTimeout, Message: "The customer's key management service did not answer in time."}
	default:
		return Diagnosis{}, false
	}
	if d.Class == "" {
		d.Class = Outage
	}
	return d, true
}
