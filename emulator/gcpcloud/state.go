package gcpcloud

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/url"
	"time"
)

const (
	stateFileName = "state.json"
	stateVersion  = 1
)

// state is everything the emulator persists.
type state struct {
	Version     int      `json:"version"`
	CACertDER   []byte   `json:"ca_cert"`
	CAKeyDER    []byte   `json:"ca_key"`
	SignKeyDER  []byte   `json:"sign_key"` // Google's OIDC signing key (PKCS #1)
	SignKid     string   `json:"sign_kid"`
	TokenSecret []byte   `json:"token_secret"` // MACs access tokens
	Settings    Settings `json:"settings"`

	Projects      map[string]*project `json:"projects"` // by project id
	VendorProject string              `json:"vendor_project"`
	VendorSA      string              `json:"vendor_sa"`
	// Issuers registered through the control API: issuer -> JWKS JSON.
	Issuers map[string]string `json:"issuers"`
}

func (s *state) normalize() {
	if s.Projects == nil {
		s.Projects = map[string]*project{}
	}
	if s.Issuers == nil {
		s.Issuers = map[string]string{}
	}
	for _, p := range s.Projects {
		p.normalize()
	}
}

type project struct {
	ID         string    `json:"id"`
	Number     string    `json:"number"`
	AdminEmail string    `json:"admin_email"`
	Created    time.Time `json:"created"`
	Policy     *policy   `json:"policy"` // project-level allow policy

	Pools           map[string]*pool           `json:"pools"`
	ServiceAccounts map[string]*serviceAccount `json:"service_accounts"` // by email
	KeyRings        map[string]*keyRing        `json:"key_rings"`        // by "location/id"
}

func (p *project) normalize() {
	if p.Pools == nil {
		p.Pools = map[string]*pool{}
	}
	if p.ServiceAccounts == nil {
		p.ServiceAccounts = map[string]*serviceAccount{}
	}
	if p.KeyRings == nil {
		p.KeyRings = map[string]*keyRing{}
	}
	if p.Policy == nil {
		p.Policy = &policy{}
	}
	for _, pl := range p.Pools {
		if pl.Providers == nil {
			pl.Providers = map[string]*provider{}
		}
	}
	for _, sa := range p.ServiceAccounts {
		if sa.Policy == nil {
			sa.Policy = &policy{}
		}
	}
	for _, kr := range p.KeyRings {
		if kr.Keys == nil {
			kr.Keys = map[string]*cryptoKey{}
		}
		if kr.Policy == nil {
			kr.Policy = &policy{}
		}
		for _, k := range kr.Keys {
			if k.Policy == nil {
				k.Policy = &policy{}
			}
		}
	}
}

func newProject(id string, now time.Time) *project {
	p := &project{ID: id, Number: randDigits(12), Created: now, AdminEmail: "admin@" + id + ".example.com"}
	p.normalize()
	p.Policy.Bindings = []binding{{Role: "roles/owner", Members: []string{"user:" + p.AdminEmail}}}
	p.Policy.Etag = newEtag()
	return p
}

// ---- IAM allow policies ----

type binding struct {
	Role    string   `json:"role"`
	Members []string `json:"members"`
}

type policy struct {
	Version  int       `json:"version,omitempty"`
	Bindings []binding `json:"bindings,omitempty"`
	Etag     string    `json:"etag,omitempty"`
	// Prev and Changed implement the optional propagation lag: until
	// Changed + lag, authorisation uses Prev.
	Prev    []binding `json:"prev,omitempty"`
	Changed time.Time `json:"changed,omitempty"`
}

func newEtag() string {
	b := make([]byte, 8)
	rand.Read(b)
	return b64std.EncodeToString(b)
}

// effective returns the bindings authorisation uses at now.
func (p *policy) effective(now time.Time, lag time.Duration) []binding {
	if p == nil {
		return nil
	}
	if lag > 0 && !p.Changed.IsZero() && now.Before(p.Changed.Add(lag)) {
		return p.Prev
	}
	return p.Bindings
}

// replace installs new bindings, remembering the old ones for the lag.
func (p *policy) replace(b []binding, version int, now time.Time) {
	p.Prev = p.Bindings
	p.Changed = now
	p.Bindings = b
	p.Version = version
	p.Etag = newEtag()
}

// ---- workload identity ----

type pool struct {
	ID          string               `json:"id"`
	DisplayName string               `json:"display_name,omitempty"`
	Description string               `json:"description,omitempty"`
	Disabled    bool                 `json:"disabled,omitempty"`
	Deleted     time.Time            `json:"deleted,omitempty"` // zero: ACTIVE
	Providers   map[string]*provider `json:"providers"`
}

type provider struct {
	ID                 string            `json:"id"`
	DisplayName        string            `json:"display_name,omitempty"`
	Description        string            `json:"description,omitempty"`
	Disabled           bool              `json:"disabled,omitempty"`
	Deleted            time.Time         `json:"deleted,omitempty"`
	AttributeMapping   map[string]string `json:"attribute_mapping,omitempty"`
	AttributeCondition string            `json:"attribute_condition,omitempty"`
	IssuerURI          string            `json:"issuer_uri"`
	AllowedAudiences   []string          `json:"allowed_audiences,omitempty"`
	JWKSJSON           string            `json:"jwks_json,omitempty"`
}

// softDeleteRetention is how long deleted pools and providers can be
// undeleted before they are purged.
const softDeleteRetention = 30 * 24 * time.Hour

// ---- service accounts ----

type serviceAccount struct {
	Email       string    `json:"email"`
	AccountID   string    `json:"account_id"`
	UniqueID    string    `json:"unique_id"`
	ProjectID   string    `json:"project_id"`
	DisplayName string    `json:"display_name,omitempty"`
	Description string    `json:"description,omitempty"`
	Disabled    bool      `json:"disabled,omitempty"`
	Created     time.Time `json:"created"`
	Keys        []*saKey  `json:"keys"`
	Policy      *policy   `json:"policy"`
	Etag        string    `json:"etag"`
}

type saKey struct {
	ID      string    `json:"id"`  // 40 hex digits
	KeyDER  []byte    `json:"key"` // PKCS #8
	Created time.Time `json:"created"`
}

func newServiceAccount(p *project, accountID, displayName string, now time.Time) (*serviceAccount, error) {
	sa := &serviceAccount{Email: accountID + "@" + p.ID + ".iam.gserviceaccount.com", AccountID: accountID,
		UniqueID: randDigits(21), ProjectID: p.ID, DisplayName: displayName, Created: now, Policy: &policy{Etag: newEtag()}, Etag: newEtag()}
	p.ServiceAccounts[sa.Email] = sa
	return sa, nil
}

func (sa *serviceAccount) addKey(now time.Time) (*saKey, error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	key := &saKey{ID: randHex(20), KeyDER: der, Created: now}
	sa.Keys = append(sa.Keys, key)
	return key, nil
}

// keyFileJSON is the service-account key file Google's console and
// `iam.serviceAccounts.keys.create` hand out.
func (sa *serviceAccount) keyFileJSON(k *saKey) []byte {
	m := map[string]string{
		"type":                        "service_account",
		"project_id":                  sa.ProjectID,
		"private_key_id":              k.ID,
		"private_key":                 string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: k.KeyDER})),
		"client_email":                sa.Email,
		"client_id":                   sa.UniqueID,
		"auth_uri":                    "https://accounts.google.com/o/oauth2/auth",
		"token_uri":                   "https://oauth2.googleapis.com/token",
		"auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
		"client_x509_cert_url":        "https://www.googleapis.com/robot/v1/metadata/x509/" + url.PathEscape(sa.Email),
		"universe_domain":             "googleapis.com",
	}
	b, _ := json.MarshalIndent(m, "", "  ")
	return append(b, '\n')
}

// ---- Cloud KMS ----

type keyRing struct {
	Location string                `json:"location"`
	ID       string                `json:"id"`
	Created  time.Time             `json:"created"`
	Policy   *policy               `json:"policy"`
	Keys     map[string]*cryptoKey `json:"keys"`
}

type cryptoKey struct {
	ID                       string            `json:"id"`
	Purpose                  int               `json:"purpose"`
	Algorithm                int               `json:"algorithm"`
	ProtectionLevel          int               `json:"protection_level"`
	Created                  time.Time         `json:"created"`
	RotationPeriod           time.Duration     `json:"rotation_period,omitempty"`
	NextRotation             time.Time         `json:"next_rotation,omitempty"`
	Primary                  int               `json:"primary,omitempty"` // version id; 0 none
	Labels                   map[string]string `json:"labels,omitempty"`
	DestroyScheduledDuration time.Duration     `json:"destroy_scheduled_duration"`
	Versions                 []*keyVersion     `json:"versions"`
	Policy                   *policy           `json:"policy"`
}

type keyVersion struct {
	ID           int       `json:"id"`
	State        int       `json:"state"`
	Created      time.Time `json:"created"`
	Material     []byte    `json:"material,omitempty"` // AES-256 key; nil once destroyed
	DestroyTime  time.Time `json:"destroy_time,omitempty"`
	DestroyEvent time.Time `json:"destroy_event,omitempty"`
}
