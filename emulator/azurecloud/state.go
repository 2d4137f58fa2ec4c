package azurecloud

import (
	"crypto"
	"crypto/x509"
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
	Version      int                `json:"version"`
	CACertDER    []byte             `json:"ca_cert"`
	CAKeyDER     []byte             `json:"ca_key"`
	SignCertDER  []byte             `json:"signing_cert"`
	SignKeyDER   []byte             `json:"signing_key"`
	HomeTenantID string             `json:"home_tenant_id"`
	AppID        string             `json:"app_id"`
	Apps         map[string]*app    `json:"apps"`
	Tenants      map[string]*tenant `json:"tenants"`
	Vaults       map[string]*vault  `json:"vaults"`  // by lower-case name
	Issuers      map[string]*jwks   `json:"issuers"` // federated issuer -> JWKS
	Settings     Settings           `json:"settings"`
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
}

type key struct {
	Name     string        `json:"name"`
	Versions []*keyVersion `json:"versions"` // in creation order; the last is current
}

type deletedKey struct {
	Key                *key  `json:"key"`
	DeletedDate        int64 `json:"deleted"`
	ScheduledPurgeDate int64 `json:"purge"`
}

type keyVersion struct {
	Version string            `json:"version"`
	Kty     string            `json:"kty"` // RSA, RSA-HSM, EC, EC-HSM
	Size    int               `json:"size,omitempty"`
	Curve   string            `json:"crv,omitempty"`
	PrivDER []byte            `json:"priv"`
	Ops     []string          `json:"key_ops"`
	Enabled bool              `json:"enabled"`
	NBF     *int64            `json:"nbf,omitempty"`
	EXP     *int64            `json:"exp,omitempty"`
	Created int64             `json:"created"`
	Updated int64             `json:"updated"`
	Tags    map[string]string `json:"tags,omitempty"`

	priv crypto.Signer // parsed PrivDER; immutable once set
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
	for _, v := range st.Vaults {
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
				p, err := x509.ParsePKCS8PrivateKey(kv.PrivDER)
				if err != nil {
					return nil, fmt.Errorf("vault %s key %s: %w", v.Name, k.Name, err)
				}
				s, ok := p.(crypto.Signer)
				if !ok {
					return nil, fmt.Errorf("vault %s key %s: unsupported key type", v.Name, k.Name)
				}
				kv.priv = s
			}
		}
	}
	st.normalize()
	return &st, nil
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
