package azurecloud

import (
	"crypto"
	"fmt"
	"strings"
	"time"

	"github.com/ekm-dev/ekm/emulator/emukit"
)

// stateVersion is bumped when the persisted layout changes incompatibly.
const stateVersion = 1

// state is everything the emulator knows. It is guarded by Emulator.mu and
// persisted as one JSON document when Options.StateDir is set.
type state struct {
	Version     int    `json:"version"`
	CACertDER   []byte `json:"ca_cert"`
	CAKeyDER    []byte `json:"ca_key"`
	SignCertDER []byte `json:"signing_cert"`
	SignKeyDER  []byte `json:"signing_key"`
	// Key release and attestation: the Key Vault certificate (issued by the
	// CA) that signs release responses, the attestation providers' signing
	// certificate, and the key that seals key backups.
	ReleaseCertDER []byte             `json:"release_cert,omitempty"`
	ReleaseKeyDER  []byte             `json:"release_key,omitempty"`
	AttestCertDER  []byte             `json:"attestation_cert,omitempty"`
	AttestKeyDER   []byte             `json:"attestation_key,omitempty"`
	BackupKey      []byte             `json:"backup_key,omitempty"`
	HomeTenantID   string             `json:"home_tenant_id"`
	AppID          string             `json:"app_id"`
	Apps           map[string]*app    `json:"apps"`
	Tenants        map[string]*tenant `json:"tenants"`
	Vaults         map[string]*vault  `json:"vaults"`       // by lower-case name
	HSMs           map[string]*vault  `json:"managed_hsms"` // Managed HSM pools, by lower-case name
	Issuers        map[string]*jwks   `json:"issuers"`      // federated issuer -> JWKS
	Settings       Settings           `json:"settings"`
}

type app struct {
	ClientID     string                `json:"client_id"`
	DisplayName  string                `json:"display_name"`
	HomeTenantID string                `json:"home_tenant_id"`
	Secret       string                `json:"secret"`
	CertDER      []byte                `json:"cert"`
	KeyDER       []byte                `json:"key"`
	Federated    []FederatedCredential `json:"federated_credentials"`
}

// FederatedCredential is a federated identity credential on the app: a
// client assertion whose iss, sub and aud match exactly (case-sensitive, as
// Entra does today) is accepted in place of a secret.
type FederatedCredential struct {
	Name      string   `json:"name"`
	Issuer    string   `json:"issuer"`
	Subject   string   `json:"subject"`
	Audiences []string `json:"audiences"`
}

type tenant struct {
	ID              string                     `json:"id"`
	SubscriptionID  string                     `json:"subscription_id"`
	DisplayName     string                     `json:"display_name"`
	AdminObjectID   string                     `json:"admin_object_id"`
	Created         time.Time                  `json:"created"`
	SPs             map[string]*servicePrinc   `json:"service_principals"` // by object id
	ResourceGroups  map[string]*resourceGroup  `json:"resource_groups"`    // by lower-case name
	RoleDefinitions map[string]*roleDefinition `json:"role_definitions"`   // custom, by lower-case guid
	RoleAssignments map[string]*roleAssignment `json:"role_assignments"`   // by lower-case guid
}

type servicePrinc struct {
	ID      string    `json:"id"`
	AppID   string    `json:"app_id"`
	Created time.Time `json:"created"`
}

type resourceGroup struct {
	Name     string            `json:"name"`
	Location string            `json:"location"`
	Tags     map[string]string `json:"tags,omitempty"`
}

type permission struct {
	Actions        []string `json:"actions"`
	NotActions     []string `json:"notActions"`
	DataActions    []string `json:"dataActions"`
	NotDataActions []string `json:"notDataActions"`
}

type roleDefinition struct {
	ID               string       `json:"id"` // guid
	RoleName         string       `json:"roleName"`
	Description      string       `json:"description"`
	Type             string       `json:"type"` // CustomRole or BuiltInRole
	Permissions      []permission `json:"permissions"`
	AssignableScopes []string     `json:"assignableScopes"`
	Created          time.Time    `json:"created"`
	Updated          time.Time    `json:"updated"`
	CreatedBy        string       `json:"createdBy"`
}

type roleAssignment struct {
	ID               string    `json:"id"` // guid
	Scope            string    `json:"scope"`
	RoleDefinitionID string    `json:"roleDefinitionId"` // full ARM id as given
	PrincipalID      string    `json:"principalId"`
	PrincipalType    string    `json:"principalType"`
	Description      string    `json:"description,omitempty"`
	Created          time.Time `json:"created"`
	Updated          time.Time `json:"updated"`
	CreatedBy        string    `json:"createdBy"`
}

type vault struct {
	Name           string                 `json:"name"`
	TenantID       string                 `json:"tenant_id"`
	SubscriptionID string                 `json:"subscription_id"`
	ResourceGroup  string                 `json:"resource_group"`
	Location       string                 `json:"location"`
	SKU            string                 `json:"sku"`
	RBAC           bool                   `json:"rbac"`
	Tags           map[string]string      `json:"tags,omitempty"`
	Created        time.Time              `json:"created"`
	Keys           map[string]*key        `json:"keys"`         // by lower-case name
	Deleted        map[string]*deletedKey `json:"deleted_keys"` // by lower-case name
	// SoftDeleteDays is softDeleteRetentionInDays (7..90); 0 means 90.
	SoftDeleteDays  int  `json:"soft_delete_days,omitempty"`
	PurgeProtection bool `json:"purge_protection,omitempty"`

	// Managed HSM only: HSM marks a pool (<name>.managedhsm.azure.net);
	// its data plane is authorised by local RBAC, whose assignments and
	// custom role definitions live on the pool itself.
	HSM           bool                            `json:"hsm,omitempty"`
	LocalAssigns  map[string]*localRoleAssignment `json:"local_role_assignments,omitempty"` // by lower-case name
	LocalRoleDefs map[string]*roleDefinition      `json:"local_role_definitions,omitempty"` // custom, by lower-case guid
}

// localRoleAssignment is a Managed HSM local RBAC assignment: scope "/" or
// "/keys" or "/keys/{name}".
type localRoleAssignment struct {
	Name             string    `json:"name"`
	Scope            string    `json:"scope"`
	RoleDefinitionID string    `json:"roleDefinitionId"` // guid
	PrincipalID      string    `json:"principalId"`
	Created          time.Time `json:"created"`
}

// retentionDays is the soft-delete retention (recoverableDays).
func (v *vault) retentionDays() int {
	if v.SoftDeleteDays == 0 {
		return 90
	}
	return v.SoftDeleteDays
}

// recoveryLevel is the deletion recovery level Key Vault reports for keys.
func (v *vault) recoveryLevel() string {
	lvl := "Recoverable"
	if v.retentionDays() < 90 {
		lvl = "CustomizedRecoverable"
	}
	if !v.PurgeProtection {
		lvl += "+Purgeable"
	}
	return lvl
}

// host is the vault's (or pool's) DNS name in the public cloud.
func (v *vault) host() string {
	if v.HSM {
		return v.Name + ".managedhsm.azure.net"
	}
	return v.Name + ".vault.azure.net"
}

type key struct {
	Name     string        `json:"name"`
	Versions []*keyVersion `json:"versions"` // in creation order; the last is current
	// Policy is the key's rotation policy (nil: the default, notify 30
	// days before expiry).
	Policy *rotationPolicy `json:"rotation_policy,omitempty"`
}

type deletedKey struct {
	Key                *key  `json:"key"`
	DeletedDate        int64 `json:"deleted"`
	ScheduledPurgeDate int64 `json:"purge"`
}

type keyVersion struct {
	Version string            `json:"version"`
	Kty     string            `json:"kty"` // RSA, RSA-HSM, EC, EC-HSM, oct-HSM
	Size    int               `json:"size,omitempty"`
	Curve   string            `json:"crv,omitempty"`
	PrivDER []byte            `json:"priv"`          // PKCS #8 (RSA, NIST EC)
	Raw     []byte            `json:"raw,omitempty"` // secp256k1 scalar, AES key
	Ops     []string          `json:"key_ops"`
	Enabled bool              `json:"enabled"`
	NBF     *int64            `json:"nbf,omitempty"`
	EXP     *int64            `json:"exp,omitempty"`
	Created int64             `json:"created"`
	Updated int64             `json:"updated"`
	Tags    map[string]string `json:"tags,omitempty"`
	// Exportable keys carry a release policy and may be released to an
	// attested environment.
	Exportable    bool           `json:"exportable,omitempty"`
	ReleasePolicy *releasePolicy `json:"release_policy,omitempty"`

	priv crypto.Signer // parsed asymmetric material; immutable once set
	sym  []byte        // AES key (oct-HSM); immutable once set
}

func (kv *keyVersion) hsm() bool { return strings.HasSuffix(kv.Kty, "-HSM") }

func (k *key) current() *keyVersion { return k.Versions[len(k.Versions)-1] }

func (k *key) version(v string) *keyVersion {
	for _, kv := range k.Versions {
		if strings.EqualFold(kv.Version, v) {
			return kv
		}
	}
	return nil
}

// newGUID returns a random (v4) GUID in the lower-case form Azure uses.
func newGUID() string { return emukit.NewUUID() }

func randHex(n int) string { return emukit.RandHex(n) }

func isGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
				return false
			}
		}
	}
	return true
}

const stateFile = "state.json"

// loadState reads the state file; it returns (nil, nil) when absent.
func loadState(sf *emukit.StateFile) (*state, error) {
	var st state
	if found, err := sf.Load(&st); err != nil || !found {
		return nil, err
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("%s has version %d, want %d", stateFile, st.Version, stateVersion)
	}
	for _, v := range st.allVaults() {
		if v.Keys == nil {
			v.Keys = map[string]*key{}
		}
		if v.Deleted == nil {
			v.Deleted = map[string]*deletedKey{}
		}
		keys := make([]*key, 0, len(v.Keys)+len(v.Deleted))
		for _, k := range v.Keys {
			keys = append(keys, k)
		}
		for _, d := range v.Deleted {
			keys = append(keys, d.Key)
		}
		for _, k := range keys {
			if k == nil || len(k.Versions) == 0 {
				return nil, fmt.Errorf("vault %s: key without versions", v.Name)
			}
			for _, kv := range k.Versions {
				if err := kv.decodeMaterial(); err != nil {
					return nil, fmt.Errorf("vault %s key %s: %w", v.Name, k.Name, err)
				}
			}
		}
	}
	st.normalize()
	return &st, nil
}

// allVaults lists vaults and Managed HSM pools; callers hold e.mu.
func (st *state) allVaults() []*vault {
	out := make([]*vault, 0, len(st.Vaults)+len(st.HSMs))
	for _, v := range st.Vaults {
		out = append(out, v)
	}
	for _, h := range st.HSMs {
		out = append(out, h)
	}
	return out
}

// normalize fills nil maps so the rest of the code need not check.
func (st *state) normalize() {
	if st.Apps == nil {
		st.Apps = map[string]*app{}
	}
	if st.Tenants == nil {
		st.Tenants = map[string]*tenant{}
	}
	if st.Vaults == nil {
		st.Vaults = map[string]*vault{}
	}
	if st.HSMs == nil {
		st.HSMs = map[string]*vault{}
	}
	for _, h := range st.HSMs {
		h.HSM = true
		if h.LocalAssigns == nil {
			h.LocalAssigns = map[string]*localRoleAssignment{}
		}
		if h.LocalRoleDefs == nil {
			h.LocalRoleDefs = map[string]*roleDefinition{}
		}
	}
	if st.Issuers == nil {
		st.Issuers = map[string]*jwks{}
	}
	for _, t := range st.Tenants {
		if t.SPs == nil {
			t.SPs = map[string]*servicePrinc{}
		}
		if t.ResourceGroups == nil {
			t.ResourceGroups = map[string]*resourceGroup{}
		}
		if t.RoleDefinitions == nil {
			t.RoleDefinitions = map[string]*roleDefinition{}
		}
		if t.RoleAssignments == nil {
			t.RoleAssignments = map[string]*roleAssignment{}
		}
	}
}
