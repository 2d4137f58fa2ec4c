package gcpcloud

import (
	"crypto"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"strings"
	"time"
)

// accessToken is the content of the emulator's opaque access tokens
// ("ya29.c.<payload>.<mac>"): self-contained and MACed with a persisted
// secret, so they survive restarts without a token table.
type accessToken struct {
	Kind  string `json:"k"` // "fed", "sa", "user"
	Exp   int64  `json:"exp"`
	Iat   int64  `json:"iat"`
	Scope string `json:"scp,omitempty"`
	Jti   string `json:"jti"`
	// federated
	Number   string            `json:"n,omitempty"`
	Pool     string            `json:"pool,omitempty"`
	Provider string            `json:"prov,omitempty"`
	Subject  string            `json:"sub,omitempty"`
	Groups   []string          `json:"grp,omitempty"`
	Attrs    map[string]string `json:"attr,omitempty"`
	// service account or user
	Email string `json:"em,omitempty"`
}

const tokenPrefix = "ya29.c."

func (e *Emulator) mintToken(t accessToken) string {
	t.Jti = randHex(8)
	pb, _ := json.Marshal(t)
	p := b64url.EncodeToString(pb)
	e.mu.RLock()
	mac := hmac.New(sha256.New, e.st.TokenSecret)
	e.mu.RUnlock()
	mac.Write([]byte(p))
	return tokenPrefix + p + "." + b64url.EncodeToString(mac.Sum(nil))
}

func (e *Emulator) parseToken(s string) (*accessToken, bool) {
	rest, ok := strings.CutPrefix(s, tokenPrefix)
	if !ok || len(s) > 16<<10 {
		return nil, false
	}
	p, m, ok := strings.Cut(rest, ".")
	if !ok {
		return nil, false
	}
	got, err := b64url.DecodeString(m)
	if err != nil {
		return nil, false
	}
	e.mu.RLock()
	mac := hmac.New(sha256.New, e.st.TokenSecret)
	e.mu.RUnlock()
	mac.Write([]byte(p))
	if !hmac.Equal(got, mac.Sum(nil)) {
		return nil, false
	}
	pb, err := b64url.DecodeString(p)
	if err != nil {
		return nil, false
	}
	var t accessToken
	if json.Unmarshal(pb, &t) != nil {
		return nil, false
	}
	return &t, true
}

// caller is an authenticated principal.
type caller struct {
	Kind    string   // "fed", "sa", "user"
	Members []string // the allow-policy members that designate it
	Scopes  []string
	Email   string
}

// principal is the caller's primary member (for logs).
func (c *caller) principal() string {
	if len(c.Members) == 0 {
		return ""
	}
	return c.Members[0]
}

const (
	scopeCloudPlatform = "https://www.googleapis.com/auth/cloud-platform"
	scopeCloudKMS      = "https://www.googleapis.com/auth/cloudkms"
	scopeIAM           = "https://www.googleapis.com/auth/iam"
)

func (c *caller) hasScope(accepted ...string) bool {
	for _, s := range c.Scopes {
		for _, a := range accepted {
			if s == a {
				return true
			}
		}
	}
	return false
}

const (
	msgMissingCreds = "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
	msgInvalidCreds = "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
)

func unauthenticated(msg, reason string) *apiError {
	return &apiError{HTTP: http.StatusUnauthorized, Status: "UNAUTHENTICATED", Message: msg,
		Details: []any{map[string]any{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": "googleapis.com"}}}
}

// authenticate resolves the bearer token of r. audience is the service's
// self-signed-JWT audience ("https://cloudkms.googleapis.com/").
func (e *Emulator) authenticate(w http.ResponseWriter, r *http.Request, audience string, scopes ...string) (*caller, *apiError) {
	tok, present := bearer(r)
	if !present {
		return nil, unauthenticated(msgMissingCreds, "CREDENTIALS_MISSING")
	}
	now := e.clock.Now()
	var c *caller
	if t, ok := e.parseToken(tok); ok {
		if now.Unix() >= t.Exp {
			return nil, unauthenticated(msgInvalidCreds, "ACCESS_TOKEN_EXPIRED")
		}
		var err *apiError
		if c, err = e.callerOf(t); err != nil {
			return nil, err
		}
	} else if strings.Count(tok, ".") == 2 && !strings.HasPrefix(tok, "ya29.") {
		var err *apiError
		if c, err = e.selfSignedJWT(tok, audience, now); err != nil {
			return nil, err
		}
	} else {
		return nil, unauthenticated(msgInvalidCreds, "ACCESS_TOKEN_TYPE_UNSUPPORTED")
	}
	if len(scopes) > 0 && !c.hasScope(scopes...) {
		return nil, &apiError{HTTP: http.StatusForbidden, Status: "PERMISSION_DENIED", Message: "Request had insufficient authentication scopes.",
			Details: []any{map[string]any{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "ACCESS_TOKEN_SCOPE_INSUFFICIENT", "domain": "googleapis.com"}}}
	}
	if rw, ok := w.(*respWriter); ok {
		rw.principal = c.principal()
	}
	return c, nil
}

// callerOf turns a valid token into a caller, re-checking the state of
// what issued it: a disabled or deleted pool stops its tokens (they work
// again once the pool is re-enabled or undeleted); a disabled or deleted
// service account stops its tokens.
func (e *Emulator) callerOf(t *accessToken) (*caller, *apiError) {
	c := &caller{Kind: t.Kind, Scopes: strings.Fields(t.Scope), Email: t.Email}
	e.mu.Lock()
	defer e.mu.Unlock()
	switch t.Kind {
	case "fed":
		p := e.projectLocked(t.Number)
		var pl *pool
		if p != nil {
			pl = e.poolLocked(p, t.Pool)
		}
		if pl == nil || pl.Disabled || !pl.Deleted.IsZero() {
			return nil, unauthenticated(msgInvalidCreds, "ACCESS_TOKEN_EXPIRED")
		}
		pre := "principalSet:" + poolPrefix(t.Number, t.Pool)
		c.Members = append(c.Members, principalMember(t.Number, t.Pool, t.Subject), pre+"/*")
		for _, g := range t.Groups {
			c.Members = append(c.Members, pre+"/group/"+g)
		}
		for _, k := range sortedKeys(t.Attrs) {
			c.Members = append(c.Members, pre+"/attribute."+k+"/"+t.Attrs[k])
		}
	case "sa":
		sa := e.serviceAccountLocked(t.Email)
		if sa == nil || sa.Disabled {
			return nil, unauthenticated(msgInvalidCreds, "ACCOUNT_STATE_INVALID")
		}
		c.Members = []string{"serviceAccount:" + t.Email}
	case "user":
		c.Members = []string{"user:" + t.Email}
	default:
		return nil, unauthenticated(msgInvalidCreds, "ACCESS_TOKEN_TYPE_UNSUPPORTED")
	}
	return c, nil
}

// selfSignedJWT accepts a service account's self-signed JWT used
// directly as a bearer token (what client libraries do with
// UseSelfSignedJWT): iss = sub = the account's email, kid = one of its
// key ids, aud = the service's URL (or a scope claim), at most one hour.
func (e *Emulator) selfSignedJWT(tok, audience string, now time.Time) (*caller, *apiError) {
	bad := unauthenticated(msgInvalidCreds, "ACCESS_TOKEN_TYPE_UNSUPPORTED")
	t, err := parseJWT(tok)
	if err != nil {
		return nil, bad
	}
	iss, _ := claimString(t.Claims, "iss")
	sub, _ := claimString(t.Claims, "sub")
	if iss == "" || iss != sub {
		return nil, bad
	}
	e.mu.RLock()
	sa := e.serviceAccountLocked(iss)
	var keys []publicKey
	if sa != nil && !sa.Disabled {
		keys = saPublicKeys(sa)
	}
	e.mu.RUnlock()
	if len(keys) == 0 || verifyJWT(t, keys) != nil {
		return nil, bad
	}
	iat, ok1 := claimTime(t.Claims, "iat")
	exp, ok2 := claimTime(t.Claims, "exp")
	if !ok1 || !ok2 || exp <= now.Unix() || iat > now.Unix()+300 || exp-iat > 3600 {
		return nil, unauthenticated(msgInvalidCreds, "ACCESS_TOKEN_EXPIRED")
	}
	c := &caller{Kind: "sa", Email: sa.Email, Members: []string{"serviceAccount:" + sa.Email}}
	if scope, ok := claimString(t.Claims, "scope"); ok {
		c.Scopes = strings.Fields(scope)
	} else {
		aud := claimAudiences(t.Claims)
		if len(aud) != 1 || aud[0] != audience {
			return nil, bad
		}
		c.Scopes = []string{scopeCloudPlatform}
	}
	return c, nil
}

func saPublicKeys(sa *serviceAccount) []publicKey {
	var out []publicKey
	for _, k := range sa.Keys {
		pk, err := x509.ParsePKCS8PrivateKey(k.KeyDER)
		if err != nil {
			continue
		}
		if s, ok := pk.(crypto.Signer); ok {
			out = append(out, publicKey{kid: k.ID, key: s.Public()})
		}
	}
	return out
}

// ---- roles ----

// rolePerms lists the permissions of the predefined roles the emulator
// knows. "*" (roles/owner) is every permission.
var rolePerms = map[string][]string{
	"roles/owner": {"*"},
	"roles/cloudkms.admin": {
		"cloudkms.keyRings.create", "cloudkms.keyRings.get", "cloudkms.keyRings.list", "cloudkms.keyRings.getIamPolicy", "cloudkms.keyRings.setIamPolicy",
		"cloudkms.cryptoKeys.create", "cloudkms.cryptoKeys.get", "cloudkms.cryptoKeys.list", "cloudkms.cryptoKeys.update",
		"cloudkms.cryptoKeys.getIamPolicy", "cloudkms.cryptoKeys.setIamPolicy",
		"cloudkms.cryptoKeyVersions.create", "cloudkms.cryptoKeyVersions.get", "cloudkms.cryptoKeyVersions.list",
		"cloudkms.cryptoKeyVersions.update", "cloudkms.cryptoKeyVersions.destroy", "cloudkms.cryptoKeyVersions.restore",
		"cloudkms.locations.get", "cloudkms.locations.list",
	},
	"roles/cloudkms.viewer": {
		"cloudkms.keyRings.get", "cloudkms.keyRings.list", "cloudkms.cryptoKeys.get", "cloudkms.cryptoKeys.list",
		"cloudkms.cryptoKeyVersions.get", "cloudkms.cryptoKeyVersions.list", "cloudkms.locations.get", "cloudkms.locations.list",
	},
	"roles/cloudkms.cryptoKeyEncrypterDecrypter": {"cloudkms.cryptoKeyVersions.useToEncrypt", "cloudkms.cryptoKeyVersions.useToDecrypt"},
	"roles/cloudkms.cryptoKeyEncrypter":          {"cloudkms.cryptoKeyVersions.useToEncrypt"},
	"roles/cloudkms.cryptoKeyDecrypter":          {"cloudkms.cryptoKeyVersions.useToDecrypt"},
	"roles/iam.workloadIdentityPoolAdmin": {
		"iam.workloadIdentityPools.create", "iam.workloadIdentityPools.get", "iam.workloadIdentityPools.list",
		"iam.workloadIdentityPools.update", "iam.workloadIdentityPools.delete", "iam.workloadIdentityPools.undelete",
		"iam.workloadIdentityPoolProviders.create", "iam.workloadIdentityPoolProviders.get", "iam.workloadIdentityPoolProviders.list",
		"iam.workloadIdentityPoolProviders.update", "iam.workloadIdentityPoolProviders.delete", "iam.workloadIdentityPoolProviders.undelete",
	},
	"roles/iam.workloadIdentityPoolViewer": {
		"iam.workloadIdentityPools.get", "iam.workloadIdentityPools.list",
		"iam.workloadIdentityPoolProviders.get", "iam.workloadIdentityPoolProviders.list",
	},
	"roles/iam.serviceAccountAdmin": {
		"iam.serviceAccounts.create", "iam.serviceAccounts.get", "iam.serviceAccounts.list", "iam.serviceAccounts.update",
		"iam.serviceAccounts.delete", "iam.serviceAccounts.getIamPolicy", "iam.serviceAccounts.setIamPolicy",
	},
	"roles/iam.serviceAccountKeyAdmin": {
		"iam.serviceAccountKeys.create", "iam.serviceAccountKeys.get", "iam.serviceAccountKeys.list", "iam.serviceAccountKeys.delete",
	},
	"roles/iam.serviceAccountOpenIdTokenCreator": {"iam.serviceAccounts.getOpenIdToken"},
	"roles/iam.serviceAccountTokenCreator": {
		"iam.serviceAccounts.getAccessToken", "iam.serviceAccounts.getOpenIdToken", "iam.serviceAccounts.signBlob", "iam.serviceAccounts.signJwt",
	},
}

const roleOpenIDTokenCreator = "roles/iam.serviceAccountOpenIdTokenCreator"

// grantableOn says which roles a resource's own policy may hold.
func grantableOn(kind, role string) bool {
	if _, ok := rolePerms[role]; !ok {
		return false
	}
	switch kind {
	case "kms":
		return strings.HasPrefix(role, "roles/cloudkms.")
	case "serviceAccount":
		return strings.HasPrefix(role, "roles/iam.serviceAccount")
	}
	return true // project
}

func roleHas(role, perm string) bool {
	for _, p := range rolePerms[role] {
		if p == "*" || p == perm {
			return true
		}
	}
	return false
}

// allowedLocked reports whether c holds perm through any of the policies
// (a resource hierarchy, project first). Callers hold e.mu.
func (e *Emulator) allowedLocked(c *caller, perm string, policies ...*policy) bool {
	now := e.clock.Now()
	lag := time.Duration(e.st.Settings.IAMPropagationSeconds) * time.Second
	for _, p := range policies {
		for _, b := range p.effective(now, lag) {
			if !roleHas(b.Role, perm) {
				continue
			}
			for _, m := range b.Members {
				for _, cm := range c.Members {
					if strings.EqualFold(m, cm) && (strings.HasPrefix(m, "user:") || strings.HasPrefix(m, "serviceAccount:")) || m == cm {
						return true
					}
				}
			}
		}
	}
	return false
}

// validateBindings checks a policy's bindings for a resource kind.
func validateBindings(kind string, bs []binding) *apiError {
	if len(bs) > 1500 {
		return invalidArg("The number of bindings in the policy exceeds the limit.")
	}
	total := 0
	for _, b := range bs {
		if !grantableOn(kind, b.Role) {
			return invalidArg("Role %s is not supported for this resource.", b.Role)
		}
		if len(b.Members) == 0 {
			return invalidArg("Policy binding for role %s has no members.", b.Role)
		}
		for _, m := range b.Members {
			if _, err := parseMember(m); err != nil {
				return invalidArg("Invalid principal: %s (%v).", m, err)
			}
			total++
		}
	}
	if total > 1500 {
		return invalidArg("The number of members in the policy exceeds the limit of 1500.")
	}
	return nil
}

// policyJSON renders a policy as Google returns it.
func policyJSON(p *policy) map[string]any {
	out := map[string]any{"version": 1, "etag": p.Etag}
	if p.Version != 0 {
		out["version"] = p.Version
	}
	if len(p.Bindings) > 0 {
		bs := make([]any, 0, len(p.Bindings))
		for _, b := range p.Bindings {
			ms := append([]string(nil), b.Members...)
			sort.Strings(ms)
			bs = append(bs, map[string]any{"role": b.Role, "members": ms})
		}
		out["bindings"] = bs
	}
	return out
}

// policyIn is a policy in a setIamPolicy body.
type policyIn struct {
	Version    int               `json:"version"`
	Bindings   []bindingIn       `json:"bindings"`
	Etag       string            `json:"etag"`
	AuditCfg   []json.RawMessage `json:"auditConfigs"`
	UpdateMask string            `json:"-"`
}

type bindingIn struct {
	Role      string          `json:"role"`
	Members   []string        `json:"members"`
	Condition json.RawMessage `json:"condition"`
}

// setPolicy applies a setIamPolicy body to p.
func setPolicy(p *policy, kind string, in *policyIn, now time.Time) *apiError {
	if in.Version != 0 && in.Version != 1 && in.Version != 3 {
		return invalidArg("Invalid policy version %d: must be 0, 1 or 3.", in.Version)
	}
	if len(in.AuditCfg) > 0 {
		return invalidArg("Audit configs are not supported for this resource.")
	}
	if in.Etag != "" && in.Etag != p.Etag {
		return &apiError{HTTP: http.StatusConflict, Status: "ABORTED",
			Message: "There were concurrent policy changes. Please retry the whole read-modify-write with exponential backoff."}
	}
	var bs []binding
	idx := map[string]int{}
	for _, b := range in.Bindings {
		if len(b.Condition) > 0 && string(b.Condition) != "null" {
			return invalidArg("IAM conditions are not supported by the emulator (binding for %s).", b.Role)
		}
		if i, ok := idx[b.Role]; ok {
			bs[i].Members = append(bs[i].Members, b.Members...)
			continue
		}
		idx[b.Role] = len(bs)
		bs = append(bs, binding{Role: b.Role, Members: append([]string(nil), b.Members...)})
	}
	for i := range bs {
		bs[i].Members = dedupe(bs[i].Members)
	}
	if err := validateBindings(kind, bs); err != nil {
		return err
	}
	v := in.Version
	if v == 3 {
		v = 1 // no conditions, so the stored policy is a version-1 policy
	}
	p.replace(bs, v, now)
	return nil
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

var errNoProject = errors.New("project not found")
