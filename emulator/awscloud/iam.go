package awscloud

import (
	"net/url"
	"regexp"
	"sort"
	"strings"
)

var (
	iamNameRE    = regexp.MustCompile(`^[\w+=,.@-]+$`)
	iamPathRE    = regexp.MustCompile(`^(/|/[\x21-\x7e]+/)$`)
	policyArnRE  = regexp.MustCompile(`^arn:(aws|aws-cn|aws-us-gov):iam::([0-9]{12}|aws):policy(/|/[\x21-\x7e]*/)([\w+=,.@-]{1,128})$`)
	descRE       = regexp.MustCompile(`^[\x09\x0a\x0d\x20-\x7e\x{a1}-\x{ff}]*$`)
	oidcURLRE    = regexp.MustCompile(`^https://[a-zA-Z0-9.-]+(:[0-9]+)?(/[\x21-\x7e]*)?$`)
	thumbprintRE = regexp.MustCompile(`^[0-9a-fA-F]{40}$`)
)

func init() {
	iamOps = map[string]*queryOp{
		"CreateRole": {params: []string{"RoleName", "AssumeRolePolicyDocument", "Path", "Description", "MaxSessionDuration"},
			lists: []string{"Tags"}, handler: (*call).iamCreateRole},
		"GetRole":                     {params: []string{"RoleName"}, handler: (*call).iamGetRole},
		"DeleteRole":                  {params: []string{"RoleName"}, handler: (*call).iamDeleteRole},
		"UpdateAssumeRolePolicy":      {params: []string{"RoleName", "PolicyDocument"}, handler: (*call).iamUpdateAssumeRolePolicy},
		"PutRolePolicy":               {params: []string{"RoleName", "PolicyName", "PolicyDocument"}, handler: (*call).iamPutRolePolicy},
		"GetRolePolicy":               {params: []string{"RoleName", "PolicyName"}, handler: (*call).iamGetRolePolicy},
		"DeleteRolePolicy":            {params: []string{"RoleName", "PolicyName"}, handler: (*call).iamDeleteRolePolicy},
		"ListRolePolicies":            {params: []string{"RoleName", "Marker", "MaxItems"}, handler: (*call).iamListRolePolicies},
		"CreatePolicy":                {params: []string{"PolicyName", "PolicyDocument", "Path", "Description"}, lists: []string{"Tags"}, handler: (*call).iamCreatePolicy},
		"GetPolicy":                   {params: []string{"PolicyArn"}, handler: (*call).iamGetPolicy},
		"GetPolicyVersion":            {params: []string{"PolicyArn", "VersionId"}, handler: (*call).iamGetPolicyVersion},
		"DeletePolicy":                {params: []string{"PolicyArn"}, handler: (*call).iamDeletePolicy},
		"AttachRolePolicy":            {params: []string{"RoleName", "PolicyArn"}, handler: (*call).iamAttachRolePolicy},
		"DetachRolePolicy":            {params: []string{"RoleName", "PolicyArn"}, handler: (*call).iamDetachRolePolicy},
		"ListAttachedRolePolicies":    {params: []string{"RoleName", "Marker", "MaxItems", "PathPrefix"}, handler: (*call).iamListAttachedRolePolicies},
		"GetUser":                     {params: []string{"UserName"}, handler: (*call).iamGetUser},
		"PutUserPolicy":               {params: []string{"UserName", "PolicyName", "PolicyDocument"}, handler: (*call).iamPutUserPolicy},
		"DeleteUserPolicy":            {params: []string{"UserName", "PolicyName"}, handler: (*call).iamDeleteUserPolicy},
		"AttachUserPolicy":            {params: []string{"UserName", "PolicyArn"}, handler: (*call).iamAttachUserPolicy},
		"DetachUserPolicy":            {params: []string{"UserName", "PolicyArn"}, handler: (*call).iamDetachUserPolicy},
		"CreateOpenIDConnectProvider": {params: []string{"Url"}, lists: []string{"ClientIDList", "ThumbprintList"}, handler: (*call).iamCreateOIDCProvider},
		"DeleteOpenIDConnectProvider": {params: []string{"OpenIDConnectProviderArn"}, handler: (*call).iamDeleteOIDCProvider},
	}
}

// iamAuthorize checks the caller's identity policies for an IAM action
// on a resource of its own account (IAM is not cross-account).
func (c *call) iamAuthorize(action, resource string) error {
	p := c.caller
	c.log.Resource, c.log.ResourceAccount = resource, p.account.ID
	if p.isRoot() {
		return nil
	}
	ctx := &evalContext{Action: "iam:" + action, Resource: resource, Keys: c.baseKeys(p)}
	allow, deny, sess := c.e.identityDecisionLocked(p, ctx)
	switch {
	case deny:
		return errf(403, "AccessDenied", "%s", accessDenied(p.arn, "iam:"+action, resource, explicitDeny("identity-based")))
	case sess:
		return errf(403, "AccessDenied", "%s", accessDenied(p.arn, "iam:"+action, resource, becauseNo("session", "iam:"+action)))
	case !allow:
		return errf(403, "AccessDenied", "%s", accessDenied(p.arn, "iam:"+action, resource, becauseNo("identity-based", "iam:"+action)))
	}
	return nil
}

func (c *call) arnPrefix() string {
	return "arn:" + c.caller.account.Partition + ":iam::" + c.caller.account.ID + ":"
}

type xmlTag struct {
	Key   string `xml:"Key"`
	Value string `xml:"Value"`
}

type xmlTags struct {
	Members []xmlTag `xml:"member"`
}

func toXMLTags(ts []tag) *xmlTags {
	if len(ts) == 0 {
		return nil
	}
	out := &xmlTags{}
	for _, t := range ts {
		out.Members = append(out.Members, xmlTag{t.Key, t.Value})
	}
	return out
}

type xmlRole struct {
	Path                     string   `xml:"Path"`
	RoleName                 string   `xml:"RoleName"`
	RoleID                   string   `xml:"RoleId"`
	Arn                      string   `xml:"Arn"`
	CreateDate               string   `xml:"CreateDate"`
	AssumeRolePolicyDocument string   `xml:"AssumeRolePolicyDocument"`
	Description              string   `xml:"Description,omitempty"`
	MaxSessionDuration       int      `xml:"MaxSessionDuration"`
	Tags                     *xmlTags `xml:"Tags,omitempty"`
	RoleLastUsed             *struct {
		LastUsedDate string `xml:"LastUsedDate,omitempty"`
		Region       string `xml:"Region,omitempty"`
	} `xml:"RoleLastUsed,omitempty"`
}

func (c *call) xmlRoleOf(a *account, r *role) xmlRole {
	x := xmlRole{Path: r.Path, RoleName: r.Name, RoleID: r.ID, Arn: roleARNOf(a, r), CreateDate: isoTime(r.Created),
		AssumeRolePolicyDocument: urlEncodeDoc(c.e.displayPolicyLocked(r.Trust)), Description: r.Description,
		MaxSessionDuration: r.MaxSessionDuration, Tags: toXMLTags(r.Tags)}
	x.RoleLastUsed = &struct {
		LastUsedDate string `xml:"LastUsedDate,omitempty"`
		Region       string `xml:"Region,omitempty"`
	}{}
	if !r.LastUsed.IsZero() {
		x.RoleLastUsed.LastUsedDate, x.RoleLastUsed.Region = isoTime(r.LastUsed), r.LastUsedRegion
	}
	return x
}

func (c *call) roleName() (string, error) { return c.required("RoleName", 1, 64, iamNameRE) }

func (c *call) lookupRole(name string) (*role, error) {
	r := c.caller.account.Roles[strings.ToLower(name)]
	if r == nil {
		return nil, errf(404, "NoSuchEntity", "The role with name %s cannot be found.", name)
	}
	return r, nil
}

// checkTrustPolicy validates a trust policy and binds its principals.
func (c *call) checkTrustPolicy(doc string) (storedPolicy, error) {
	if err := checkString("AssumeRolePolicyDocument", doc, 1, 131072, policyCharsRE); err != nil {
		return storedPolicy{}, err
	}
	p, err := parsePolicy(doc, trustPolicy)
	if err != nil {
		return storedPolicy{}, errf(400, "MalformedPolicyDocument", "%s", err.Error())
	}
	if n := policySize(doc); n > 2048 {
		return storedPolicy{}, errf(409, "LimitExceeded", "Cannot exceed quota for ACLSizePerRole: 2048")
	}
	for _, st := range p.Statements {
		for _, a := range st.Actions {
			if !strings.HasPrefix(strings.ToLower(a), "sts:") && a != "*" {
				return storedPolicy{}, errf(400, "MalformedPolicyDocument", "AssumeRole policy may only specify STS AssumeRole actions.")
			}
		}
	}
	b, bad := c.e.bindPrincipalsLocked(p)
	if bad != "" {
		return storedPolicy{}, errf(400, "MalformedPolicyDocument", "Invalid principal in policy: %s", bad)
	}
	return storedPolicy{Doc: doc, Bindings: b}, nil
}

func (c *call) checkIdentityPolicy(doc string) error {
	if err := checkString("PolicyDocument", doc, 1, 131072, policyCharsRE); err != nil {
		return err
	}
	if _, err := parsePolicy(doc, identityPolicy); err != nil {
		return errf(400, "MalformedPolicyDocument", "%s", err.Error())
	}
	return nil
}

func (c *call) iamCreateRole() (any, error) {
	name, err := c.roleName()
	if err != nil {
		return nil, err
	}
	doc, err := c.required("AssumeRolePolicyDocument", 1, 131072, nil)
	if err != nil {
		return nil, err
	}
	path, hasPath, err := c.optional("Path", 1, 512, iamPathRE)
	if err != nil {
		return nil, err
	}
	if !hasPath {
		path = "/"
	}
	desc, _, err := c.optional("Description", 0, 1000, descRE)
	if err != nil {
		return nil, err
	}
	maxDur, hasMax, err := c.optionalInt("MaxSessionDuration", 3600, 43200)
	if err != nil {
		return nil, err
	}
	if !hasMax {
		maxDur = 3600
	}
	tags, err := c.tags()
	if err != nil {
		return nil, err
	}
	if err := c.iamAuthorize("CreateRole", c.arnPrefix()+"role"+path+name); err != nil {
		return nil, err
	}
	a := c.caller.account
	if a.Roles[strings.ToLower(name)] != nil {
		return nil, errf(409, "EntityAlreadyExists", "Role with name %s already exists.", name)
	}
	if len(a.Roles) >= 1000 {
		return nil, errf(409, "LimitExceeded", "Cannot exceed quota for RolesPerAccount: 1000")
	}
	sp, err := c.checkTrustPolicy(doc)
	if err != nil {
		return nil, err
	}
	r := &role{Name: name, ID: newUniqueID("AROA"), Path: path, Created: c.now, Description: desc,
		MaxSessionDuration: maxDur, Trust: sp, Inline: map[string]string{}, Tags: tags}
	a.Roles[strings.ToLower(name)] = r
	return struct {
		Role xmlRole `xml:"Role"`
	}{c.xmlRoleOf(a, r)}, c.e.saveLocked()
}

func (c *call) iamGetRole() (any, error) {
	name, err := c.roleName()
	if err != nil {
		return nil, err
	}
	if err := c.iamAuthorize("GetRole", c.arnPrefix()+"role/"+name); err != nil {
		return nil, err
	}
	r, err := c.lookupRole(name)
	if err != nil {
		return nil, err
	}
	return struct {
		Role xmlRole `xml:"Role"`
	}{c.xmlRoleOf(c.caller.account, r)}, nil
}

func (c *call) iamDeleteRole() (any, error) {
	name, err := c.roleName()
	if err != nil {
		return nil, err
	}
	if err := c.iamAuthorize("DeleteRole", c.arnPrefix()+"role/"+name); err != nil {
		return nil, err
	}
	r, err := c.lookupRole(name)
	if err != nil {
		return nil, err
	}
	if len(r.Attached) > 0 {
		return nil, errf(409, "DeleteConflict", "Cannot delete entity, must detach all policies first.")
	}
	if len(r.Inline) > 0 {
		return nil, errf(409, "DeleteConflict", "Cannot delete entity, must delete policies first.")
	}
	delete(c.caller.account.Roles, strings.ToLower(name))
	return nil, c.e.saveLocked()
}

func (c *call) iamUpdateAssumeRolePolicy() (any, error) {
	name, err := c.roleName()
	if err != nil {
		return nil, err
	}
	doc, err := c.required("PolicyDocument", 1, 131072, nil)
	if err != nil {
		return nil, err
	}
	if err := c.iamAuthorize("UpdateAssumeRolePolicy", c.arnPrefix()+"role/"+name); err != nil {
		return nil, err
	}
	r, err := c.lookupRole(name)
	if err != nil {
		return nil, err
	}
	sp, err := c.checkTrustPolicy(doc)
	if err != nil {
		return nil, err
	}
	r.Trust = sp
	return nil, c.e.saveLocked()
}

func (c *call) policyName() (string, error) { return c.required("PolicyName", 1, 128, iamNameRE) }

func (c *call) iamPutRolePolicy() (any, error) {
	name, err := c.roleName()
	if err != nil {
		return nil, err
	}
	pn, err := c.policyName()
	if err != nil {
		return nil, err
	}
	doc, err := c.required("PolicyDocument", 1, 131072, nil)
	if err != nil {
		return nil, err
	}
	if err := c.iamAuthorize("PutRolePolicy", c.arnPrefix()+"role/"+name); err != nil {
		return nil, err
	}
	r, err := c.lookupRole(name)
	if err != nil {
		return nil, err
	}
	if err := c.checkIdentityPolicy(doc); err != nil {
		return nil, err
	}
	total := policySize(doc)
	for n, d := range r.Inline {
		if n != pn {
			total += policySize(d)
		}
	}
	if total > 10240 {
		return nil, errf(409, "LimitExceeded", "Maximum policy size of 10240 bytes exceeded for role %s", r.Name)
	}
	r.Inline[pn] = doc
	return nil, c.e.saveLocked()
}

func (c *call) iamGetRolePolicy() (any, error) {
	name, err := c.roleName()
	if err != nil {
		return nil, err
	}
	pn, err := c.policyName()
	if err != nil {
		return nil, err
	}
	if err := c.iamAuthorize("GetRolePolicy", c.arnPrefix()+"role/"+name); err != nil {
		return nil, err
	}
	r, err := c.lookupRole(name)
	if err != nil {
		return nil, err
	}
	doc, ok := r.Inline[pn]
	if !ok {
		return nil, errf(404, "NoSuchEntity", "The role policy with name %s cannot be found.", pn)
	}
	return struct {
		RoleName       string `xml:"RoleName"`
		PolicyName     string `xml:"PolicyName"`
		PolicyDocument string `xml:"PolicyDocument"`
	}{r.Name, pn, urlEncodeDoc(doc)}, nil
}

func (c *call) iamDeleteRolePolicy() (any, error) {
	name, err := c.roleName()
	if err != nil {
		return nil, err
	}
	pn, err := c.policyName()
	if err != nil {
		return nil, err
	}
	if err := c.iamAuthorize("DeleteRolePolicy", c.arnPrefix()+"role/"+name); err != nil {
		return nil, err
	}
	r, err := c.lookupRole(name)
	if err != nil {
		return nil, err
	}
	if _, ok := r.Inline[pn]; !ok {
		return nil, errf(404, "NoSuchEntity", "The role policy with name %s cannot be found.", pn)
	}
	delete(r.Inline, pn)
	return nil, c.e.saveLocked()
}

type xmlMembers struct {
	Members []string `xml:"member"`
}

// page applies Marker/MaxItems (marker = index into the sorted list).
func (c *call) page(n int) (start, end int, next string, err error) {
	maxItems, ok, err := c.optionalInt("MaxItems", 1, 1000)
	if err != nil {
		return 0, 0, "", err
	}
	if !ok {
		maxItems = 100
	}
	if m, ok := c.param("Marker"); ok {
		i := 0
		for _, ch := range m {
			if ch < '0' || ch > '9' || i > n {
				return 0, 0, "", errf(400, "InvalidInput", "Invalid Marker.")
			}
			i = i*10 + int(ch-'0')
		}
		start = i
	}
	end = min(n, start+maxItems)
	if end < n {
		next = fmtInt(end)
	}
	return start, end, next, nil
}

func (c *call) iamListRolePolicies() (any, error) {
	name, err := c.roleName()
	if err != nil {
		return nil, err
	}
	if err := c.iamAuthorize("ListRolePolicies", c.arnPrefix()+"role/"+name); err != nil {
		return nil, err
	}
	r, err := c.lookupRole(name)
	if err != nil {
		return nil, err
	}
	names := sortedKeys(r.Inline)
	s, e, next, err := c.page(len(names))
	if err != nil {
		return nil, err
	}
	return struct {
		PolicyNames xmlMembers `xml:"PolicyNames"`
		IsTruncated bool       `xml:"IsTruncated"`
		Marker      string     `xml:"Marker,omitempty"`
	}{xmlMembers{names[s:e]}, next != "", next}, nil
}

type xmlPolicy struct {
	PolicyName                    string   `xml:"PolicyName"`
	PolicyID                      string   `xml:"PolicyId"`
	Arn                           string   `xml:"Arn"`
	Path                          string   `xml:"Path"`
	DefaultVersionID              string   `xml:"DefaultVersionId"`
	AttachmentCount               int      `xml:"AttachmentCount"`
	PermissionsBoundaryUsageCount int      `xml:"PermissionsBoundaryUsageCount"`
	IsAttachable                  bool     `xml:"IsAttachable"`
	Description                   string   `xml:"Description,omitempty"`
	CreateDate                    string   `xml:"CreateDate"`
	UpdateDate                    string   `xml:"UpdateDate"`
	Tags                          *xmlTags `xml:"Tags,omitempty"`
}

func attachmentCount(a *account, arn string) int {
	n := 0
	for _, r := range a.Roles {
		if contains(r.Attached, arn) {
			n++
		}
	}
	for _, u := range a.Users {
		if contains(u.Attached, arn) {
			n++
		}
	}
	return n
}

func xmlPolicyOf(a *account, mp *managedPol) xmlPolicy {
	return xmlPolicy{PolicyName: mp.Name, PolicyID: mp.ID, Arn: mp.ARN, Path: mp.Path, DefaultVersionID: "v1",
		AttachmentCount: attachmentCount(a, mp.ARN), IsAttachable: true, Description: mp.Description,
		CreateDate: isoTime(mp.Created), UpdateDate: isoTime(mp.Updated), Tags: toXMLTags(mp.Tags)}
}

func (c *call) iamCreatePolicy() (any, error) {
	pn, err := c.policyName()
	if err != nil {
		return nil, err
	}
	doc, err := c.required("PolicyDocument", 1, 131072, nil)
	if err != nil {
		return nil, err
	}
	path, hasPath, err := c.optional("Path", 1, 512, iamPathRE)
	if err != nil {
		return nil, err
	}
	if !hasPath {
		path = "/"
	}
	desc, _, err := c.optional("Description", 0, 1000, descRE)
	if err != nil {
		return nil, err
	}
	tags, err := c.tags()
	if err != nil {
		return nil, err
	}
	arn := c.arnPrefix() + "policy" + path + pn
	if err := c.iamAuthorize("CreatePolicy", arn); err != nil {
		return nil, err
	}
	a := c.caller.account
	for _, mp := range a.Policies {
		if strings.EqualFold(mp.Name, pn) {
			return nil, errf(409, "EntityAlreadyExists", "A policy called %s already exists. Duplicate names are not allowed.", pn)
		}
	}
	if err := c.checkIdentityPolicy(doc); err != nil {
		return nil, err
	}
	if policySize(doc) > 6144 {
		return nil, errf(409, "LimitExceeded", "Cannot exceed quota for PolicySize: 6144")
	}
	if len(a.Policies) >= 1500 {
		return nil, errf(409, "LimitExceeded", "Cannot exceed quota for PoliciesPerAccount: 1500")
	}
	mp := &managedPol{Name: pn, ID: newUniqueID("ANPA"), Path: path, ARN: arn, Description: desc, Doc: doc,
		Created: c.now, Updated: c.now, Tags: tags}
	a.Policies[arn] = mp
	return struct {
		Policy xmlPolicy `xml:"Policy"`
	}{xmlPolicyOf(a, mp)}, c.e.saveLocked()
}

func (c *call) policyArn() (string, *managedPol, error) {
	arn, err := c.required("PolicyArn", 20, 2048, nil)
	if err != nil {
		return "", nil, err
	}
	if !policyArnRE.MatchString(arn) {
		return arn, nil, errf(400, "InvalidInput", "ARN %s is not valid.", truncate(arn, 256))
	}
	return arn, c.caller.account.Policies[arn], nil
}

func (c *call) iamGetPolicy() (any, error) {
	arn, mp, err := c.policyArn()
	if err != nil {
		return nil, err
	}
	if err := c.iamAuthorize("GetPolicy", arn); err != nil {
		return nil, err
	}
	if mp == nil {
		return nil, errf(404, "NoSuchEntity", "Policy %s was not found.", arn)
	}
	return struct {
		Policy xmlPolicy `xml:"Policy"`
	}{xmlPolicyOf(c.caller.account, mp)}, nil
}

func (c *call) iamGetPolicyVersion() (any, error) {
	arn, mp, err := c.policyArn()
	if err != nil {
		return nil, err
	}
	v, err := c.required("VersionId", 1, 128, nil)
	if err != nil {
		return nil, err
	}
	if err := c.iamAuthorize("GetPolicyVersion", arn); err != nil {
		return nil, err
	}
	if mp == nil || v != "v1" {
		return nil, errf(404, "NoSuchEntity", "Policy %s version %s does not exist or is not attachable.", arn, truncate(v, 32))
	}
	return struct {
		PolicyVersion struct {
			Document         string `xml:"Document"`
			VersionID        string `xml:"VersionId"`
			IsDefaultVersion bool   `xml:"IsDefaultVersion"`
			CreateDate       string `xml:"CreateDate"`
		} `xml:"PolicyVersion"`
	}{struct {
		Document         string `xml:"Document"`
		VersionID        string `xml:"VersionId"`
		IsDefaultVersion bool   `xml:"IsDefaultVersion"`
		CreateDate       string `xml:"CreateDate"`
	}{urlEncodeDoc(mp.Doc), "v1", true, isoTime(mp.Created)}}, nil
}

func (c *call) iamDeletePolicy() (any, error) {
	arn, mp, err := c.policyArn()
	if err != nil {
		return nil, err
	}
	if err := c.iamAuthorize("DeletePolicy", arn); err != nil {
		return nil, err
	}
	if mp == nil {
		return nil, errf(404, "NoSuchEntity", "Policy %s was not found.", arn)
	}
	if attachmentCount(c.caller.account, arn) > 0 {
		return nil, errf(409, "DeleteConflict", "Cannot delete a policy attached to entities.")
	}
	delete(c.caller.account.Policies, arn)
	return nil, c.e.saveLocked()
}

func (c *call) iamAttachRolePolicy() (any, error) {
	return c.attachDetach("AttachRolePolicy", true, true)
}
func (c *call) iamDetachRolePolicy() (any, error) {
	return c.attachDetach("DetachRolePolicy", true, false)
}
func (c *call) iamAttachUserPolicy() (any, error) {
	return c.attachDetach("AttachUserPolicy", false, true)
}
func (c *call) iamDetachUserPolicy() (any, error) {
	return c.attachDetach("DetachUserPolicy", false, false)
}

func (c *call) attachDetach(action string, isRole, attach bool) (any, error) {
	var name string
	var err error
	if isRole {
		name, err = c.roleName()
	} else {
		name, err = c.required("UserName", 1, 64, iamNameRE)
	}
	if err != nil {
		return nil, err
	}
	arn, mp, err := c.policyArn()
	if err != nil {
		return nil, err
	}
	kind := "user/"
	if isRole {
		kind = "role/"
	}
	if err := c.iamAuthorize(action, c.arnPrefix()+kind+name); err != nil {
		return nil, err
	}
	var list *[]string
	if isRole {
		r, err := c.lookupRole(name)
		if err != nil {
			return nil, err
		}
		list = &r.Attached
	} else {
		u, err := c.lookupUser(name)
		if err != nil {
			return nil, err
		}
		list = &u.Attached
	}
	if attach {
		if mp == nil {
			return nil, errf(404, "NoSuchEntity", "Policy %s does not exist or is not attachable.", arn)
		}
		if contains(*list, arn) {
			return nil, nil
		}
		if len(*list) >= 10 {
			return nil, errf(409, "LimitExceeded", "Cannot exceed quota for PoliciesPerRole: 10")
		}
		*list = append(*list, arn)
	} else {
		i := -1
		for j, v := range *list {
			if v == arn {
				i = j
			}
		}
		if i < 0 {
			return nil, errf(404, "NoSuchEntity", "Policy %s was not found.", arn)
		}
		*list = append((*list)[:i:i], (*list)[i+1:]...)
	}
	return nil, c.e.saveLocked()
}

func (c *call) iamListAttachedRolePolicies() (any, error) {
	name, err := c.roleName()
	if err != nil {
		return nil, err
	}
	prefix, _, err := c.optional("PathPrefix", 1, 512, nil)
	if err != nil {
		return nil, err
	}
	if err := c.iamAuthorize("ListAttachedRolePolicies", c.arnPrefix()+"role/"+name); err != nil {
		return nil, err
	}
	r, err := c.lookupRole(name)
	if err != nil {
		return nil, err
	}
	type ap struct {
		PolicyName string `xml:"PolicyName"`
		PolicyArn  string `xml:"PolicyArn"`
	}
	var all []ap
	for _, arn := range r.Attached {
		if mp := c.caller.account.Policies[arn]; mp != nil && strings.HasPrefix(mp.Path, prefix) {
			all = append(all, ap{mp.Name, arn})
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].PolicyArn < all[j].PolicyArn })
	s, e, next, err := c.page(len(all))
	if err != nil {
		return nil, err
	}
	return struct {
		AttachedPolicies struct {
			Members []ap `xml:"member"`
		} `xml:"AttachedPolicies"`
		IsTruncated bool   `xml:"IsTruncated"`
		Marker      string `xml:"Marker,omitempty"`
	}{struct {
		Members []ap `xml:"member"`
	}{all[s:e]}, next != "", next}, nil
}

func (c *call) lookupUser(name string) (*user, error) {
	u := c.caller.account.Users[strings.ToLower(name)]
	if u == nil {
		return nil, errf(404, "NoSuchEntity", "The user with name %s cannot be found.", name)
	}
	return u, nil
}

func (c *call) iamGetUser() (any, error) {
	name, ok, err := c.optional("UserName", 1, 128, iamNameRE)
	if err != nil {
		return nil, err
	}
	p := c.caller
	if !ok {
		if p.user == nil {
			if p.isRoot() {
				a := p.account
				return struct {
					User struct {
						UserID     string `xml:"UserId"`
						Arn        string `xml:"Arn"`
						CreateDate string `xml:"CreateDate"`
					} `xml:"User"`
				}{struct {
					UserID     string `xml:"UserId"`
					Arn        string `xml:"Arn"`
					CreateDate string `xml:"CreateDate"`
				}{a.ID, rootARN(a), isoTime(a.Created)}}, nil
			}
			return nil, errf(400, "ValidationError", "Must specify userName when calling with non-User credentials")
		}
		name = p.user.Name
	}
	if err := c.iamAuthorize("GetUser", c.arnPrefix()+"user/"+name); err != nil {
		return nil, err
	}
	u, err := c.lookupUser(name)
	if err != nil {
		return nil, err
	}
	return struct {
		User struct {
			Path       string `xml:"Path"`
			UserName   string `xml:"UserName"`
			UserID     string `xml:"UserId"`
			Arn        string `xml:"Arn"`
			CreateDate string `xml:"CreateDate"`
		} `xml:"User"`
	}{struct {
		Path       string `xml:"Path"`
		UserName   string `xml:"UserName"`
		UserID     string `xml:"UserId"`
		Arn        string `xml:"Arn"`
		CreateDate string `xml:"CreateDate"`
	}{u.Path, u.Name, u.ID, userARN(p.account, u), isoTime(u.Created)}}, nil
}

func (c *call) iamPutUserPolicy() (any, error) {
	name, err := c.required("UserName", 1, 128, iamNameRE)
	if err != nil {
		return nil, err
	}
	pn, err := c.policyName()
	if err != nil {
		return nil, err
	}
	doc, err := c.required("PolicyDocument", 1, 131072, nil)
	if err != nil {
		return nil, err
	}
	if err := c.iamAuthorize("PutUserPolicy", c.arnPrefix()+"user/"+name); err != nil {
		return nil, err
	}
	u, err := c.lookupUser(name)
	if err != nil {
		return nil, err
	}
	if err := c.checkIdentityPolicy(doc); err != nil {
		return nil, err
	}
	total := policySize(doc)
	for n, d := range u.Inline {
		if n != pn {
			total += policySize(d)
		}
	}
	if total > 2048 {
		return nil, errf(409, "LimitExceeded", "Maximum policy size of 2048 bytes exceeded for user %s", u.Name)
	}
	u.Inline[pn] = doc
	return nil, c.e.saveLocked()
}

func (c *call) iamDeleteUserPolicy() (any, error) {
	name, err := c.required("UserName", 1, 128, iamNameRE)
	if err != nil {
		return nil, err
	}
	pn, err := c.policyName()
	if err != nil {
		return nil, err
	}
	if err := c.iamAuthorize("DeleteUserPolicy", c.arnPrefix()+"user/"+name); err != nil {
		return nil, err
	}
	u, err := c.lookupUser(name)
	if err != nil {
		return nil, err
	}
	if _, ok := u.Inline[pn]; !ok {
		return nil, errf(404, "NoSuchEntity", "The user policy with name %s cannot be found.", pn)
	}
	delete(u.Inline, pn)
	return nil, c.e.saveLocked()
}

func (c *call) iamCreateOIDCProvider() (any, error) {
	u, err := c.required("Url", 1, 255, oidcURLRE)
	if err != nil {
		return nil, err
	}
	ids, err := c.list("ClientIDList", "", 100)
	if err != nil {
		return nil, err
	}
	tps, err := c.list("ThumbprintList", "", 5)
	if err != nil {
		return nil, err
	}
	for _, t := range tps {
		if !thumbprintRE.MatchString(t) {
			return nil, errf(400, "ValidationError", "1 validation error detected: Value '%s' at 'thumbprintList' failed to satisfy constraint: Member must have length 40", truncate(t, 64))
		}
	}
	for _, id := range ids {
		if err := checkString("clientIDList.member", id, 1, 255, nil); err != nil {
			return nil, err
		}
	}
	pu, perr := url.Parse(u)
	if perr != nil || pu.RawQuery != "" || pu.Fragment != "" {
		return nil, errf(400, "InvalidInput", "Invalid URL %s", truncate(u, 256))
	}
	host := strings.TrimSuffix(strings.TrimPrefix(u, "https://"), "/")
	arn := c.arnPrefix() + "oidc-provider/" + host
	if err := c.iamAuthorize("CreateOpenIDConnectProvider", arn); err != nil {
		return nil, err
	}
	a := c.caller.account
	if a.OIDC[arn] != nil {
		return nil, errf(409, "EntityAlreadyExists", "Provider with url %s already exists.", u)
	}
	if len(a.OIDC) >= 100 {
		return nil, errf(409, "LimitExceeded", "Cannot exceed quota for OpenIdProvidersPerAccount: 100")
	}
	a.OIDC[arn] = &oidcProv{ARN: arn, URL: host, ClientIDs: ids, Thumbprint: tps, Created: c.now}
	return struct {
		OpenIDConnectProviderArn string `xml:"OpenIDConnectProviderArn"`
	}{arn}, c.e.saveLocked()
}

func (c *call) iamDeleteOIDCProvider() (any, error) {
	arn, err := c.required("OpenIDConnectProviderArn", 20, 2048, nil)
	if err != nil {
		return nil, err
	}
	if err := c.iamAuthorize("DeleteOpenIDConnectProvider", arn); err != nil {
		return nil, err
	}
	if c.caller.account.OIDC[arn] == nil {
		return nil, errf(404, "NoSuchEntity", "OpenIDConnect Provider not found for arn %s", truncate(arn, 256))
	}
	delete(c.caller.account.OIDC, arn)
	return nil, c.e.saveLocked()
}
