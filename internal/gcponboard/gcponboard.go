// Package gcponboard performs a customer's Google Cloud onboarding steps
// for ekm over plain REST (IAM and Cloud KMS JSON APIs), exactly as
// docs/gcp.md tells a customer to do with curl:
//
//  1. create a workload identity pool and an OIDC provider that trusts
//     ekm's issuer, with allowed audience = the customer's ekm
//     organization id, mapping google.subject = assertion.sub and a
//     condition pinning ekm's subject;
//  2. create a key ring and an ENCRYPT_DECRYPT key;
//  3. grant roles/cloudkms.cryptoKeyEncrypterDecrypter (and
//     roles/cloudkms.viewer, so ekm can read the key's primary version)
//     on the key to the federated principal
//     principal://iam.googleapis.com/projects/<number>/locations/global/workloadIdentityPools/<pool>/subject/<subject>.
//
// Each step can be skipped. The request bodies are exported (with
// placeholders for the docs). The package has no emulator-specific code:
// it uses only the HTTP client and the owner's access token it is given.
package gcponboard

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Endpoints of the production APIs.
const (
	IAMBase = "https://iam.googleapis.com/v1/"
	KMSBase = "https://cloudkms.googleapis.com/v1/"
)

// Roles granted to ekm's principal on the key.
const (
	RoleEncrypterDecrypter = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
	RoleViewer             = "roles/cloudkms.viewer"
)

// Config is one customer's onboarding.
type Config struct {
	// HTTP is the client (nil: http.DefaultClient). Against the emulator,
	// its HTTPClient().
	HTTP *http.Client
	// Token is an OAuth 2.0 access token of a project owner (or of a
	// principal with roles/iam.workloadIdentityPoolAdmin and
	// roles/cloudkms.admin).
	Token string
	// ProjectID hosts the key; ProjectNumber names the pool (principal
	// identifiers and STS audiences need the number).
	ProjectID, ProjectNumber string
	// PoolID and ProviderID: 4-32 of [a-z0-9-], not starting with "gcp-".
	PoolID, ProviderID string
	// Issuer is the https URL of ekm's OIDC issuer (or
	// https://accounts.google.com when ekm presents Google-signed ID
	// tokens of its service account).
	Issuer string
	// Subject is the sub of ekm's tokens (for accounts.google.com, the
	// service account's numeric unique id).
	Subject string
	// Audience is the aud of ekm's tokens: the customer's ekm organization id.
	Audience string
	// Location, KeyRing and Key of the KEK ("global" by default).
	Location, KeyRing, Key string
	// Skip steps the customer has already done.
	SkipPool, SkipKey, SkipGrant bool
	// NoViewer grants only roles/cloudkms.cryptoKeyEncrypterDecrypter.
	NoViewer bool
}

// Result names what ekm needs to know.
type Result struct {
	// STSAudience is the provider's full resource name, the audience of
	// the STS token exchange.
	STSAudience string `json:"sts_audience"`
	// Member is ekm's principal identifier.
	Member string `json:"member"`
	// KeyName is the crypto key's resource name.
	KeyName string `json:"key_name"`
}

// Error is a non-2xx answer.
type Error struct {
	Step, Method, URL string
	Status            int
	Body              string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: %s %s: %d %s", e.Step, e.Method, e.URL, e.Status, e.Body)
}

// ---- request bodies (printed in docs/gcp.md with placeholders) ----

// PoolBody is the body of the pool creation.
func PoolBody(displayName string) string {
	return mustJSON(map[string]any{"displayName": displayName, "description": "ekm (Enterprise Key Management)"})
}

// Mapping is the attribute mapping of the provider.
var Mapping = map[string]string{"google.subject": "assertion.sub"}

// Condition is the attribute condition pinning ekm's subject.
func Condition(subject string) string { return "assertion.sub == " + strconv.Quote(subject) }

// ProviderBody is the body of the OIDC provider creation.
func ProviderBody(issuer, audience, subject string) string {
	return mustJSON(map[string]any{
		"displayName":        "ekm",
		"attributeMapping":   Mapping,
		"attributeCondition": Condition(subject),
		"oidc":               map[string]any{"issuerUri": issuer, "allowedAudiences": []string{audience}},
	})
}

// KeyRingBody is the (empty) body of the key ring creation.
func KeyRingBody() string { return "{}" }

// CryptoKeyBody is the body of the key creation: a symmetric
// ENCRYPT_DECRYPT software key.
func CryptoKeyBody() string {
	return mustJSON(map[string]any{"purpose": "ENCRYPT_DECRYPT",
		"versionTemplate": map[string]string{"algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION", "protectionLevel": "SOFTWARE"}})
}

// Member is ekm's principal identifier in the customer's pool.
func Member(projectNumber, poolID, subject string) string {
	return "principal://iam.googleapis.com/projects/" + projectNumber + "/locations/global/workloadIdentityPools/" + poolID + "/subject/" + subject
}

// Roles returns the roles granted to ekm.
func Roles(noViewer bool) []string {
	if noViewer {
		return []string{RoleEncrypterDecrypter}
	}
	return []string{RoleEncrypterDecrypter, RoleViewer}
}

// SetIamPolicyBody is the body of setIamPolicy: the bindings read with
// getIamPolicy plus member in roles, and the etag read.
func SetIamPolicyBody(bindings []Binding, etag, member string, roles []string) string {
	bs := AddMember(bindings, member, roles)
	pol := map[string]any{"bindings": bs}
	if etag != "" {
		pol["etag"] = etag
	}
	return mustJSON(map[string]any{"policy": pol})
}

// Binding is one role binding of an allow policy.
type Binding struct {
	Role    string   `json:"role"`
	Members []string `json:"members"`
}

// AddMember returns bindings with member added to each role.
func AddMember(bindings []Binding, member string, roles []string) []Binding {
	out := make([]Binding, 0, len(bindings)+len(roles))
	for _, b := range bindings {
		out = append(out, Binding{Role: b.Role, Members: append([]string(nil), b.Members...)})
	}
	for _, role := range roles {
		found := false
		for i := range out {
			if out[i].Role != role {
				continue
			}
			found = true
			has := false
			for _, m := range out[i].Members {
				has = has || m == member
			}
			if !has {
				out[i].Members = append(out[i].Members, member)
			}
		}
		if !found {
			out = append(out, Binding{Role: role, Members: []string{member}})
		}
	}
	return out
}

// mustJSON marshals without HTML escaping, so placeholders such as
// <SUBJECT> print as they are.
func mustJSON(v any) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(err)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// ---- the steps ----

// PoolParent is the parent of the customer's pools.
func PoolParent(projectNumber string) string {
	return "projects/" + projectNumber + "/locations/global/workloadIdentityPools"
}

// KeyRingName and KeyName name the KEK.
func KeyRingName(projectID, location, ring string) string {
	return "projects/" + projectID + "/locations/" + location + "/keyRings/" + ring
}

func (c *Config) validate() error {
	switch {
	case c.Token == "":
		return errors.New("gcponboard: Token is required")
	case !c.SkipPool && (c.ProjectNumber == "" || c.PoolID == "" || c.ProviderID == "" || c.Issuer == "" || c.Subject == "" || c.Audience == ""):
		return errors.New("gcponboard: the pool step needs ProjectNumber, PoolID, ProviderID, Issuer, Subject and Audience")
	case !c.SkipKey && (c.ProjectID == "" || c.KeyRing == "" || c.Key == ""):
		return errors.New("gcponboard: the key step needs ProjectID, KeyRing and Key")
	case !c.SkipGrant && (c.ProjectID == "" || c.ProjectNumber == "" || c.PoolID == "" || c.Subject == "" || c.KeyRing == "" || c.Key == ""):
		return errors.New("gcponboard: the grant step needs ProjectID, ProjectNumber, PoolID, Subject, KeyRing and Key")
	}
	return nil
}

// Run performs the steps that are not skipped. Resources that already
// exist (409 ALREADY_EXISTS) are taken as done, so Run can be repeated.
func Run(ctx context.Context, c Config) (Result, error) {
	if c.Location == "" {
		c.Location = "global"
	}
	if err := c.validate(); err != nil {
		return Result{}, err
	}
	res := Result{
		STSAudience: "//iam.googleapis.com/" + PoolParent(c.ProjectNumber) + "/" + c.PoolID + "/providers/" + c.ProviderID,
		Member:      Member(c.ProjectNumber, c.PoolID, c.Subject),
		KeyName:     KeyRingName(c.ProjectID, c.Location, c.KeyRing) + "/cryptoKeys/" + c.Key,
	}
	if !c.SkipPool {
		u := IAMBase + PoolParent(c.ProjectNumber) + "?workloadIdentityPoolId=" + url.QueryEscape(c.PoolID)
		if err := c.do(ctx, "create pool", http.MethodPost, u, PoolBody("ekm"), nil, true); err != nil {
			return res, err
		}
		u = IAMBase + PoolParent(c.ProjectNumber) + "/" + c.PoolID + "/providers?workloadIdentityPoolProviderId=" + url.QueryEscape(c.ProviderID)
		if err := c.do(ctx, "create provider", http.MethodPost, u, ProviderBody(c.Issuer, c.Audience, c.Subject), nil, true); err != nil {
			return res, err
		}
	}
	ring := KeyRingName(c.ProjectID, c.Location, c.KeyRing)
	if !c.SkipKey {
		u := KMSBase + "projects/" + c.ProjectID + "/locations/" + c.Location + "/keyRings?keyRingId=" + url.QueryEscape(c.KeyRing)
		if err := c.do(ctx, "create key ring", http.MethodPost, u, KeyRingBody(), nil, true); err != nil {
			return res, err
		}
		u = KMSBase + ring + "/cryptoKeys?cryptoKeyId=" + url.QueryEscape(c.Key)
		if err := c.do(ctx, "create key", http.MethodPost, u, CryptoKeyBody(), nil, true); err != nil {
			return res, err
		}
	}
	if !c.SkipGrant {
		var pol struct {
			Bindings []Binding `json:"bindings"`
			Etag     string    `json:"etag"`
		}
		if err := c.do(ctx, "get key policy", http.MethodGet, KMSBase+res.KeyName+":getIamPolicy", "", &pol, false); err != nil {
			return res, err
		}
		body := SetIamPolicyBody(pol.Bindings, pol.Etag, res.Member, Roles(c.NoViewer))
		if err := c.do(ctx, "set key policy", http.MethodPost, KMSBase+res.KeyName+":setIamPolicy", body, nil, false); err != nil {
			return res, err
		}
	}
	return res, nil
}

func (c *Config) do(ctx context.Context, step, method, u, body string, out any, existsOK bool) error {
	var rd io.Reader
	if body != "" {
		rd = bytes.NewReader([]byte(body))
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("gcponboard: %s: %w", step, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("gcponboard: %s: %w", step, err)
	}
	if resp.StatusCode == http.StatusConflict && existsOK {
		return nil
	}
	if resp.StatusCode/100 != 2 {
		return &Error{Step: step, Method: method, URL: u, Status: resp.StatusCode, Body: string(b)}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("gcponboard: %s: decode: %w", step, err)
		}
	}
	// A long-running operation answered with an error.
	var op struct {
		Done  bool            `json:"done"`
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(b, &op) == nil && op.Done && len(op.Error) > 0 {
		return &Error{Step: step, Method: method, URL: u, Status: resp.StatusCode, Body: string(b)}
	}
	return nil
}
