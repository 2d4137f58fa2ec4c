package azurecloud

import (
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/ekm-dev/ekm/emulator/emukit"
)

// Tenant is a customer tenant created through the control API: a
// directory with one subscription and an admin user who owns it.
type Tenant struct {
	ID             string      `json:"tenant_id"`
	SubscriptionID string      `json:"subscription_id"`
	AdminObjectID  string      `json:"admin_object_id"`
	AdminTokens    AdminTokens `json:"admin_tokens"`
}

// AdminTokens are delegated tokens of the tenant admin, one per audience
// (no interactive login exists in the emulator).
type AdminTokens struct {
	Graph      string    `json:"graph"`       // aud https://graph.microsoft.com
	Management string    `json:"management"`  // aud https://management.azure.com/
	Vault      string    `json:"vault"`       // aud https://vault.azure.net
	ManagedHSM string    `json:"managed_hsm"` // aud https://managedhsm.azure.net
	ExpiresOn  time.Time `json:"expires_on"`
}

func newTenant(now time.Time, name string) *tenant {
	t := &tenant{ID: newGUID(), SubscriptionID: newGUID(), AdminObjectID: newGUID(), DisplayName: name, Created: now}
	t.SPs = map[string]*servicePrinc{}
	t.ResourceGroups = map[string]*resourceGroup{}
	t.RoleDefinitions = map[string]*roleDefinition{}
	t.RoleAssignments = map[string]*roleAssignment{}
	// The admin owns the subscription (ARM) and administers its vaults'
	// data planes (Key Vault Administrator), as a tenant creator would.
	sub := subscriptionScope(t.SubscriptionID)
	for _, role := range []string{roleOwner, roleKVAdministrator} {
		id := newGUID()
		t.RoleAssignments[id] = &roleAssignment{ID: id, Scope: sub, RoleDefinitionID: rdID(t.SubscriptionID, role),
			PrincipalID: t.AdminObjectID, PrincipalType: "User", Created: now, Updated: now}
	}
	return t
}

// CreateTenant creates a customer tenant with a subscription and an admin.
func (e *Emulator) CreateTenant() (Tenant, error) {
	now := e.clock.Now()
	e.mu.Lock()
	if len(e.st.Tenants) >= 10_000 {
		e.mu.Unlock()
		return Tenant{}, errors.New("too many tenants")
	}
	t := newTenant(now, "Customer "+randHex(3))
	e.st.Tenants[t.ID] = t
	if err := e.saveLocked(); err != nil {
		delete(e.st.Tenants, t.ID)
		e.mu.Unlock()
		return Tenant{}, err
	}
	e.mu.Unlock()
	toks, err := e.AdminTokens(t.ID)
	if err != nil {
		return Tenant{}, err
	}
	return Tenant{ID: t.ID, SubscriptionID: t.SubscriptionID, AdminObjectID: t.AdminObjectID, AdminTokens: toks}, nil
}

// AdminTokens mints fresh admin tokens for a tenant (e.g. after moving the
// clock past their expiry).
func (e *Emulator) AdminTokens(tenantID string) (AdminTokens, error) {
	e.mu.RLock()
	t := e.lookupTenant(tenantID)
	e.mu.RUnlock()
	if t == nil {
		return AdminTokens{}, fmt.Errorf("tenant %q not found", tenantID)
	}
	now := e.clock.Now()
	exp := now.Add(e.opts.AdminTokenLifetime)
	mint := func(aud, scp string) (string, error) {
		c := e.baseClaims(t.ID, aud, now, exp)
		c["oid"], c["sub"] = t.AdminObjectID, t.AdminObjectID
		c["idtyp"], c["upn"], c["name"] = "user", "admin@"+t.ID[:8]+".onmicrosoft.com", "Tenant Admin"
		c["appid"], c["appidacr"], c["scp"] = cliAppID, "0", scp
		return e.sign(c)
	}
	var out AdminTokens
	var err error
	if out.Graph, err = mint("https://graph.microsoft.com", "Application.ReadWrite.All Directory.AccessAsUser.All"); err != nil {
		return out, err
	}
	if out.Management, err = mint("https://management.azure.com/", "user_impersonation"); err != nil {
		return out, err
	}
	if out.Vault, err = mint("https://vault.azure.net", "user_impersonation"); err != nil {
		return out, err
	}
	if out.ManagedHSM, err = mint(hsmResource, "user_impersonation"); err != nil {
		return out, err
	}
	out.ExpiresOn = exp.UTC()
	return out, nil
}

// CreateServicePrincipal creates the app's service principal in a tenant
// (what the Graph onboarding step does) and returns its object id. appID ""
// means the emulator's app.
func (e *Emulator) CreateServicePrincipal(tenantID, appID string) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	t := e.lookupTenant(tenantID)
	if t == nil {
		return "", fmt.Errorf("tenant %q not found", tenantID)
	}
	if appID == "" {
		appID = e.st.AppID
	}
	if e.st.Apps[strings.ToLower(appID)] == nil {
		return "", fmt.Errorf("app %q not found", appID)
	}
	sp, err := e.addSP(t, appID)
	if err != nil {
		return "", err
	}
	return sp.ID, e.saveLocked()
}

// VaultOptions configure CreateVaultWithOptions.
type VaultOptions struct {
	// SKU is "standard" (default) or "premium" (HSM-protected keys).
	SKU string
	// Location is the Azure region of a new resource group and the vault
	// (default "eastus").
	Location string
	// SoftDeleteDays is softDeleteRetentionInDays, 7..90 (0 = 90).
	SoftDeleteDays int
	// PurgeProtection forbids purging deleted keys.
	PurgeProtection bool
}

// CreateVault creates (or returns) an RBAC-mode standard vault in the
// tenant's subscription, creating the resource group if needed. It returns
// the vault URL ("https://name.vault.azure.net/").
func (e *Emulator) CreateVault(tenantID, rgName, name string) (string, error) {
	return e.CreateVaultWithOptions(tenantID, rgName, name, VaultOptions{})
}

// CreateVaultWithOptions is CreateVault with a SKU, region and soft-delete
// settings.
func (e *Emulator) CreateVaultWithOptions(tenantID, rgName, name string, o VaultOptions) (string, error) {
	if o.SKU == "" {
		o.SKU = "standard"
	}
	if o.SKU != "standard" && o.SKU != "premium" {
		return "", fmt.Errorf("invalid SKU %q", o.SKU)
	}
	if o.SoftDeleteDays != 0 && (o.SoftDeleteDays < 7 || o.SoftDeleteDays > 90) {
		return "", errors.New("softDeleteRetentionInDays must be between 7 and 90")
	}
	if o.Location == "" {
		o.Location = "eastus"
	}
	if !vaultNameRE.MatchString(name) || strings.Contains(name, "--") {
		return "", fmt.Errorf("invalid vault name %q", name)
	}
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
	if v := e.st.Vaults[ln]; v != nil {
		if v.TenantID != t.ID || !strings.EqualFold(v.ResourceGroup, rgName) {
			return "", fmt.Errorf("vault name %q is already in use", name)
		}
		return "https://" + ln + ".vault.azure.net/", nil
	}
	g := t.ResourceGroups[strings.ToLower(rgName)]
	if g == nil {
		g = &resourceGroup{Name: rgName, Location: o.Location}
		t.ResourceGroups[strings.ToLower(rgName)] = g
	}
	e.st.Vaults[ln] = &vault{Name: ln, TenantID: t.ID, SubscriptionID: t.SubscriptionID, ResourceGroup: g.Name,
		Location: o.Location, SKU: o.SKU, RBAC: true, Created: e.clock.Now(),
		Keys: map[string]*key{}, Deleted: map[string]*deletedKey{}, SoftDeleteDays: o.SoftDeleteDays, PurgeProtection: o.PurgeProtection}
	return "https://" + ln + ".vault.azure.net/", e.saveLocked()
}

// DeleteServicePrincipal removes a service principal (what revoking
// consent does); new token requests then fail with AADSTS700016.
func (e *Emulator) DeleteServicePrincipal(tenantID, objectID string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	t := e.lookupTenant(tenantID)
	if t == nil {
		return fmt.Errorf("tenant %q not found", tenantID)
	}
	sp := t.SPs[strings.ToLower(objectID)]
	if sp == nil {
		return fmt.Errorf("service principal %q not found", objectID)
	}
	delete(t.SPs, sp.ID)
	return e.saveLocked()
}

// CreateKey creates a key (or a new version) directly in a vault, for test
// set-up: kty "RSA"/"RSA-HSM" with size 2048/3072/4096 (0 = 2048), or
// "EC"/"EC-HSM" (P-256). HSM types need a premium vault. It returns the
// versioned key id.
func (e *Emulator) CreateKey(vaultName, keyName, kty string, size int) (string, error) {
	if !keyNameRE.MatchString(keyName) {
		return "", fmt.Errorf("invalid key name %q", keyName)
	}
	req := createReq{Kty: kty}
	if size != 0 && !strings.HasPrefix(kty, "EC") {
		req.KeySize = &size
	}
	e.mu.RLock()
	v := e.st.Vaults[strings.ToLower(vaultName)]
	e.mu.RUnlock()
	if v == nil {
		return "", fmt.Errorf("vault %q not found", vaultName)
	}
	kv, err := newVersion(req, v, e.clock.Now())
	if err != nil {
		return "", err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	ln := strings.ToLower(keyName)
	if v.Deleted[ln] != nil {
		return "", fmt.Errorf("key %q is deleted but recoverable", keyName)
	}
	k := v.Keys[ln]
	if k == nil {
		k = &key{Name: keyName}
		v.Keys[ln] = k
	}
	k.Versions = append(k.Versions, kv)
	return "https://" + v.Name + ".vault.azure.net/keys/" + k.Name + "/" + kv.Version, e.saveLocked()
}

// RemoveRoleAssignment deletes a role assignment by id.
func (e *Emulator) RemoveRoleAssignment(tenantID, assignmentID string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	t := e.lookupTenant(tenantID)
	if t == nil {
		return fmt.Errorf("tenant %q not found", tenantID)
	}
	if t.RoleAssignments[strings.ToLower(assignmentID)] == nil {
		return fmt.Errorf("role assignment %q not found", assignmentID)
	}
	delete(t.RoleAssignments, strings.ToLower(assignmentID))
	return e.saveLocked()
}

// AssignRole creates a role assignment (as the ARM onboarding step does).
// scope is an ARM scope string; roleDefinitionID a guid or full id.
func (e *Emulator) AssignRole(tenantID, scope, roleDefinitionID, principalID string) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	t := e.lookupTenant(tenantID)
	if t == nil {
		return "", fmt.Errorf("tenant %q not found", tenantID)
	}
	sc, ok := parseScope(splitPath(scope))
	if !ok || !strings.EqualFold(sc.Sub, t.SubscriptionID) {
		return "", fmt.Errorf("invalid scope %q for tenant", scope)
	}
	g := lastSegment(roleDefinitionID)
	if t.roleDef(g) == nil {
		return "", fmt.Errorf("role definition %q not found", roleDefinitionID)
	}
	kind := t.principalKind(principalID)
	if kind == "" {
		return "", fmt.Errorf("principal %q not found in tenant", principalID)
	}
	now := e.clock.Now()
	id := newGUID()
	t.RoleAssignments[id] = &roleAssignment{ID: id, Scope: sc.String(), RoleDefinitionID: rdID(t.SubscriptionID, g),
		PrincipalID: strings.ToLower(principalID), PrincipalType: kind, Created: now, Updated: now}
	return id, e.saveLocked()
}

// AddFederatedCredential adds a federated identity credential to an app
// (clientID "" means the emulator's app).
func (e *Emulator) AddFederatedCredential(clientID string, fc FederatedCredential) error {
	if fc.Issuer == "" || fc.Subject == "" || len(fc.Audiences) == 0 {
		return errors.New("federated credential needs issuer, subject and audiences")
	}
	if len(fc.Issuer) > 600 || len(fc.Subject) > 600 || len(fc.Name) > 120 || len(fc.Audiences) > 5 {
		return errors.New("federated credential fields too long")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if clientID == "" {
		clientID = e.st.AppID
	}
	a := e.st.Apps[strings.ToLower(clientID)]
	if a == nil {
		return fmt.Errorf("app %q not found", clientID)
	}
	if len(a.Federated) >= 20 {
		return errors.New("an app can have at most 20 federated credentials")
	}
	a.Federated = append(a.Federated, fc)
	return e.saveLocked()
}

// RegisterIssuer sets the JWKS used to verify federated assertions from
// issuer (Entra would fetch it from the issuer's OIDC discovery document).
func (e *Emulator) RegisterIssuer(issuer string, jwksJSON []byte) error {
	if issuer == "" || len(issuer) > 600 {
		return errors.New("invalid issuer")
	}
	var set jwks
	if err := json.Unmarshal(jwksJSON, &set); err != nil {
		return fmt.Errorf("invalid JWKS: %w", err)
	}
	if len(set.Keys) == 0 || len(set.Keys) > 50 {
		return errors.New("JWKS must have 1..50 keys")
	}
	for _, k := range set.Keys {
		if _, err := k.publicKey(); err != nil {
			return fmt.Errorf("invalid JWKS key %q: %w", k.Kid, err)
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.st.Issuers[issuer] = &set
	return e.saveLocked()
}

// ---- control API over HTTP ----

func ctlError(w http.ResponseWriter, status int, msg string) { emukit.ControlError(w, status, msg) }

func (e *Emulator) serveControl(w http.ResponseWriter, r *http.Request) {
	path, ok := strings.CutPrefix(r.URL.Path, controlPrefix)
	if !ok {
		ctlError(w, http.StatusNotFound, "the control API lives under "+controlPrefix+"/")
		return
	}
	segs := splitPath(path)
	route := r.Method + " " + strings.Join(segs, "/")
	if len(segs) == 3 && segs[0] == "tenants" {
		route = r.Method + " tenants/*/" + segs[2]
	}
	if len(segs) == 3 && segs[0] == "apps" {
		route = r.Method + " apps/*/" + segs[2]
	}
	if len(segs) == 2 && segs[0] == "faults" {
		route = r.Method + " faults/*"
	}
	if len(segs) == 3 && segs[0] == "managed-hsms" {
		route = r.Method + " managed-hsms/*/" + segs[2]
	}
	switch route {
	case "GET healthz":
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	case "GET app":
		writeJSON(w, http.StatusOK, e.App())
	case "POST tenants":
		t, err := e.CreateTenant()
		if err != nil {
			ctlError(w, http.StatusInternalServerError, err.Error())
			return
		}
		writeJSON(w, http.StatusCreated, t)
	case "GET tenants":
		e.mu.RLock()
		out := []map[string]string{}
		for _, id := range sortedKeys(e.st.Tenants) {
			t := e.st.Tenants[id]
			out = append(out, map[string]string{"tenant_id": t.ID, "subscription_id": t.SubscriptionID, "admin_object_id": t.AdminObjectID, "display_name": t.DisplayName})
		}
		e.mu.RUnlock()
		writeJSON(w, http.StatusOK, map[string]any{"home_tenant_id": e.App().HomeTenantID, "tenants": out})
	case "POST tenants/*/admin-tokens":
		toks, err := e.AdminTokens(segs[1])
		if err != nil {
			ctlError(w, http.StatusNotFound, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, toks)
	case "POST tenants/*/vaults":
		var req struct {
			Name            string `json:"name"`
			ResourceGroup   string `json:"resource_group"`
			SKU             string `json:"sku"`
			Location        string `json:"location"`
			SoftDeleteDays  int    `json:"soft_delete_retention_days"`
			PurgeProtection bool   `json:"purge_protection"`
		}
		if err := readJSON(r, &req); err != nil {
			ctlError(w, http.StatusBadRequest, err.Error())
			return
		}
		if req.ResourceGroup == "" {
			req.ResourceGroup = "ekm-emulator"
		}
		u, err := e.CreateVaultWithOptions(segs[1], req.ResourceGroup, req.Name, VaultOptions{SKU: strings.ToLower(req.SKU),
			Location: req.Location, SoftDeleteDays: req.SoftDeleteDays, PurgeProtection: req.PurgeProtection})
		if err != nil {
			ctlError(w, http.StatusBadRequest, err.Error())
			return
		}
		writeJSON(w, http.StatusCreated, map[string]string{"vault_url": u})
	case "POST tenants/*/managed-hsms":
		var req struct {
			Name            string   `json:"name"`
			ResourceGroup   string   `json:"resource_group"`
			Location        string   `json:"location"`
			Administrators  []string `json:"administrators"`
			SoftDeleteDays  int      `json:"soft_delete_retention_days"`
			PurgeProtection bool     `json:"purge_protection"`
		}
		if err := readJSON(r, &req); err != nil {
			ctlError(w, http.StatusBadRequest, err.Error())
			return
		}
		if req.ResourceGroup == "" {
			req.ResourceGroup = "ekm-emulator"
		}
		u, err := e.CreateManagedHSM(segs[1], req.ResourceGroup, req.Name, ManagedHSMOptions{Location: req.Location,
			Administrators: req.Administrators, SoftDeleteDays: req.SoftDeleteDays, PurgeProtection: req.PurgeProtection})
		if err != nil {
			ctlError(w, http.StatusBadRequest, err.Error())
			return
		}
		writeJSON(w, http.StatusCreated, map[string]string{"hsm_url": u})
	case "POST managed-hsms/*/role-assignments":
		var req struct {
			Scope            string `json:"scope"`
			RoleDefinitionID string `json:"role_definition_id"`
			PrincipalID      string `json:"principal_id"`
		}
		if err := readJSON(r, &req); err != nil {
			ctlError(w, http.StatusBadRequest, err.Error())
			return
		}
		if req.Scope == "" {
			req.Scope = "/"
		}
		id, err := e.AssignHSMRole(segs[1], req.Scope, req.RoleDefinitionID, req.PrincipalID)
		if err != nil {
			ctlError(w, http.StatusBadRequest, err.Error())
			return
		}
		writeJSON(w, http.StatusCreated, map[string]string{"name": id})
	case "POST attestation/tokens":
		var req struct {
			Issuer      string         `json:"issuer"`
			Claims      map[string]any `json:"claims"`
			RuntimeKeys []jwk          `json:"runtime_keys"`
		}
		if err := readJSON(r, &req); err != nil {
			ctlError(w, http.StatusBadRequest, err.Error())
			return
		}
		var keys []*rsa.PublicKey
		for _, k := range req.RuntimeKeys {
			p, err := k.publicKey()
			rk, ok := p.(*rsa.PublicKey)
			if err != nil || !ok {
				ctlError(w, http.StatusBadRequest, "runtime_keys must be RSA public JWKs")
				return
			}
			keys = append(keys, rk)
		}
		tok, err := e.AttestationToken(req.Issuer, req.Claims, keys...)
		if err != nil {
			ctlError(w, http.StatusBadRequest, err.Error())
			return
		}
		writeJSON(w, http.StatusCreated, map[string]string{"token": tok})
	case "POST tenants/*/service-principals":
		id, err := e.CreateServicePrincipal(segs[1], "")
		if err != nil {
			ctlError(w, http.StatusBadRequest, err.Error())
			return
		}
		writeJSON(w, http.StatusCreated, map[string]string{"object_id": id})
	case "POST apps/*/federated-credentials":
		var fc FederatedCredential
		if err := readJSON(r, &fc); err != nil {
			ctlError(w, http.StatusBadRequest, err.Error())
			return
		}
		if err := e.AddFederatedCredential(segs[1], fc); err != nil {
			ctlError(w, http.StatusBadRequest, err.Error())
			return
		}
		writeJSON(w, http.StatusCreated, fc)
	case "POST issuers":
		var req struct {
			Issuer string          `json:"issuer"`
			JWKS   json.RawMessage `json:"jwks"`
		}
		if err := readJSON(r, &req); err != nil {
			ctlError(w, http.StatusBadRequest, err.Error())
			return
		}
		if err := e.RegisterIssuer(req.Issuer, req.JWKS); err != nil {
			ctlError(w, http.StatusBadRequest, err.Error())
			return
		}
		writeJSON(w, http.StatusCreated, map[string]string{"issuer": req.Issuer})
	case "POST faults":
		var f Fault
		if err := readJSON(r, &f); err != nil {
			ctlError(w, http.StatusBadRequest, err.Error())
			return
		}
		id, err := e.InjectFault(f)
		if err != nil {
			ctlError(w, http.StatusBadRequest, err.Error())
			return
		}
		f.ID = id
		writeJSON(w, http.StatusCreated, f)
	case "GET faults":
		writeJSON(w, http.StatusOK, map[string]any{"faults": e.Faults()})
	case "DELETE faults":
		e.ClearFaults()
		w.WriteHeader(http.StatusNoContent)
	case "DELETE faults/*":
		if !e.RemoveFault(segs[1]) {
			ctlError(w, http.StatusNotFound, "no such fault")
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case "GET counters":
		writeJSON(w, http.StatusOK, e.Counters())
	case "DELETE counters":
		e.ResetCounters()
		w.WriteHeader(http.StatusNoContent)
	case "GET clock", "POST clock":
		emukit.ServeClock(w, r, e.clock)
		if r.Method == http.MethodPost {
			e.housekeepAll() // rotations and purges that have come due
		}
	case "GET settings":
		writeJSON(w, http.StatusOK, e.Settings())
	case "PUT settings":
		s := e.Settings()
		if err := readJSON(r, &s); err != nil {
			ctlError(w, http.StatusBadRequest, err.Error())
			return
		}
		if err := e.SetSettings(s); err != nil {
			ctlError(w, http.StatusBadRequest, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, s)
	default:
		ctlError(w, http.StatusNotFound, "unknown control API route: "+truncate(route, 128))
	}
}
