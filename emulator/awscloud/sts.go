package awscloud

import (
	"crypto/rand"
	"encoding/base64"
	"regexp"
	"strings"
	"time"
)

var (
	sessionNameRE = regexp.MustCompile(`^[\w+=,.@-]*$`)
	externalIDRE  = regexp.MustCompile(`^[\w+=,.@:/-]*$`)
	sourceIDRE    = regexp.MustCompile(`^[\w+=,.@-]*$`)
	roleArnRE     = regexp.MustCompile(`^arn:(aws|aws-cn|aws-us-gov):iam::([0-9]{12}):role(/|/[\x21-\x7e]*/)([\w+=,.@-]{1,64})$`)
	policyCharsRE = regexp.MustCompile(`^[\x09\x0a\x0d\x20-\xff]*$`)
)

func init() {
	stsOps = map[string]*queryOp{
		"GetCallerIdentity": {handler: (*call).stsGetCallerIdentity},
		"AssumeRole": {params: []string{"RoleArn", "RoleSessionName", "DurationSeconds", "ExternalId", "Policy",
			"SourceIdentity", "MinimumSessionTokenSize"}, lists: []string{"PolicyArns"}, handler: (*call).stsAssumeRole},
		"AssumeRoleWithWebIdentity": {params: []string{"RoleArn", "RoleSessionName", "WebIdentityToken", "DurationSeconds",
			"Policy", "MinimumSessionTokenSize"}, lists: []string{"PolicyArns"}, handler: (*call).stsAssumeRoleWithWebIdentity, anonymous: true},
	}
}

type xmlCredentials struct {
	AccessKeyID     string `xml:"AccessKeyId"`
	SecretAccessKey string `xml:"SecretAccessKey"`
	SessionToken    string `xml:"SessionToken"`
	Expiration      string `xml:"Expiration"`
}

type xmlAssumedRoleUser struct {
	AssumedRoleID string `xml:"AssumedRoleId"`
	Arn           string `xml:"Arn"`
}

type assumeRoleResult struct {
	Credentials                 xmlCredentials     `xml:"Credentials"`
	AssumedRoleUser             xmlAssumedRoleUser `xml:"AssumedRoleUser"`
	PackedPolicySize            *int               `xml:"PackedPolicySize,omitempty"`
	SessionTokenSize            *int               `xml:"SessionTokenSize,omitempty"`
	SessionTokenUtilization     *int               `xml:"SessionTokenUtilization,omitempty"`
	SourceIdentity              string             `xml:"SourceIdentity,omitempty"`
	SubjectFromWebIdentityToken string             `xml:"SubjectFromWebIdentityToken,omitempty"`
	Provider                    string             `xml:"Provider,omitempty"`
	Audience                    string             `xml:"Audience,omitempty"`
}

func (c *call) stsGetCallerIdentity() (any, error) {
	p := c.caller
	return struct {
		UserID  string `xml:"UserId"`
		Account string `xml:"Account"`
		Arn     string `xml:"Arn"`
	}{p.userID, p.account.ID, p.arn}, nil
}

// sessionRequest is what AssumeRole and AssumeRoleWithWebIdentity share.
type sessionRequest struct {
	roleArn, sessionName string
	duration             int
	policy               string
	policyARNs           []string
	minTokenSize         int
}

func (c *call) readSessionRequest() (*sessionRequest, error) {
	var sr sessionRequest
	var err error
	if sr.roleArn, err = c.required("RoleArn", 20, 2048, nil); err != nil {
		return nil, err
	}
	if sr.sessionName, err = c.required("RoleSessionName", 2, 64, sessionNameRE); err != nil {
		return nil, err
	}
	d, ok, err := c.optionalInt("DurationSeconds", 900, 43200)
	if err != nil {
		return nil, err
	}
	sr.duration = 3600
	if ok {
		sr.duration = d
	}
	if sr.policy, _, err = c.optional("Policy", 1, 2048, policyCharsRE); err != nil {
		return nil, err
	}
	if sr.policyARNs, err = c.list("PolicyArns", "arn", 10); err != nil {
		return nil, err
	}
	if sr.minTokenSize, _, err = c.optionalInt("MinimumSessionTokenSize", 0, 4096); err != nil {
		return nil, err
	}
	return &sr, nil
}

// resolveRole finds the role named by an ARN (nil when it does not exist).
func (e *Emulator) resolveRoleLocked(arn string) (*account, *role) {
	m := roleArnRE.FindStringSubmatch(arn)
	if m == nil {
		return nil, nil
	}
	a := e.st.Accounts[m[2]]
	if a == nil || a.Partition != m[1] {
		return nil, nil
	}
	r := a.Roles[strings.ToLower(m[4])]
	if r == nil || r.Path != m[3] || r.Name != m[4] {
		return nil, nil
	}
	return a, r
}

func (c *call) stsAssumeRole() (any, error) {
	sr, err := c.readSessionRequest()
	if err != nil {
		return nil, err
	}
	extID, hasExt, err := c.optional("ExternalId", 2, 1224, externalIDRE)
	if err != nil {
		return nil, err
	}
	srcID, hasSrc, err := c.optional("SourceIdentity", 2, 64, sourceIDRE)
	if err != nil {
		return nil, err
	}
	if hasSrc && strings.HasPrefix(strings.ToLower(srcID), "aws:") {
		return nil, errf(400, "ValidationError", "SourceIdentity must not begin with the prefix 'aws:'.")
	}
	p := c.caller
	c.log.Resource = sr.roleArn
	if p.isRoot() {
		return nil, errf(403, "AccessDenied", "Roles may not be assumed by root accounts.")
	}
	denied := errf(403, "AccessDenied", "%s", accessDenied(p.arn, "sts:AssumeRole", sr.roleArn, ""))
	a, r := c.e.resolveRoleLocked(sr.roleArn)
	if r == nil || a.Partition != p.account.Partition {
		return nil, denied
	}
	c.log.ResourceAccount = a.ID
	keys := c.baseKeys(p)
	keys["sts:rolesessionname"] = []string{sr.sessionName}
	if hasExt {
		keys["sts:externalid"] = []string{extID}
	}
	if hasSrc {
		keys["sts:sourceidentity"] = []string{srcID}
	}
	for _, action := range []string{"sts:AssumeRole", "sts:SetSourceIdentity"} {
		if action == "sts:SetSourceIdentity" && !hasSrc {
			break
		}
		ctx := &evalContext{Action: action, Resource: roleARNOf(a, r), Keys: keys,
			MatchPrincipal: matcher(p, r.Trust.Bindings, "")}
		trust := cachedPolicy(r.Trust.Doc, trustPolicy).evaluate(ctx, true)
		idAllow, idDeny, _ := c.e.identityDecisionLocked(p, ctx)
		same := p.account.ID == a.ID
		ok := !trust.Deny && !idDeny
		switch trust.Allow {
		case matchDirect, matchSession:
			ok = ok && (same || idAllow)
		case matchAccount:
			ok = ok && idAllow
		default:
			ok = false
		}
		if !ok {
			if action != "sts:AssumeRole" {
				return nil, errf(403, "AccessDenied", "%s", accessDenied(p.arn, action, sr.roleArn, ""))
			}
			return nil, denied
		}
	}
	if p.kind == "session" && sr.duration > 3600 {
		return nil, errf(400, "ValidationError", "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining.")
	}
	se, res, err := c.issueSessionLocked(a, r, sr)
	if err != nil {
		return nil, err
	}
	if hasSrc {
		se.SourceIdentity, res.SourceIdentity = srcID, srcID
	} else if p.sess != nil && p.sess.SourceIdentity != "" {
		se.SourceIdentity = p.sess.SourceIdentity // persists through role chaining
	}
	return res, c.e.saveLocked()
}

// issueSessionLocked checks the session request against the role and
// creates the temporary credentials.
func (c *call) issueSessionLocked(a *account, r *role, sr *sessionRequest) (*session, *assumeRoleResult, error) {
	if sr.duration > r.MaxSessionDuration {
		return nil, nil, errf(400, "ValidationError", "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.")
	}
	if sr.policy != "" {
		if _, err := parsePolicy(sr.policy, identityPolicy); err != nil {
			return nil, nil, errf(400, "MalformedPolicyDocument", "%s", err.Error())
		}
	}
	for _, arn := range sr.policyARNs {
		if a.Policies[arn] == nil {
			return nil, nil, errf(400, "MalformedPolicyDocument", "Policy %s does not exist or is not attachable.", truncate(arn, 256))
		}
	}
	c.e.purgeSessionsLocked(c.now)
	if len(c.e.st.Sessions) >= 100_000 {
		return nil, nil, errf(400, "Throttling", "Rate exceeded")
	}
	tok := newSessionToken(sr.minTokenSize)
	se := &session{AccessKeyID: newUniqueID("ASIA"), Secret: newSecretKey(), Token: tok, Account: a.ID,
		RoleName: r.Name, RoleID: r.ID, RoleARN: roleARNOf(a, r), SessionName: sr.sessionName,
		Expires:       c.now.Add(time.Duration(sr.duration) * time.Second).Truncate(time.Second),
		SessionPolicy: sr.policy, PolicyARNs: sr.policyARNs}
	c.e.st.Sessions[se.AccessKeyID] = se
	r.LastUsed, r.LastUsedRegion = c.now, c.ep.region
	res := &assumeRoleResult{
		Credentials:     xmlCredentials{se.AccessKeyID, se.Secret, se.Token, isoTime(se.Expires)},
		AssumedRoleUser: xmlAssumedRoleUser{r.ID + ":" + se.SessionName, assumedRoleARN(a, r.Name, se.SessionName)},
	}
	if sr.policy != "" || len(sr.policyARNs) > 0 {
		n := min(100, (len(sr.policy)+len(sr.policyARNs)*64)*100/2048+1)
		res.PackedPolicySize = &n
	}
	if sr.minTokenSize > 0 {
		size, util := len(tok), len(tok)*100/4096
		res.SessionTokenSize, res.SessionTokenUtilization = &size, &util
	}
	return se, res, nil
}

// purgeSessionsLocked drops sessions that expired more than a day ago
// (until then their keys still report "expired" rather than "invalid").
func (e *Emulator) purgeSessionsLocked(now time.Time) {
	for id, s := range e.st.Sessions {
		if now.Sub(s.Expires) > 24*time.Hour {
			delete(e.st.Sessions, id)
		}
	}
}

// newSessionToken returns an opaque token, padded to minSize bytes.
func newSessionToken(minSize int) string {
	b := make([]byte, 240)
	rand.Read(b)
	t := "IQoJb3JpZ2luX2VtdWxhdG9y" + base64.StdEncoding.EncodeToString(b)
	for len(t) < minSize {
		t += "A"
	}
	return t
}

func (c *call) stsAssumeRoleWithWebIdentity() (any, error) {
	sr, err := c.readSessionRequest()
	if err != nil {
		return nil, err
	}
	tok, err := c.required("WebIdentityToken", 4, 20000, nil)
	if err != nil {
		return nil, err
	}
	c.log.Resource = sr.roleArn
	a, r := c.e.resolveRoleLocked(sr.roleArn)
	if r == nil || a.Partition != c.ep.part.ID {
		return nil, errf(403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity")
	}
	c.log.ResourceAccount = a.ID
	claims, err := parseJWT(tok)
	if err != nil {
		return nil, errf(400, "InvalidIdentityToken", "The web identity token could not be parsed: %s", err.Error())
	}
	iss := strings.TrimSuffix(claims.str("iss"), "/")
	provURL := strings.TrimPrefix(iss, "https://")
	provARN := "arn:" + a.Partition + ":iam::" + a.ID + ":oidc-provider/" + provURL
	prov := a.OIDC[provARN]
	if iss == "" || prov == nil {
		return nil, errf(400, "InvalidIdentityToken", "No OpenIDConnect provider found in your account for %s", truncate(iss, 256))
	}
	jwks, ok := c.e.st.Issuers[iss]
	if !ok {
		return nil, errf(400, "InvalidIdentityToken", "Couldn't retrieve verification key from your identity provider,  please reference AssumeRoleWithWebIdentity documentation for requirements")
	}
	set, err := parseJWKS([]byte(jwks))
	if err != nil || claims.verify(set) != nil {
		return nil, errf(400, "InvalidIdentityToken", "The web identity token's signature could not be verified with the issuer's keys.")
	}
	exp, hasExp := claims.num("exp")
	if !hasExp {
		return nil, errf(400, "InvalidIdentityToken", "The web identity token has no exp claim.")
	}
	if exp := time.Unix(int64(exp), 0); !c.now.Before(exp) {
		return nil, errf(400, "ExpiredTokenException", "Token expired: current date/time %d must be before the expiration date/time %d", c.now.Unix(), exp.Unix())
	}
	if nbf, ok := claims.num("nbf"); ok && c.now.Add(5*time.Minute).Before(time.Unix(int64(nbf), 0)) {
		return nil, errf(400, "InvalidIdentityToken", "The web identity token is not yet valid (nbf).")
	}
	var aud string
	for _, x := range claims.audiences() {
		if contains(prov.ClientIDs, x) {
			aud = x
			break
		}
	}
	if aud == "" {
		return nil, errf(400, "InvalidIdentityToken", "Incorrect token audience")
	}
	sub := claims.str("sub")
	keys := c.baseKeys(nil)
	keys[strings.ToLower(provURL)+":aud"] = []string{aud}
	keys[strings.ToLower(provURL)+":sub"] = []string{sub}
	keys["sts:rolesessionname"] = []string{sr.sessionName}
	ctx := &evalContext{Action: "sts:AssumeRoleWithWebIdentity", Resource: roleARNOf(a, r), Keys: keys,
		MatchPrincipal: matcher(nil, r.Trust.Bindings, provARN)}
	d := cachedPolicy(r.Trust.Doc, trustPolicy).evaluate(ctx, true)
	if d.Deny || d.Allow == matchNone {
		return nil, errf(403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity")
	}
	se, res, err := c.issueSessionLocked(a, r, sr)
	if err != nil {
		return nil, err
	}
	se.WebIdentity, se.Claims = provARN, map[string]string{"aud": aud, "sub": sub}
	res.SubjectFromWebIdentityToken, res.Provider, res.Audience = sub, provURL, aud
	c.log.Principal, c.log.Account = assumedRoleARN(a, r.Name, sr.sessionName), a.ID
	return res, c.e.saveLocked()
}
