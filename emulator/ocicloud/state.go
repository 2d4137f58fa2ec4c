package ocicloud

import (
	"crypto/rand"
	"regexp"
	"time"
)

// stateVersion is bumped when the persisted layout changes incompatibly.
const stateVersion = 1

const stateFileName = "state.json"

// state is everything the emulator knows; guarded by Emulator.mu and
// persisted as one JSON document when Options.StateDir is set. Every map is
// keyed by OCID; each record names the tenancy that owns it.
type state struct {
	Version     int    `json:"version"`
	CACertDER   []byte `json:"ca_cert"`
	CAKeyDER    []byte `json:"ca_key"`
	Vendor      string `json:"vendor_tenancy"`
	VendorUser  string `json:"vendor_user"`
	VendorGroup string `json:"vendor_group"`
	// VendorKeyPEM is the vendor user's private key (written to
	// vendor-key.pem at start).
	VendorKeyPEM string                  `json:"vendor_key_pem"`
	Tenancies    map[string]*tenancy     `json:"tenancies"`
	Compartment  map[string]*compartment `json:"compartments"`
	Users        map[string]*user        `json:"users"`
	Groups       map[string]*group       `json:"groups"`
	Memberships  map[string]*membership  `json:"memberships"`
	Policies     map[string]*policy      `json:"policies"`
	Vaults       map[string]*vault       `json:"vaults"`
	Keys         map[string]*key         `json:"keys"`
	// RetryTokens remember creations by opc-retry-token (tenancy + " " +
	// token), so that a retried create returns the first one's resource.
	RetryTokens map[string]*retryToken `json:"retry_tokens"`
	Settings    Settings               `json:"settings"`
}

type tenancy struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	Realm      string    `json:"realm"`
	HomeRegion string    `json:"home_region"`
	Created    time.Time `json:"created"`
	// Admin is the user whose API key the control API handed out (in
	// the Administrators group); AdminKeyPEM its private key.
	Admin       string `json:"admin"`
	AdminKeyPEM string `json:"admin_key_pem"`
}

type compartment struct {
	ID          string    `json:"id"`
	Tenancy     string    `json:"tenancy"`
	Parent      string    `json:"parent"` // a compartment OCID or the tenancy OCID (root)
	Name        string    `json:"name"`
	Description string    `json:"description"`
	Created     time.Time `json:"created"`
	State       string    `json:"state"`
}

type user struct {
	ID          string    `json:"id"`
	Tenancy     string    `json:"tenancy"`
	Name        string    `json:"name"`
	Description string    `json:"description"`
	Created     time.Time `json:"created"`
	APIKeys     []*apiKey `json:"api_keys"`
}

type apiKey struct {
	Fingerprint string    `json:"fingerprint"`
	PublicPEM   string    `json:"public_pem"`
	Created     time.Time `json:"created"`
}

type group struct {
	ID          string    `json:"id"`
	Tenancy     string    `json:"tenancy"`
	Name        string    `json:"name"`
	Description string    `json:"description"`
	Created     time.Time `json:"created"`
}

type membership struct {
	ID      string    `json:"id"`
	Tenancy string    `json:"tenancy"`
	User    string    `json:"user"`
	Group   string    `json:"group"`
	Created time.Time `json:"created"`
}

// policy is an IAM policy. Versions keep what took effect when: a change
// takes effect Settings.PolicyDelay after it is made (OCI: "typically
// within 10 seconds"); the last version is the one the API shows.
type policy struct {
	ID          string          `json:"id"`
	Tenancy     string          `json:"tenancy"`
	Compartment string          `json:"compartment"`
	Name        string          `json:"name"`
	Description string          `json:"description"`
	Created     time.Time       `json:"created"`
	Versions    []policyVersion `json:"versions"`
}

type policyVersion struct {
	At         time.Time `json:"at"`
	Statements []string  `json:"statements"`
	// Bindings are the OCIDs that names resolved to when the version was
	// saved: "group <name>" and "compartment <path>" keys.
	Bindings map[string]string `json:"bindings,omitempty"`
	Deleted  bool              `json:"deleted,omitempty"`
	// stmts are Statements parsed (not persisted; parsed on first use).
	stmts []*statement
}

func (p *policy) latest() *policyVersion { return &p.Versions[len(p.Versions)-1] }

// effective returns the version in force at now (nil if none yet, or
// deleted).
func (p *policy) effective(now time.Time) *policyVersion {
	for i := len(p.Versions) - 1; i >= 0; i-- {
		if !p.Versions[i].At.After(now) {
			if p.Versions[i].Deleted {
				return nil
			}
			return &p.Versions[i]
		}
	}
	return nil
}

type vault struct {
	ID           string            `json:"id"`
	Tenancy      string            `json:"tenancy"`
	Compartment  string            `json:"compartment"`
	Region       string            `json:"region"`
	Prefix       string            `json:"prefix"`
	Name         string            `json:"name"`
	Type         string            `json:"type"` // DEFAULT, VIRTUAL_PRIVATE
	State        string            `json:"state"`
	WrappingKey  string            `json:"wrapping_key"`
	Created      time.Time         `json:"created"`
	FreeformTags map[string]string `json:"freeform_tags,omitempty"`
}

type key struct {
	ID          string `json:"id"`
	Tenancy     string `json:"tenancy"`
	Compartment string `json:"compartment"`
	Vault       string `json:"vault"`
	Region      string `json:"region"`
	Name        string `json:"name"`
	Algorithm   string `json:"algorithm"` // AES (RSA/ECDSA keys are refused by Encrypt)
	Length      int    `json:"length"`    // bytes
	Protection  string `json:"protection"`
	State       string `json:"state"`
	// PriorState is what CancelKeyDeletion restores.
	PriorState     string            `json:"prior_state,omitempty"`
	TimeOfDeletion time.Time         `json:"time_of_deletion,omitempty"`
	Created        time.Time         `json:"created"`
	FreeformTags   map[string]string `json:"freeform_tags,omitempty"`
	Versions       []*keyVersion     `json:"versions"`
	Etag           string            `json:"etag"`
}

func (k *key) current() *keyVersion { return k.Versions[len(k.Versions)-1] }

type keyVersion struct {
	ID       string    `json:"id"`
	Material []byte    `json:"material"`
	Created  time.Time `json:"created"`
	State    string    `json:"state"`
}

type retryToken struct {
	Op       string    `json:"op"`
	Resource string    `json:"resource"`
	BodyHash string    `json:"body_hash"`
	At       time.Time `json:"at"`
}

func (st *state) normalize() {
	if st.Tenancies == nil {
		st.Tenancies = map[string]*tenancy{}
	}
	if st.Compartment == nil {
		st.Compartment = map[string]*compartment{}
	}
	if st.Users == nil {
		st.Users = map[string]*user{}
	}
	if st.Groups == nil {
		st.Groups = map[string]*group{}
	}
	if st.Memberships == nil {
		st.Memberships = map[string]*membership{}
	}
	if st.Policies == nil {
		st.Policies = map[string]*policy{}
	}
	if st.Vaults == nil {
		st.Vaults = map[string]*vault{}
	}
	if st.Keys == nil {
		st.Keys = map[string]*key{}
	}
	if st.RetryTokens == nil {
		st.RetryTokens = map[string]*retryToken{}
	}
}

// ---- identifiers ----

const ocidAlphabet = "abcdefghijklmnopqrstuvwxyz234567"

func randBase32(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	for i := range b {
		b[i] = ocidAlphabet[int(b[i])%len(ocidAlphabet)]
	}
	return string(b)
}

// uniqueID is the last segment of an OCID: "aaaaaaaa" and 52 characters,
// as OCI prints them.
func uniqueID() string { return "aaaaaaaa" + randBase32(52) }

// globalOCID is the OCID of a resource without a region (tenancy, user,
// group, policy, compartment, membership).
func globalOCID(typ, realm string) string { return "ocid1." + typ + "." + realm + ".." + uniqueID() }

// vaultPrefixRE matches the prefix of a vault's endpoints (13 characters
// in OCI, e.g. afnxza26aag4s).
var vaultPrefixRE = regexp.MustCompile(`^[a-z0-9]{13}$`)

func newVaultPrefix() string { return randBase32(8) + "aa" + randBase32(3) }

// regionalOCID is the OCID of a vault, key or key version: realm, region
// and the vault's prefix in the "future use" slot.
func regionalOCID(typ string, r *region, prefix string) string {
	id := "ocid1." + typ + "." + r.Realm + "." + r.ocidRegion() + "." + prefix + "."
	if typ == "keyversion" {
		id += randBase32(13) + "."
	}
	return id + uniqueID()
}
