// Package gcptest drives a customer's side of Google Cloud for tests of
// the gcp provider: the onboarding (internal/gcponboard) and every change
// a customer can make afterwards — rotate the key, disable, destroy and
// restore versions, edit the key's allow policy, disable or delete the
// workload identity pool and provider, change the provider's condition
// or keys — over the same public REST APIs (IAM v1, Cloud KMS v1) with
// the project owner's access token. It works against the emulator
// (emulator/gcpcloud) and, with a real token, against Google.
package gcptest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/ekm-dev/ekm/internal/gcponboard"
)

// Customer is one onboarded customer project.
type Customer struct {
	Config gcponboard.Config
	Result gcponboard.Result
}

// Onboard runs the onboarding steps of c (each skippable) and returns the
// customer.
func Onboard(ctx context.Context, c gcponboard.Config) (*Customer, error) {
	if c.Location == "" {
		c.Location = "global"
	}
	res, err := gcponboard.Run(ctx, c)
	if err != nil {
		return nil, err
	}
	return &Customer{Config: c, Result: res}, nil
}

// Params are the registration params of the customer's key (the gcp
// external key fields).
func (c *Customer) Params() map[string]string {
	return map[string]string{
		"audience":                         c.Config.Audience,
		"kms_project_id":                   c.Config.ProjectID,
		"kms_key_location":                 c.Config.Location,
		"kms_key_ring_name":                c.Config.KeyRing,
		"kms_key_name":                     c.Config.Key,
		"workload_identity_pool_id":        c.Config.PoolID,
		"workload_identity_provider_id":    c.Config.ProviderID,
		"workload_identity_project_number": c.Config.ProjectNumber,
	}
}

// KeyName is the crypto key's resource name.
func (c *Customer) KeyName() string { return c.Result.KeyName }

// RingName is the key ring's resource name.
func (c *Customer) RingName() string {
	return gcponboard.KeyRingName(c.Config.ProjectID, c.Config.Location, c.Config.KeyRing)
}

// PoolName and ProviderName are the IAM resource names.
func (c *Customer) PoolName() string {
	return gcponboard.PoolParent(c.Config.ProjectNumber) + "/" + c.Config.PoolID
}

func (c *Customer) ProviderName() string { return c.PoolName() + "/providers/" + c.Config.ProviderID }

// Error is a refused call.
type Error struct {
	Method, URL string
	Status      int
	Body        string
}

func (e *Error) Error() string { return fmt.Sprintf("%s %s: %d %s", e.Method, e.URL, e.Status, e.Body) }

// Do sends one JSON request with the owner's token and decodes the answer
// into out (if not nil). Non-2xx answers are *Error.
func (c *Customer) Do(ctx context.Context, method, u string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.Config.Token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.Config.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return &Error{Method: method, URL: u, Status: resp.StatusCode, Body: string(b)}
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// ---- Cloud KMS ----

// Version is a crypto key version's resource name and state.
type Version struct {
	Name  string `json:"name"`
	State string `json:"state"`
}

// Versions lists the key's versions.
func (c *Customer) Versions(ctx context.Context) ([]Version, error) {
	var out struct {
		Versions []Version `json:"cryptoKeyVersions"`
	}
	err := c.Do(ctx, http.MethodGet, gcponboard.KMSBase+c.KeyName()+"/cryptoKeyVersions", nil, &out)
	return out.Versions, err
}

// Primary returns the key's primary version.
func (c *Customer) Primary(ctx context.Context) (Version, error) {
	var k struct {
		Primary Version `json:"primary"`
	}
	err := c.Do(ctx, http.MethodGet, gcponboard.KMSBase+c.KeyName(), nil, &k)
	return k.Primary, err
}

// Rotate creates a new version and makes it primary (what automatic
// rotation or `gcloud kms keys versions create --primary` does).
func (c *Customer) Rotate(ctx context.Context) (Version, error) {
	var v Version
	if err := c.Do(ctx, http.MethodPost, gcponboard.KMSBase+c.KeyName()+"/cryptoKeyVersions", map[string]any{}, &v); err != nil {
		return v, err
	}
	id := v.Name[strings.LastIndex(v.Name, "/")+1:]
	err := c.Do(ctx, http.MethodPost, gcponboard.KMSBase+c.KeyName()+":updatePrimaryVersion", map[string]string{"cryptoKeyVersionId": id}, nil)
	return v, err
}

// SetVersionState enables or disables a version ("ENABLED", "DISABLED").
func (c *Customer) SetVersionState(ctx context.Context, version, state string) error {
	return c.Do(ctx, http.MethodPatch, gcponboard.KMSBase+version+"?updateMask=state", map[string]string{"state": state}, nil)
}

// DestroyVersion schedules a version's destruction; RestoreVersion
// cancels it (the version comes back DISABLED).
func (c *Customer) DestroyVersion(ctx context.Context, version string) error {
	return c.Do(ctx, http.MethodPost, gcponboard.KMSBase+version+":destroy", map[string]any{}, nil)
}

func (c *Customer) RestoreVersion(ctx context.Context, version string) error {
	return c.Do(ctx, http.MethodPost, gcponboard.KMSBase+version+":restore", map[string]any{}, nil)
}

// CreateKey creates another key in the customer's ring with a purpose
// ("ENCRYPT_DECRYPT", "ASYMMETRIC_SIGN", …) and grants member roles on it.
func (c *Customer) CreateKey(ctx context.Context, id, purpose, member string, roles []string) (string, error) {
	body := map[string]any{"purpose": purpose}
	switch purpose {
	case "ASYMMETRIC_SIGN":
		body["versionTemplate"] = map[string]string{"algorithm": "EC_SIGN_P256_SHA256"}
	case "ASYMMETRIC_DECRYPT":
		body["versionTemplate"] = map[string]string{"algorithm": "RSA_DECRYPT_OAEP_2048_SHA256"}
	}
	name := c.RingName() + "/cryptoKeys/" + id
	if err := c.Do(ctx, http.MethodPost, gcponboard.KMSBase+c.RingName()+"/cryptoKeys?cryptoKeyId="+url.QueryEscape(id), body, nil); err != nil {
		return "", err
	}
	if member != "" {
		if err := c.AddMember(ctx, name, member, roles); err != nil {
			return "", err
		}
	}
	return name, nil
}

// Policy is an allow policy.
type Policy struct {
	Bindings []gcponboard.Binding `json:"bindings"`
	Etag     string               `json:"etag,omitempty"`
	Version  int                  `json:"version,omitempty"`
}

// GetPolicy reads the allow policy of a key ring or key.
func (c *Customer) GetPolicy(ctx context.Context, resource string) (Policy, error) {
	var p Policy
	err := c.Do(ctx, http.MethodGet, gcponboard.KMSBase+resource+":getIamPolicy", nil, &p)
	return p, err
}

// SetPolicy writes the allow policy of a key ring or key.
func (c *Customer) SetPolicy(ctx context.Context, resource string, p Policy) error {
	return c.Do(ctx, http.MethodPost, gcponboard.KMSBase+resource+":setIamPolicy", map[string]any{"policy": p}, nil)
}

// AddMember grants member roles on a key ring or key (read-modify-write).
func (c *Customer) AddMember(ctx context.Context, resource, member string, roles []string) error {
	p, err := c.GetPolicy(ctx, resource)
	if err != nil {
		return err
	}
	p.Bindings = gcponboard.AddMember(p.Bindings, member, roles)
	return c.SetPolicy(ctx, resource, p)
}

// RemoveMember removes member from every binding of a key ring or key
// (what `gcloud kms keys remove-iam-policy-binding` does per role).
func (c *Customer) RemoveMember(ctx context.Context, resource, member string) error {
	p, err := c.GetPolicy(ctx, resource)
	if err != nil {
		return err
	}
	var out []gcponboard.Binding
	for _, b := range p.Bindings {
		var ms []string
		for _, m := range b.Members {
			if m != member {
				ms = append(ms, m)
			}
		}
		if len(ms) > 0 {
			out = append(out, gcponboard.Binding{Role: b.Role, Members: ms})
		}
	}
	p.Bindings = out
	return c.SetPolicy(ctx, resource, p)
}

// ---- IAM: workload identity pool and provider ----

func (c *Customer) patch(ctx context.Context, name, mask string, body map[string]any) error {
	return c.Do(ctx, http.MethodPatch, gcponboard.IAMBase+name+"?updateMask="+url.QueryEscape(mask), body, nil)
}

// SetPoolDisabled and SetProviderDisabled disable or re-enable them.
func (c *Customer) SetPoolDisabled(ctx context.Context, disabled bool) error {
	return c.patch(ctx, c.PoolName(), "disabled", map[string]any{"disabled": disabled})
}

func (c *Customer) SetProviderDisabled(ctx context.Context, disabled bool) error {
	return c.patch(ctx, c.ProviderName(), "disabled", map[string]any{"disabled": disabled})
}

// DeletePool soft-deletes the pool; UndeletePool brings it back.
func (c *Customer) DeletePool(ctx context.Context) error {
	return c.Do(ctx, http.MethodDelete, gcponboard.IAMBase+c.PoolName(), nil, nil)
}

func (c *Customer) UndeletePool(ctx context.Context) error {
	return c.Do(ctx, http.MethodPost, gcponboard.IAMBase+c.PoolName()+":undelete", map[string]any{}, nil)
}

// SetCondition replaces the provider's attribute condition.
func (c *Customer) SetCondition(ctx context.Context, cond string) error {
	return c.patch(ctx, c.ProviderName(), "attributeCondition", map[string]any{"attributeCondition": cond})
}

// SetAllowedAudiences replaces the provider's allowed audiences.
func (c *Customer) SetAllowedAudiences(ctx context.Context, auds ...string) error {
	return c.patch(ctx, c.ProviderName(), "oidc.allowedAudiences", map[string]any{"oidc": map[string]any{"allowedAudiences": auds}})
}

// SetIssuer replaces the provider's issuer URI.
func (c *Customer) SetIssuer(ctx context.Context, issuer string) error {
	return c.patch(ctx, c.ProviderName(), "oidc.issuerUri", map[string]any{"oidc": map[string]any{"issuerUri": issuer}})
}

// SetJWKS uploads keys to the provider (oidc.jwksJson); "" removes them
// (Google then fetches the issuer's discovery document).
func (c *Customer) SetJWKS(ctx context.Context, jwks string) error {
	return c.patch(ctx, c.ProviderName(), "oidc.jwksJson", map[string]any{"oidc": map[string]any{"jwksJson": jwks}})
}

// ---- IAM: a service account for impersonation ----

// CreateServiceAccount creates a service account in the customer's
// project, lets member impersonate it (role, e.g.
// roles/iam.workloadIdentityUser) and returns its email.
func (c *Customer) CreateServiceAccount(ctx context.Context, id, member, role string) (string, error) {
	var sa struct {
		Email string `json:"email"`
	}
	if err := c.Do(ctx, http.MethodPost, gcponboard.IAMBase+"projects/"+c.Config.ProjectID+"/serviceAccounts",
		map[string]any{"accountId": id, "serviceAccount": map[string]string{"displayName": "ekm"}}, &sa); err != nil {
		return "", err
	}
	if member != "" {
		if err := c.SetServiceAccountMembers(ctx, sa.Email, role, member); err != nil {
			return "", err
		}
	}
	return sa.Email, nil
}

// SetServiceAccountMembers replaces the service account's allow policy
// with one binding of role to members (none: an empty policy).
func (c *Customer) SetServiceAccountMembers(ctx context.Context, email, role string, members ...string) error {
	name := gcponboard.IAMBase + "projects/" + c.Config.ProjectID + "/serviceAccounts/" + email
	var p Policy
	if err := c.Do(ctx, http.MethodPost, name+":getIamPolicy", map[string]any{}, &p); err != nil {
		return err
	}
	p.Bindings = nil
	if len(members) > 0 {
		p.Bindings = []gcponboard.Binding{{Role: role, Members: members}}
	}
	return c.Do(ctx, http.MethodPost, name+":setIamPolicy", map[string]any{"policy": p}, nil)
}

// VersionID returns the numeric id at the end of a version name.
func VersionID(name string) int {
	n, _ := strconv.Atoi(name[strings.LastIndex(name, "/")+1:])
	return n
}
