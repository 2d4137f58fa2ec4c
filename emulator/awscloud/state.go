package awscloud

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math/big"
	"time"
)

// stateVersion is bumped when the persisted layout changes incompatibly.
const stateVersion = 1

const stateFileName = "state.json"

// state is everything the emulator knows; guarded by Emulator.mu and
// persisted as one JSON document when Options.StateDir is set.
type state struct {
	Version   int                 `json:"version"`
	CACertDER []byte              `json:"ca_cert"`
	CAKeyDER  []byte              `json:"ca_key"`
	Vendor    string              `json:"vendor_account"`
	Accounts  map[string]*account `json:"accounts"` // by 12-digit id
	// AccessKeys maps long-term access key ids (AKIA...) to their owner.
	AccessKeys map[string]*accessKey `json:"access_keys"`
	// Sessions maps temporary access key ids (ASIA...) to role sessions.
	Sessions map[string]*session `json:"sessions"`
	// Issuers maps an OIDC issuer URL to its JWKS (what IAM would fetch
	// from the issuer's discovery document).
	Issuers  map[string]string `json:"issuers"`
	Settings Settings          `json:"settings"`
}

type accessKey struct {
	ID      string    `json:"id"`
	Secret  string    `json:"secret"`
	Account string    `json:"account"`
	User    string    `json:"user,omitempty"` // "" = the account's root user
	Created time.Time `json:"created"`
}

type account struct {
	ID        string                 `json:"id"`
	Partition string                 `json:"partition"`
	Created   time.Time              `json:"created"`
	Users     map[string]*user       `json:"users"`    // by lower-case name
	Roles     map[string]*role       `json:"roles"`    // by lower-case name
	Policies  map[string]*managedPol `json:"policies"` // by ARN
	OIDC      map[string]*oidcProv   `json:"oidc_providers"`
	Keys      map[string]*kmsKey     `json:"keys"`    // by key id
	Aliases   map[string]*kmsAlias   `json:"aliases"` // by region + " " + alias name
}

// storedPolicy is a policy document as given, plus the unique ids its
// user and role principals were bound to when it was saved (IAM and KMS
// keep principals by unique id: a deleted and re-created principal of the
// same name no longer matches).
type storedPolicy struct {
	Doc      string            `json:"doc"`
	Bindings map[string]string `json:"bindings,omitempty"` // principal ARN -> AIDA/AROA id
}

type user struct {
	Name     string            `json:"name"`
	ID       string            `json:"id"` // AIDA...
	Path     string            `json:"path"`
	Created  time.Time         `json:"created"`
	Inline   map[string]string `json:"inline_policies"`
	Attached []string          `json:"attached_policies"` // ARNs
}

type role struct {
	Name               string            `json:"name"`
	ID                 string            `json:"id"` // AROA...
	Path               string            `json:"path"`
	Created            time.Time         `json:"created"`
	Description        string            `json:"description,omitempty"`
	MaxSessionDuration int               `json:"max_session_duration"`
	Trust              storedPolicy      `json:"trust"`
	Inline             map[string]string `json:"inline_policies"`
	Attached           []string          `json:"attached_policies"`
	Tags               []tag             `json:"tags,omitempty"`
	LastUsed           time.Time         `json:"last_used,omitempty"`
	LastUsedRegion     string            `json:"last_used_region,omitempty"`
}

type tag struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

type managedPol struct {
	Name        string    `json:"name"`
	ID          string    `json:"id"` // ANPA...
	Path        string    `json:"path"`
	ARN         string    `json:"arn"`
	Description string    `json:"description,omitempty"`
	Doc         string    `json:"doc"`
	Created     time.Time `json:"created"`
	Updated     time.Time `json:"updated"`
	Tags        []tag     `json:"tags,omitempty"`
}

type oidcProv struct {
	ARN        string    `json:"arn"`
	URL        string    `json:"url"` // without https://
	ClientIDs  []string  `json:"client_ids"`
	Thumbprint []string  `json:"thumbprints,omitempty"`
	Created    time.Time `json:"created"`
}

type session struct {
	AccessKeyID    string            `json:"access_key_id"`
	Secret         string            `json:"secret"`
	Token          string            `json:"token"`
	Account        string            `json:"account"`
	RoleName       string            `json:"role_name"`
	RoleID         string            `json:"role_id"`
	RoleARN        string            `json:"role_arn"`
	SessionName    string            `json:"session_name"`
	Expires        time.Time         `json:"expires"`
	SessionPolicy  string            `json:"session_policy,omitempty"`
	PolicyARNs     []string          `json:"policy_arns,omitempty"`
	SourceIdentity string            `json:"source_identity,omitempty"`
	WebIdentity    string            `json:"web_identity,omitempty"` // provider ARN
	Claims         map[string]string `json:"claims,omitempty"`
}

type keyMaterial struct {
	ID      string    `json:"id"` // 64 hex digits
	Secret  []byte    `json:"secret"`
	Created time.Time `json:"created"`
	// OnDemand marks rotations made by RotateKeyOnDemand.
	OnDemand bool `json:"on_demand,omitempty"`
}

type kmsKey struct {
	ID                  string        `json:"id"`
	ARN                 string        `json:"arn"`
	Account             string        `json:"account"`
	Region              string        `json:"region"`
	Created             time.Time     `json:"created"`
	Description         string        `json:"description"`
	Usage               string        `json:"usage"` // ENCRYPT_DECRYPT
	Spec                string        `json:"spec"`  // SYMMETRIC_DEFAULT, RSA_2048...
	MultiRegion         bool          `json:"multi_region,omitempty"`
	State               string        `json:"state"` // Enabled, Disabled, PendingDeletion
	DeletionDate        time.Time     `json:"deletion_date,omitempty"`
	PendingWindowDays   int           `json:"pending_window_days,omitempty"`
	Policy              storedPolicy  `json:"policy"`
	Materials           []keyMaterial `json:"materials,omitempty"` // symmetric; last is current
	RSAKeyDER           []byte        `json:"rsa_key,omitempty"`
	RotationEnabled     bool          `json:"rotation_enabled,omitempty"`
	RotationPeriodDays  int           `json:"rotation_period_days,omitempty"`
	NextRotation        time.Time     `json:"next_rotation,omitempty"`
	OnDemandRotations   int           `json:"on_demand_rotations,omitempty"`
	Grants              []*grant      `json:"grants,omitempty"`
	Tags                []tag         `json:"tags,omitempty"`
	LastOnDemandStarted time.Time     `json:"last_on_demand_started,omitempty"`
}

type grant struct {
	ID         string            `json:"id"`
	Token      string            `json:"token"`
	Name       string            `json:"name,omitempty"`
	Grantee    string            `json:"grantee"`
	Retiring   string            `json:"retiring,omitempty"`
	Operations []string          `json:"operations"`
	ECSubset   map[string]string `json:"ec_subset,omitempty"`
	ECEquals   map[string]string `json:"ec_equals,omitempty"`
	Issuer     string            `json:"issuer"` // issuing account
	Created    time.Time         `json:"created"`
	// GranteeID binds a user or role grantee to its unique id.
	GranteeID string `json:"grantee_id,omitempty"`
}

type kmsAlias struct {
	Name    string    `json:"name"` // alias/...
	Region  string    `json:"region"`
	Target  string    `json:"target"` // key id
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

func (st *state) normalize() {
	if st.Accounts == nil {
		st.Accounts = map[string]*account{}
	}
	if st.AccessKeys == nil {
		st.AccessKeys = map[string]*accessKey{}
	}
	if st.Sessions == nil {
		st.Sessions = map[string]*session{}
	}
	if st.Issuers == nil {
		st.Issuers = map[string]string{}
	}
	for _, a := range st.Accounts {
		a.normalize()
	}
}

func (a *account) normalize() {
	if a.Users == nil {
		a.Users = map[string]*user{}
	}
	if a.Roles == nil {
		a.Roles = map[string]*role{}
	}
	if a.Policies == nil {
		a.Policies = map[string]*managedPol{}
	}
	if a.OIDC == nil {
		a.OIDC = map[string]*oidcProv{}
	}
	if a.Keys == nil {
		a.Keys = map[string]*kmsKey{}
	}
	if a.Aliases == nil {
		a.Aliases = map[string]*kmsAlias{}
	}
	for _, u := range a.Users {
		if u.Inline == nil {
			u.Inline = map[string]string{}
		}
	}
	for _, r := range a.Roles {
		if r.Inline == nil {
			r.Inline = map[string]string{}
		}
	}
}

// ---- identifiers ----

const idAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

// newUniqueID returns an IAM-style id: prefix + 17 base32 characters
// (AKIA/ASIA access keys, AIDA users, AROA roles, ANPA policies).
func newUniqueID(prefix string) string {
	b := make([]byte, 17)
	rand.Read(b)
	for i := range b {
		b[i] = idAlphabet[int(b[i])%len(idAlphabet)]
	}
	return prefix + string(b)
}

func newSecretKey() string {
	b := make([]byte, 30)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b) // 40 characters
}

func newAccountID() string {
	n, _ := rand.Int(rand.Reader, big.NewInt(900_000_000_000))
	return fmt.Sprintf("%012d", 100_000_000_000+n.Int64())
}

func randHexN(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
