// Package azonboard performs a customer's Azure onboarding steps for ekm over
// plain REST — Microsoft Graph, Azure Resource Manager and the Key Vault data
// plane — exactly as docs/azure.md tells a customer to do with az/curl:
//
//  1. create a service principal for ekm's multi-tenant app;
//  2. create a custom role with keys encrypt, decrypt and read;
//  3. create an RSA key named <org-id>--<name> in a vault;
//  4. assign the role to the service principal at the key's scope.
//
// `ekm dev` and the end-to-end tests use it against the emulator; it has no
// emulator-specific code, only the tokens and HTTP client it is given.
package azonboard

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Data actions of the role the customer grants ekm.
var DataActions = []string{
	"Microsoft.KeyVault/vaults/keys/read",
	"Microsoft.KeyVault/vaults/keys/encrypt/action",
	"Microsoft.KeyVault/vaults/keys/decrypt/action",
}

const armAPI = "2022-04-01"

// Customer is an admin of one customer tenant.
type Customer struct {
	HTTP           *http.Client
	TenantID       string
	SubscriptionID string
	// Delegated admin tokens per audience.
	GraphToken, ARMToken, VaultToken string
	// Location of created resources (default "eastus").
	Location string
}

// Error is a non-2xx answer.
type Error struct {
	Method, URL string
	Status      int
	Body        string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s %s: %d %s", e.Method, e.URL, e.Status, e.Body)
}

func (c *Customer) do(ctx context.Context, method, u, token string, body any, out any) error {
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
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.HTTP.Do(req)
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
	if out != nil && len(b) > 0 {
		return json.Unmarshal(b, out)
	}
	return nil
}

// NewGUID returns a random version-4 GUID.
func NewGUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// CreateServicePrincipal is step 1. It returns the service principal's
// object id (the principalId of role assignments); an existing one is reused.
func (c *Customer) CreateServicePrincipal(ctx context.Context, appID string) (string, error) {
	var sp struct {
		ID string `json:"id"`
	}
	err := c.do(ctx, http.MethodPost, "https://graph.microsoft.com/v1.0/servicePrincipals", c.GraphToken, map[string]string{"appId": appID}, &sp)
	if e, ok := err.(*Error); ok && e.Status == http.StatusConflict {
		err = c.do(ctx, http.MethodGet, "https://graph.microsoft.com/v1.0/servicePrincipals(appId='"+url.PathEscape(appID)+"')", c.GraphToken, nil, &sp)
	}
	return sp.ID, err
}

// DeleteServicePrincipal removes ekm's service principal (a revocation).
func (c *Customer) DeleteServicePrincipal(ctx context.Context, spID string) error {
	return c.do(ctx, http.MethodDelete, "https://graph.microsoft.com/v1.0/servicePrincipals/"+url.PathEscape(spID), c.GraphToken, nil, nil)
}

func (c *Customer) subscription() string { return "/subscriptions/" + c.SubscriptionID }

// RoleDefinitionID is the full ARM id of a role definition guid.
func (c *Customer) RoleDefinitionID(guid string) string {
	return c.subscription() + "/providers/Microsoft.Authorization/roleDefinitions/" + guid
}

// PutRole is step 2 (and changes to it): a custom role with dataActions,
// assignable in the subscription. It returns the role definition's full id.
func (c *Customer) PutRole(ctx context.Context, guid, name string, dataActions []string) (string, error) {
	body := map[string]any{"name": guid, "properties": map[string]any{
		"roleName": name, "description": "Lets the SaaS vendor's EKM app encrypt and decrypt with our key.", "type": "CustomRole",
		"permissions":      []any{map[string]any{"actions": []string{}, "notActions": []string{}, "dataActions": dataActions, "notDataActions": []string{}}},
		"assignableScopes": []string{c.subscription()},
	}}
	id := c.RoleDefinitionID(guid)
	return id, c.do(ctx, http.MethodPut, "https://management.azure.com"+id+"?api-version="+armAPI, c.ARMToken, body, nil)
}

// VaultScope is the ARM scope of a vault.
func (c *Customer) VaultScope(rg, vault string) string {
	return c.subscription() + "/resourceGroups/" + rg + "/providers/Microsoft.KeyVault/vaults/" + vault
}

// KeyScope is the ARM scope of one key.
func (c *Customer) KeyScope(rg, vault, key string) string {
	return c.VaultScope(rg, vault) + "/keys/" + key
}

// CreateVault creates a resource group and an RBAC-mode vault in it.
func (c *Customer) CreateVault(ctx context.Context, rg, vault string) (vaultURI string, err error) {
	loc := c.Location
	if loc == "" {
		loc = "eastus"
	}
	if err := c.do(ctx, http.MethodPut, "https://management.azure.com"+c.subscription()+"/resourcegroups/"+rg+"?api-version=2021-04-01", c.ARMToken, map[string]any{"location": loc}, nil); err != nil {
		return "", err
	}
	body := map[string]any{"location": loc, "properties": map[string]any{
		"tenantId": c.TenantID, "sku": map[string]string{"family": "A", "name": "standard"}, "enableRbacAuthorization": true,
	}}
	var out struct {
		Properties struct {
			VaultURI string `json:"vaultUri"`
		} `json:"properties"`
	}
	if err := c.do(ctx, http.MethodPut, "https://management.azure.com"+c.VaultScope(rg, vault)+"?api-version=2023-07-01", c.ARMToken, body, &out); err != nil {
		return "", err
	}
	if out.Properties.VaultURI == "" {
		out.Properties.VaultURI = "https://" + vault + ".vault.azure.net/"
	}
	return out.Properties.VaultURI, nil
}

// CreateKey is step 3: a key in the vault (kty "RSA" with size, or "EC").
// It returns the versioned kid.
func (c *Customer) CreateKey(ctx context.Context, vaultURI, name, kty string, size int) (string, error) {
	body := map[string]any{"kty": kty}
	if strings.HasPrefix(kty, "RSA") {
		body["key_size"] = size
	} else {
		body["crv"] = "P-256"
	}
	var out struct {
		Key struct {
			Kid string `json:"kid"`
		} `json:"key"`
	}
	err := c.do(ctx, http.MethodPost, strings.TrimSuffix(vaultURI, "/")+"/keys/"+url.PathEscape(name)+"/create?api-version=7.5", c.VaultToken, body, &out)
	return out.Key.Kid, err
}

// UpdateKey changes a key's attributes (e.g. {"attributes":{"enabled":false}}).
func (c *Customer) UpdateKey(ctx context.Context, vaultURI, name string, patch map[string]any) error {
	return c.do(ctx, http.MethodPatch, strings.TrimSuffix(vaultURI, "/")+"/keys/"+url.PathEscape(name)+"?api-version=7.5", c.VaultToken, patch, nil)
}

// RotateKey makes a new current version of a key; it returns its kid.
func (c *Customer) RotateKey(ctx context.Context, vaultURI, name string) (string, error) {
	var out struct {
		Key struct {
			Kid string `json:"kid"`
		} `json:"key"`
	}
	err := c.do(ctx, http.MethodPost, strings.TrimSuffix(vaultURI, "/")+"/keys/"+url.PathEscape(name)+"/rotate?api-version=7.5", c.VaultToken, nil, &out)
	return out.Key.Kid, err
}

// DeleteKey deletes a key (soft delete).
func (c *Customer) DeleteKey(ctx context.Context, vaultURI, name string) error {
	return c.do(ctx, http.MethodDelete, strings.TrimSuffix(vaultURI, "/")+"/keys/"+url.PathEscape(name)+"?api-version=7.5", c.VaultToken, nil, nil)
}

// UpdateKeyVersion changes one version's attributes, e.g. disabling an old
// version after a rotation: {"attributes":{"enabled":false}}.
func (c *Customer) UpdateKeyVersion(ctx context.Context, vaultURI, name, version string, patch map[string]any) error {
	return c.do(ctx, http.MethodPatch, strings.TrimSuffix(vaultURI, "/")+"/keys/"+url.PathEscape(name)+"/"+url.PathEscape(version)+"?api-version=7.5", c.VaultToken, patch, nil)
}

// RecoverKey recovers a soft-deleted key with all its versions.
func (c *Customer) RecoverKey(ctx context.Context, vaultURI, name string) error {
	return c.do(ctx, http.MethodPost, strings.TrimSuffix(vaultURI, "/")+"/deletedkeys/"+url.PathEscape(name)+"/recover?api-version=7.5", c.VaultToken, nil, nil)
}

// KeyVersion returns the version part of a versioned kid
// (https://v.vault.azure.net/keys/name/version).
func KeyVersion(kid string) string {
	return kid[strings.LastIndex(kid, "/")+1:]
}

// RoleGUID returns the guid of a role definition's full id.
func RoleGUID(roleDefID string) string {
	return roleDefID[strings.LastIndex(roleDefID, "/")+1:]
}

// Assign is step 4: a role assignment of roleDefID to principalID at scope.
// It returns the assignment's full id.
func (c *Customer) Assign(ctx context.Context, scope, roleDefID, principalID string) (string, error) {
	id := scope + "/providers/Microsoft.Authorization/roleAssignments/" + NewGUID()
	body := map[string]any{"properties": map[string]any{"roleDefinitionId": roleDefID, "principalId": principalID, "principalType": "ServicePrincipal"}}
	return id, c.do(ctx, http.MethodPut, "https://management.azure.com"+id+"?api-version="+armAPI, c.ARMToken, body, nil)
}

// Unassign deletes a role assignment by full id.
func (c *Customer) Unassign(ctx context.Context, assignmentID string) error {
	return c.do(ctx, http.MethodDelete, "https://management.azure.com"+assignmentID+"?api-version="+armAPI, c.ARMToken, nil, nil)
}

// Onboarding is the result of Onboard.
type Onboarding struct {
	ServicePrincipalID string
	RoleDefinitionID   string
	VaultURI           string
	ResourceGroup      string
	Vault              string
	KeyName            string
	KeyID              string
	AssignmentID       string
}

// Onboard runs steps 1–4 for ekm's app appID and an org: a vault, an RSA-2048
// key named orgID--keySuffix and the role assigned at the key's scope.
func (c *Customer) Onboard(ctx context.Context, appID, orgID, vault, keySuffix string) (Onboarding, error) {
	o := Onboarding{ResourceGroup: "ekm-rg", Vault: vault, KeyName: orgID + "--" + keySuffix}
	var err error
	if o.ServicePrincipalID, err = c.CreateServicePrincipal(ctx, appID); err != nil {
		return o, fmt.Errorf("step 1 (service principal): %w", err)
	}
	if o.RoleDefinitionID, err = c.PutRole(ctx, NewGUID(), "EKM key encrypt/decrypt "+keySuffix, DataActions); err != nil {
		return o, fmt.Errorf("step 2 (custom role): %w", err)
	}
	if o.VaultURI, err = c.CreateVault(ctx, o.ResourceGroup, vault); err != nil {
		return o, fmt.Errorf("step 3 (vault): %w", err)
	}
	if o.KeyID, err = c.CreateKey(ctx, o.VaultURI, o.KeyName, "RSA", 2048); err != nil {
		return o, fmt.Errorf("step 3 (key): %w", err)
	}
	if o.AssignmentID, err = c.Assign(ctx, c.KeyScope(o.ResourceGroup, vault, o.KeyName), o.RoleDefinitionID, o.ServicePrincipalID); err != nil {
		return o, fmt.Errorf("step 4 (role assignment): %w", err)
	}
	return o, nil
}
