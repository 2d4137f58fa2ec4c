package azurecloud

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"
)

func armError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

var (
	vaultNameRE = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9-]{1,22}[a-zA-Z0-9]$`)
	rgNameRE    = regexp.MustCompile(`^[-\w._()]{1,90}$`)
	armFilterRE = regexp.MustCompile(`(?i)^\s*(roleName|principalId|type)\s+eq\s+'([^']{1,256})'\s*$`)
)

// armScope is a parsed ARM scope down to a Key Vault key.
type armScope struct {
	Sub, RG, Vault, Key string
	HSM                 string // a Managed HSM pool (Microsoft.KeyVault/managedHSMs)
}

func (s armScope) String() string {
	out := "/subscriptions/" + s.Sub
	if s.RG != "" {
		out += "/resourceGroups/" + s.RG
	}
	if s.Vault != "" {
		out += "/providers/Microsoft.KeyVault/vaults/" + s.Vault
	}
	if s.HSM != "" {
		out += "/providers/Microsoft.KeyVault/managedHSMs/" + s.HSM
	}
	if s.Key != "" {
		out += "/keys/" + s.Key
	}
	return out
}

// parseScope parses path segments of a scope; ok is false for shapes the
// emulator does not model.
func parseScope(segs []string) (armScope, bool) {
	var s armScope
	if len(segs) < 2 || !strings.EqualFold(segs[0], "subscriptions") || segs[1] == "" {
		return s, false
	}
	s.Sub = segs[1]
	rest := segs[2:]
	if len(rest) == 0 {
		return s, true
	}
	if len(rest) < 2 || !strings.EqualFold(rest[0], "resourceGroups") || rest[1] == "" {
		return s, false
	}
	s.RG, rest = rest[1], rest[2:]
	if len(rest) == 0 {
		return s, true
	}
	if len(rest) < 4 || !strings.EqualFold(rest[0], "providers") || !strings.EqualFold(rest[1], "Microsoft.KeyVault") || rest[3] == "" {
		return s, false
	}
	if strings.EqualFold(rest[2], "managedHSMs") {
		s.HSM = rest[3]
		return s, len(rest) == 4
	}
	if !strings.EqualFold(rest[2], "vaults") {
		return s, false
	}
	s.Vault, rest = rest[3], rest[4:]
	if len(rest) == 0 {
		return s, true
	}
	if len(rest) != 2 || !strings.EqualFold(rest[0], "keys") || rest[1] == "" {
		return s, false
	}
	s.Key = rest[1]
	return s, true
}

func splitPath(p string) []string {
	p = strings.Trim(p, "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

// armAuth validates an ARM token. Tenant checks happen per subscription.
func (e *Emulator) armAuth(w http.ResponseWriter, r *http.Request) (*principal, bool) {
	fail := func(code, msg string) (*principal, bool) {
		w.Header().Set("WWW-Authenticate", `Bearer authorization_uri="https://login.windows.net/", error="invalid_token", error_description="`+code+`"`)
		armError(w, http.StatusUnauthorized, code, msg)
		return nil, false
	}
	raw, present := bearer(r)
	if !present || raw == "" {
		return fail("AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.")
	}
	p, prob := e.parseAccessToken(raw)
	now := e.clock.Now().UTC()
	switch prob {
	case tokMalformed, tokBadSignature:
		return fail("InvalidAuthenticationToken", "The access token is invalid.")
	case tokExpired:
		return fail("ExpiredAuthenticationToken", fmt.Sprintf("The access token expiry UTC time '%s' is earlier than current UTC time '%s'.",
			p.Exp.UTC().Format("1/2/2006 3:04:05 PM"), now.Format("1/2/2006 3:04:05 PM")))
	case tokNotYetValid:
		return fail("InvalidAuthenticationToken", "The access token is not yet valid.")
	}
	switch normResource(p.Audience) {
	case "https://management.azure.com", "https://management.core.windows.net", armAppID:
	default:
		return fail("InvalidAuthenticationTokenAudience", fmt.Sprintf(
			"The access token has been obtained for wrong audience or resource '%s'. It should exactly match with one of the allowed audiences 'https://management.core.windows.net/','https://management.core.windows.net','https://management.azure.com/','https://management.azure.com'.",
			truncate(p.Audience, 256)))
	}
	return p, true
}

// armOp classifies an ARM request for counters and faults.
func armOp(method string, segs []string) string {
	verb := map[string]string{http.MethodPut: "put", http.MethodGet: "get", http.MethodDelete: "delete", http.MethodPatch: "patch"}[method]
	if verb == "" {
		return "arm.other"
	}
	if i := authzIndex(segs); i >= 0 {
		kind := "roleassignment"
		if strings.EqualFold(segs[i+2], "roleDefinitions") {
			kind = "roledefinition"
		}
		if len(segs) == i+3 {
			return "arm." + kind + ".list"
		}
		return "arm." + kind + "." + verb
	}
	switch len(segs) {
	case 2:
		return "arm.subscription." + verb
	case 4:
		return "arm.resourcegroup." + verb
	case 8:
		if strings.EqualFold(segs[6], "managedHSMs") {
			return "arm.managedhsm." + verb
		}
		return "arm.vault." + verb
	}
	return "arm.other"
}

// authzIndex finds ".../providers/Microsoft.Authorization/{kind}" in segs.
func authzIndex(segs []string) int {
	for i := 0; i+2 < len(segs); i++ {
		if len(segs) > i+4 {
			continue
		}
		if strings.EqualFold(segs[i], "providers") && strings.EqualFold(segs[i+1], "Microsoft.Authorization") &&
			(strings.EqualFold(segs[i+2], "roleAssignments") || strings.EqualFold(segs[i+2], "roleDefinitions")) {
			return i
		}
	}
	return -1
}

func (e *Emulator) serveARM(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("x-ms-request-id", newGUID())
	w.Header().Set("x-ms-correlation-request-id", newGUID())
	segs := splitPath(r.URL.Path)
	op := armOp(r.Method, segs)
	if !e.begin(w, r, svcARM, "management.azure.com", op) {
		return
	}
	p, ok := e.armAuth(w, r)
	if !ok {
		return
	}
	if r.URL.Query().Get("api-version") == "" {
		armError(w, http.StatusBadRequest, "MissingApiVersionParameter", "The api-version query parameter (?api-version=) is required for all requests.")
		return
	}
	if op == "arm.other" {
		armError(w, http.StatusNotFound, "InvalidResourceType", "The resource type or path is not supported by the Azure emulator.")
		return
	}
	var scopeSegs []string
	kind := ""
	name := ""
	if i := authzIndex(segs); i >= 0 {
		scopeSegs, kind = segs[:i], strings.ToLower(segs[i+2])
		if len(segs) == i+4 {
			name = segs[i+3]
		}
	} else {
		scopeSegs = segs
	}
	sc, ok := parseScope(scopeSegs)
	if !ok {
		armError(w, http.StatusBadRequest, "InvalidScope", "The scope is not valid or not supported by the Azure emulator.")
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	t := e.tenantForSub(sc.Sub)
	if t == nil {
		armError(w, http.StatusNotFound, "SubscriptionNotFound", fmt.Sprintf("The subscription '%s' could not be found.", truncate(sc.Sub, 64)))
		return
	}
	if !strings.EqualFold(p.TenantID, t.ID) {
		w.Header().Set("WWW-Authenticate", `Bearer authorization_uri="https://login.windows.net/`+t.ID+`", error="invalid_token", error_description="The access token is from the wrong issuer."`)
		armError(w, http.StatusUnauthorized, "InvalidAuthenticationTokenTenant", fmt.Sprintf(
			"The access token is from the wrong issuer '%s'. It must match the tenant 'https://sts.windows.net/%s/' associated with this subscription. Please use the authority (URL) 'https://login.windows.net/%s' to get the token. Note, if the subscription is transferred to another tenant there is no impact to the services, but information about new tenant could take time to propagate (up to an hour). If you just transferred your subscription and see this error message, please try back later.",
			p.Issuer, t.ID, t.ID))
		return
	}
	a := armCall{e: e, w: w, r: r, p: p, t: t, sc: sc}
	switch {
	case kind == "roledefinitions":
		a.roleDefinitions(name)
	case kind == "roleassignments":
		a.roleAssignments(name)
	case sc.Key != "":
		armError(w, http.StatusNotFound, "InvalidResourceType", "Keys are managed through the data plane in the Azure emulator.")
	case sc.Vault != "":
		a.vault()
	case sc.HSM != "":
		a.managedHSM()
	case sc.RG != "":
		a.resourceGroup()
	default:
		a.subscription()
	}
}

// tenantForSub finds a subscription's tenant; callers hold e.mu.
func (e *Emulator) tenantForSub(sub string) *tenant {
	for _, t := range e.st.Tenants {
		if strings.EqualFold(t.SubscriptionID, sub) {
			return t
		}
	}
	return nil
}

// armCall carries one authenticated ARM request; e.mu is held (write).
type armCall struct {
	e  *Emulator
	w  http.ResponseWriter
	r  *http.Request
	p  *principal
	t  *tenant
	sc armScope
}

func (a *armCall) allowed(action, scope string) bool {
	if a.t.authorized(a.p.ObjectID, scope, action, false) {
		return true
	}
	who := a.p.ObjectID
	if a.p.UPN != "" {
		who = a.p.UPN
	}
	armError(a.w, http.StatusForbidden, "AuthorizationFailed", fmt.Sprintf(
		"The client '%s' with object id '%s' does not have authorization to perform action '%s' over scope '%s' or the scope is invalid. If access was recently granted, please refresh your credentials.",
		who, a.p.ObjectID, action, scope))
	return false
}

func (a *armCall) save() bool {
	if err := a.e.saveLocked(); err != nil {
		armError(a.w, http.StatusInternalServerError, "InternalServerError", "The emulator could not persist its state.")
		return false
	}
	return true
}

func (a *armCall) rg() *resourceGroup { return a.t.ResourceGroups[strings.ToLower(a.sc.RG)] }

func (a *armCall) rgNotFound() {
	armError(a.w, http.StatusNotFound, "ResourceGroupNotFound", fmt.Sprintf("Resource group '%s' could not be found.", a.sc.RG))
}

func (a *armCall) subscription() {
	if a.r.Method != http.MethodGet {
		armError(a.w, http.StatusMethodNotAllowed, "MethodNotAllowed", "Only GET is supported on subscriptions.")
		return
	}
	writeJSON(a.w, http.StatusOK, map[string]any{
		"id": "/subscriptions/" + a.t.SubscriptionID, "subscriptionId": a.t.SubscriptionID, "tenantId": a.t.ID,
		"displayName": "Emulated subscription", "state": "Enabled",
	})
}

func (a *armCall) rgJSON(g *resourceGroup) map[string]any {
	return map[string]any{
		"id":   "/subscriptions/" + a.t.SubscriptionID + "/resourceGroups/" + g.Name,
		"name": g.Name, "type": "Microsoft.Resources/resourceGroups", "location": g.Location, "tags": g.Tags,
		"properties": map[string]string{"provisioningState": "Succeeded"},
	}
}

func (a *armCall) resourceGroup() {
	scope := a.sc.String()
	g := a.rg()
	switch a.r.Method {
	case http.MethodPut:
		if !a.allowed("Microsoft.Resources/subscriptions/resourceGroups/write", scope) {
			return
		}
		var req struct {
			Location string            `json:"location"`
			Tags     map[string]string `json:"tags"`
		}
		if err := readJSON(a.r, &req); err != nil {
			armError(a.w, http.StatusBadRequest, "InvalidRequestContent", "The request content was invalid and could not be deserialized: "+err.Error())
			return
		}
		if !rgNameRE.MatchString(a.sc.RG) || strings.HasSuffix(a.sc.RG, ".") {
			armError(a.w, http.StatusBadRequest, "InvalidResourceGroupName", "The resource group name is invalid.")
			return
		}
		if req.Location == "" {
			armError(a.w, http.StatusBadRequest, "LocationRequired", "The location property is required for this definition.")
			return
		}
		status := http.StatusOK
		if g == nil {
			g = &resourceGroup{Name: a.sc.RG}
			a.t.ResourceGroups[strings.ToLower(a.sc.RG)] = g
			status = http.StatusCreated
		}
		g.Location, g.Tags = strings.ToLower(strings.ReplaceAll(req.Location, " ", "")), req.Tags
		if !a.save() {
			return
		}
		writeJSON(a.w, status, a.rgJSON(g))
	case http.MethodGet:
		if !a.allowed("Microsoft.Resources/subscriptions/resourceGroups/read", scope) {
			return
		}
		if g == nil {
			a.rgNotFound()
			return
		}
		writeJSON(a.w, http.StatusOK, a.rgJSON(g))
	case http.MethodDelete:
		if !a.allowed("Microsoft.Resources/subscriptions/resourceGroups/delete", scope) {
			return
		}
		if g == nil {
			a.rgNotFound()
			return
		}
		for _, m := range []map[string]*vault{a.e.st.Vaults, a.e.st.HSMs} {
			for n, v := range m {
				if v.SubscriptionID == a.t.SubscriptionID && strings.EqualFold(v.ResourceGroup, g.Name) {
					delete(m, n)
				}
			}
		}
		delete(a.t.ResourceGroups, strings.ToLower(g.Name))
		if !a.save() {
			return
		}
		a.w.WriteHeader(http.StatusOK)
	default:
		armError(a.w, http.StatusMethodNotAllowed, "MethodNotAllowed", "Method not supported.")
	}
}

func vaultJSON(v *vault) map[string]any {
	tags := v.Tags
	if tags == nil {
		tags = map[string]string{}
	}
	return map[string]any{
		"id": v.resourceID(), "name": v.Name, "type": "Microsoft.KeyVault/vaults", "location": v.Location, "tags": tags,
		"properties": map[string]any{
			"sku":      map[string]string{"family": "A", "name": v.SKU},
			"tenantId": v.TenantID, "accessPolicies": []any{},
			"enableRbacAuthorization": v.RBAC, "enableSoftDelete": true, "softDeleteRetentionInDays": v.retentionDays(),
			"enablePurgeProtection": nilIfFalse(v.PurgeProtection),
			"vaultUri":              "https://" + v.Name + ".vault.azure.net/", "provisioningState": "Succeeded",
			"publicNetworkAccess": "Enabled",
		},
	}
}

type vaultReq struct {
	Location   string            `json:"location"`
	Tags       map[string]string `json:"tags"`
	Properties struct {
		TenantID string `json:"tenantId"`
		SKU      *struct {
			Family string `json:"family"`
			Name   string `json:"name"`
		} `json:"sku"`
		EnableRbacAuthorization   *bool `json:"enableRbacAuthorization"`
		SoftDeleteRetentionInDays *int  `json:"softDeleteRetentionInDays"`
		EnablePurgeProtection     *bool `json:"enablePurgeProtection"`
		EnableSoftDelete          *bool `json:"enableSoftDelete"`
	} `json:"properties"`
}

func nilIfFalse(b bool) any {
	if b {
		return true
	}
	return nil
}

// softDeleteProps validates the soft-delete properties of a vault or pool:
// soft delete cannot be turned off, retention is 7..90 days, and purge
// protection cannot be turned off once on. Zero days means unchanged (or
// 90 for a new one).
func softDeleteProps(enable *bool, days *int, purge *bool, curDays int, curPurge bool) (int, bool, string) {
	if enable != nil && !*enable {
		return 0, false, "Soft delete cannot be disabled: it is always on for new vaults."
	}
	d := curDays
	if days != nil {
		if *days < 7 || *days > 90 {
			return 0, false, "softDeleteRetentionInDays must be between 7 and 90."
		}
		d = *days
		if d == 90 {
			d = 0
		}
	}
	p := curPurge
	if purge != nil {
		if curPurge && !*purge {
			return 0, false, "Purge protection cannot be disabled once it is enabled."
		}
		p = *purge
	}
	return d, p, ""
}

func (a *armCall) vault() {
	scope := a.sc.String()
	ln := strings.ToLower(a.sc.Vault)
	v := a.e.st.Vaults[ln]
	mine := v != nil && strings.EqualFold(v.SubscriptionID, a.t.SubscriptionID) && strings.EqualFold(v.ResourceGroup, a.sc.RG)
	notFound := func() {
		armError(a.w, http.StatusNotFound, "ResourceNotFound", fmt.Sprintf(
			"The Resource 'Microsoft.KeyVault/vaults/%s' under resource group '%s' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix", a.sc.Vault, a.sc.RG))
	}
	switch a.r.Method {
	case http.MethodPut:
		if !a.allowed("Microsoft.KeyVault/vaults/write", scope) {
			return
		}
		var req vaultReq
		if err := readJSON(a.r, &req); err != nil {
			armError(a.w, http.StatusBadRequest, "InvalidRequestContent", "The request content was invalid and could not be deserialized: "+err.Error())
			return
		}
		if a.rg() == nil {
			a.rgNotFound()
			return
		}
		if !vaultNameRE.MatchString(a.sc.Vault) || strings.Contains(a.sc.Vault, "--") {
			armError(a.w, http.StatusBadRequest, "VaultNameNotValid", fmt.Sprintf(
				"Vault name '%s' is invalid. A vault's name must be between 3-24 alphanumeric characters. The name must begin with a letter, end with a letter or digit, and not contain consecutive hyphens. Follow this link for more information: https://go.microsoft.com/fwlink/?linkid=2147742", truncate(a.sc.Vault, 64)))
			return
		}
		if v != nil && !mine {
			armError(a.w, http.StatusConflict, "VaultAlreadyExists", fmt.Sprintf(
				"The vault name '%s' is already in use. Vault names are globally unique so it is possible that the name is already taken. If you are sure that the vault name was not taken then it is possible that a vault with the same name was recently deleted but not purged after being placed in a recoverable state.", a.sc.Vault))
			return
		}
		if req.Location == "" {
			armError(a.w, http.StatusBadRequest, "LocationRequired", "The location property is required for this definition.")
			return
		}
		if !strings.EqualFold(req.Properties.TenantID, a.t.ID) {
			armError(a.w, http.StatusBadRequest, "BadRequest", "The 'properties.tenantId' must be the id of the tenant that owns the subscription ("+a.t.ID+").")
			return
		}
		sku := "standard"
		if req.Properties.SKU != nil && req.Properties.SKU.Name != "" {
			sku = strings.ToLower(req.Properties.SKU.Name)
			if sku != "standard" && sku != "premium" {
				armError(a.w, http.StatusBadRequest, "BadRequest", "The SKU name must be 'standard' or 'premium'.")
				return
			}
		}
		// Azure's newer default is the RBAC permission model; this emulator
		// only implements RBAC for data-plane authorisation.
		rbac := req.Properties.EnableRbacAuthorization == nil || *req.Properties.EnableRbacAuthorization
		if err := validateTags(req.Tags); err != nil {
			armError(a.w, http.StatusBadRequest, "InvalidTag", err.Error())
			return
		}
		var curDays int
		var curPurge bool
		if v != nil {
			curDays, curPurge = v.SoftDeleteDays, v.PurgeProtection
		}
		days, purge, msg := softDeleteProps(req.Properties.EnableSoftDelete, req.Properties.SoftDeleteRetentionInDays, req.Properties.EnablePurgeProtection, curDays, curPurge)
		if msg != "" {
			armError(a.w, http.StatusBadRequest, "BadRequest", msg)
			return
		}
		status := http.StatusOK
		if v == nil {
			v = &vault{Name: ln, TenantID: a.t.ID, SubscriptionID: a.t.SubscriptionID, ResourceGroup: a.rg().Name,
				Created: a.e.clock.Now(), Keys: map[string]*key{}, Deleted: map[string]*deletedKey{}}
			a.e.st.Vaults[ln] = v
		}
		v.Location = strings.ToLower(strings.ReplaceAll(req.Location, " ", ""))
		v.SKU, v.RBAC, v.Tags = sku, rbac, req.Tags
		v.SoftDeleteDays, v.PurgeProtection = days, purge
		if !a.save() {
			return
		}
		writeJSON(a.w, status, vaultJSON(v))
	case http.MethodGet:
		if !a.allowed("Microsoft.KeyVault/vaults/read", scope) {
			return
		}
		if !mine {
			notFound()
			return
		}
		writeJSON(a.w, http.StatusOK, vaultJSON(v))
	case http.MethodDelete:
		if !a.allowed("Microsoft.KeyVault/vaults/delete", scope) {
			return
		}
		if !mine {
			a.w.WriteHeader(http.StatusNoContent)
			return
		}
		delete(a.e.st.Vaults, ln)
		if !a.save() {
			return
		}
		a.w.WriteHeader(http.StatusOK)
	default:
		armError(a.w, http.StatusMethodNotAllowed, "MethodNotAllowed", "Method not supported.")
	}
}

// scopeExists checks that every level of a scope exists; callers hold e.mu.
func (a *armCall) scopeExists(sc armScope) bool {
	if sc.RG == "" {
		return true
	}
	if a.t.ResourceGroups[strings.ToLower(sc.RG)] == nil {
		a.rgNotFound()
		return false
	}
	if sc.HSM != "" {
		h := a.e.st.HSMs[strings.ToLower(sc.HSM)]
		if h == nil || !strings.EqualFold(h.ResourceGroup, sc.RG) || !strings.EqualFold(h.SubscriptionID, sc.Sub) {
			armError(a.w, http.StatusNotFound, "ResourceNotFound", fmt.Sprintf(
				"The Resource 'Microsoft.KeyVault/managedHSMs/%s' under resource group '%s' was not found.", sc.HSM, sc.RG))
			return false
		}
		return true
	}
	if sc.Vault == "" {
		return true
	}
	v := a.e.st.Vaults[strings.ToLower(sc.Vault)]
	if v == nil || !strings.EqualFold(v.ResourceGroup, sc.RG) || !strings.EqualFold(v.SubscriptionID, sc.Sub) {
		armError(a.w, http.StatusNotFound, "ResourceNotFound", fmt.Sprintf(
			"The Resource 'Microsoft.KeyVault/vaults/%s' under resource group '%s' was not found.", sc.Vault, sc.RG))
		return false
	}
	return true
}

func rdID(sub, guid string) string {
	return "/subscriptions/" + sub + "/providers/Microsoft.Authorization/roleDefinitions/" + guid
}

func (a *armCall) rdJSON(rd *roleDefinition) map[string]any {
	perms := rd.Permissions
	if perms == nil {
		perms = []permission{}
	}
	return map[string]any{
		"id": rdID(a.t.SubscriptionID, rd.ID), "type": "Microsoft.Authorization/roleDefinitions", "name": rd.ID,
		"properties": map[string]any{
			"roleName": rd.RoleName, "type": rd.Type, "description": rd.Description,
			"assignableScopes": rd.AssignableScopes, "permissions": perms,
			"createdOn": rd.Created.UTC().Format(time.RFC3339Nano), "updatedOn": rd.Updated.UTC().Format(time.RFC3339Nano),
			"createdBy": nilIfEmpty(rd.CreatedBy), "updatedBy": nilIfEmpty(rd.CreatedBy),
		},
	}
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

type roleDefReq struct {
	Properties struct {
		RoleName         string       `json:"roleName"`
		Description      string       `json:"description"`
		Type             string       `json:"type"`
		Permissions      []permission `json:"permissions"`
		AssignableScopes []string     `json:"assignableScopes"`
	} `json:"properties"`
}

func validActions(l []string) bool {
	if len(l) > 500 {
		return false
	}
	for _, s := range l {
		if s == "" || len(s) > 256 || strings.ContainsAny(s, " \t\r\n'\"") {
			return false
		}
	}
	return true
}

func (a *armCall) roleDefinitions(name string) {
	scope := a.sc.String()
	if name == "" {
		if a.r.Method != http.MethodGet {
			armError(a.w, http.StatusMethodNotAllowed, "MethodNotAllowed", "Method not supported.")
			return
		}
		if !a.allowed("Microsoft.Authorization/roleDefinitions/read", scope) {
			return
		}
		field, val, ok := parseARMFilter(a.r.URL.Query().Get("$filter"))
		if !ok || (field != "" && field != "rolename" && field != "type") {
			armError(a.w, http.StatusBadRequest, "InvalidFilter", "The emulator supports $filter=roleName eq '...' or type eq '...'.")
			return
		}
		out := []map[string]any{}
		all := make([]*roleDefinition, 0, len(builtinRoles)+len(a.t.RoleDefinitions))
		for _, id := range sortedKeys(builtinRoles) {
			all = append(all, builtinRoles[id])
		}
		for _, id := range sortedKeys(a.t.RoleDefinitions) {
			all = append(all, a.t.RoleDefinitions[id])
		}
		for _, rd := range all {
			if (field == "rolename" && !strings.EqualFold(rd.RoleName, val)) || (field == "type" && !strings.EqualFold(rd.Type, val)) {
				continue
			}
			out = append(out, a.rdJSON(rd))
		}
		writeJSON(a.w, http.StatusOK, map[string]any{"value": out})
		return
	}
	g := strings.ToLower(name)
	switch a.r.Method {
	case http.MethodGet:
		if !a.allowed("Microsoft.Authorization/roleDefinitions/read", scope) {
			return
		}
		rd := a.t.roleDef(g)
		if rd == nil {
			armError(a.w, http.StatusNotFound, "RoleDefinitionDoesNotExist", fmt.Sprintf("The specified role definition with ID '%s' does not exist.", truncate(name, 64)))
			return
		}
		writeJSON(a.w, http.StatusOK, a.rdJSON(rd))
	case http.MethodDelete:
		if !a.allowed("Microsoft.Authorization/roleDefinitions/delete", scope) {
			return
		}
		rd := a.t.RoleDefinitions[g]
		if rd == nil {
			a.w.WriteHeader(http.StatusNoContent)
			return
		}
		for _, ra := range a.t.RoleAssignments {
			if lastSegment(ra.RoleDefinitionID) == g {
				armError(a.w, http.StatusConflict, "RoleDefinitionHasAssignments", "There are existing role assignments referencing role (code: RoleDefinitionHasAssignments).")
				return
			}
		}
		delete(a.t.RoleDefinitions, g)
		if !a.save() {
			return
		}
		writeJSON(a.w, http.StatusOK, a.rdJSON(rd))
	case http.MethodPut:
		if !a.allowed("Microsoft.Authorization/roleDefinitions/write", scope) {
			return
		}
		a.putRoleDefinition(g)
	default:
		armError(a.w, http.StatusMethodNotAllowed, "MethodNotAllowed", "Method not supported.")
	}
}

func (a *armCall) putRoleDefinition(g string) {
	if !isGUID(g) {
		armError(a.w, http.StatusBadRequest, "InvalidRoleDefinitionId", fmt.Sprintf("The role definition ID '%s' is not valid. The role definition ID must be a GUID.", truncate(g, 64)))
		return
	}
	if builtinRoles[g] != nil {
		armError(a.w, http.StatusForbidden, "RoleDefinitionUpdateNotAllowed", "Built-in role definitions cannot be modified.")
		return
	}
	var req roleDefReq
	if err := readJSON(a.r, &req); err != nil {
		armError(a.w, http.StatusBadRequest, "InvalidRequestContent", "The request content was invalid and could not be deserialized: "+err.Error())
		return
	}
	pr := req.Properties
	if pr.RoleName == "" || len(pr.RoleName) > 512 || len(pr.Description) > 2048 {
		armError(a.w, http.StatusBadRequest, "InvalidRoleDefinition", "The role definition must have a roleName of at most 512 characters.")
		return
	}
	if len(pr.Permissions) == 0 || len(pr.Permissions) > 10 {
		armError(a.w, http.StatusBadRequest, "InvalidRoleDefinition", "The role definition must have 1 to 10 permissions entries.")
		return
	}
	for i := range pr.Permissions {
		p := &pr.Permissions[i]
		for _, l := range []*[]string{&p.Actions, &p.NotActions, &p.DataActions, &p.NotDataActions} {
			if *l == nil {
				*l = []string{}
			}
			if !validActions(*l) {
				armError(a.w, http.StatusBadRequest, "InvalidActionOrNotAction", "An action in the role definition is not valid.")
				return
			}
		}
	}
	if len(pr.AssignableScopes) == 0 || len(pr.AssignableScopes) > 20 {
		armError(a.w, http.StatusBadRequest, "InvalidAssignableScopes", "The role definition must have 1 to 20 assignable scopes.")
		return
	}
	scopes := make([]string, 0, len(pr.AssignableScopes))
	for _, s := range pr.AssignableScopes {
		sc, ok := parseScope(splitPath(s))
		if !ok || sc.Vault != "" || !strings.EqualFold(sc.Sub, a.t.SubscriptionID) {
			armError(a.w, http.StatusBadRequest, "InvalidAssignableScopes", fmt.Sprintf(
				"The assignable scope '%s' is not valid: it must be a subscription or resource group of this tenant.", truncate(s, 256)))
			return
		}
		if !a.scopeExists(sc) {
			return
		}
		scopes = append(scopes, sc.String())
	}
	for id, rd := range a.t.RoleDefinitions {
		if id != g && strings.EqualFold(rd.RoleName, pr.RoleName) {
			armError(a.w, http.StatusConflict, "RoleDefinitionWithSameNameExists", "A custom role with the same name already exists in this directory. Use a different name.")
			return
		}
	}
	now := a.e.clock.Now()
	status := http.StatusOK
	rd := a.t.RoleDefinitions[g]
	if rd == nil {
		rd = &roleDefinition{ID: g, Created: now, CreatedBy: a.p.ObjectID}
		a.t.RoleDefinitions[g] = rd
		status = http.StatusCreated
	}
	rd.RoleName, rd.Description, rd.Type, rd.Permissions, rd.AssignableScopes, rd.Updated =
		pr.RoleName, pr.Description, "CustomRole", pr.Permissions, scopes, now
	if !a.save() {
		return
	}
	writeJSON(a.w, status, a.rdJSON(rd))
}

func parseARMFilter(f string) (field, val string, ok bool) {
	if strings.TrimSpace(f) == "" {
		return "", "", true
	}
	m := armFilterRE.FindStringSubmatch(f)
	if m == nil {
		return "", "", false
	}
	return strings.ToLower(m[1]), m[2], true
}

func (a *armCall) raJSON(ra *roleAssignment) map[string]any {
	return map[string]any{
		"id": ra.Scope + "/providers/Microsoft.Authorization/roleAssignments/" + ra.ID, "type": "Microsoft.Authorization/roleAssignments", "name": ra.ID,
		"properties": map[string]any{
			"roleDefinitionId": rdID(a.t.SubscriptionID, lastSegment(ra.RoleDefinitionID)),
			"principalId":      ra.PrincipalID, "principalType": ra.PrincipalType, "scope": ra.Scope,
			"condition": nil, "conditionVersion": nil, "description": nilIfEmpty(ra.Description),
			"createdOn": ra.Created.UTC().Format(time.RFC3339Nano), "updatedOn": ra.Updated.UTC().Format(time.RFC3339Nano),
			"createdBy": nilIfEmpty(ra.CreatedBy), "updatedBy": nilIfEmpty(ra.CreatedBy),
			"delegatedManagedIdentityResourceId": nil,
		},
	}
}

type roleAssignReq struct {
	Properties struct {
		RoleDefinitionID string `json:"roleDefinitionId"`
		PrincipalID      string `json:"principalId"`
		PrincipalType    string `json:"principalType"`
		Description      string `json:"description"`
	} `json:"properties"`
}

// principalKind returns the directory type of an object id in t, or "".
func (t *tenant) principalKind(oid string) string {
	switch {
	case strings.EqualFold(oid, t.AdminObjectID):
		return "User"
	case t.SPs[strings.ToLower(oid)] != nil:
		return "ServicePrincipal"
	}
	return ""
}

func (a *armCall) roleAssignments(name string) {
	scope := a.sc.String()
	if !a.scopeExists(a.sc) {
		return
	}
	if name == "" {
		if a.r.Method != http.MethodGet {
			armError(a.w, http.StatusMethodNotAllowed, "MethodNotAllowed", "Method not supported.")
			return
		}
		if !a.allowed("Microsoft.Authorization/roleAssignments/read", scope) {
			return
		}
		field, val, ok := parseARMFilter(a.r.URL.Query().Get("$filter"))
		if !ok || (field != "" && field != "principalid") {
			armError(a.w, http.StatusBadRequest, "InvalidFilter", "The emulator supports $filter=principalId eq '...'.")
			return
		}
		out := []map[string]any{}
		for _, id := range sortedKeys(a.t.RoleAssignments) {
			ra := a.t.RoleAssignments[id]
			if field == "principalid" && !strings.EqualFold(ra.PrincipalID, val) {
				continue
			}
			if scopeCovers(ra.Scope, scope) || scopeCovers(scope, ra.Scope) {
				out = append(out, a.raJSON(ra))
			}
		}
		writeJSON(a.w, http.StatusOK, map[string]any{"value": out})
		return
	}
	g := strings.ToLower(name)
	ra := a.t.RoleAssignments[g]
	if ra != nil && !strings.EqualFold(ra.Scope, scope) {
		ra = nil // exists, but at another scope
	}
	switch a.r.Method {
	case http.MethodGet:
		if !a.allowed("Microsoft.Authorization/roleAssignments/read", scope) {
			return
		}
		if ra == nil {
			armError(a.w, http.StatusNotFound, "RoleAssignmentNotFound", fmt.Sprintf("The role assignment '%s' is not found.", truncate(name, 64)))
			return
		}
		writeJSON(a.w, http.StatusOK, a.raJSON(ra))
	case http.MethodDelete:
		if !a.allowed("Microsoft.Authorization/roleAssignments/delete", scope) {
			return
		}
		if ra == nil {
			a.w.WriteHeader(http.StatusNoContent)
			return
		}
		delete(a.t.RoleAssignments, g)
		if !a.save() {
			return
		}
		writeJSON(a.w, http.StatusOK, a.raJSON(ra))
	case http.MethodPut:
		if !a.allowed("Microsoft.Authorization/roleAssignments/write", scope) {
			return
		}
		a.putRoleAssignment(g, scope)
	default:
		armError(a.w, http.StatusMethodNotAllowed, "MethodNotAllowed", "Method not supported.")
	}
}

func (a *armCall) putRoleAssignment(g, scope string) {
	if !isGUID(g) {
		armError(a.w, http.StatusBadRequest, "InvalidRoleAssignmentId", fmt.Sprintf("The role assignment ID '%s' is not valid. The role assignment ID must be a GUID.", truncate(g, 64)))
		return
	}
	var req roleAssignReq
	if err := readJSON(a.r, &req); err != nil {
		armError(a.w, http.StatusBadRequest, "InvalidRequestContent", "The request content was invalid and could not be deserialized: "+err.Error())
		return
	}
	pr := req.Properties
	rdGUID := lastSegment(pr.RoleDefinitionID)
	rd := a.t.roleDef(rdGUID)
	if pr.RoleDefinitionID == "" || rd == nil {
		armError(a.w, http.StatusBadRequest, "RoleDefinitionDoesNotExist", fmt.Sprintf("The specified role definition with ID '%s' does not exist.", truncate(rdGUID, 64)))
		return
	}
	assignable := false
	for _, s := range rd.AssignableScopes {
		if scopeCovers(s, scope) {
			assignable = true
		}
	}
	if !assignable {
		armError(a.w, http.StatusForbidden, "AuthorizationFailed", fmt.Sprintf(
			"The role definition '%s' is not assignable at scope '%s': the scope is outside the role's assignableScopes.", rd.RoleName, scope))
		return
	}
	if !isGUID(pr.PrincipalID) {
		armError(a.w, http.StatusBadRequest, "InvalidPrincipalId", "A valid principal ID must be provided for role assignment.")
		return
	}
	kind := a.t.principalKind(pr.PrincipalID)
	switch pr.PrincipalType {
	case "", "User", "Group", "ServicePrincipal", "ForeignGroup", "Device":
	default:
		armError(a.w, http.StatusBadRequest, "InvalidPrincipalType", "The principalType is not valid.")
		return
	}
	if kind == "" && pr.PrincipalType == "" {
		armError(a.w, http.StatusBadRequest, "PrincipalNotFound", fmt.Sprintf(
			"Principal %s does not exist in the directory %s. Check that you have the correct principal ID. If you are creating this principal and then immediately assigning a role, this error might be related to a replication delay. In this case, set the role assignment principalType property to a value, such as ServicePrincipal, User, or Group.  See https://aka.ms/docs-principaltype",
			strings.ReplaceAll(strings.ToLower(pr.PrincipalID), "-", ""), a.t.ID))
		return
	}
	if kind != "" && pr.PrincipalType != "" && kind != pr.PrincipalType {
		armError(a.w, http.StatusBadRequest, "UnmatchedPrincipalType", fmt.Sprintf(
			"The PrincipalId '%s' has type '%s' , which is different from specified PrincipalType '%s'.", strings.ReplaceAll(pr.PrincipalID, "-", ""), kind, pr.PrincipalType))
		return
	}
	ptype := pr.PrincipalType
	if ptype == "" {
		ptype = kind
	}
	same := func(x *roleAssignment) bool {
		return strings.EqualFold(x.PrincipalID, pr.PrincipalID) && lastSegment(x.RoleDefinitionID) == rdGUID && strings.EqualFold(x.Scope, scope)
	}
	if old := a.t.RoleAssignments[g]; old != nil {
		if same(old) {
			writeJSON(a.w, http.StatusCreated, a.raJSON(old))
			return
		}
		armError(a.w, http.StatusBadRequest, "RoleAssignmentUpdateNotPermitted", "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.")
		return
	}
	for _, x := range a.t.RoleAssignments {
		if same(x) {
			armError(a.w, http.StatusConflict, "RoleAssignmentExists", "The role assignment already exists.")
			return
		}
	}
	if len(a.t.RoleAssignments) >= 4000 {
		armError(a.w, http.StatusBadRequest, "RoleAssignmentLimitExceeded", "No more role assignments can be created (limit 4000 per subscription).")
		return
	}
	now := a.e.clock.Now()
	ra := &roleAssignment{ID: g, Scope: scope, RoleDefinitionID: rdID(a.t.SubscriptionID, rdGUID), PrincipalID: strings.ToLower(pr.PrincipalID),
		PrincipalType: ptype, Description: truncate(pr.Description, 1024), Created: now, Updated: now, CreatedBy: a.p.ObjectID}
	a.t.RoleAssignments[g] = ra
	if !a.save() {
		delete(a.t.RoleAssignments, g)
		return
	}
	writeJSON(a.w, http.StatusCreated, a.raJSON(ra))
}
