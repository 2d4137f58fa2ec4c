// Package audit defines every event ekm writes to an org's audit log, as
// typed payloads, and builds the store record of one. Events of the OpenAI
// Admin API (api_key.*, service_account.*, project.*, external_key.*) have
// OpenAI's payload shape ({"id": …, "data": …}); the events ekm adds for the
// key lifecycle (kms.call, project.key_rotated, external_key.unavailable, …)
// are documented in docs/API.md and docs/lifecycle.md.
package audit

import (
	"encoding/json"
	"time"

	"github.com/ekm-dev/ekm/ids"
	"github.com/ekm-dev/ekm/store"
)

// IDPrefix is the prefix of audit event ids.
const IDPrefix = "audit_log-"

// Event is one audit event's payload. Payload fields are declared in the
// order of their JSON names: stored payloads are byte for byte what earlier
// versions wrote from maps (whose keys encoding/json sorts).
type Event interface {
	// Type is the event type, e.g. "project.created".
	Type() string
}

// Entry is who caused an event and what it concerns.
type Entry struct {
	OrgID string
	// Actor is the API key id that caused the event ("" for ekm itself or
	// the operator).
	Actor string
	// ProjectID, when the event concerns one project.
	ProjectID string
	At        time.Time
}

// ActorOperator is the Actor of changes the operator made on the command
// line (not through the API with an admin key).
const ActorOperator = "operator"

// Record returns the store record of ev.
func Record(e Entry, ev Event) store.AuditEvent {
	data, err := json.Marshal(ev)
	if err != nil {
		// Payloads are plain structs of strings, numbers and maps of them.
		panic("audit: unmarshalable payload: " + err.Error())
	}
	return store.AuditEvent{ID: ids.New(IDPrefix), OrgID: e.OrgID, Type: ev.Type(), EffectiveAt: e.At,
		Actor: e.Actor, ProjectID: e.ProjectID, Data: data}
}

// Event types.
const (
	TypeAPIKeyCreated          = "api_key.created"
	TypeAPIKeyDeleted          = "api_key.deleted"
	TypeServiceAccountCreated  = "service_account.created"
	TypeServiceAccountUpdated  = "service_account.updated"
	TypeServiceAccountDeleted  = "service_account.deleted"
	TypeExternalKeyRegistered  = "external_key.registered"
	TypeExternalKeyRemoved     = "external_key.removed"
	TypeExternalKeyValidated   = "external_key.validated"
	TypeExternalKeyUnavailable = "external_key.unavailable"
	TypeExternalKeyDegraded    = "external_key.degraded"
	TypeExternalKeyRestored    = "external_key.restored"
	TypeExternalKeyRotated     = "external_key.rotated"
	TypeExternalKeyRewrapped   = "external_key.rewrapped"
	TypeProjectCreated         = "project.created"
	TypeProjectUpdated         = "project.updated"
	TypeProjectArchived        = "project.archived"
	TypeProjectKeyRotated      = "project.key_rotated"
	TypeProjectReencrypted     = "project.reencrypted"
	TypeKMSCall                = "kms.call"
	TypeOrganizationUpdated    = "organization.updated"
	TypeProjectKeyDenied       = "external_key.project_unavailable"
	TypeProjectKeyRestored     = "external_key.project_restored"
)

// --- OpenAI Admin API events ---

// APIKeyCreated: an admin key or a project key was created.
type APIKeyCreated struct {
	Data APIKeyDetails `json:"data"`
	ID   string        `json:"id"`
}

// APIKeyDetails are the non-secret facts of a created key.
type APIKeyDetails struct {
	Kind             string `json:"kind"`
	Name             string `json:"name"`
	RedactedValue    string `json:"redacted_value"`
	ServiceAccountID string `json:"service_account_id,omitempty"`
}

func (APIKeyCreated) Type() string { return TypeAPIKeyCreated }

// NewAPIKeyCreated describes k (never its value).
func NewAPIKeyCreated(k store.APIKey) APIKeyCreated {
	return APIKeyCreated{ID: k.ID, Data: APIKeyDetails{Kind: k.Kind, Name: k.Name, RedactedValue: k.RedactedValue, ServiceAccountID: k.ServiceAccountID}}
}

// APIKeyDeleted: an API key was deleted.
type APIKeyDeleted struct {
	ID string `json:"id"`
}

func (APIKeyDeleted) Type() string { return TypeAPIKeyDeleted }

// ServiceAccountCreated: a service account (with its key) was created.
type ServiceAccountCreated struct {
	Data ServiceAccountDetails `json:"data"`
	ID   string                `json:"id"`
}

// ServiceAccountDetails are a service account's role and name.
type ServiceAccountDetails struct {
	Name string `json:"name"`
	Role string `json:"role"`
}

func (ServiceAccountCreated) Type() string { return TypeServiceAccountCreated }

// ServiceAccountUpdated: a service account was renamed.
type ServiceAccountUpdated struct {
	ChangesRequested map[string]any `json:"changes_requested"`
	ID               string         `json:"id"`
	Previous         map[string]any `json:"previous"`
}

func (ServiceAccountUpdated) Type() string { return TypeServiceAccountUpdated }

// ServiceAccountDeleted: a service account (and its keys) was deleted.
type ServiceAccountDeleted struct {
	ID string `json:"id"`
}

func (ServiceAccountDeleted) Type() string { return TypeServiceAccountDeleted }

// ExternalKeyRegistered: a customer key was registered. Data is its
// configuration (type, name, purpose and provider fields; none is secret).
type ExternalKeyRegistered struct {
	Data map[string]any `json:"data"`
	ID   string         `json:"id"`
}

func (ExternalKeyRegistered) Type() string { return TypeExternalKeyRegistered }

// ExternalKeyRemoved: a customer key was removed.
type ExternalKeyRemoved struct {
	ID string `json:"id"`
}

func (ExternalKeyRemoved) Type() string { return TypeExternalKeyRemoved }

// ExternalKeyValidated: an admin asked for a live validation.
type ExternalKeyValidated struct {
	Data ValidationState `json:"data"`
	ID   string          `json:"id"`
}

// ValidationState is a validation's outcome; Code and Step only on failure.
type ValidationState struct {
	Code   *string `json:"code,omitempty"`
	Status string  `json:"status"`
	Step   *string `json:"step,omitempty"`
}

func (ExternalKeyValidated) Type() string { return TypeExternalKeyValidated }

// ProjectCreated: a project was created.
type ProjectCreated struct {
	Data ProjectDetails `json:"data"`
	ID   string         `json:"id"`
}

// ProjectDetails are a created project's name (also as OpenAI's title) and
// key; ExternalKeyID is null for the operator's default key.
type ProjectDetails struct {
	ExternalKeyID *string `json:"external_key_id"`
	Name          string  `json:"name"`
	Title         string  `json:"title"`
}

func (ProjectCreated) Type() string { return TypeProjectCreated }

// ProjectUpdated: a project was renamed or re-keyed.
type ProjectUpdated struct {
	ChangesRequested map[string]any `json:"changes_requested"`
	ID               string         `json:"id"`
	Previous         map[string]any `json:"previous"`
}

func (ProjectUpdated) Type() string { return TypeProjectUpdated }

// ProjectArchived: a project was archived.
type ProjectArchived struct {
	ID string `json:"id"`
}

func (ProjectArchived) Type() string { return TypeProjectArchived }

// OrganizationUpdated: an org's settings changed (ekm's settings: the
// default external key and whether EKM is required).
type OrganizationUpdated struct {
	ChangesRequested map[string]any `json:"changes_requested"`
	ID               string         `json:"id"`
	Previous         map[string]any `json:"previous"`
}

func (OrganizationUpdated) Type() string { return TypeOrganizationUpdated }

// --- key lifecycle events (ekm's own) ---

// KeyHealth: an external key's health changed. Its type is one of
// TypeExternalKeyUnavailable, TypeExternalKeyDegraded, TypeExternalKeyRestored.
type KeyHealth struct {
	Event         string `json:"-"`
	Code          string `json:"code"`
	ExternalKeyID string `json:"external_key_id"`
	Message       string `json:"message"`
	Status        string `json:"status"`
}

func (h KeyHealth) Type() string { return h.Event }

// ProjectAccess: the customer's policy refused one project on its key
// (TypeProjectKeyDenied: the key works for the org's other projects), or
// admits it again (TypeProjectKeyRestored).
type ProjectAccess struct {
	Event         string `json:"-"`
	Code          string `json:"code,omitempty"`
	ExternalKeyID string `json:"external_key_id"`
	Message       string `json:"message,omitempty"`
	ProjectID     string `json:"project_id"`
}

func (a ProjectAccess) Type() string { return a.Event }

// ExternalKeyRotated: the customer's KMS reports a new current KEK version.
type ExternalKeyRotated struct {
	CurrentVersion  string `json:"current_version"`
	ExternalKeyID   string `json:"external_key_id"`
	PreviousVersion string `json:"previous_version"`
}

func (ExternalKeyRotated) Type() string { return TypeExternalKeyRotated }

// ExternalKeyRewrapped: one project key version moved to the current KEK
// version after a KEK rotation.
type ExternalKeyRewrapped struct {
	ExternalKeyID string `json:"external_key_id"`
	From          string `json:"from"`
	ProjectID     string `json:"project_id"`
	To            string `json:"to"`
	Version       int    `json:"version"`
}

func (ExternalKeyRewrapped) Type() string { return TypeExternalKeyRewrapped }

// ProjectKeyRotated: a project got a new key version.
type ProjectKeyRotated struct {
	ProjectID string `json:"project_id"`
	Scheduled bool   `json:"scheduled,omitempty"`
	Version   int    `json:"version"`
}

func (ProjectKeyRotated) Type() string { return TypeProjectKeyRotated }

// ProjectReencrypted: a re-encryption run moved files to a key version.
type ProjectReencrypted struct {
	Failed      int    `json:"failed"`
	ProjectID   string `json:"project_id"`
	Reencrypted int    `json:"reencrypted"`
	Skipped     int    `json:"skipped"`
	Version     int    `json:"version"`
}

func (ProjectReencrypted) Type() string { return TypeProjectReencrypted }

// KMSCall: one call to a customer's KMS.
type KMSCall struct {
	ExternalKeyID string  `json:"external_key_id"`
	Operation     string  `json:"operation"`
	Outcome       string  `json:"outcome"`
	LatencyMS     float64 `json:"latency_ms"`
	// RequestID is the id sent to the KMS (the last, when several were).
	RequestID string `json:"request_id,omitempty"`
	// RequestIDs lists every id when the operation made several requests.
	RequestIDs []string `json:"request_ids,omitempty"`
	ErrorCode  string   `json:"error_code,omitempty"`
	// EKMRequestID is the id ekm gave the API request that caused the call
	// (the X-Request-Id it answered with), when one did.
	EKMRequestID string `json:"ekm_request_id,omitempty"`
	// ClientRequestID is, instead, the X-Request-Id the client chose for
	// that request: the client's word, not ekm's.
	ClientRequestID string `json:"client_request_id,omitempty"`
}

func (KMSCall) Type() string { return TypeKMSCall }
