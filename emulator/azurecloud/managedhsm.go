// Managed HSM: pools at <name>.managedhsm.azure.net with the keys data
// plane (every key HSM-protected; oct-HSM AES keys), random bytes, and
// local RBAC: built-in roles and role assignments made on the pool itself
// (/{scope}/providers/Microsoft.Authorization/roleAssignments, scopes "/",
// "/keys" and "/keys/{name}"), not through ARM.

package azurecloud

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

const (
	hsmSuffix          = ".managedhsm.azure.net"
	hsmResource        = "https://managedhsm.azure.net"
	hsmData            = "Microsoft.KeyVault/managedHsm/"
	hsmKeys            = hsmData + "keys/"
	hsmRNGAction       = hsmData + "rng/action"
	kvRotationPolicies = "Microsoft.KeyVault/vaults/keyrotationpolicies/"
)

// Managed HSM local RBAC built-in role ids (the same in every pool).
const (
	roleHSMAdministrator        = "a290e904-7015-4bba-90c8-60543313cdb4"
	roleHSMCryptoOfficer        = "515eb02d-2335-4d2d-92f2-b1cbdf9c3778"
	roleHSMCryptoUser           = "21dbd100-6940-42c2-9190-5d6cb909625b"
	roleHSMPolicyAdministrator  = "4bd23610-cdcf-4971-bdee-bdc562cc28e4"
	roleHSMCryptoAuditor        = "2c18b078-7c48-4d3a-af88-5a3a1b3f82b3"
	roleHSMServiceEncryption    = "33413926-3206-4cdd-b39a-83574fe37a17"
	roleHSMServiceReleaseUser   = "21dbd100-6940-42c2-9190-5d6cb909625c"
	roleHSMBackupUser           = "7b127d3c-77bd-4e3e-bbe0-dbb8971fa7f8"
	roleHSMRestoreUser          = "6efe6056-5259-49d2-8b3d-d3d73544b20b"
	hsmRoleDefinitionPathPrefix = "Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/"
)

func hsmRole(id, name string, data ...string) *roleDefinition {
	return &roleDefinition{ID: id, RoleName: name, Type: "AKVBuiltInRole", AssignableScopes: []string{"/"},
		Permissions: []permission{{Actions: []string{}, NotActions: []string{}, DataActions: data, NotDataActions: []string{}}}}
}

var hsmRoleAdmin = []string{
	hsmData + "roleAssignments/delete/action", hsmData + "roleAssignments/read/action", hsmData + "roleAssignments/write/action",
	hsmData + "roleDefinitions/read/action", hsmData + "roleDefinitions/write/action", hsmData + "roleDefinitions/delete/action",
}

// builtinHSMRoles are Managed HSM's built-in local roles with the data
// actions Managed HSM itself lists for them (GET /providers/
// Microsoft.Authorization/roleDefinitions on a pool; "Local RBAC built-in
// roles for Managed HSM" in Azure's documentation).
var builtinHSMRoles = map[string]*roleDefinition{
	roleHSMAdministrator: hsmRole(roleHSMAdministrator, "Managed HSM Administrator", append(append([]string{}, hsmRoleAdmin...),
		hsmData+"securitydomain/download/action", hsmData+"securitydomain/download/read", hsmData+"securitydomain/upload/action",
		hsmData+"securitydomain/upload/read", hsmData+"securitydomain/transferkey/read",
		hsmData+"backup/start/action", hsmData+"restore/start/action", hsmData+"backup/status/action", hsmData+"restore/status/action")...),
	roleHSMCryptoOfficer: hsmRole(roleHSMCryptoOfficer, "Managed HSM Crypto Officer", append(append([]string{}, hsmRoleAdmin...),
		hsmKeys+"deletedKeys/read/action", hsmKeys+"deletedKeys/delete", hsmKeys+"deletedKeys/recover/action", hsmKeys+"export/action")...),
	roleHSMCryptoUser: hsmRole(roleHSMCryptoUser, "Managed HSM Crypto User",
		hsmData+"roleDefinitions/read/action", hsmData+"roleAssignments/read/action",
		hsmKeys+"read/action", hsmKeys+"write/action", hsmKeys+"delete", hsmKeys+"create", hsmKeys+"rotate/action",
		hsmKeys+"import/action", hsmKeys+"release/action", hsmKeys+"backup/action", hsmKeys+"restore/action",
		hsmKeys+"encrypt/action", hsmKeys+"decrypt/action", hsmKeys+"wrap/action", hsmKeys+"unwrap/action",
		hsmKeys+"sign/action", hsmKeys+"verify/action", hsmKeys+"derive/action", hsmRNGAction),
	roleHSMPolicyAdministrator: hsmRole(roleHSMPolicyAdministrator, "Managed HSM Policy Administrator", hsmRoleAdmin...),
	roleHSMCryptoAuditor: hsmRole(roleHSMCryptoAuditor, "Managed HSM Crypto Auditor",
		hsmData+"roleAssignments/read/action", hsmData+"roleDefinitions/read/action", hsmKeys+"read/action", hsmKeys+"deletedKeys/read/action"),
	roleHSMServiceEncryption: hsmRole(roleHSMServiceEncryption, "Managed HSM Crypto Service Encryption User",
		hsmKeys+"read/action", hsmKeys+"wrap/action", hsmKeys+"unwrap/action"),
	roleHSMServiceReleaseUser: hsmRole(roleHSMServiceReleaseUser, "Managed HSM Crypto Service Release User", hsmKeys+"release/action"),
	roleHSMBackupUser: hsmRole(roleHSMBackupUser, "Managed HSM Backup User",
		hsmData+"backup/start/action", hsmData+"backup/status/action", hsmKeys+"backup/action"),
	roleHSMRestoreUser: hsmRole(roleHSMRestoreUser, "Managed HSM Restore User",
		hsmData+"restore/start/action", hsmData+"restore/status/action", hsmKeys+"restore/action"),
}

// hsmOpActions are the Managed HSM data actions of each key operation
// (the vault data action names differ). Rotation policies have no data
// action of their own in Managed HSM's published list; reading one is
// taken as keys/read/action and writing one as keys/write/action.
var hsmOpActions = map[string]string{
	"kv.list": hsmKeys + "read/action", "kv.get": hsmKeys + "read/action", "kv.list_versions": hsmKeys + "read/action",
	"kv.get_attestation": hsmKeys + "read/action", "kv.get_rotation_policy": hsmKeys + "read/action",
	"kv.create": hsmKeys + "create", "kv.import": hsmKeys + "import/action", "kv.update": hsmKeys + "write/action",
	"kv.set_rotation_policy": hsmKeys + "write/action", "kv.rotate": hsmKeys + "rotate/action", "kv.delete": hsmKeys + "delete",
	"kv.list_deleted": hsmKeys + "deletedKeys/read/action", "kv.get_deleted": hsmKeys + "deletedKeys/read/action",
	"kv.recover": hsmKeys + "deletedKeys/recover/action", "kv.purge": hsmKeys + "deletedKeys/delete",
	"kv.backup": hsmKeys + "backup/action", "kv.restore": hsmKeys + "restore/action", "kv.release": hsmKeys + "release/action",
	"kv.encrypt": hsmKeys + "encrypt/action", "kv.decrypt": hsmKeys + "decrypt/action", "kv.wrapkey": hsmKeys + "wrap/action",
	"kv.unwrapkey": hsmKeys + "unwrap/action", "kv.sign": hsmKeys + "sign/action", "kv.verify": hsmKeys + "verify/action",
	"kv.rng": hsmRNGAction,
}

// hsmAction is the Managed HSM data action of a route.
func hsmAction(rt kvRoute) string {
	if a, ok := hsmOpActions[rt.op]; ok {
		return a
	}
	return rt.action // role management routes carry theirs
}

// hsmRoleDef resolves a role definition id (guid or full id) in a pool;
// callers hold e.mu.
func (v *vault) hsmRoleDef(id string) *roleDefinition {
	g := lastSegment(id)
	if rd := builtinHSMRoles[g]; rd != nil {
		return rd
	}
	return v.LocalRoleDefs[g]
}

// hsmAuthorized evaluates a pool's local RBAC; callers hold e.mu.
func (v *vault) hsmAuthorized(principalID, resource, action string) bool {
	for _, ra := range v.LocalAssigns {
		if !strings.EqualFold(ra.PrincipalID, principalID) || !scopeCovers(ra.Scope, resource) {
			continue
		}
		if rd := v.hsmRoleDef(ra.RoleDefinitionID); rd != nil && rd.permits(action, true) {
			return true
		}
	}
	return false
}

// authorizeHSM applies local RBAC to a request on a pool.
func (e *Emulator) authorizeHSM(w http.ResponseWriter, v *vault, p *principal, rt kvRoute) bool {
	res := "/"
	switch {
	case rt.scope != "":
		res = rt.scope
	case rt.name != "":
		res = "/keys/" + rt.name
	case strings.HasPrefix(rt.op, "kv.") && rt.op != "kv.rng":
		res = "/keys"
	}
	e.mu.RLock()
	ok := v.hsmAuthorized(p.ObjectID, res, rt.action)
	e.mu.RUnlock()
	if ok {
		return true
	}
	kvError(w, http.StatusForbidden, "Forbidden", fmt.Sprintf(
		"Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: %s\r\nAction: '%s'\r\nResource: '%s'\r\nAssignment: (not found)\r\nDecisionReason: 'DeniedWithNoValidRBAC' \r\nManagedHsm: %s;location=%s\r\n",
		p.callerString(), rt.action, res, v.Name, v.Location), "ForbiddenByRbac")
	return false
}

// parseHSMAdminRoute parses the pool's role management and security
// domain paths.
func parseHSMAdminRoute(method, path string) (kvRoute, bool) {
	low := strings.ToLower(path)
	if strings.HasPrefix(strings.TrimLeft(low, "/"), "securitydomain") {
		return kvRoute{op: "hsm.securitydomain", action: hsmData + "securitydomain/upload/read"}, true
	}
	i := strings.Index(low, "/providers/microsoft.authorization/")
	if i < 0 {
		return kvRoute{}, false
	}
	scope := "/" + strings.Trim(path[:i], "/")
	rest := strings.Split(strings.Trim(path[i+len("/providers/microsoft.authorization/"):], "/"), "/")
	if len(rest) > 2 || rest[0] == "" {
		return kvRoute{}, false
	}
	kind := ""
	switch strings.ToLower(rest[0]) {
	case "roleassignments":
		kind = "roleAssignments"
	case "roledefinitions":
		kind = "roleDefinitions"
	default:
		return kvRoute{}, false
	}
	item := ""
	if len(rest) == 2 {
		item = rest[1]
	}
	verb := map[string]string{http.MethodGet: "read", http.MethodPut: "write", http.MethodDelete: "delete"}[method]
	if verb == "" || (item == "" && verb != "read") {
		return kvRoute{}, false
	}
	op := "hsm." + strings.ToLower(strings.TrimSuffix(kind, "s")) + "."
	switch {
	case item == "":
		op += "list"
	case verb == "read":
		op += "get"
	case verb == "write":
		op += "put"
	default:
		op += "delete"
	}
	return kvRoute{op: op, action: hsmData + kind + "/" + verb + "/action", scope: scope, item: item}, true
}

// validHSMScope accepts "/", "/keys" and "/keys/{name}".
func validHSMScope(s string) bool {
	if s == "/" || strings.EqualFold(s, "/keys") {
		return true
	}
	n, ok := strings.CutPrefix(strings.ToLower(s), "/keys/")
	return ok && keyNameRE.MatchString(n)
}

func hsmRAJSON(ra *localRoleAssignment) map[string]any {
	return map[string]any{
		"id": "/providers/Microsoft.Authorization/roleAssignments/" + ra.Name, "name": ra.Name,
		"type": "Microsoft.Authorization/roleAssignments",
		"properties": map[string]string{"scope": ra.Scope, "principalId": ra.PrincipalID,
			"roleDefinitionId": hsmRoleDefinitionPathPrefix + ra.RoleDefinitionID},
	}
}

func hsmRDJSON(rd *roleDefinition) map[string]any {
	return map[string]any{
		"id": hsmRoleDefinitionPathPrefix + rd.ID, "name": rd.ID, "type": "Microsoft.Authorization/roleDefinitions",
		"properties": map[string]any{"roleName": rd.RoleName, "description": rd.Description, "type": rd.Type,
			"permissions": rd.Permissions, "assignableScopes": rd.AssignableScopes},
	}
}

// serveHSMAdmin answers role management on a pool (already authorised).
func (e *Emulator) serveHSMAdmin(w http.ResponseWriter, r *http.Request, v *vault, p *principal, rt kvRoute) {
	if rt.op == "hsm.securitydomain" {
		kvError(w, http.StatusBadRequest, "BadParameter", "Security domain operations are not emulated: the emulator's Managed HSM pools are active from creation.", "")
		return
	}
	if !validHSMScope(rt.scope) {
		badParam(w, fmt.Sprintf("The scope '%s' is not valid. Valid scopes are '/', '/keys' and '/keys/{key name}'.", truncate(rt.scope, 140)))
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	save := func() bool {
		if err := e.saveLocked(); err != nil {
			kvError(w, http.StatusInternalServerError, "InternalError", "The emulator could not persist its state.", "")
			return false
		}
		return true
	}
	switch rt.op {
	case "hsm.roleassignment.list":
		filter := r.URL.Query().Get("$filter")
		out := []map[string]any{}
		for _, n := range sortedKeys(v.LocalAssigns) {
			ra := v.LocalAssigns[n]
			if !scopeCovers(ra.Scope, rt.scope) {
				continue
			}
			if strings.Contains(strings.ToLower(filter), "atscope()") && !strings.EqualFold(ra.Scope, rt.scope) {
				continue
			}
			if f, val, ok := parseARMFilter(filter); ok && strings.EqualFold(f, "principalId") && !strings.EqualFold(val, ra.PrincipalID) {
				continue
			}
			out = append(out, hsmRAJSON(ra))
		}
		writeJSON(w, http.StatusOK, map[string]any{"value": out})
	case "hsm.roleassignment.get", "hsm.roleassignment.delete":
		ra := v.LocalAssigns[strings.ToLower(rt.item)]
		if ra == nil {
			kvError(w, http.StatusNotFound, "RoleAssignmentNotFound", "Requested role assignment not found (Activity ID: "+newGUID()+")", "")
			return
		}
		if rt.op == "hsm.roleassignment.delete" {
			delete(v.LocalAssigns, strings.ToLower(rt.item))
			if !save() {
				v.LocalAssigns[strings.ToLower(rt.item)] = ra
				return
			}
		}
		writeJSON(w, http.StatusOK, hsmRAJSON(ra))
	case "hsm.roleassignment.put":
		var req struct {
			Properties struct {
				RoleDefinitionID string `json:"roleDefinitionId"`
				PrincipalID      string `json:"principalId"`
			} `json:"properties"`
		}
		if err := readJSON(r, &req); err != nil {
			badParam(w, err.Error())
			return
		}
		if !isGUID(rt.item) {
			badParam(w, "The role assignment name must be a GUID.")
			return
		}
		if !isGUID(req.Properties.PrincipalID) {
			badParam(w, "properties.principalId must be the object id (GUID) of a principal.")
			return
		}
		rd := v.hsmRoleDef(req.Properties.RoleDefinitionID)
		if rd == nil {
			kvError(w, http.StatusBadRequest, "RoleDefinitionNotFound", "Requested role definition not found (Activity ID: "+newGUID()+")", "")
			return
		}
		if v.LocalAssigns[strings.ToLower(rt.item)] != nil {
			kvError(w, http.StatusConflict, "RoleAssignmentExists", "The role assignment already exists.", "")
			return
		}
		if len(v.LocalAssigns) >= 2000 {
			badParam(w, "The emulator's role assignment limit for a Managed HSM was reached.")
			return
		}
		ra := &localRoleAssignment{Name: strings.ToLower(rt.item), Scope: normHSMScope(rt.scope), RoleDefinitionID: rd.ID,
			PrincipalID: strings.ToLower(req.Properties.PrincipalID), Created: e.clock.Now()}
		v.LocalAssigns[ra.Name] = ra
		if !save() {
			delete(v.LocalAssigns, ra.Name)
			return
		}
		writeJSON(w, http.StatusCreated, hsmRAJSON(ra))
	case "hsm.roledefinition.list":
		out := []map[string]any{}
		for _, id := range sortedKeys(builtinHSMRoles) {
			out = append(out, hsmRDJSON(builtinHSMRoles[id]))
		}
		for _, id := range sortedKeys(v.LocalRoleDefs) {
			out = append(out, hsmRDJSON(v.LocalRoleDefs[id]))
		}
		writeJSON(w, http.StatusOK, map[string]any{"value": out})
	case "hsm.roledefinition.get":
		rd := v.hsmRoleDef(rt.item)
		if rd == nil {
			kvError(w, http.StatusNotFound, "RoleDefinitionNotFound", "Requested role definition not found (Activity ID: "+newGUID()+")", "")
			return
		}
		writeJSON(w, http.StatusOK, hsmRDJSON(rd))
	case "hsm.roledefinition.put":
		var req struct {
			Properties struct {
				RoleName    string       `json:"roleName"`
				Description string       `json:"description"`
				Type        string       `json:"type"`
				Permissions []permission `json:"permissions"`
			} `json:"properties"`
		}
		if err := readJSON(r, &req); err != nil {
			badParam(w, err.Error())
			return
		}
		g := strings.ToLower(rt.item)
		if !isGUID(g) || builtinHSMRoles[g] != nil {
			badParam(w, "The role definition name must be a GUID that is not a built-in role.")
			return
		}
		for _, p := range req.Properties.Permissions {
			for _, a := range append(append([]string{}, p.DataActions...), p.NotDataActions...) {
				if !strings.HasPrefix(strings.ToLower(a), strings.ToLower(hsmData)) {
					badParam(w, fmt.Sprintf("The data action '%s' is not a Managed HSM data action.", truncate(a, 128)))
					return
				}
			}
		}
		rd := &roleDefinition{ID: g, RoleName: req.Properties.RoleName, Description: req.Properties.Description, Type: "CustomRole",
			Permissions: req.Properties.Permissions, AssignableScopes: []string{"/"}, Created: e.clock.Now(), Updated: e.clock.Now()}
		if rd.RoleName == "" {
			rd.RoleName = g
		}
		for i := range rd.Permissions {
			for _, l := range []*[]string{&rd.Permissions[i].Actions, &rd.Permissions[i].NotActions, &rd.Permissions[i].DataActions, &rd.Permissions[i].NotDataActions} {
				if *l == nil {
					*l = []string{}
				}
			}
		}
		old := v.LocalRoleDefs[g]
		v.LocalRoleDefs[g] = rd
		if !save() {
			v.LocalRoleDefs[g] = old
			return
		}
		writeJSON(w, http.StatusCreated, hsmRDJSON(rd))
	case "hsm.roledefinition.delete":
		g := strings.ToLower(rt.item)
		rd := v.LocalRoleDefs[g]
		if rd == nil {
			kvError(w, http.StatusNotFound, "RoleDefinitionNotFound", "Requested role definition not found (Activity ID: "+newGUID()+")", "")
			return
		}
		for _, ra := range v.LocalAssigns {
			if strings.EqualFold(ra.RoleDefinitionID, g) {
				kvError(w, http.StatusConflict, "RoleDefinitionHasAssignments", "The role definition has role assignments and cannot be deleted.", "")
				return
			}
		}
		delete(v.LocalRoleDefs, g)
		if !save() {
			v.LocalRoleDefs[g] = rd
			return
		}
		writeJSON(w, http.StatusOK, hsmRDJSON(rd))
	default:
		kvError(w, http.StatusNotFound, "NotFound", "The requested path or method is not supported by Managed HSM.", "")
	}
}

// normHSMScope canonicalises a valid scope ("/", "/keys", "/keys/{name}").
func normHSMScope(s string) string {
	if s == "/" {
		return s
	}
	if len(s) > len("/keys/") {
		return "/keys/" + s[len("/keys/"):]
	}
	return "/keys"
}

// kvRNG answers POST /rng: 1..128 random bytes (Managed HSM only).
func (e *Emulator) kvRNG(w http.ResponseWriter, r *http.Request, v *vault) {
	var req struct {
		Count *int `json:"count"`
	}
	if err := readJSON(r, &req); err != nil {
		badParam(w, err.Error())
		return
	}
	if req.Count == nil || *req.Count < 1 || *req.Count > 128 {
		badParam(w, "The property count must be between 1 and 128.")
		return
	}
	b := make([]byte, *req.Count)
	if _, err := rand.Read(b); err != nil {
		kvError(w, http.StatusInternalServerError, "InternalError", "No random bytes.", "")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"value": b64url.EncodeToString(b)})
}

// ManagedHSMOptions configure CreateManagedHSM.
type ManagedHSMOptions struct {
	// Location is the Azure region (default "eastus").
	Location string
	// Administrators are the object ids given the Managed HSM Administrator
	// role at scope "/" (ARM's initialAdminObjectIds).
	Administrators []string
	// SoftDeleteDays is the soft-delete retention, 7..90 (0 = 90).
	SoftDeleteDays int
	// PurgeProtection forbids purging deleted keys.
	PurgeProtection bool
}

var errHSMName = errors.New("invalid Managed HSM name: 3-24 characters, letters, digits and single hyphens, starting with a letter")

// newHSM builds a pool; callers hold e.mu (write).
func (e *Emulator) newHSM(t *tenant, rg, name string, o ManagedHSMOptions) (*vault, error) {
	if !vaultNameRE.MatchString(name) || strings.Contains(name, "--") {
		return nil, errHSMName
	}
	if o.SoftDeleteDays != 0 && (o.SoftDeleteDays < 7 || o.SoftDeleteDays > 90) {
		return nil, errors.New("softDeleteRetentionInDays must be between 7 and 90")
	}
	if o.Location == "" {
		o.Location = "eastus"
	}
	now := e.clock.Now()
	h := &vault{Name: strings.ToLower(name), TenantID: t.ID, SubscriptionID: t.SubscriptionID, ResourceGroup: rg,
		Location: strings.ToLower(strings.ReplaceAll(o.Location, " ", "")), SKU: "Standard_B1", RBAC: true, Created: now,
		Keys: map[string]*key{}, Deleted: map[string]*deletedKey{}, SoftDeleteDays: o.SoftDeleteDays, PurgeProtection: o.PurgeProtection,
		HSM: true, LocalAssigns: map[string]*localRoleAssignment{}, LocalRoleDefs: map[string]*roleDefinition{}}
	for _, oid := range o.Administrators {
		if !isGUID(oid) {
			return nil, fmt.Errorf("administrator %q is not an object id", oid)
		}
		id := newGUID()
		h.LocalAssigns[id] = &localRoleAssignment{Name: id, Scope: "/", RoleDefinitionID: roleHSMAdministrator, PrincipalID: strings.ToLower(oid), Created: now}
	}
	return h, nil
}

// CreateManagedHSM creates an active Managed HSM pool in the tenant's
// subscription (creating the resource group if needed) and returns its URL
// ("https://name.managedhsm.azure.net/"). The security domain is not
// emulated: the pool serves keys at once.
func (e *Emulator) CreateManagedHSM(tenantID, rgName, name string, o ManagedHSMOptions) (string, error) {
	if !rgNameRE.MatchString(rgName) {
		return "", fmt.Errorf("invalid resource group name %q", rgName)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	t := e.lookupTenant(tenantID)
	if t == nil {
		return "", fmt.Errorf("tenant %q not found", tenantID)
	}
	ln := strings.ToLower(name)
	if h := e.st.HSMs[ln]; h != nil {
		if h.TenantID != t.ID || !strings.EqualFold(h.ResourceGroup, rgName) {
			return "", fmt.Errorf("managed HSM name %q is already in use", name)
		}
		return "https://" + ln + hsmSuffix + "/", nil
	}
	g := t.ResourceGroups[strings.ToLower(rgName)]
	if g == nil {
		loc := o.Location
		if loc == "" {
			loc = "eastus"
		}
		g = &resourceGroup{Name: rgName, Location: loc}
		t.ResourceGroups[strings.ToLower(rgName)] = g
	}
	h, err := e.newHSM(t, g.Name, name, o)
	if err != nil {
		return "", err
	}
	e.st.HSMs[ln] = h
	return "https://" + ln + hsmSuffix + "/", e.saveLocked()
}

// AssignHSMRole makes a local RBAC role assignment on a pool (what the
// pool's own role assignment API does): scope "/", "/keys" or
// "/keys/{name}", a built-in or custom role id, a principal's object id.
func (e *Emulator) AssignHSMRole(hsmName, scope, roleDefinitionID, principalID string) (string, error) {
	if !validHSMScope(scope) {
		return "", fmt.Errorf("invalid Managed HSM scope %q", scope)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	h := e.st.HSMs[strings.ToLower(hsmName)]
	if h == nil {
		return "", fmt.Errorf("managed HSM %q not found", hsmName)
	}
	rd := h.hsmRoleDef(roleDefinitionID)
	if rd == nil {
		return "", fmt.Errorf("role definition %q not found", roleDefinitionID)
	}
	if !isGUID(principalID) {
		return "", fmt.Errorf("principal %q is not an object id", principalID)
	}
	id := newGUID()
	h.LocalAssigns[id] = &localRoleAssignment{Name: id, Scope: normHSMScope(scope), RoleDefinitionID: rd.ID, PrincipalID: strings.ToLower(principalID), Created: e.clock.Now()}
	return id, e.saveLocked()
}
