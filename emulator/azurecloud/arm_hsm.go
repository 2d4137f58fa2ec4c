// ARM for Managed HSM pools: PUT, GET and DELETE
// /subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.KeyVault/managedHSMs/{name}.

package azurecloud

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
)

func hsmJSON(h *vault) map[string]any {
	tags := h.Tags
	if tags == nil {
		tags = map[string]string{}
	}
	admins := []string{}
	for _, n := range sortedKeys(h.LocalAssigns) {
		ra := h.LocalAssigns[n]
		if ra.Scope == "/" && ra.RoleDefinitionID == roleHSMAdministrator && !slices.Contains(admins, ra.PrincipalID) {
			admins = append(admins, ra.PrincipalID)
		}
	}
	id := "/subscriptions/" + h.SubscriptionID + "/resourceGroups/" + h.ResourceGroup + "/providers/Microsoft.KeyVault/managedHSMs/" + h.Name
	return map[string]any{
		"id": id, "name": h.Name, "type": "Microsoft.KeyVault/managedHSMs", "location": h.Location, "tags": tags,
		"sku": map[string]string{"family": "B", "name": h.SKU},
		"properties": map[string]any{
			"tenantId": h.TenantID, "hsmUri": "https://" + h.host() + "/", "initialAdminObjectIds": admins,
			"enableSoftDelete": true, "softDeleteRetentionInDays": h.retentionDays(), "enablePurgeProtection": h.PurgeProtection,
			"provisioningState": "Succeeded", "statusMessage": "The Managed HSM is provisioned and ready to use.",
			"publicNetworkAccess": "Enabled", "securityDomainProperties": map[string]string{"activationStatus": "Active"},
		},
	}
}

type hsmReq struct {
	Location string            `json:"location"`
	Tags     map[string]string `json:"tags"`
	SKU      *struct {
		Family string `json:"family"`
		Name   string `json:"name"`
	} `json:"sku"`
	Properties struct {
		TenantID                  string   `json:"tenantId"`
		InitialAdminObjectIDs     []string `json:"initialAdminObjectIds"`
		EnableSoftDelete          *bool    `json:"enableSoftDelete"`
		SoftDeleteRetentionInDays *int     `json:"softDeleteRetentionInDays"`
		EnablePurgeProtection     *bool    `json:"enablePurgeProtection"`
	} `json:"properties"`
}

// managedHSM serves the pool resource. Creation is synchronous (Azure
// answers 201 and provisions for minutes) and the pool is active at once:
// the security domain is not emulated.
func (a *armCall) managedHSM() {
	scope := a.sc.String()
	ln := strings.ToLower(a.sc.HSM)
	h := a.e.st.HSMs[ln]
	mine := h != nil && strings.EqualFold(h.SubscriptionID, a.t.SubscriptionID) && strings.EqualFold(h.ResourceGroup, a.sc.RG)
	switch a.r.Method {
	case http.MethodPut:
		if !a.allowed("Microsoft.KeyVault/managedHSMs/write", scope) {
			return
		}
		var req hsmReq
		if err := readJSON(a.r, &req); err != nil {
			armError(a.w, http.StatusBadRequest, "InvalidRequestContent", "The request content was invalid and could not be deserialized: "+err.Error())
			return
		}
		if a.rg() == nil {
			a.rgNotFound()
			return
		}
		if h != nil && !mine {
			armError(a.w, http.StatusConflict, "ConflictError", fmt.Sprintf("The name '%s' is already in use by another Managed HSM.", a.sc.HSM))
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
		if req.SKU != nil && req.SKU.Name != "" && !strings.EqualFold(req.SKU.Name, "Standard_B1") && !strings.EqualFold(req.SKU.Name, "Custom_B32") && !strings.EqualFold(req.SKU.Name, "Custom_B6") {
			armError(a.w, http.StatusBadRequest, "BadRequest", "The SKU name must be Standard_B1, Custom_B32 or Custom_B6.")
			return
		}
		if err := validateTags(req.Tags); err != nil {
			armError(a.w, http.StatusBadRequest, "InvalidTag", err.Error())
			return
		}
		var curDays int
		var curPurge bool
		if h != nil {
			curDays, curPurge = h.SoftDeleteDays, h.PurgeProtection
		}
		days, purge, msg := softDeleteProps(req.Properties.EnableSoftDelete, req.Properties.SoftDeleteRetentionInDays, req.Properties.EnablePurgeProtection, curDays, curPurge)
		if msg != "" {
			armError(a.w, http.StatusBadRequest, "BadRequest", msg)
			return
		}
		status := http.StatusOK
		if h == nil {
			if len(req.Properties.InitialAdminObjectIDs) == 0 {
				armError(a.w, http.StatusBadRequest, "BadRequest", "properties.initialAdminObjectIds must name at least one administrator.")
				return
			}
			var err error
			h, err = a.e.newHSM(a.t, a.rg().Name, a.sc.HSM, ManagedHSMOptions{Location: req.Location, Administrators: req.Properties.InitialAdminObjectIDs})
			if err != nil {
				armError(a.w, http.StatusBadRequest, "BadRequest", err.Error())
				return
			}
			a.e.st.HSMs[ln] = h
			status = http.StatusCreated
		}
		h.Tags, h.SoftDeleteDays, h.PurgeProtection = req.Tags, days, purge
		if req.SKU != nil && req.SKU.Name != "" {
			h.SKU = req.SKU.Name
		}
		if !a.save() {
			return
		}
		writeJSON(a.w, status, hsmJSON(h))
	case http.MethodGet:
		if !a.allowed("Microsoft.KeyVault/managedHSMs/read", scope) {
			return
		}
		if !mine {
			armError(a.w, http.StatusNotFound, "ResourceNotFound", fmt.Sprintf(
				"The Resource 'Microsoft.KeyVault/managedHSMs/%s' under resource group '%s' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix", a.sc.HSM, a.sc.RG))
			return
		}
		writeJSON(a.w, http.StatusOK, hsmJSON(h))
	case http.MethodDelete:
		if !a.allowed("Microsoft.KeyVault/managedHSMs/delete", scope) {
			return
		}
		if !mine {
			a.w.WriteHeader(http.StatusNoContent)
			return
		}
		delete(a.e.st.HSMs, ln)
		if !a.save() {
			return
		}
		a.w.WriteHeader(http.StatusOK)
	default:
		armError(a.w, http.StatusMethodNotAllowed, "MethodNotAllowed", "Method not supported.")
	}
}
