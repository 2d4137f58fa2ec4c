package azurecloud

import (
	"strings"
	"time"
)

// Built-in role definition ids (the same in every tenant).
const (
	roleOwner                  = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"
	roleContributor            = "b24988ac-6180-42a0-ab88-20f7382dd24c"
	roleUserAccessAdmin        = "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9"
	roleKVAdministrator        = "00482a5a-887f-4fb3-b363-3b7fe8e74483"
	roleKVCryptoOfficer        = "14b46e9e-c2b7-41b4-b07b-48a6ebf60603"
	roleKVCryptoUser           = "12338af0-0e69-4776-bea7-57ae8d297424"
	roleKVCryptoServiceEncUser = "e147488a-f6f5-4113-8e2d-b22465e65bf6"
	roleKVReader               = "21090545-7ca7-4776-b22c-e363652d74d2"
)

const kvKeys = "Microsoft.KeyVault/vaults/keys/"

var epoch = time.Date(2015, 2, 18, 0, 0, 0, 0, time.UTC)

func builtin(id, name, desc string, p permission) *roleDefinition {
	for _, l := range []*[]string{&p.Actions, &p.NotActions, &p.DataActions, &p.NotDataActions} {
		if *l == nil {
			*l = []string{}
		}
	}
	return &roleDefinition{ID: id, RoleName: name, Description: desc, Type: "BuiltInRole",
		Permissions: []permission{p}, AssignableScopes: []string{"/"}, Created: epoch, Updated: epoch}
}

// kvReaderActions are the control-plane actions Azure's Key Vault data
// roles (Administrator, Crypto Officer, Reader) carry.
var kvReaderActions = []string{
	"Microsoft.Authorization/*/read",
	"Microsoft.Insights/alertRules/*",
	"Microsoft.Resources/deployments/*",
	"Microsoft.Resources/subscriptions/resourceGroups/read",
	"Microsoft.Support/*",
	"Microsoft.KeyVault/checkNameAvailability/read",
	"Microsoft.KeyVault/deletedVaults/read",
	"Microsoft.KeyVault/locations/*/read",
	"Microsoft.KeyVault/vaults/*/read",
	"Microsoft.KeyVault/operations/read",
}

func kvRoleDesc(s string) string {
	return s + " Only works for key vaults that use the 'Azure role-based access control' permission model."
}

// builtinRoles holds the built-in roles relevant to this emulator. The Key
// Vault roles' permissions are Azure's published definitions (built-in
// roles, Security category; docs/emulator-azure.md cites them).
var builtinRoles = map[string]*roleDefinition{
	roleOwner: builtin(roleOwner, "Owner", "Grants full access to manage all resources, including the ability to assign roles in Azure RBAC.",
		permission{Actions: []string{"*"}}),
	roleContributor: builtin(roleContributor, "Contributor", "Grants full access to manage all resources, but does not allow you to assign roles in Azure RBAC.",
		permission{Actions: []string{"*"}, NotActions: []string{"Microsoft.Authorization/*/Delete", "Microsoft.Authorization/*/Write", "Microsoft.Authorization/elevateAccess/Action"}}),
	roleUserAccessAdmin: builtin(roleUserAccessAdmin, "User Access Administrator", "Lets you manage user access to Azure resources.",
		permission{Actions: []string{"*/read", "Microsoft.Authorization/*"}}),
	roleKVAdministrator: builtin(roleKVAdministrator, "Key Vault Administrator", kvRoleDesc("Perform all data plane operations on a key vault and all objects in it, including certificates, keys, and secrets. Cannot manage key vault resources or manage role assignments."),
		permission{Actions: kvReaderActions, DataActions: []string{"Microsoft.KeyVault/vaults/*"}}),
	roleKVCryptoOfficer: builtin(roleKVCryptoOfficer, "Key Vault Crypto Officer", kvRoleDesc("Perform any action on the keys of a key vault, except manage permissions."),
		permission{Actions: kvReaderActions, DataActions: []string{kvKeys + "*", "Microsoft.KeyVault/vaults/keyrotationpolicies/*"}}),
	roleKVCryptoUser: builtin(roleKVCryptoUser, "Key Vault Crypto User", kvRoleDesc("Perform cryptographic operations using keys."),
		permission{DataActions: []string{kvKeys + "read", kvKeys + "update/action", kvKeys + "backup/action",
			kvKeys + "encrypt/action", kvKeys + "decrypt/action", kvKeys + "wrap/action", kvKeys + "unwrap/action",
			kvKeys + "sign/action", kvKeys + "verify/action"}}),
	roleKVCryptoServiceEncUser: builtin(roleKVCryptoServiceEncUser, "Key Vault Crypto Service Encryption User", kvRoleDesc("Read metadata of keys and perform wrap/unwrap operations."),
		permission{Actions: []string{"Microsoft.EventGrid/eventSubscriptions/write", "Microsoft.EventGrid/eventSubscriptions/read", "Microsoft.EventGrid/eventSubscriptions/delete"},
			DataActions: []string{kvKeys + "read", kvKeys + "wrap/action", kvKeys + "unwrap/action"}}),
	roleKVReader: builtin(roleKVReader, "Key Vault Reader", kvRoleDesc("Read metadata of key vaults and its certificates, keys, and secrets. Cannot read sensitive values such as secret contents or key material."),
		permission{Actions: kvReaderActions, DataActions: []string{"Microsoft.KeyVault/vaults/*/read", "Microsoft.KeyVault/vaults/secrets/readMetadata/action"}}),
}

// lastSegment returns the final path segment of an ARM id (a role
// definition id may be given as a bare guid or a full id).
func lastSegment(id string) string {
	id = strings.TrimRight(id, "/")
	return strings.ToLower(id[strings.LastIndex(id, "/")+1:])
}

// roleDefLocked resolves a role definition id; callers hold e.mu.
func (t *tenant) roleDef(id string) *roleDefinition {
	g := lastSegment(id)
	if rd := builtinRoles[g]; rd != nil {
		return rd
	}
	return t.RoleDefinitions[g]
}

// actionMatches compares an action against a pattern with '*' wildcards,
// case-insensitively, as Azure RBAC does.
func actionMatches(pattern, action string) bool {
	return globMatch(strings.ToLower(pattern), strings.ToLower(action))
}

func globMatch(p, s string) bool {
	// Iterative wildcard match with backtracking to the last '*'.
	pi, si, star, mark := 0, 0, -1, 0
	for si < len(s) {
		switch {
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, si
			pi++
		case pi < len(p) && p[pi] == s[si]:
			pi++
			si++
		case star >= 0:
			pi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// scopeCovers reports whether an assignment at scope applies to resource.
func scopeCovers(scope, resource string) bool {
	s := strings.ToLower(strings.TrimRight(scope, "/"))
	r := strings.ToLower(strings.TrimRight(resource, "/"))
	return s == "" || r == s || strings.HasPrefix(r, s+"/")
}

// permits reports whether a role grants action (data or control plane).
func (rd *roleDefinition) permits(action string, data bool) bool {
	for _, p := range rd.Permissions {
		allow, deny := p.Actions, p.NotActions
		if data {
			allow, deny = p.DataActions, p.NotDataActions
		}
		ok := false
		for _, a := range allow {
			if actionMatches(a, action) {
				ok = true
				break
			}
		}
		for _, a := range deny {
			if actionMatches(a, action) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// authorized evaluates Azure RBAC for one principal; callers hold e.mu.
func (t *tenant) authorized(principalID, resource, action string, data bool) bool {
	for _, ra := range t.RoleAssignments {
		if !strings.EqualFold(ra.PrincipalID, principalID) || !scopeCovers(ra.Scope, resource) {
			continue
		}
		if rd := t.roleDef(ra.RoleDefinitionID); rd != nil && rd.permits(action, data) {
			return true
		}
	}
	return false
}

func subscriptionScope(sub string) string { return "/subscriptions/" + sub }

func (v *vault) resourceID() string {
	return "/subscriptions/" + v.SubscriptionID + "/resourceGroups/" + v.ResourceGroup +
		"/providers/Microsoft.KeyVault/vaults/" + v.Name
}
