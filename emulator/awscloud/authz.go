package awscloud

import (
	"strconv"
	"strings"
)

// bindPrincipals resolves the user and role principals of a resource
// policy (trust or key policy) to their unique ids, as IAM and KMS do
// when a policy is saved. A principal that does not exist makes the
// policy invalid; ok is false and bad names it.
func (e *Emulator) bindPrincipalsLocked(p *policyDoc) (bindings map[string]string, bad string) {
	bindings = map[string]string{}
	for _, st := range p.Statements {
		if st.Principal == nil {
			continue
		}
		for _, v := range st.Principal.AWS {
			m := iamPrincipal.FindStringSubmatch(v)
			if m == nil {
				continue
			}
			a := e.st.Accounts[m[2]]
			kind, rest, _ := strings.Cut(m[3], "/")
			switch kind {
			case "user", "role":
				if a == nil || a.Partition != m[1] {
					return nil, `"AWS":"` + v + `"`
				}
				path, name := splitPathName(rest)
				if kind == "user" {
					u := a.Users[strings.ToLower(name)]
					if u == nil || u.Path != path {
						return nil, `"AWS":"` + v + `"`
					}
					bindings[v] = u.ID
				} else {
					r := a.Roles[strings.ToLower(name)]
					if r == nil || r.Path != path {
						return nil, `"AWS":"` + v + `"`
					}
					bindings[v] = r.ID
				}
			}
		}
		for _, v := range st.Principal.Federated {
			m := iamPrincipal.FindStringSubmatch(v)
			if m == nil {
				continue
			}
			a := e.st.Accounts[m[2]]
			if a == nil || a.OIDC[v] == nil {
				return nil, `"Federated":"` + v + `"`
			}
		}
	}
	return bindings, ""
}

// splitPathName splits "path/to/name" into ("/path/to/", "name").
func splitPathName(s string) (path, name string) {
	i := strings.LastIndexByte(s, '/')
	if i < 0 {
		return "/", s
	}
	return "/" + s[:i+1], s[i+1:]
}

// displayPolicy shows a stored resource policy as AWS does: principals
// that no longer exist (or were re-created) appear as their old unique id.
func (e *Emulator) displayPolicyLocked(sp storedPolicy) string {
	doc := sp.Doc
	for arn, id := range sp.Bindings {
		if e.principalIDLocked(arn) != id {
			doc = strings.ReplaceAll(doc, `"`+arn+`"`, `"`+id+`"`)
		}
	}
	return doc
}

// principalIDLocked returns the unique id of a user or role ARN ("" if
// it does not exist).
func (e *Emulator) principalIDLocked(arn string) string {
	m := iamPrincipal.FindStringSubmatch(arn)
	if m == nil {
		return ""
	}
	a := e.st.Accounts[m[2]]
	if a == nil {
		return ""
	}
	kind, rest, _ := strings.Cut(m[3], "/")
	path, name := splitPathName(rest)
	switch kind {
	case "user":
		if u := a.Users[strings.ToLower(name)]; u != nil && u.Path == path {
			return u.ID
		}
	case "role":
		if r := a.Roles[strings.ToLower(name)]; r != nil && r.Path == path {
			return r.ID
		}
	}
	return ""
}

// matcher matches a resource policy's principals against the caller.
func matcher(p *principal, bindings map[string]string, federated string) func(*principalSet) principalMatch {
	return func(ps *principalSet) principalMatch {
		if ps.Any {
			return matchDirect
		}
		best := matchNone
		up := func(m principalMatch) {
			if m > best {
				best = m
			}
		}
		for _, v := range ps.AWS {
			switch {
			case p == nil:
			case v == "*":
				up(matchDirect)
			case v == p.account.ID || v == rootARN(p.account):
				up(matchAccount)
			case strings.Contains(v, ":assumed-role/"):
				if p.kind == "session" && v == p.arn {
					up(matchSession)
				}
			case bindings[v] != "" && bindings[v] == p.uniqueID && (p.kind == "user" || p.kind == "session"):
				up(matchDirect)
			}
		}
		for _, v := range ps.Federated {
			if federated != "" && v == federated {
				up(matchDirect)
			}
		}
		return best
	}
}

// identityDecision evaluates the caller's identity-based policies (and
// session policies) for one request. allow already includes the session
// policy's narrowing; sessionBlocked says a session policy was the reason.
func (e *Emulator) identityDecisionLocked(p *principal, ctx *evalContext) (allow, deny, sessionBlocked bool) {
	if p.isRoot() {
		return true, false, false
	}
	var docs []string
	a := p.account
	switch {
	case p.user != nil:
		for _, n := range sortedKeys(p.user.Inline) {
			docs = append(docs, p.user.Inline[n])
		}
		for _, arn := range p.user.Attached {
			if mp := a.Policies[arn]; mp != nil {
				docs = append(docs, mp.Doc)
			}
		}
	case p.role != nil:
		for _, n := range sortedKeys(p.role.Inline) {
			docs = append(docs, p.role.Inline[n])
		}
		for _, arn := range p.role.Attached {
			if mp := a.Policies[arn]; mp != nil {
				docs = append(docs, mp.Doc)
			}
		}
	}
	for _, d := range docs {
		dec := cachedPolicy(d, identityPolicy).evaluate(ctx, false)
		deny = deny || dec.Deny
		allow = allow || dec.Allow != matchNone
	}
	if p.sess != nil && (p.sess.SessionPolicy != "" || len(p.sess.PolicyARNs) > 0) {
		var sdocs []string
		if p.sess.SessionPolicy != "" {
			sdocs = append(sdocs, p.sess.SessionPolicy)
		}
		for _, arn := range p.sess.PolicyARNs {
			if mp := a.Policies[arn]; mp != nil {
				sdocs = append(sdocs, mp.Doc)
			}
		}
		sallow := false
		for _, d := range sdocs {
			dec := cachedPolicy(d, identityPolicy).evaluate(ctx, false)
			deny = deny || dec.Deny
			sallow = sallow || dec.Allow != matchNone
		}
		if allow && !sallow {
			allow, sessionBlocked = false, true
		}
	}
	return allow, deny, sessionBlocked
}

// sessionAllows reports whether the caller's session policies (if any)
// allow the request; a resource policy that names the role (not the
// session) is still limited by them.
func (e *Emulator) sessionAllowsLocked(p *principal, ctx *evalContext) bool {
	if p.sess == nil || (p.sess.SessionPolicy == "" && len(p.sess.PolicyARNs) == 0) {
		return true
	}
	docs := []string{}
	if p.sess.SessionPolicy != "" {
		docs = append(docs, p.sess.SessionPolicy)
	}
	for _, arn := range p.sess.PolicyARNs {
		if mp := p.account.Policies[arn]; mp != nil {
			docs = append(docs, mp.Doc)
		}
	}
	for _, d := range docs {
		if cachedPolicy(d, identityPolicy).evaluate(ctx, false).Allow != matchNone {
			return true
		}
	}
	return false
}

// baseKeys are the global condition keys of a request by p.
func (c *call) baseKeys(p *principal) map[string][]string {
	k := map[string][]string{
		"aws:currenttime":     {c.now.UTC().Format("2006-01-02T15:04:05Z")},
		"aws:epochtime":       {strconv.FormatInt(c.now.Unix(), 10)},
		"aws:securetransport": {"true"},
		"aws:requestedregion": {c.ep.region},
		"aws:viaawsservice":   {"false"},
	}
	if c.log.SourceIP != "" {
		k["aws:sourceip"] = []string{c.log.SourceIP}
	}
	if p == nil {
		return k
	}
	k["aws:principalaccount"] = []string{p.account.ID}
	k["aws:userid"] = []string{p.userID}
	switch p.kind {
	case "root":
		k["aws:principalarn"] = []string{p.arn}
		k["aws:principaltype"] = []string{"Account"}
	case "user":
		k["aws:principalarn"] = []string{p.arn}
		k["aws:principaltype"] = []string{"User"}
		k["aws:username"] = []string{p.user.Name}
	case "session":
		k["aws:principalarn"] = []string{p.roleARN}
		k["aws:principaltype"] = []string{"AssumedRole"}
		if p.sess.SourceIdentity != "" {
			k["aws:sourceidentity"] = []string{p.sess.SourceIdentity}
		}
		if p.role != nil {
			for _, t := range p.role.Tags {
				k["aws:principaltag/"+strings.ToLower(t.Key)] = []string{t.Value}
			}
		}
	}
	return k
}

// accessDenied builds AWS's message: "User: X is not authorized to
// perform: A on resource: R because no P policy allows the A action" or
// "... with an explicit deny in a P policy".
func accessDenied(callerARN, action, resource, reason string) string {
	msg := "User: " + callerARN + " is not authorized to perform: " + action + " on resource: " + resource
	if reason != "" {
		msg += " " + reason
	}
	return msg
}

func becauseNo(kind, action string) string {
	return "because no " + kind + " policy allows the " + action + " action"
}

func explicitDeny(kind string) string {
	return "with an explicit deny in " + article(kind) + " " + kind + " policy"
}

func article(kind string) string {
	if strings.HasPrefix(kind, "identity") {
		return "an"
	}
	return "a"
}
