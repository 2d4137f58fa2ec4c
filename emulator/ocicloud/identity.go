package ocicloud

import (
	"net/http"
	"strings"
	"time"
)

// Identity API 20160918: policies, compartments, groups, users, their API
// keys and group memberships — what a customer's and the vendor's
// onboarding steps create.

func init() {
	addRoute(svcIdentity, http.MethodGet, "/tenancies/{tenancyId}", "GetTenancy", (*call).getTenancy)

	addRoute(svcIdentity, http.MethodPost, "/policies", "CreatePolicy", (*call).createPolicy)
	addRoute(svcIdentity, http.MethodGet, "/policies", "ListPolicies", (*call).listPolicies)
	addRoute(svcIdentity, http.MethodGet, "/policies/{policyId}", "GetPolicy", (*call).getPolicy)
	addRoute(svcIdentity, http.MethodPut, "/policies/{policyId}", "UpdatePolicy", (*call).updatePolicy)
	addRoute(svcIdentity, http.MethodDelete, "/policies/{policyId}", "DeletePolicy", (*call).deletePolicy)

	addRoute(svcIdentity, http.MethodPost, "/compartments", "CreateCompartment", (*call).createCompartment)
	addRoute(svcIdentity, http.MethodGet, "/compartments", "ListCompartments", (*call).listCompartments)
	addRoute(svcIdentity, http.MethodGet, "/compartments/{compartmentId}", "GetCompartment", (*call).getCompartment)
	addRoute(svcIdentity, http.MethodDelete, "/compartments/{compartmentId}", "DeleteCompartment", (*call).deleteCompartment)

	addRoute(svcIdentity, http.MethodPost, "/groups", "CreateGroup", (*call).createGroup)
	addRoute(svcIdentity, http.MethodGet, "/groups", "ListGroups", (*call).listGroups)
	addRoute(svcIdentity, http.MethodGet, "/groups/{groupId}", "GetGroup", (*call).getGroup)

	addRoute(svcIdentity, http.MethodPost, "/users", "CreateUser", (*call).createUser)
	addRoute(svcIdentity, http.MethodGet, "/users/{userId}", "GetUser", (*call).getUser)
	addRoute(svcIdentity, http.MethodPost, "/users/{userId}/apiKeys", "UploadApiKey", (*call).uploadAPIKey)
	addRoute(svcIdentity, http.MethodGet, "/users/{userId}/apiKeys", "ListApiKeys", (*call).listAPIKeys)
	addRoute(svcIdentity, http.MethodDelete, "/users/{userId}/apiKeys/{fingerprint}", "DeleteApiKey", (*call).deleteAPIKey)

	addRoute(svcIdentity, http.MethodPost, "/userGroupMemberships", "AddUserToGroup", (*call).addUserToGroup)
	addRoute(svcIdentity, http.MethodGet, "/userGroupMemberships", "ListUserGroupMemberships", (*call).listMemberships)
	addRoute(svcIdentity, http.MethodDelete, "/userGroupMemberships/{userGroupMembershipId}", "RemoveUserFromGroup", (*call).removeUserFromGroup)
}

// Identity names: 1-100 characters.
const maxIdentityName = 100

func checkName(what, s string) error {
	if s == "" || len(s) > maxIdentityName || !nameRE.MatchString(s) {
		return invalidParam("%s must be 1-100 of letters, digits, spaces and . _ - @ +.", what)
	}
	return nil
}

func checkDescription(s *string) error {
	if s == nil {
		return errf(400, "MissingParameter", "description is required.")
	}
	if len(*s) > 400 {
		return invalidParam("description must be at most 400 characters.")
	}
	return nil
}

func (c *call) getTenancy() error {
	ten := c.e.st.Tenancies[c.params["tenancyId"]]
	if ten == nil || ten.ID != c.caller.tenancy.ID {
		return errNotFound
	}
	return c.reply(200, map[string]any{"id": ten.ID, "name": ten.Name, "description": ten.Name,
		"homeRegionKey": strings.ToUpper(regionByID(ten.HomeRegion).Key), "freeformTags": map[string]string{}, "definedTags": map[string]any{}}, "")
}

// ---- policies ----

func policyJSON(p *policy) map[string]any {
	v := p.latest()
	return map[string]any{"id": p.ID, "compartmentId": p.Compartment, "name": p.Name, "statements": v.Statements,
		"description": p.Description, "timeCreated": ociTime(p.Created), "lifecycleState": "ACTIVE",
		"freeformTags": map[string]string{}, "definedTags": map[string]any{}}
}

// livePolicyLocked returns a policy the API still shows (not deleted).
func (c *call) livePolicyLocked(id string) *policy {
	p := c.e.st.Policies[id]
	if p == nil || p.latest().Deleted {
		return nil
	}
	c.log.Resource, c.log.ResourceTenancy = p.ID, p.Tenancy
	return p
}

// pruneLocked forgets policies whose deletion has taken effect and
// versions superseded before now.
func (e *Emulator) pruneLocked(now time.Time) {
	for id, p := range e.st.Policies {
		cur := -1
		for i := range p.Versions {
			if !p.Versions[i].At.After(now) {
				cur = i
			}
		}
		if cur > 0 {
			p.Versions = p.Versions[cur:]
		}
		if cur >= 0 && len(p.Versions) == 1 && p.Versions[0].Deleted {
			delete(e.st.Policies, id)
		}
	}
}

func (c *call) effectiveAt() time.Time {
	return c.now.Add(time.Duration(c.e.st.Settings.PolicyDelay))
}

func (c *call) createPolicy() error {
	var in struct {
		CompartmentID *string  `json:"compartmentId"`
		Name          *string  `json:"name"`
		Statements    []string `json:"statements"`
		Description   *string  `json:"description"`
	}
	if err := c.decode(&in); err != nil {
		return err
	}
	if in.CompartmentID == nil || in.Name == nil || in.Statements == nil {
		return errf(400, "MissingParameter", "compartmentId, name, statements and description are required.")
	}
	if err := checkName("name", *in.Name); err != nil {
		return err
	}
	if err := checkDescription(in.Description); err != nil {
		return err
	}
	if !c.allowed(*in.CompartmentID, verbManage, "policies", nil) {
		return errNotFound
	}
	ten := c.e.st.Tenancies[c.e.tenancyOfLocked(*in.CompartmentID)]
	if id, ok, err := c.retriedLocked(ten.ID, "CreatePolicy"); err != nil {
		return err
	} else if ok {
		return c.reply(200, policyJSON(c.e.st.Policies[id]), "")
	}
	c.e.pruneLocked(c.now)
	for _, p := range c.e.st.Policies {
		if p.Tenancy == ten.ID && strings.EqualFold(p.Name, *in.Name) && !p.latest().Deleted {
			return errf(409, "NotAuthorizedOrResourceAlreadyExists", "A policy named %s already exists.", *in.Name)
		}
	}
	bind, _, err := c.e.bindPolicyLocked(ten, *in.CompartmentID, in.Statements)
	if err != nil {
		return invalidParam("%s", err.Error())
	}
	p := &policy{ID: globalOCID("policy", ten.Realm), Tenancy: ten.ID, Compartment: *in.CompartmentID, Name: *in.Name,
		Description: *in.Description, Created: c.now, Versions: []policyVersion{{At: c.effectiveAt(), Statements: in.Statements, Bindings: bind}}}
	c.e.st.Policies[p.ID] = p
	c.log.Resource, c.log.ResourceTenancy = p.ID, p.Tenancy
	c.rememberLocked(ten.ID, "CreatePolicy", p.ID)
	if err := c.e.saveLocked(); err != nil {
		return err
	}
	return c.reply(200, policyJSON(p), newEtag())
}

func (c *call) getPolicy() error {
	p := c.livePolicyLocked(c.params["policyId"])
	if p == nil || !c.allowed(p.Compartment, verbInspect, "policies", nil) {
		return errNotFound
	}
	return c.reply(200, policyJSON(p), newEtag())
}

func (c *call) listPolicies() error {
	comp := c.r.URL.Query().Get("compartmentId")
	if comp == "" {
		return errf(400, "MissingParameter", "compartmentId is required.")
	}
	if !c.allowed(comp, verbInspect, "policies", nil) {
		return errNotFound
	}
	name := c.r.URL.Query().Get("name")
	var out []map[string]any
	for _, id := range sortedKeys(c.e.st.Policies) {
		p := c.e.st.Policies[id]
		if p.Compartment == comp && !p.latest().Deleted && (name == "" || p.Name == name) {
			out = append(out, policyJSON(p))
		}
	}
	s, en, err := c.page(len(out))
	if err != nil {
		return err
	}
	return c.reply(200, nonNil(out[s:en]), "")
}

func (c *call) updatePolicy() error {
	p := c.livePolicyLocked(c.params["policyId"])
	if p == nil || !c.allowed(p.Compartment, verbManage, "policies", nil) {
		return errNotFound
	}
	var in struct {
		Statements  []string `json:"statements"`
		Description *string  `json:"description"`
	}
	if err := c.decode(&in); err != nil {
		return err
	}
	v := p.latest()
	stmts, bind := v.Statements, v.Bindings
	if in.Statements != nil {
		b, _, err := c.e.bindPolicyLocked(c.e.st.Tenancies[p.Tenancy], p.Compartment, in.Statements)
		if err != nil {
			return invalidParam("%s", err.Error())
		}
		stmts, bind = in.Statements, b
	}
	if in.Description != nil {
		if err := checkDescription(in.Description); err != nil {
			return err
		}
		p.Description = *in.Description
	}
	p.Versions = append(p.Versions, policyVersion{At: c.effectiveAt(), Statements: stmts, Bindings: bind})
	c.e.pruneLocked(c.now)
	if err := c.e.saveLocked(); err != nil {
		return err
	}
	return c.reply(200, policyJSON(p), newEtag())
}

func (c *call) deletePolicy() error {
	p := c.livePolicyLocked(c.params["policyId"])
	if p == nil || !c.allowed(p.Compartment, verbManage, "policies", nil) {
		return errNotFound
	}
	p.Versions = append(p.Versions, policyVersion{At: c.effectiveAt(), Statements: p.latest().Statements, Deleted: true})
	c.e.pruneLocked(c.now)
	if err := c.e.saveLocked(); err != nil {
		return err
	}
	c.w.WriteHeader(http.StatusNoContent)
	return nil
}

// ---- compartments ----

func compartmentJSON(cp *compartment) map[string]any {
	return map[string]any{"id": cp.ID, "compartmentId": cp.Parent, "name": cp.Name, "description": cp.Description,
		"timeCreated": ociTime(cp.Created), "lifecycleState": cp.State, "isAccessible": true,
		"freeformTags": map[string]string{}, "definedTags": map[string]any{}}
}

func (c *call) createCompartment() error {
	var in struct {
		CompartmentID *string `json:"compartmentId"`
		Name          *string `json:"name"`
		Description   *string `json:"description"`
	}
	if err := c.decode(&in); err != nil {
		return err
	}
	if in.CompartmentID == nil || in.Name == nil {
		return errf(400, "MissingParameter", "compartmentId, name and description are required.")
	}
	if err := checkName("name", *in.Name); err != nil {
		return err
	}
	if err := checkDescription(in.Description); err != nil {
		return err
	}
	if strings.Contains(*in.Name, ":") {
		return invalidParam("a compartment name cannot contain ':'.")
	}
	if !c.allowed(*in.CompartmentID, verbManage, "compartments", nil) {
		return errNotFound
	}
	ten := c.e.st.Tenancies[c.e.tenancyOfLocked(*in.CompartmentID)]
	if len(c.e.chainLocked(*in.CompartmentID)) >= 6 {
		return invalidParam("compartments nest at most six levels deep.")
	}
	if id, ok, err := c.retriedLocked(ten.ID, "CreateCompartment"); err != nil {
		return err
	} else if ok {
		return c.reply(200, compartmentJSON(c.e.st.Compartment[id]), "")
	}
	if c.e.compartmentByPathLocked(ten.ID, *in.CompartmentID, *in.Name) != "" {
		return errf(409, "NotAuthorizedOrResourceAlreadyExists", "A compartment named %s already exists there.", *in.Name)
	}
	cp := &compartment{ID: globalOCID("compartment", ten.Realm), Tenancy: ten.ID, Parent: *in.CompartmentID, Name: *in.Name,
		Description: *in.Description, Created: c.now, State: "ACTIVE"}
	c.e.st.Compartment[cp.ID] = cp
	c.log.Resource, c.log.ResourceTenancy = cp.ID, ten.ID
	c.rememberLocked(ten.ID, "CreateCompartment", cp.ID)
	if err := c.e.saveLocked(); err != nil {
		return err
	}
	return c.reply(200, compartmentJSON(cp), newEtag())
}

func (c *call) getCompartment() error {
	cp := c.e.st.Compartment[c.params["compartmentId"]]
	if cp == nil || !c.allowed(cp.Parent, verbInspect, "compartments", nil) {
		return errNotFound
	}
	return c.reply(200, compartmentJSON(cp), newEtag())
}

func (c *call) listCompartments() error {
	comp := c.r.URL.Query().Get("compartmentId")
	if comp == "" {
		return errf(400, "MissingParameter", "compartmentId is required.")
	}
	if !c.allowed(comp, verbInspect, "compartments", nil) {
		return errNotFound
	}
	var out []map[string]any
	for _, id := range sortedKeys(c.e.st.Compartment) {
		if cp := c.e.st.Compartment[id]; cp.Parent == comp && cp.State == "ACTIVE" {
			out = append(out, compartmentJSON(cp))
		}
	}
	s, en, err := c.page(len(out))
	if err != nil {
		return err
	}
	return c.reply(200, nonNil(out[s:en]), "")
}

func (c *call) deleteCompartment() error {
	cp := c.e.st.Compartment[c.params["compartmentId"]]
	if cp == nil || cp.State != "ACTIVE" || !c.allowed(cp.Parent, verbManage, "compartments", nil) {
		return errNotFound
	}
	for _, o := range c.e.st.Compartment {
		if o.Parent == cp.ID && o.State == "ACTIVE" {
			return errf(409, "Conflict", "The compartment is not empty.")
		}
	}
	for _, k := range c.e.st.Keys {
		if k.Compartment == cp.ID && k.State != "DELETED" {
			return errf(409, "Conflict", "The compartment is not empty.")
		}
	}
	cp.State = "DELETED"
	if err := c.e.saveLocked(); err != nil {
		return err
	}
	c.w.WriteHeader(http.StatusNoContent)
	return nil
}

// ---- groups, users, API keys, memberships ----

func groupJSON(g *group) map[string]any {
	return map[string]any{"id": g.ID, "compartmentId": g.Tenancy, "name": g.Name, "description": g.Description,
		"timeCreated": ociTime(g.Created), "lifecycleState": "ACTIVE", "freeformTags": map[string]string{}, "definedTags": map[string]any{}}
}

func userJSON(u *user) map[string]any {
	return map[string]any{"id": u.ID, "compartmentId": u.Tenancy, "name": u.Name, "description": u.Description,
		"timeCreated": ociTime(u.Created), "lifecycleState": "ACTIVE", "isMfaActivated": false,
		"freeformTags": map[string]string{}, "definedTags": map[string]any{}}
}

// tenancyRoot checks that comp is the caller's tenancy (users and groups
// live in the root compartment).
func (c *call) tenancyRoot(comp string, verb int, resource string) (*tenancy, error) {
	ten := c.e.st.Tenancies[comp]
	if ten == nil {
		if c.e.st.Compartment[comp] != nil {
			return nil, invalidParam("users and groups are created in the tenancy (root compartment).")
		}
		return nil, errNotFound
	}
	if !c.allowed(ten.ID, verb, resource, nil) {
		return nil, errNotFound
	}
	return ten, nil
}

func (c *call) createGroup() error {
	var in struct {
		CompartmentID string  `json:"compartmentId"`
		Name          string  `json:"name"`
		Description   *string `json:"description"`
	}
	if err := c.decode(&in); err != nil {
		return err
	}
	if err := checkName("name", in.Name); err != nil {
		return err
	}
	if err := checkDescription(in.Description); err != nil {
		return err
	}
	ten, err := c.tenancyRoot(in.CompartmentID, verbManage, "groups")
	if err != nil {
		return err
	}
	if id, ok, err := c.retriedLocked(ten.ID, "CreateGroup"); err != nil {
		return err
	} else if ok {
		return c.reply(200, groupJSON(c.e.st.Groups[id]), "")
	}
	if c.e.groupByNameLocked(ten.ID, in.Name) != nil {
		return errf(409, "NotAuthorizedOrResourceAlreadyExists", "A group named %s already exists.", in.Name)
	}
	g := &group{ID: globalOCID("group", ten.Realm), Tenancy: ten.ID, Name: in.Name, Description: *in.Description, Created: c.now}
	c.e.st.Groups[g.ID] = g
	c.rememberLocked(ten.ID, "CreateGroup", g.ID)
	if err := c.e.saveLocked(); err != nil {
		return err
	}
	return c.reply(200, groupJSON(g), newEtag())
}

func (c *call) getGroup() error {
	g := c.e.st.Groups[c.params["groupId"]]
	if g == nil || !c.allowed(g.Tenancy, verbInspect, "groups", nil) {
		return errNotFound
	}
	return c.reply(200, groupJSON(g), newEtag())
}

func (c *call) listGroups() error {
	ten, err := c.tenancyRoot(c.r.URL.Query().Get("compartmentId"), verbInspect, "groups")
	if err != nil {
		return err
	}
	var out []map[string]any
	for _, id := range sortedKeys(c.e.st.Groups) {
		if g := c.e.st.Groups[id]; g.Tenancy == ten.ID {
			out = append(out, groupJSON(g))
		}
	}
	s, en, err := c.page(len(out))
	if err != nil {
		return err
	}
	return c.reply(200, nonNil(out[s:en]), "")
}

func (c *call) createUser() error {
	var in struct {
		CompartmentID string  `json:"compartmentId"`
		Name          string  `json:"name"`
		Description   *string `json:"description"`
	}
	if err := c.decode(&in); err != nil {
		return err
	}
	if err := checkName("name", in.Name); err != nil {
		return err
	}
	if err := checkDescription(in.Description); err != nil {
		return err
	}
	ten, err := c.tenancyRoot(in.CompartmentID, verbManage, "users")
	if err != nil {
		return err
	}
	if id, ok, err := c.retriedLocked(ten.ID, "CreateUser"); err != nil {
		return err
	} else if ok {
		return c.reply(200, userJSON(c.e.st.Users[id]), "")
	}
	for _, u := range c.e.st.Users {
		if u.Tenancy == ten.ID && strings.EqualFold(u.Name, in.Name) {
			return errf(409, "NotAuthorizedOrResourceAlreadyExists", "A user named %s already exists.", in.Name)
		}
	}
	u := &user{ID: globalOCID("user", ten.Realm), Tenancy: ten.ID, Name: in.Name, Description: *in.Description, Created: c.now}
	c.e.st.Users[u.ID] = u
	c.rememberLocked(ten.ID, "CreateUser", u.ID)
	if err := c.e.saveLocked(); err != nil {
		return err
	}
	return c.reply(200, userJSON(u), newEtag())
}

// userFor finds the path's user; a user may always manage its own API
// keys, as in OCI.
func (c *call) userFor(verb int) (*user, error) {
	u := c.e.st.Users[c.params["userId"]]
	if u == nil {
		return nil, errNotFound
	}
	if u.ID != c.caller.user.ID && !c.allowed(u.Tenancy, verb, "users", nil) {
		return nil, errNotFound
	}
	return u, nil
}

func (c *call) getUser() error {
	u, err := c.userFor(verbInspect)
	if err != nil {
		return err
	}
	return c.reply(200, userJSON(u), newEtag())
}

func apiKeyJSON(u *user, k *apiKey) map[string]any {
	return map[string]any{"keyId": u.Tenancy + "/" + u.ID + "/" + k.Fingerprint, "keyValue": k.PublicPEM, "fingerprint": k.Fingerprint,
		"userId": u.ID, "timeCreated": ociTime(k.Created), "lifecycleState": "ACTIVE"}
}

// maxAPIKeys per user (OCI: 3).
const maxAPIKeys = 3

func (c *call) uploadAPIKey() error {
	u, err := c.userFor(verbManage)
	if err != nil {
		return err
	}
	var in struct {
		Key string `json:"key"`
	}
	if err := c.decode(&in); err != nil {
		return err
	}
	pub, err := parsePublicKeyPEM(in.Key)
	if err != nil {
		return invalidParam("key must be an RSA public key (PEM) of at least 2048 bits: %s", err.Error())
	}
	fp := Fingerprint(pub)
	for _, k := range u.APIKeys {
		if k.Fingerprint == fp {
			return errf(409, "NotAuthorizedOrResourceAlreadyExists", "This key is already registered for the user.")
		}
	}
	if len(u.APIKeys) >= maxAPIKeys {
		return errf(400, "LimitExceeded", "A user can have at most %d API keys.", maxAPIKeys)
	}
	k := &apiKey{Fingerprint: fp, PublicPEM: publicPEM(pub), Created: c.now}
	u.APIKeys = append(u.APIKeys, k)
	if err := c.e.saveLocked(); err != nil {
		return err
	}
	return c.reply(200, apiKeyJSON(u, k), newEtag())
}

func (c *call) listAPIKeys() error {
	u, err := c.userFor(verbInspect)
	if err != nil {
		return err
	}
	out := []map[string]any{}
	for _, k := range u.APIKeys {
		out = append(out, apiKeyJSON(u, k))
	}
	return c.reply(200, out, "")
}

func (c *call) deleteAPIKey() error {
	u, err := c.userFor(verbManage)
	if err != nil {
		return err
	}
	for i, k := range u.APIKeys {
		if k.Fingerprint == c.params["fingerprint"] {
			u.APIKeys = append(u.APIKeys[:i:i], u.APIKeys[i+1:]...)
			if err := c.e.saveLocked(); err != nil {
				return err
			}
			c.w.WriteHeader(http.StatusNoContent)
			return nil
		}
	}
	return errNotFound
}

func membershipJSON(m *membership) map[string]any {
	return map[string]any{"id": m.ID, "compartmentId": m.Tenancy, "groupId": m.Group, "userId": m.User,
		"timeCreated": ociTime(m.Created), "lifecycleState": "ACTIVE"}
}

func (c *call) addUserToGroup() error {
	var in struct {
		GroupID string `json:"groupId"`
		UserID  string `json:"userId"`
	}
	if err := c.decode(&in); err != nil {
		return err
	}
	g, u := c.e.st.Groups[in.GroupID], c.e.st.Users[in.UserID]
	if g == nil || u == nil || g.Tenancy != u.Tenancy || !c.allowed(g.Tenancy, verbManage, "groups", nil) {
		return errNotFound
	}
	for _, m := range c.e.st.Memberships {
		if m.User == u.ID && m.Group == g.ID {
			return errf(409, "NotAuthorizedOrResourceAlreadyExists", "The user is already in the group.")
		}
	}
	m := &membership{ID: globalOCID("groupmembership", c.e.st.Tenancies[g.Tenancy].Realm), Tenancy: g.Tenancy, User: u.ID, Group: g.ID, Created: c.now}
	c.e.st.Memberships[m.ID] = m
	if err := c.e.saveLocked(); err != nil {
		return err
	}
	return c.reply(200, membershipJSON(m), newEtag())
}

func (c *call) listMemberships() error {
	q := c.r.URL.Query()
	ten, err := c.tenancyRoot(q.Get("compartmentId"), verbInspect, "groups")
	if err != nil {
		return err
	}
	var out []map[string]any
	for _, id := range sortedKeys(c.e.st.Memberships) {
		m := c.e.st.Memberships[id]
		if m.Tenancy == ten.ID && (q.Get("userId") == "" || q.Get("userId") == m.User) && (q.Get("groupId") == "" || q.Get("groupId") == m.Group) {
			out = append(out, membershipJSON(m))
		}
	}
	s, en, err := c.page(len(out))
	if err != nil {
		return err
	}
	return c.reply(200, nonNil(out[s:en]), "")
}

func (c *call) removeUserFromGroup() error {
	m := c.e.st.Memberships[c.params["userGroupMembershipId"]]
	if m == nil || !c.allowed(m.Tenancy, verbManage, "groups", nil) {
		return errNotFound
	}
	delete(c.e.st.Memberships, m.ID)
	if err := c.e.saveLocked(); err != nil {
		return err
	}
	c.w.WriteHeader(http.StatusNoContent)
	return nil
}
