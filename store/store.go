// Package store defines ekm's persistent state and the interface every
// database backend implements (package sqlstore: SQLite embedded by default,
// PostgreSQL for several replicas). Backends pass the shared suite in package
// storetest.
//
// Tenant isolation: every read or write of an org's objects takes the org id
// and matches it in the query, so a wrong id yields ErrNotFound, never another
// org's row.
//
// Nothing in the store is secret in the clear: project keys are stored only
// wrapped by a KEK, API keys only as SHA-256 hashes, file names and contents
// only as ciphertext.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

var (
	// ErrNotFound: no such object in this org.
	ErrNotFound = errors.New("store: not found")
	// ErrConflict: a uniqueness or state precondition failed (duplicate id,
	// stale compare-and-set).
	ErrConflict = errors.New("store: conflict")
)

// Org is a customer organization.
type Org struct {
	ID        string // org-…
	Name      string
	CreatedAt time.Time
}

// OrgSettings are an org's EKM settings.
type OrgSettings struct {
	OrgID string
	// DefaultExternalKeyID is the key new projects without one use ("" =
	// the operator's default key).
	DefaultExternalKeyID string
	// EKMRequired: every project must be under a customer key.
	EKMRequired bool
	UpdatedAt   time.Time
}

// Key kinds.
const (
	KindAdmin   = "admin"   // sk-admin-…, manages the org
	KindProject = "project" // sk-proj-…, data plane of one project
)

// APIKey is a bearer credential, stored only as the SHA-256 of its value.
type APIKey struct {
	ID               string // key_…
	OrgID            string
	Kind             string // KindAdmin or KindProject
	ProjectID        string // KindProject only
	ServiceAccountID string // KindProject only
	Name             string
	Hash             []byte // sha256(value)
	RedactedValue    string // e.g. "sk-admin-abc…xyz"
	CreatedAt        time.Time
	// LastUsedAt is when the key last authenticated a request, to the
	// minute (zero: never). It is written in batches (auth.LastUsed).
	LastUsedAt time.Time
}

// ServiceAccount owns one project API key.
type ServiceAccount struct {
	ID        string // svc_acct_…
	OrgID     string
	ProjectID string
	Name      string
	Role      string // "member"
	CreatedAt time.Time
}

// External key statuses.
const (
	StatusValid       = "valid"
	StatusDegraded    = "degraded"    // outage-class failures; cached keys still served
	StatusUnavailable = "unavailable" // revocation-class failure; nothing served
)

// ExternalKey is a customer KEK registered with ekm.
type ExternalKey struct {
	ID      string // extkey_…
	OrgID   string
	Type    string // "local", "azure", …
	Name    string
	Purpose string            // "ekm"
	Params  map[string]string // provider fields as on the API object
	// Health, maintained by validation and the probe.
	Status        string // StatusValid, StatusDegraded, StatusUnavailable
	StatusCode    string // diagnosis code of the last failure, "" when valid
	StatusMessage string
	StatusAt      time.Time
	// CurrentKEKVersion is the KEK version the KMS last reported as current.
	CurrentKEKVersion string
	CreatedAt         time.Time
}

// KeyHealth is a status update for an external key.
type KeyHealth struct {
	Status            string
	Code              string
	Message           string
	At                time.Time
	CurrentKEKVersion string // "" leaves it unchanged
}

// Project is a unit of data protected by one project key.
type Project struct {
	ID            string // proj_…
	OrgID         string
	Name          string
	ExternalKeyID string // "" = the operator's default key
	CreatedAt     time.Time
	ArchivedAt    *time.Time
	// CurrentKeyVersion is the project key version new data is written under.
	CurrentKeyVersion int
}

// ProjectKey is one version of a project key, wrapped by a KEK.
type ProjectKey struct {
	OrgID         string
	ProjectID     string
	Version       int    // 1, 2, …
	ExternalKeyID string // "" = the operator's default key
	KEKVersion    string // full KEK version identity as the KMS returned it
	Algorithm     string
	Wrapped       []byte
	CreatedAt     time.Time
}

// ProjectAccess records that a project's customer key refuses that project
// alone (the customer's policy conditions on the project; the key works for
// the org's other projects).
type ProjectAccess struct {
	OrgID         string
	ProjectID     string
	ExternalKeyID string
	Code          string
	Message       string
	At            time.Time
}

// ProjectSample is the newest version of one project's key wrapped by an
// external key, with the project's recorded refusal (nil: none).
type ProjectSample struct {
	Key    ProjectKey
	Denied *ProjectAccess
}

// ProbeTarget is an external key in use and one project key it wraps.
type ProbeTarget struct {
	Key    ExternalKey
	Sample ProjectKey
}

// AuditEvent is one entry of an org's audit log.
type AuditEvent struct {
	ID          string // audit_log-…
	OrgID       string
	Type        string // e.g. "project.created"
	EffectiveAt time.Time
	// Actor is the API key id that caused the event ("" for the system).
	Actor string
	// ProjectID, when the event concerns one project.
	ProjectID string
	// Data is the event-type payload, rendered under the event type's key.
	Data json.RawMessage
}

// AuditFilter selects audit events. Zero fields do not filter.
type AuditFilter struct {
	Types      []string
	ProjectIDs []string
	// EffectiveAt bounds (unix seconds semantics: gt, gte, lt, lte).
	GT, GTE, LT, LTE *time.Time
	// After / Before are event-id cursors; results are newest first.
	After, Before string
	Limit         int
}

// File is a stored object's metadata. The name is stored only encrypted.
type File struct {
	ID             string // file-…
	OrgID          string
	ProjectID      string
	Purpose        string
	Bytes          int64 // plaintext size
	CreatedAt      time.Time
	KeyVersion     int    // project key version of name and content
	NameCiphertext []byte // envelope ciphertext of the file name
	BlobKey        string // where the content ciphertext lives in the blob store
}

// Change is one entry of the change log that tells every replica what
// another one changed (package cluster): written in the same transaction as
// the change it announces, read by every replica in ID order.
type Change struct {
	// ID orders changes: in commit order, never reused.
	ID       int64
	Kind     string // e.g. "external_key.unavailable" (package cluster lists them)
	OrgID    string
	ObjectID string // the external key, project, API key or service account
	At       time.Time
}

// Lease is a named lease one replica holds until Expires: the probe of one
// external key, or the leadership of background jobs.
type Lease struct {
	Name    string
	Holder  string
	Expires time.Time
	// Taken counts how often the lease was taken, this time included.
	Taken int64
}

// Page is a cursor request: items strictly after the id After, in id order
// (ascending unless Desc). Limit is already validated by the API layer.
type Page struct {
	After string
	Limit int
	Desc  bool
}

// Queries is what can be done inside or outside a transaction.
type Queries interface {
	CreateOrg(ctx context.Context, o Org) error
	GetOrg(ctx context.Context, id string) (Org, error)
	// ListOrgs lists every org (operator-side workers such as scheduled
	// rotation walk all orgs with it).
	ListOrgs(ctx context.Context, p Page) ([]Org, error)
	// GetOrgSettings returns an org's settings (zero settings if it never
	// changed any; ErrNotFound if the org does not exist).
	GetOrgSettings(ctx context.Context, orgID string) (OrgSettings, error)
	// PutOrgSettings writes an org's settings. A DefaultExternalKeyID of
	// another org (or none) is ErrNotFound.
	PutOrgSettings(ctx context.Context, s OrgSettings) error
	// OrgsToMigrate lists, in id order after the org id after, up to limit
	// orgs that require EKM and have a default key, yet still have projects
	// (archived ones included) on the operator's default key. One query.
	OrgsToMigrate(ctx context.Context, after string, limit int) ([]OrgSettings, error)

	CreateAPIKey(ctx context.Context, k APIKey) error
	// APIKeyByHash finds a key by the hash of its value (any org).
	APIKeyByHash(ctx context.Context, hash []byte) (APIKey, error)
	GetAPIKey(ctx context.Context, orgID, id string) (APIKey, error)
	ListAPIKeys(ctx context.Context, orgID, kind string, p Page) ([]APIKey, error)
	DeleteAPIKey(ctx context.Context, orgID, id string) error
	// TouchAPIKeys sets LastUsedAt of the keys ids (of any org) to at,
	// where it is earlier or unset; unknown ids are ignored. One statement.
	TouchAPIKeys(ctx context.Context, at time.Time, ids []string) error

	CreateServiceAccount(ctx context.Context, s ServiceAccount) error
	GetServiceAccount(ctx context.Context, orgID, projectID, id string) (ServiceAccount, error)
	// UpdateServiceAccount writes Name and Role of an existing account.
	UpdateServiceAccount(ctx context.Context, s ServiceAccount) error
	ListServiceAccounts(ctx context.Context, orgID, projectID string, p Page) ([]ServiceAccount, error)
	// DeleteServiceAccount also deletes its API keys.
	DeleteServiceAccount(ctx context.Context, orgID, projectID, id string) error

	CreateExternalKey(ctx context.Context, k ExternalKey) error
	GetExternalKey(ctx context.Context, orgID, id string) (ExternalKey, error)
	// ListExternalKeys lists an org's keys; purpose "" means all.
	ListExternalKeys(ctx context.Context, orgID, purpose string, p Page) ([]ExternalKey, error)
	SetExternalKeyHealth(ctx context.Context, orgID, id string, h KeyHealth) error
	// UpdateExternalKeyParams replaces Params (e.g. a local key's version).
	UpdateExternalKeyParams(ctx context.Context, orgID, id string, params map[string]string) error
	DeleteExternalKey(ctx context.Context, orgID, id string) error
	// ProbeTargets lists, across all orgs in id order after the key id after
	// ("" = from the start), up to limit external keys that wrap at least one
	// project key of a non-archived project (what the health probe watches),
	// each with one such project key (the newest) to test-decrypt. One query.
	ProbeTargets(ctx context.Context, after string, limit int) ([]ProbeTarget, error)

	CreateProject(ctx context.Context, p Project) error
	GetProject(ctx context.Context, orgID, id string) (Project, error)
	ListProjects(ctx context.Context, orgID string, includeArchived bool, p Page) ([]Project, error)
	// UpdateProject writes Name, ExternalKeyID, ArchivedAt, CurrentKeyVersion.
	UpdateProject(ctx context.Context, p Project) error
	// ProjectsDueForRotation lists, across all orgs in id order after the
	// project id after, up to limit non-archived projects whose current key
	// version was created at or before cutoff. One query.
	ProjectsDueForRotation(ctx context.Context, cutoff time.Time, after string, limit int) ([]Project, error)
	// ProjectIDsByExternalKey lists projects whose ExternalKeyID is extKeyID.
	ProjectIDsByExternalKey(ctx context.Context, orgID, extKeyID string, includeArchived bool) ([]string, error)

	// PutProjectKey inserts a version, or replaces the wrapping of an
	// existing version (rewrap).
	PutProjectKey(ctx context.Context, k ProjectKey) error
	GetProjectKey(ctx context.Context, orgID, projectID string, version int) (ProjectKey, error)
	ListProjectKeys(ctx context.Context, orgID, projectID string) ([]ProjectKey, error)
	// ProjectSamples lists, in project id order, the newest version wrapped
	// by extKeyID of each non-archived project of an org (up to limit): what
	// the health probe decrypts when the key's type can refuse single
	// projects. One query.
	ProjectSamples(ctx context.Context, orgID, extKeyID string, limit int) ([]ProjectKey, error)
	// ProjectProbeBatch lists, in project id order after after ("" = from
	// the start), up to limit non-archived projects of an org whose key is
	// extKeyID, each with the newest version of its key and its recorded
	// refusal: one step of the per-project probe of a type whose customer
	// can refuse single projects. One query.
	ProjectProbeBatch(ctx context.Context, orgID, extKeyID, after string, limit int) ([]ProjectSample, error)
	// ProjectProbeCursor returns where the per-project probe of an external
	// key resumes: the last project id it probed ("" = from the start; also
	// for an unknown key). SetProjectProbeCursor moves it (ErrNotFound for
	// an unknown key). Every replica that probes the key shares it.
	ProjectProbeCursor(ctx context.Context, orgID, extKeyID string) (string, error)
	SetProjectProbeCursor(ctx context.Context, orgID, extKeyID, after string) error
	// DenyProject records that a project's key refuses it (replacing any
	// earlier record); AllowProject removes the record and reports whether
	// there was one. GetProjectAccess returns the record (ErrNotFound if
	// the project is not denied).
	DenyProject(ctx context.Context, a ProjectAccess) error
	AllowProject(ctx context.Context, orgID, projectID string) (bool, error)
	GetProjectAccess(ctx context.Context, orgID, projectID string) (ProjectAccess, error)
	// DeniedProjects lists, across orgs in project id order after after, up
	// to limit denied projects (a replica that may have missed changes
	// closes their gates again from it).
	DeniedProjects(ctx context.Context, after string, limit int) ([]ProjectAccess, error)
	// ProjectKeysToRewrap lists up to limit project key versions of an org
	// wrapped by extKeyID under a KEK version other than current (left to
	// rewrap after the customer rotated its key), or with an algorithm label
	// other than algorithm when that is not "" (wrapped before the driver
	// changed how it binds associated data), in (project, version) order.
	ProjectKeysToRewrap(ctx context.Context, orgID, extKeyID, current, algorithm string, limit int) ([]ProjectKey, error)
	// CountProjectKeysByKEKVersion counts project key versions wrapped by each
	// version of an external key.
	CountProjectKeysByKEKVersion(ctx context.Context, orgID, extKeyID string) (map[string]int, error)

	AppendAudit(ctx context.Context, e AuditEvent) error
	ListAudit(ctx context.Context, orgID string, f AuditFilter) ([]AuditEvent, error)
	// PruneAudit deletes events older than before (retention).
	PruneAudit(ctx context.Context, before time.Time) (int64, error)

	CreateFile(ctx context.Context, f File) error
	GetFile(ctx context.Context, orgID, projectID, id string) (File, error)
	// ListFiles lists a project's files; purpose "" means all.
	ListFiles(ctx context.Context, orgID, projectID, purpose string, p Page) ([]File, error)
	DeleteFile(ctx context.Context, orgID, projectID, id string) error
	// FilesBelowKeyVersion lists, in id order after the id after, up to limit
	// files of a project whose KeyVersion is below version (re-encryption).
	FilesBelowKeyVersion(ctx context.Context, orgID, projectID string, version int, after string, limit int) ([]File, error)
	// CountFilesBelowKeyVersion counts what FilesBelowKeyVersion would list.
	CountFilesBelowKeyVersion(ctx context.Context, orgID, projectID string, version int) (int, error)
	// ReplaceFileContent sets KeyVersion, NameCiphertext and BlobKey of f if
	// the stored file still has oldBlobKey (compare-and-set), else ErrConflict
	// (ErrNotFound if the file is gone).
	ReplaceFileContent(ctx context.Context, f File, oldBlobKey string) error

	// AppendChange records a change and returns its ID. Call it inside
	// InTx, as the transaction's last write: it orders the transaction
	// after every other that appended one (IDs are in commit order) and, on
	// PostgreSQL, wakes ListenChanges in every process when it commits.
	AppendChange(ctx context.Context, c Change) (int64, error)
	// ChangesAfter lists up to limit changes with an ID above after, in ID
	// order.
	ChangesAfter(ctx context.Context, after int64, limit int) ([]Change, error)
	// LastChangeID is the highest change ID (0 if none was ever recorded).
	LastChangeID(ctx context.Context) (int64, error)
	// PruneChanges deletes changes recorded before before.
	PruneChanges(ctx context.Context, before time.Time) (int64, error)

	// AcquireLeases takes for holder, until until, each lease of names that
	// is free at now: never taken, or expired (Expires <= now), or, with
	// renew, already held by holder. It returns the leases taken (in no
	// particular order); one statement, so of several replicas asking at
	// once exactly one takes each lease.
	//
	// now and until come from the caller's clock, so replicas whose clocks
	// disagree disagree on leases: only for callers with a clock of their
	// own (tests). Replicas use AcquireLeasesFor.
	AcquireLeases(ctx context.Context, holder string, names []string, now, until time.Time, renew bool) ([]Lease, error)
	// AcquireLeasesFor is AcquireLeases on the database's clock: now is the
	// database's time when the statement runs, until is now + ttl. Whatever
	// the replicas' clocks say, one of them holds a lease until it expires
	// by the one clock all share.
	AcquireLeasesFor(ctx context.Context, holder string, names []string, ttl time.Duration, renew bool) ([]Lease, error)
	// ReleaseLeases expires the leases of names that holder holds (nil
	// names: all of them), so that another replica may take them at once.
	ReleaseLeases(ctx context.Context, holder string, names []string) error
	// GetLease returns a lease as stored (ErrNotFound if never taken).
	GetLease(ctx context.Context, name string) (Lease, error)
	// PruneLeases deletes leases that expired before before.
	PruneLeases(ctx context.Context, before time.Time) (int64, error)

	// ClaimDeploymentID returns the id of the deployment this database
	// belongs to, first storing candidate if it has none (insert if absent,
	// then read): of several processes claiming at once, all get the id
	// the first one stored. The blob store's deployment marker holds the
	// same id (blob.Store.ClaimDeployment).
	ClaimDeploymentID(ctx context.Context, candidate string) (string, error)
	// DeploymentID returns the deployment id, ErrNotFound if none was ever
	// claimed.
	DeploymentID(ctx context.Context) (string, error)
}

// ChangeListener is implemented by stores that several processes share and
// that can wake them when another appends a change (PostgreSQL's
// LISTEN/NOTIFY). Without it, readers of the change log poll.
type ChangeListener interface {
	// ListenChanges calls ready once it listens, then wake after each
	// commit (by any process) of a transaction that appended a change,
	// until ctx ends or the connection is lost; it returns why it stopped.
	// Notifications may be lost while it is not listening: callers read the
	// log after ready.
	ListenChanges(ctx context.Context, ready, wake func()) error
}

// Store is a database. Methods on Store itself run in their own transaction.
type Store interface {
	Queries
	// InTx runs fn in one transaction: all of its writes commit, or none.
	// fn may be retried on serialization failures, so it must not have side
	// effects outside the transaction.
	InTx(ctx context.Context, fn func(q Queries) error) error
	// Ping checks the database is reachable (readiness).
	Ping(ctx context.Context) error
	Close() error
}
