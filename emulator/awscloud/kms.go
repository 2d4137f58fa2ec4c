package awscloud

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"hash"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/ekm-dev/ekm/emulator/emukit"
)

// kmsOp is one KMS operation: its accepted members, the modelled members
// it refuses (not emulated), and its handler.
type kmsOp struct {
	members     []string
	unsupported []string
	handler     func(c *call) (any, error)
}

var kmsOps map[string]*kmsOp

func init() {
	kmsOps = map[string]*kmsOp{
		"CreateKey": {members: []string{"Policy", "Description", "KeyUsage", "KeySpec", "CustomerMasterKeySpec", "Origin", "MultiRegion", "Tags", "BypassPolicyLockoutSafetyCheck"},
			unsupported: []string{"CustomKeyStoreId", "XksKeyId"}, handler: (*call).kmsCreateKey},
		"DescribeKey": {members: []string{"KeyId", "GrantTokens"}, handler: (*call).kmsDescribeKey},
		"ListKeys":    {members: []string{"Limit", "Marker"}, unsupported: []string{"ResourceOwners"}, handler: (*call).kmsListKeys},
		"CreateAlias": {members: []string{"AliasName", "TargetKeyId"}, handler: (*call).kmsCreateAlias},
		"UpdateAlias": {members: []string{"AliasName", "TargetKeyId"}, handler: (*call).kmsUpdateAlias},
		"DeleteAlias": {members: []string{"AliasName"}, handler: (*call).kmsDeleteAlias},
		"ListAliases": {members: []string{"KeyId", "Limit", "Marker"}, handler: (*call).kmsListAliases},
		"Encrypt":     {members: []string{"KeyId", "Plaintext", "EncryptionContext", "GrantTokens", "EncryptionAlgorithm", "DryRun"}, handler: (*call).kmsEncrypt},
		"Decrypt": {members: []string{"CiphertextBlob", "KeyId", "EncryptionContext", "GrantTokens", "EncryptionAlgorithm", "DryRun"},
			unsupported: []string{"Recipient", "DryRunModifiers"}, handler: (*call).kmsDecrypt},
		"GenerateDataKey": {members: []string{"KeyId", "EncryptionContext", "NumberOfBytes", "KeySpec", "GrantTokens", "DryRun"},
			unsupported: []string{"Recipient"}, handler: (*call).kmsGenerateDataKey},
		"GenerateDataKeyWithoutPlaintext": {members: []string{"KeyId", "EncryptionContext", "NumberOfBytes", "KeySpec", "GrantTokens", "DryRun"}, handler: (*call).kmsGenerateDataKey},
		"ReEncrypt": {members: []string{"CiphertextBlob", "SourceEncryptionContext", "SourceKeyId", "DestinationKeyId", "DestinationEncryptionContext",
			"SourceEncryptionAlgorithm", "DestinationEncryptionAlgorithm", "GrantTokens", "DryRun"}, unsupported: []string{"DryRunModifiers"}, handler: (*call).kmsReEncrypt},
		"EnableKey":            {members: []string{"KeyId"}, handler: (*call).kmsEnableDisable},
		"DisableKey":           {members: []string{"KeyId"}, handler: (*call).kmsEnableDisable},
		"ScheduleKeyDeletion":  {members: []string{"KeyId", "PendingWindowInDays"}, handler: (*call).kmsScheduleKeyDeletion},
		"CancelKeyDeletion":    {members: []string{"KeyId"}, handler: (*call).kmsCancelKeyDeletion},
		"GetKeyPolicy":         {members: []string{"KeyId", "PolicyName"}, handler: (*call).kmsGetKeyPolicy},
		"PutKeyPolicy":         {members: []string{"KeyId", "Policy", "PolicyName", "BypassPolicyLockoutSafetyCheck"}, handler: (*call).kmsPutKeyPolicy},
		"CreateGrant":          {members: []string{"KeyId", "GranteePrincipal", "RetiringPrincipal", "Operations", "Constraints", "GrantTokens", "Name", "DryRun"}, unsupported: []string{"GranteeServicePrincipal", "RetiringServicePrincipal"}, handler: (*call).kmsCreateGrant},
		"RevokeGrant":          {members: []string{"KeyId", "GrantId", "DryRun"}, handler: (*call).kmsRevokeGrant},
		"RetireGrant":          {members: []string{"GrantToken", "KeyId", "GrantId", "DryRun"}, handler: (*call).kmsRetireGrant},
		"ListGrants":           {members: []string{"KeyId", "Limit", "Marker", "GrantId", "GranteePrincipal"}, unsupported: []string{"GranteeServicePrincipal"}, handler: (*call).kmsListGrants},
		"EnableKeyRotation":    {members: []string{"KeyId", "RotationPeriodInDays"}, handler: (*call).kmsEnableKeyRotation},
		"DisableKeyRotation":   {members: []string{"KeyId"}, handler: (*call).kmsDisableKeyRotation},
		"GetKeyRotationStatus": {members: []string{"KeyId"}, handler: (*call).kmsGetKeyRotationStatus},
		"RotateKeyOnDemand":    {members: []string{"KeyId"}, handler: (*call).kmsRotateKeyOnDemand},
		"GetPublicKey":         {members: []string{"KeyId", "GrantTokens"}, handler: (*call).kmsGetPublicKey},
		"GenerateRandom":       {members: []string{"NumberOfBytes"}, unsupported: []string{"CustomKeyStoreId", "Recipient"}, handler: (*call).kmsGenerateRandom},
	}
}

// symmetricOps share the "cryptographic operations (symmetric)" quota.
var symmetricOps = map[string]bool{"Encrypt": true, "Decrypt": true, "GenerateDataKey": true,
	"GenerateDataKeyWithoutPlaintext": true, "ReEncrypt": true, "GenerateRandom": true}

func (c *call) serveKMS() error {
	if c.r.Method != http.MethodPost || c.r.URL.Path != "/" {
		return errf(404, "UnknownOperationException", "")
	}
	op, ok := strings.CutPrefix(c.r.Header.Get("X-Amz-Target"), "TrentService.")
	spec := kmsOps[op]
	if !ok || spec == nil {
		return errf(400, "UnknownOperationException", "")
	}
	c.op = op
	if !c.begin() {
		return nil
	}
	body := bytes.TrimSpace(c.body)
	if len(body) == 0 {
		body = []byte("{}")
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil || m == nil {
		return errf(400, "SerializationException", "Start of structure or map found where not expected.")
	}
	for k, v := range m {
		if string(v) == "null" {
			delete(m, k)
			continue
		}
		if contains(spec.unsupported, k) {
			return errf(400, "UnsupportedOperationException", "The AWS emulator does not support the %s parameter of %s.", k, op)
		}
		if !contains(spec.members, k) {
			return errf(400, "SerializationException", "Unrecognized field %q in %s.", truncate(k, 64), op)
		}
	}
	c.json = m
	c.e.mu.Lock()
	res, err := func() (any, error) {
		defer c.e.mu.Unlock()
		if err := c.authenticateLocked(); err != nil {
			return nil, err
		}
		if !symmetricOps[op] {
			if err := c.chargeQuota(op); err != nil {
				return nil, err
			}
		}
		return spec.handler(c)
	}()
	if err != nil {
		return err
	}
	if res == nil {
		res = struct{}{}
	}
	emukit.WriteJSONType(c.w, http.StatusOK, "application/x-amz-json-1.1", res)
	return nil
}

// chargeQuota applies the caller account's per-second quota.
func (c *call) chargeQuota(name string) error {
	q := c.e.st.Settings.Quotas
	if q.Disabled {
		return nil
	}
	var limit int
	switch name {
	case "symmetric":
		limit = q.Symmetric
		if n, ok := q.SymmetricByRegion[c.ep.region]; ok {
			limit = n
		}
	case "rsa":
		limit = q.RSA
	default:
		var ok bool
		if limit, ok = q.Operations[name]; !ok {
			return nil
		}
	}
	if !c.e.quota.take(c.caller.account.ID+" "+c.ep.region+" "+name, limit, c.now) {
		return errf(400, "ThrottlingException", "You have exceeded the rate at which you may call KMS. Reduce the frequency of your calls.")
	}
	return nil
}

// ---- member decoding ----

func (c *call) member(name string, v any) error {
	raw, ok := c.json[name]
	if !ok {
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return errf(400, "SerializationException", "Invalid value for %s.", name)
	}
	return nil
}

func (c *call) has(name string) bool { _, ok := c.json[name]; return ok }

func vErr(format string, args ...any) *apiError {
	return errf(400, "ValidationException", "1 validation error detected: "+format, args...)
}

func (c *call) strMember(name string, required bool, minLen, maxLen int, re *regexp.Regexp) (string, error) {
	var s string
	if !c.has(name) {
		if required {
			return "", vErr("Value null at '%s' failed to satisfy constraint: Member must not be null", lowerFirst(name))
		}
		return "", nil
	}
	if err := c.member(name, &s); err != nil {
		return "", err
	}
	n := len([]rune(s))
	switch {
	case n < minLen:
		return "", vErr("Value '%s' at '%s' failed to satisfy constraint: Member must have length greater than or equal to %d", truncate(s, 128), lowerFirst(name), minLen)
	case n > maxLen:
		return "", vErr("Value at '%s' failed to satisfy constraint: Member must have length less than or equal to %d", lowerFirst(name), maxLen)
	case re != nil && !re.MatchString(s):
		return "", vErr("Value '%s' at '%s' failed to satisfy constraint: Member must satisfy regular expression pattern: %s", truncate(s, 128), lowerFirst(name), strings.Trim(re.String(), "^$"))
	}
	return s, nil
}

func (c *call) blobMember(name string, required bool, maxLen int) ([]byte, error) {
	if !c.has(name) {
		if required {
			return nil, vErr("Value null at '%s' failed to satisfy constraint: Member must not be null", lowerFirst(name))
		}
		return nil, nil
	}
	var b []byte
	if err := c.member(name, &b); err != nil {
		return nil, err
	}
	if len(b) < 1 {
		return nil, vErr("Value at '%s' failed to satisfy constraint: Member must have length greater than or equal to 1", lowerFirst(name))
	}
	if len(b) > maxLen {
		return nil, vErr("Value at '%s' failed to satisfy constraint: Member must have length less than or equal to %d", lowerFirst(name), maxLen)
	}
	return b, nil
}

func (c *call) intMember(name string, lo, hi int) (int, bool, error) {
	if !c.has(name) {
		return 0, false, nil
	}
	var n int
	if err := c.member(name, &n); err != nil {
		return 0, false, err
	}
	if n < lo {
		return 0, false, vErr("Value '%d' at '%s' failed to satisfy constraint: Member must have value greater than or equal to %d", n, lowerFirst(name), lo)
	}
	if n > hi {
		return 0, false, vErr("Value '%d' at '%s' failed to satisfy constraint: Member must have value less than or equal to %d", n, lowerFirst(name), hi)
	}
	return n, true, nil
}

func (c *call) boolMember(name string) (bool, error) {
	var b bool
	return b, c.member(name, &b)
}

func (c *call) contextMember(name string) (map[string]string, error) {
	var ec map[string]string
	if err := c.member(name, &ec); err != nil {
		return nil, err
	}
	for k := range ec {
		if k == "" {
			return nil, vErr("Value at '%s' failed to satisfy constraint: Map keys must have length greater than or equal to 1", lowerFirst(name))
		}
	}
	if len(encodeContext(ec)) > 8192 {
		return nil, vErr("Value at '%s' failed to satisfy constraint: the encryption context is larger than 8192 bytes", lowerFirst(name))
	}
	return ec, nil
}

// grantTokens checks GrantTokens: each must name an existing grant.
func (c *call) grantTokens() error {
	var toks []string
	if err := c.member("GrantTokens", &toks); err != nil {
		return err
	}
	if len(toks) > 10 {
		return vErr("Value at 'grantTokens' failed to satisfy constraint: Member must have length less than or equal to 10")
	}
	for _, t := range toks {
		if t == "" || len(t) > 8192 || c.e.grantByTokenLocked(t) == nil {
			return errf(400, "InvalidGrantTokenException", "Invalid grant token")
		}
	}
	return nil
}

func (e *Emulator) grantByTokenLocked(tok string) *grant {
	for _, a := range e.st.Accounts {
		for _, k := range a.Keys {
			for _, g := range k.Grants {
				if g.Token == tok {
					return g
				}
			}
		}
	}
	return nil
}

// ---- key resolution ----

var (
	keyIDRE    = regexp.MustCompile(`^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32})$`)
	kmsArnRE   = regexp.MustCompile(`^arn:(aws|aws-cn|aws-us-gov):kms:([a-z0-9-]+):([0-9]{12}):(key|alias)/(.+)$`)
	aliasRE    = regexp.MustCompile(`^alias/[a-zA-Z0-9:/_-]+$`)
	grantNameR = regexp.MustCompile(`^[a-zA-Z0-9:/_-]+$`)
)

// keyRef is a resolved KeyId.
type keyRef struct {
	acct  *account
	key   *kmsKey
	alias string // alias name when the caller used one
}

// resolveKeyLocked resolves a KeyId (key id, key ARN, alias name, alias
// ARN) in the caller's account and the request's region; ARNs may name
// another account.
func (c *call) resolveKeyLocked(id string, allowAlias bool) (*keyRef, error) {
	p := c.caller
	acct, region, kind, name := p.account.ID, c.ep.region, "", ""
	if m := kmsArnRE.FindStringSubmatch(id); m != nil {
		if m[1] != c.ep.part.ID {
			return nil, errf(400, "NotFoundException", "Invalid arn %s", truncate(id, 256))
		}
		if m[2] != c.ep.region {
			return nil, errf(400, "NotFoundException", "Invalid arn %s", m[2])
		}
		acct, kind, name = m[3], m[4], m[5]
		if kind == "alias" {
			name = "alias/" + name
		}
	} else if strings.HasPrefix(id, "alias/") {
		kind, name = "alias", id
	} else if keyIDRE.MatchString(id) {
		kind, name = "key", id
	} else {
		return nil, errf(400, "NotFoundException", "Invalid keyId '%s'", truncate(id, 256))
	}
	a := c.e.st.Accounts[acct]
	part := c.ep.part.ID
	if kind == "alias" {
		if !allowAlias {
			return nil, vErr("Value '%s' at 'targetKeyId' failed to satisfy constraint: an alias cannot be the target of an alias", truncate(id, 256))
		}
		aliasARN := "arn:" + part + ":kms:" + region + ":" + acct + ":" + name
		var al *kmsAlias
		if a != nil {
			al = a.Aliases[region+" "+name]
		}
		if al == nil {
			return nil, errf(400, "NotFoundException", "Alias %s is not found.", aliasARN)
		}
		k := c.e.liveKeyLocked(a, al.Target)
		if k == nil {
			return nil, errf(400, "NotFoundException", "Alias %s is not found.", aliasARN)
		}
		return &keyRef{a, k, name}, nil
	}
	keyARN := "arn:" + part + ":kms:" + region + ":" + acct + ":key/" + name
	if a == nil {
		return nil, errf(400, "NotFoundException", "Key '%s' does not exist", keyARN)
	}
	k := c.e.liveKeyLocked(a, name)
	if k == nil || k.Region != region {
		return nil, errf(400, "NotFoundException", "Key '%s' does not exist", keyARN)
	}
	return &keyRef{a, k, ""}, nil
}

// liveKeyLocked returns a key, first completing a scheduled deletion whose
// date has passed and any automatic rotation that is due.
func (e *Emulator) liveKeyLocked(a *account, id string) *kmsKey {
	k := a.Keys[id]
	if k == nil {
		return nil
	}
	now := e.clock.Now()
	if k.State == "PendingDeletion" && !now.Before(k.DeletionDate) {
		delete(a.Keys, id)
		for n, al := range a.Aliases {
			if al.Target == id {
				delete(a.Aliases, n)
			}
		}
		e.saveLocked()
		return nil
	}
	if k.RotationEnabled && !k.NextRotation.IsZero() && !now.Before(k.NextRotation) && k.State == "Enabled" {
		for !now.Before(k.NextRotation) {
			k.Materials = append(k.Materials, newMaterial(k.NextRotation))
			k.NextRotation = k.NextRotation.AddDate(0, 0, k.RotationPeriodDays)
		}
		e.saveLocked()
	}
	return k
}

func (c *call) keyMember(name string) (*keyRef, error) {
	id, err := c.strMember(name, true, 1, 2048, nil)
	if err != nil {
		return nil, err
	}
	ref, err := c.resolveKeyLocked(id, true)
	if err != nil {
		return nil, err
	}
	c.log.Resource, c.log.ResourceAccount = ref.key.ARN, ref.acct.ID
	return ref, nil
}

// ---- authorization ----

// kmsKeys adds the KMS condition keys of a request on key k.
func (c *call) kmsKeys(ref *keyRef, ec map[string]string, alg string) map[string][]string {
	keys := c.baseKeys(c.caller)
	keys["kms:calleraccount"] = []string{c.caller.account.ID}
	if ref != nil {
		k := ref.key
		keys["kms:keyspec"] = []string{k.Spec}
		keys["kms:customermasterkeyspec"] = []string{k.Spec}
		keys["kms:keyusage"] = []string{k.Usage}
		keys["kms:keyorigin"] = []string{"AWS_KMS"}
		keys["kms:multiregion"] = []string{strconv.FormatBool(k.MultiRegion)}
		if ref.alias != "" {
			keys["kms:requestalias"] = []string{ref.alias}
		}
		var aliases []string
		for _, n := range sortedKeys(ref.acct.Aliases) {
			if al := ref.acct.Aliases[n]; al.Target == k.ID && al.Region == k.Region {
				aliases = append(aliases, al.Name)
			}
		}
		if len(aliases) > 0 {
			keys["kms:resourcealiases"] = aliases
		}
		for _, t := range k.Tags {
			keys["aws:resourcetag/"+strings.ToLower(t.Key)] = []string{t.Value}
		}
	}
	if len(ec) > 0 {
		var ks []string
		for k, v := range ec {
			keys["kms:encryptioncontext:"+strings.ToLower(k)] = []string{v}
			ks = append(ks, k)
		}
		keys["kms:encryptioncontextkeys"] = ks
	}
	if alg != "" {
		keys["kms:encryptionalgorithm"] = []string{alg}
	}
	return keys
}

// authorizeKey decides a KMS action on a key: the key policy must allow
// the caller (directly, or by delegating to the caller's account whose
// identity policies then must allow), or a grant must; an explicit deny
// in the key policy or an identity policy always wins. Cross-account
// callers need both the key policy and their own identity policy.
func (c *call) authorizeKey(ref *keyRef, action string, keys map[string][]string, ec map[string]string) error {
	p := c.caller
	k := ref.key
	full := "kms:" + action
	ctx := &evalContext{Action: full, Resource: k.ARN, Keys: keys, MatchPrincipal: matcher(p, k.Policy.Bindings, "")}
	kp := cachedPolicy(k.Policy.Doc, keyPolicy).evaluate(ctx, false)
	idAllow, idDeny, sessBlocked := c.e.identityDecisionLocked(p, ctx)
	if kp.Deny {
		return errf(400, "AccessDeniedException", "%s", accessDenied(p.arn, full, k.ARN, explicitDeny("resource-based")))
	}
	if idDeny {
		kind := "identity-based"
		if sessBlocked {
			kind = "session"
		}
		return errf(400, "AccessDeniedException", "%s", accessDenied(p.arn, full, k.ARN, explicitDeny(kind)))
	}
	same := p.account.ID == ref.acct.ID
	allowed := false
	switch kp.Allow {
	case matchSession:
		allowed = same || idAllow
	case matchDirect:
		allowed = same && c.e.sessionAllowsLocked(p, ctx) || !same && idAllow
	case matchAccount:
		allowed = idAllow
	}
	if allowed || c.grantAllows(ref, action, ec, idAllow) {
		return nil
	}
	reason := becauseNo("identity-based", full)
	switch {
	case kp.Allow == matchNone:
		reason = becauseNo("resource-based", full)
	case sessBlocked:
		reason = becauseNo("session", full)
	}
	return errf(400, "AccessDeniedException", "%s", accessDenied(p.arn, full, k.ARN, reason))
}

// grantAllows reports whether a grant on the key lets the caller perform
// the operation with this encryption context.
func (c *call) grantAllows(ref *keyRef, op string, ec map[string]string, idAllow bool) bool {
	p := c.caller
	for _, g := range ref.key.Grants {
		if !contains(g.Operations, op) || !c.granteeMatches(g, idAllow) {
			continue
		}
		if g.ECEquals != nil && !ecEqualsFold(g.ECEquals, ec) {
			continue
		}
		if g.ECSubset != nil && !ecSubsetFold(g.ECSubset, ec) {
			continue
		}
		_ = p
		return true
	}
	return false
}

func (c *call) granteeMatches(g *grant, idAllow bool) bool {
	p := c.caller
	switch {
	case g.Grantee == p.arn:
		return true
	case g.GranteeID != "" && g.GranteeID == p.uniqueID:
		return true
	case g.Grantee == rootARN(p.account):
		return idAllow
	}
	return false
}

// In grant constraints, context keys compare case-insensitively and
// values exactly.
func ecEqualsFold(want, got map[string]string) bool {
	if len(want) != len(got) {
		return false
	}
	return ecSubsetFold(want, got)
}

func ecSubsetFold(want, got map[string]string) bool {
	for wk, wv := range want {
		found := false
		for gk, gv := range got {
			if strings.EqualFold(wk, gk) && gv == wv {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// identityOnly authorizes actions without a key (CreateKey, ListKeys...).
func (c *call) identityOnly(action, resource string) error {
	p := c.caller
	ctx := &evalContext{Action: "kms:" + action, Resource: resource, Keys: c.kmsKeys(nil, nil, "")}
	allow, deny, sess := c.e.identityDecisionLocked(p, ctx)
	switch {
	case deny:
		return errf(400, "AccessDeniedException", "%s", accessDenied(p.arn, "kms:"+action, resource, explicitDeny("identity-based")))
	case sess:
		return errf(400, "AccessDeniedException", "%s", accessDenied(p.arn, "kms:"+action, resource, becauseNo("session", "kms:"+action)))
	case !allow:
		return errf(400, "AccessDeniedException", "%s", accessDenied(p.arn, "kms:"+action, resource, becauseNo("identity-based", "kms:"+action)))
	}
	return nil
}

func stateError(k *kmsKey) error {
	switch k.State {
	case "Disabled":
		return errf(400, "DisabledException", "%s is disabled.", k.ARN)
	case "PendingDeletion":
		return errf(400, "KMSInvalidStateException", "%s is pending deletion.", k.ARN)
	}
	return nil
}

func (c *call) dryRun() error {
	dry, err := c.boolMember("DryRun")
	if err != nil {
		return err
	}
	if dry {
		return errf(400, "DryRunOperationException", "The request would have succeeded, but the DryRun option is set.")
	}
	return nil
}

// ---- key metadata ----

func epoch(t time.Time) float64 { return float64(t.UnixMilli()) / 1000 }

func encryptionAlgorithms(k *kmsKey) []string {
	if k.Spec == "SYMMETRIC_DEFAULT" {
		return []string{"SYMMETRIC_DEFAULT"}
	}
	return []string{"RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"}
}

func (c *call) metadata(k *kmsKey) map[string]any {
	md := map[string]any{
		"AWSAccountId": k.Account, "KeyId": k.ID, "Arn": k.ARN, "CreationDate": epoch(k.Created),
		"Enabled": k.State == "Enabled", "Description": k.Description, "KeyUsage": k.Usage, "KeyState": k.State,
		"Origin": "AWS_KMS", "KeyManager": "CUSTOMER", "CustomerMasterKeySpec": k.Spec, "KeySpec": k.Spec,
		"EncryptionAlgorithms": encryptionAlgorithms(k), "MultiRegion": k.MultiRegion,
	}
	if k.State == "PendingDeletion" {
		md["DeletionDate"] = epoch(k.DeletionDate)
		md["PendingDeletionWindowInDays"] = k.PendingWindowDays
	}
	if len(k.Materials) > 0 {
		md["CurrentKeyMaterialId"] = k.Materials[len(k.Materials)-1].ID
	}
	if k.MultiRegion {
		md["MultiRegionConfiguration"] = map[string]any{"MultiRegionKeyType": "PRIMARY",
			"PrimaryKey": map[string]string{"Arn": k.ARN, "Region": k.Region}, "ReplicaKeys": []any{}}
	}
	return md
}

// ---- operations ----

var keySpecs = []string{"RSA_2048", "RSA_3072", "RSA_4096", "ECC_NIST_P256", "ECC_NIST_P384", "ECC_NIST_P521", "ECC_SECG_P256K1",
	"SYMMETRIC_DEFAULT", "HMAC_224", "HMAC_256", "HMAC_384", "HMAC_512", "SM2", "ML_DSA_44", "ML_DSA_65", "ML_DSA_87", "ECC_NIST_EDWARDS25519", "ML_KEM_512", "ML_KEM_768", "ML_KEM_1024"}

func enumErr(member, v string, set []string) error {
	return vErr("Value '%s' at '%s' failed to satisfy constraint: Member must satisfy enum value set: [%s]", truncate(v, 64), member, strings.Join(set, ", "))
}

// checkKeyPolicy validates a key policy: syntax, principals, size, and
// (unless bypassed) that the caller can still change it afterwards.
func (c *call) checkKeyPolicy(doc string, bypass bool, keyARN string) (storedPolicy, error) {
	if err := checkString("Policy", doc, 1, 131072, policyCharsRE); err != nil {
		return storedPolicy{}, &apiError{400, "ValidationException", strings.TrimPrefix(err.(*apiError).msg, "")}
	}
	if len(doc) > 32768 {
		return storedPolicy{}, errf(400, "LimitExceededException", "The key policy exceeds the 32 KiB size quota.")
	}
	p, err := parsePolicy(doc, keyPolicy)
	if err != nil {
		if strings.HasPrefix(err.Error(), "Invalid principal") {
			return storedPolicy{}, errf(400, "MalformedPolicyDocumentException", "Policy contains a statement with one or more invalid principals.")
		}
		return storedPolicy{}, errf(400, "MalformedPolicyDocumentException", "%s", err.Error())
	}
	b, bad := c.e.bindPrincipalsLocked(p)
	if bad != "" {
		return storedPolicy{}, errf(400, "MalformedPolicyDocumentException", "Policy contains a statement with one or more invalid principals.")
	}
	if !bypass {
		ctx := &evalContext{Action: "kms:PutKeyPolicy", Resource: keyARN, Keys: c.kmsKeys(nil, nil, ""), MatchPrincipal: matcher(c.caller, b, "")}
		d := p.evaluate(ctx, false)
		idAllow, _, _ := c.e.identityDecisionLocked(c.caller, ctx)
		ok := !d.Deny && (d.Allow == matchDirect || d.Allow == matchSession || d.Allow == matchAccount && idAllow)
		if !ok {
			return storedPolicy{}, errf(400, "MalformedPolicyDocumentException", "The new key policy will not allow you to update the key policy in the future.")
		}
	}
	return storedPolicy{Doc: doc, Bindings: b}, nil
}

// DefaultKeyPolicy is the policy CreateKey attaches when none is given:
// the account may delegate access to the key through IAM policies.
func DefaultKeyPolicy(partition, accountID string) string {
	return `{"Version":"2012-10-17","Id":"key-default-1","Statement":[{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{"AWS":"arn:` +
		partition + `:iam::` + accountID + `:root"},"Action":"kms:*","Resource":"*"}]}`
}

func (c *call) kmsCreateKey() (any, error) {
	if err := c.identityOnly("CreateKey", "*"); err != nil {
		return nil, err
	}
	usage, spec, origin := "ENCRYPT_DECRYPT", "SYMMETRIC_DEFAULT", "AWS_KMS"
	if err := c.member("KeyUsage", &usage); err != nil {
		return nil, err
	}
	usages := []string{"SIGN_VERIFY", "ENCRYPT_DECRYPT", "GENERATE_VERIFY_MAC", "KEY_AGREEMENT", "KEY_ENCAPSULATION"}
	if !contains(usages, usage) {
		return nil, enumErr("keyUsage", usage, usages)
	}
	if c.has("KeySpec") && c.has("CustomerMasterKeySpec") {
		return nil, errf(400, "ValidationException", "You cannot specify both KeySpec and CustomerMasterKeySpec.")
	}
	if err := c.member("KeySpec", &spec); err != nil {
		return nil, err
	}
	if err := c.member("CustomerMasterKeySpec", &spec); err != nil {
		return nil, err
	}
	if !contains(keySpecs, spec) {
		return nil, enumErr("keySpec", spec, keySpecs)
	}
	if err := c.member("Origin", &origin); err != nil {
		return nil, err
	}
	if origin != "AWS_KMS" {
		if !contains([]string{"EXTERNAL", "AWS_CLOUDHSM", "EXTERNAL_KEY_STORE"}, origin) {
			return nil, enumErr("origin", origin, []string{"AWS_KMS", "EXTERNAL", "AWS_CLOUDHSM", "EXTERNAL_KEY_STORE"})
		}
		return nil, errf(400, "UnsupportedOperationException", "The AWS emulator supports Origin AWS_KMS only, not %s.", origin)
	}
	rsaBits := map[string]int{"RSA_2048": 2048, "RSA_3072": 3072, "RSA_4096": 4096}[spec]
	if usage != "ENCRYPT_DECRYPT" || spec != "SYMMETRIC_DEFAULT" && rsaBits == 0 {
		return nil, errf(400, "UnsupportedOperationException", "The AWS emulator supports ENCRYPT_DECRYPT keys with KeySpec SYMMETRIC_DEFAULT, RSA_2048, RSA_3072 or RSA_4096 only, not %s %s.", usage, spec)
	}
	desc, err := c.strMember("Description", false, 0, 8192, nil)
	if err != nil {
		return nil, err
	}
	multi, err := c.boolMember("MultiRegion")
	if err != nil {
		return nil, err
	}
	bypass, err := c.boolMember("BypassPolicyLockoutSafetyCheck")
	if err != nil {
		return nil, err
	}
	var tags []struct{ TagKey, TagValue string }
	if err := c.member("Tags", &tags); err != nil {
		return nil, err
	}
	if len(tags) > 50 {
		return nil, errf(400, "TagException", "Too many tags: at most 50.")
	}
	a := c.caller.account
	id := emukit.NewUUID()
	if multi {
		id = "mrk-" + randHexN(16)
	}
	arn := "arn:" + a.Partition + ":kms:" + c.ep.region + ":" + a.ID + ":key/" + id
	pol := storedPolicy{Doc: DefaultKeyPolicy(a.Partition, a.ID)}
	if c.has("Policy") {
		doc, err := c.strMember("Policy", true, 1, 131072, nil)
		if err != nil {
			return nil, err
		}
		if pol, err = c.checkKeyPolicy(doc, bypass, arn); err != nil {
			return nil, err
		}
	}
	if len(a.Keys) >= 100_000 {
		return nil, errf(400, "LimitExceededException", "The request was rejected because a quota was exceeded.")
	}
	k := &kmsKey{ID: id, ARN: arn, Account: a.ID, Region: c.ep.region, Created: c.now, Description: desc, Usage: usage,
		Spec: spec, MultiRegion: multi, State: "Enabled", Policy: pol}
	for _, t := range tags {
		if t.TagKey == "" || len(t.TagKey) > 128 || len(t.TagValue) > 256 || strings.HasPrefix(t.TagKey, "aws:") {
			return nil, errf(400, "TagException", "Invalid tag %q.", truncate(t.TagKey, 128))
		}
		k.Tags = append(k.Tags, tag{t.TagKey, t.TagValue})
	}
	if rsaBits > 0 {
		priv, err := rsa.GenerateKey(rand.Reader, rsaBits)
		if err != nil {
			return nil, err
		}
		k.RSAKeyDER, _ = x509.MarshalPKCS8PrivateKey(priv)
	} else {
		k.Materials = []keyMaterial{newMaterial(c.now)}
	}
	a.Keys[id] = k
	c.log.Resource, c.log.ResourceAccount = arn, a.ID
	return map[string]any{"KeyMetadata": c.metadata(k)}, c.e.saveLocked()
}

func (c *call) kmsDescribeKey() (any, error) {
	ref, err := c.keyMember("KeyId")
	if err != nil {
		return nil, err
	}
	if err := c.grantTokens(); err != nil {
		return nil, err
	}
	if err := c.authorizeKey(ref, "DescribeKey", c.kmsKeys(ref, nil, ""), nil); err != nil {
		return nil, err
	}
	return map[string]any{"KeyMetadata": c.metadata(ref.key)}, nil
}

// page applies Limit/Marker (an index) to n items.
func (c *call) kmsPage(n int) (int, int, map[string]any, error) {
	limit, ok, err := c.intMember("Limit", 1, 1000)
	if err != nil {
		return 0, 0, nil, err
	}
	if !ok {
		limit = 100
	}
	start := 0
	if c.has("Marker") {
		var m string
		if err := c.member("Marker", &m); err != nil {
			return 0, 0, nil, err
		}
		i, err := strconv.Atoi(m)
		if err != nil || i < 0 || i > n {
			return 0, 0, nil, errf(400, "InvalidMarkerException", "Invalid marker.")
		}
		start = i
	}
	end := min(n, start+limit)
	out := map[string]any{"Truncated": end < n}
	if end < n {
		out["NextMarker"] = strconv.Itoa(end)
	}
	return start, end, out, nil
}

func (c *call) kmsListKeys() (any, error) {
	if err := c.identityOnly("ListKeys", "*"); err != nil {
		return nil, err
	}
	a := c.caller.account
	var list []map[string]string
	for _, id := range sortedKeys(a.Keys) {
		if k := c.e.liveKeyLocked(a, id); k != nil && k.Region == c.ep.region {
			list = append(list, map[string]string{"KeyId": k.ID, "KeyArn": k.ARN})
		}
	}
	s, e, out, err := c.kmsPage(len(list))
	if err != nil {
		return nil, err
	}
	out["Keys"] = append([]map[string]string{}, list[s:e]...)
	return out, nil
}

func (c *call) aliasName() (string, error) {
	n, err := c.strMember("AliasName", true, 1, 256, nil)
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(n, "alias/") {
		return "", errf(400, "ValidationException", `Alias must start with the prefix "alias/". Please see https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html`)
	}
	if !aliasRE.MatchString(n) {
		return "", vErr("Value '%s' at 'aliasName' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$", truncate(n, 256))
	}
	if strings.HasPrefix(n, "alias/aws/") {
		return "", errf(400, "NotAuthorizedException", "The alias prefix alias/aws/ is reserved for AWS managed keys.")
	}
	return n, nil
}

func (c *call) aliasARN(name string) string {
	a := c.caller.account
	return "arn:" + a.Partition + ":kms:" + c.ep.region + ":" + a.ID + ":" + name
}

// targetKey resolves TargetKeyId (key id or key ARN) in the caller's
// account.
func (c *call) targetKey() (*keyRef, error) {
	id, err := c.strMember("TargetKeyId", true, 1, 2048, nil)
	if err != nil {
		return nil, err
	}
	ref, err := c.resolveKeyLocked(id, false)
	if err != nil {
		return nil, err
	}
	if ref.acct != c.caller.account {
		return nil, errf(400, "NotFoundException", "Key '%s' does not exist", ref.key.ARN)
	}
	return ref, nil
}

func (c *call) kmsCreateAlias() (any, error) {
	name, err := c.aliasName()
	if err != nil {
		return nil, err
	}
	ref, err := c.targetKey()
	if err != nil {
		return nil, err
	}
	if err := c.identityOnly("CreateAlias", c.aliasARN(name)); err != nil {
		return nil, err
	}
	if err := c.authorizeKey(ref, "CreateAlias", c.kmsKeys(ref, nil, ""), nil); err != nil {
		return nil, err
	}
	if ref.key.State == "PendingDeletion" {
		return nil, stateError(ref.key)
	}
	a := c.caller.account
	if a.Aliases[c.ep.region+" "+name] != nil {
		return nil, errf(400, "AlreadyExistsException", "An alias with the name %s already exists", c.aliasARN(name))
	}
	a.Aliases[c.ep.region+" "+name] = &kmsAlias{Name: name, Region: c.ep.region, Target: ref.key.ID, Created: c.now, Updated: c.now}
	c.log.Resource = ref.key.ARN
	return nil, c.e.saveLocked()
}

func keyClass(k *kmsKey) string {
	if k.Spec == "SYMMETRIC_DEFAULT" {
		return "symmetric"
	}
	return "asymmetric"
}

func (c *call) kmsUpdateAlias() (any, error) {
	name, err := c.aliasName()
	if err != nil {
		return nil, err
	}
	ref, err := c.targetKey()
	if err != nil {
		return nil, err
	}
	a := c.caller.account
	al := a.Aliases[c.ep.region+" "+name]
	if al == nil {
		return nil, errf(400, "NotFoundException", "Alias %s is not found.", c.aliasARN(name))
	}
	if err := c.identityOnly("UpdateAlias", c.aliasARN(name)); err != nil {
		return nil, err
	}
	if old := c.e.liveKeyLocked(a, al.Target); old != nil {
		oref := &keyRef{a, old, name}
		if err := c.authorizeKey(oref, "UpdateAlias", c.kmsKeys(oref, nil, ""), nil); err != nil {
			return nil, err
		}
		if keyClass(old) != keyClass(ref.key) || old.Usage != ref.key.Usage {
			return nil, errf(400, "ValidationException", "%s and %s are not the same key type or key usage; an alias can only be moved between keys of the same type and usage.", old.ARN, ref.key.ARN)
		}
	}
	if err := c.authorizeKey(ref, "UpdateAlias", c.kmsKeys(ref, nil, ""), nil); err != nil {
		return nil, err
	}
	if ref.key.State == "PendingDeletion" {
		return nil, stateError(ref.key)
	}
	al.Target, al.Updated = ref.key.ID, c.now
	c.log.Resource = ref.key.ARN
	return nil, c.e.saveLocked()
}

func (c *call) kmsDeleteAlias() (any, error) {
	name, err := c.aliasName()
	if err != nil {
		return nil, err
	}
	a := c.caller.account
	al := a.Aliases[c.ep.region+" "+name]
	if al == nil {
		return nil, errf(400, "NotFoundException", "Alias %s is not found.", c.aliasARN(name))
	}
	if err := c.identityOnly("DeleteAlias", c.aliasARN(name)); err != nil {
		return nil, err
	}
	if k := c.e.liveKeyLocked(a, al.Target); k != nil {
		ref := &keyRef{a, k, name}
		if err := c.authorizeKey(ref, "DeleteAlias", c.kmsKeys(ref, nil, ""), nil); err != nil {
			return nil, err
		}
	}
	delete(a.Aliases, c.ep.region+" "+name)
	return nil, c.e.saveLocked()
}

func (c *call) kmsListAliases() (any, error) {
	if err := c.identityOnly("ListAliases", "*"); err != nil {
		return nil, err
	}
	a := c.caller.account
	var filter string
	if c.has("KeyId") {
		ref, err := c.keyMember("KeyId")
		if err != nil {
			return nil, err
		}
		if ref.acct != a {
			return nil, errf(400, "NotFoundException", "Key '%s' does not exist", ref.key.ARN)
		}
		filter = ref.key.ID
	}
	var list []map[string]any
	for _, n := range sortedKeys(a.Aliases) {
		al := a.Aliases[n]
		if al.Region != c.ep.region || filter != "" && al.Target != filter || c.e.liveKeyLocked(a, al.Target) == nil {
			continue
		}
		list = append(list, map[string]any{"AliasName": al.Name, "AliasArn": c.aliasARN(al.Name), "TargetKeyId": al.Target,
			"CreationDate": epoch(al.Created), "LastUpdatedDate": epoch(al.Updated)})
	}
	s, e, out, err := c.kmsPage(len(list))
	if err != nil {
		return nil, err
	}
	out["Aliases"] = append([]map[string]any{}, list[s:e]...)
	return out, nil
}

// cryptoPrelude resolves, authorizes, checks state and quota for a
// cryptographic operation.
func (c *call) cryptoPrelude(ref *keyRef, action string, ec map[string]string, alg string) error {
	c.log.EncryptionContext = ec
	if err := c.grantTokens(); err != nil {
		return err
	}
	quota := "symmetric"
	if ref.key.Spec != "SYMMETRIC_DEFAULT" {
		quota = "rsa"
	}
	if err := c.chargeQuota(quota); err != nil {
		return err
	}
	if err := c.authorizeKey(ref, action, c.kmsKeys(ref, ec, alg), ec); err != nil {
		return err
	}
	if err := stateError(ref.key); err != nil {
		return err
	}
	return c.dryRun()
}

var encAlgs = []string{"SYMMETRIC_DEFAULT", "RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256", "SM2PKE"}

func (c *call) algMember(name string) (string, error) {
	var alg string
	if err := c.member(name, &alg); err != nil {
		return "", err
	}
	if alg != "" && !contains(encAlgs, alg) {
		return "", enumErr(lowerFirst(name), alg, encAlgs)
	}
	return alg, nil
}

func checkAlg(k *kmsKey, alg, op string) (string, error) {
	if k.Spec == "SYMMETRIC_DEFAULT" {
		if alg != "" && alg != "SYMMETRIC_DEFAULT" {
			return "", errf(400, "InvalidKeyUsageException", "%s is not a valid encryption algorithm for %s on a symmetric key %s.", alg, op, k.ARN)
		}
		return "SYMMETRIC_DEFAULT", nil
	}
	if alg != "RSAES_OAEP_SHA_1" && alg != "RSAES_OAEP_SHA_256" {
		return "", errf(400, "InvalidKeyUsageException", "%s requires EncryptionAlgorithm RSAES_OAEP_SHA_1 or RSAES_OAEP_SHA_256 for the asymmetric key %s.", op, k.ARN)
	}
	return alg, nil
}

func oaepHash(alg string) hash.Hash {
	if alg == "RSAES_OAEP_SHA_1" {
		return sha1.New()
	}
	return sha256.New()
}

func rsaKey(k *kmsKey) (*rsa.PrivateKey, error) {
	p, err := x509.ParsePKCS8PrivateKey(k.RSAKeyDER)
	if err != nil {
		return nil, err
	}
	rk, ok := p.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key %s is not RSA", k.ID)
	}
	return rk, nil
}

func (c *call) kmsEncrypt() (any, error) {
	ref, err := c.keyMember("KeyId")
	if err != nil {
		return nil, err
	}
	pt, err := c.blobMember("Plaintext", true, 4096)
	if err != nil {
		return nil, err
	}
	ec, err := c.contextMember("EncryptionContext")
	if err != nil {
		return nil, err
	}
	alg, err := c.algMember("EncryptionAlgorithm")
	if err != nil {
		return nil, err
	}
	if err := c.cryptoPrelude(ref, "Encrypt", ec, alg); err != nil {
		return nil, err
	}
	k := ref.key
	if alg, err = checkAlg(k, alg, "Encrypt"); err != nil {
		return nil, err
	}
	var blob []byte
	if k.Spec == "SYMMETRIC_DEFAULT" {
		if blob, err = sealBlob(k.ARN, &k.Materials[len(k.Materials)-1], pt, ec); err != nil {
			return nil, err
		}
	} else {
		if len(ec) > 0 {
			return nil, errf(400, "ValidationException", "EncryptionContext is not supported with asymmetric keys.")
		}
		rk, err := rsaKey(k)
		if err != nil {
			return nil, err
		}
		blob, err = rsa.EncryptOAEP(oaepHash(alg), rand.Reader, &rk.PublicKey, pt, nil)
		if err != nil {
			return nil, errf(400, "ValidationException", "The plaintext is too long for %s with %s.", alg, k.Spec)
		}
	}
	return map[string]any{"CiphertextBlob": blob, "KeyId": k.ARN, "EncryptionAlgorithm": alg}, nil
}

var errCiphertextKey = errf(400, "AccessDeniedException", "The ciphertext refers to a customer master key that does not exist, does not exist in this region, or you are not allowed to access.")

// blobKey finds the key a symmetric ciphertext blob names; explicit is
// the resolved KeyId, if the caller gave one.
func (c *call) blobKey(blob []byte, explicit *keyRef) (*keyRef, *blobHeader, error) {
	h, err := parseBlob(blob)
	if err != nil {
		if explicit != nil && explicit.key.Spec != "SYMMETRIC_DEFAULT" {
			return explicit, nil, nil // an RSA ciphertext
		}
		return nil, nil, errf(400, "InvalidCiphertextException", "")
	}
	m := kmsArnRE.FindStringSubmatch(h.keyARN)
	if m == nil || m[4] != "key" {
		return nil, nil, errf(400, "InvalidCiphertextException", "")
	}
	if m[1] != c.ep.part.ID || m[2] != c.ep.region {
		return nil, nil, errCiphertextKey
	}
	a := c.e.st.Accounts[m[3]]
	if a == nil {
		return nil, nil, errCiphertextKey
	}
	k := c.e.liveKeyLocked(a, m[5])
	if k == nil || k.ARN != h.keyARN {
		return nil, nil, errCiphertextKey
	}
	if explicit != nil && explicit.key != k {
		return nil, nil, errf(400, "IncorrectKeyException", "The key ID in the request does not identify a CMK that can perform this operation.")
	}
	ref := &keyRef{a, k, ""}
	if explicit != nil {
		ref.alias = explicit.alias
	}
	c.log.Resource, c.log.ResourceAccount = k.ARN, a.ID
	return ref, h, nil
}

// decryptWith opens a ciphertext under ref's key.
func (c *call) decryptWith(ref *keyRef, h *blobHeader, blob []byte, ec map[string]string, alg string) ([]byte, string, error) {
	k := ref.key
	if h == nil {
		if len(ec) > 0 {
			return nil, "", errf(400, "InvalidCiphertextException", "")
		}
		rk, err := rsaKey(k)
		if err != nil {
			return nil, "", err
		}
		pt, err := rsa.DecryptOAEP(oaepHash(alg), nil, rk, blob, nil)
		if err != nil {
			return nil, "", errf(400, "InvalidCiphertextException", "")
		}
		return pt, "", nil
	}
	for i := range k.Materials {
		m := &k.Materials[i]
		if m.ID == fmt.Sprintf("%x", h.materialID) {
			pt, err := openBlob(blob, h, m, ec)
			if err != nil {
				return nil, "", errf(400, "InvalidCiphertextException", "")
			}
			return pt, m.ID, nil
		}
	}
	return nil, "", errf(400, "InvalidCiphertextException", "")
}

func (c *call) kmsDecrypt() (any, error) {
	blob, err := c.blobMember("CiphertextBlob", true, 6144)
	if err != nil {
		return nil, err
	}
	var explicit *keyRef
	if c.has("KeyId") {
		if explicit, err = c.keyMember("KeyId"); err != nil {
			return nil, err
		}
	}
	ec, err := c.contextMember("EncryptionContext")
	if err != nil {
		return nil, err
	}
	alg, err := c.algMember("EncryptionAlgorithm")
	if err != nil {
		return nil, err
	}
	ref, h, err := c.blobKey(blob, explicit)
	if err != nil {
		return nil, err
	}
	if err := c.cryptoPrelude(ref, "Decrypt", ec, alg); err != nil {
		return nil, err
	}
	if alg, err = checkAlg(ref.key, alg, "Decrypt"); err != nil {
		return nil, err
	}
	pt, mid, err := c.decryptWith(ref, h, blob, ec, alg)
	if err != nil {
		return nil, err
	}
	out := map[string]any{"KeyId": ref.key.ARN, "Plaintext": pt, "EncryptionAlgorithm": alg}
	if mid != "" {
		out["KeyMaterialId"] = mid
	}
	return out, nil
}

func (c *call) kmsGenerateDataKey() (any, error) {
	ref, err := c.keyMember("KeyId")
	if err != nil {
		return nil, err
	}
	ec, err := c.contextMember("EncryptionContext")
	if err != nil {
		return nil, err
	}
	n, hasN, err := c.intMember("NumberOfBytes", 1, 1024)
	if err != nil {
		return nil, err
	}
	var spec string
	if err := c.member("KeySpec", &spec); err != nil {
		return nil, err
	}
	switch {
	case hasN == (spec != ""):
		return nil, errf(400, "ValidationException", "Please specify either number of bytes or key spec.")
	case spec == "AES_256":
		n = 32
	case spec == "AES_128":
		n = 16
	case spec != "":
		return nil, enumErr("keySpec", spec, []string{"AES_256", "AES_128"})
	}
	if err := c.cryptoPrelude(ref, c.op, ec, ""); err != nil {
		return nil, err
	}
	k := ref.key
	if k.Spec != "SYMMETRIC_DEFAULT" {
		return nil, errf(400, "InvalidKeyUsageException", "%s key spec is %s which is not valid for %s.", k.ARN, k.Spec, c.op)
	}
	pt := make([]byte, n)
	rand.Read(pt)
	m := &k.Materials[len(k.Materials)-1]
	blob, err := sealBlob(k.ARN, m, pt, ec)
	if err != nil {
		return nil, err
	}
	out := map[string]any{"CiphertextBlob": blob, "KeyId": k.ARN, "KeyMaterialId": m.ID}
	if c.op == "GenerateDataKey" {
		out["Plaintext"] = pt
	}
	return out, nil
}

func (c *call) kmsReEncrypt() (any, error) {
	blob, err := c.blobMember("CiphertextBlob", true, 6144)
	if err != nil {
		return nil, err
	}
	var explicit *keyRef
	if c.has("SourceKeyId") {
		if explicit, err = c.keyMember("SourceKeyId"); err != nil {
			return nil, err
		}
	}
	dst, err := c.keyMember("DestinationKeyId")
	if err != nil {
		return nil, err
	}
	sec, err := c.contextMember("SourceEncryptionContext")
	if err != nil {
		return nil, err
	}
	dec, err := c.contextMember("DestinationEncryptionContext")
	if err != nil {
		return nil, err
	}
	salg, err := c.algMember("SourceEncryptionAlgorithm")
	if err != nil {
		return nil, err
	}
	dalg, err := c.algMember("DestinationEncryptionAlgorithm")
	if err != nil {
		return nil, err
	}
	src, h, err := c.blobKey(blob, explicit)
	if err != nil {
		return nil, err
	}
	if src.key.Spec != "SYMMETRIC_DEFAULT" || dst.key.Spec != "SYMMETRIC_DEFAULT" {
		return nil, errf(400, "UnsupportedOperationException", "The AWS emulator supports ReEncrypt between symmetric keys only.")
	}
	if err := c.cryptoPrelude(src, "ReEncryptFrom", sec, salg); err != nil {
		return nil, err
	}
	if err := c.authorizeKey(dst, "ReEncryptTo", c.kmsKeys(dst, dec, dalg), dec); err != nil {
		return nil, err
	}
	if err := stateError(dst.key); err != nil {
		return nil, err
	}
	if _, err := checkAlg(src.key, salg, "ReEncrypt"); err != nil {
		return nil, err
	}
	if _, err := checkAlg(dst.key, dalg, "ReEncrypt"); err != nil {
		return nil, err
	}
	pt, smid, err := c.decryptWith(src, h, blob, sec, "")
	if err != nil {
		return nil, err
	}
	dm := &dst.key.Materials[len(dst.key.Materials)-1]
	out, err := sealBlob(dst.key.ARN, dm, pt, dec)
	if err != nil {
		return nil, err
	}
	c.log.Resource, c.log.ResourceAccount = dst.key.ARN, dst.acct.ID
	return map[string]any{"CiphertextBlob": out, "SourceKeyId": src.key.ARN, "KeyId": dst.key.ARN,
		"SourceEncryptionAlgorithm": "SYMMETRIC_DEFAULT", "DestinationEncryptionAlgorithm": "SYMMETRIC_DEFAULT",
		"SourceKeyMaterialId": smid, "DestinationKeyMaterialId": dm.ID}, nil
}

func (c *call) ownKey(action string) (*keyRef, error) {
	ref, err := c.keyMember("KeyId")
	if err != nil {
		return nil, err
	}
	if err := c.authorizeKey(ref, action, c.kmsKeys(ref, nil, ""), nil); err != nil {
		return nil, err
	}
	return ref, nil
}

func (c *call) kmsEnableDisable() (any, error) {
	ref, err := c.ownKey(c.op)
	if err != nil {
		return nil, err
	}
	k := ref.key
	if k.State == "PendingDeletion" {
		return nil, stateError(k)
	}
	if c.op == "EnableKey" {
		k.State = "Enabled"
	} else {
		k.State = "Disabled"
	}
	return nil, c.e.saveLocked()
}

func (c *call) kmsScheduleKeyDeletion() (any, error) {
	ref, err := c.keyMember("KeyId")
	if err != nil {
		return nil, err
	}
	days, ok, err := c.intMember("PendingWindowInDays", 7, 30)
	if err != nil {
		return nil, err
	}
	if !ok {
		days = 30
	}
	keys := c.kmsKeys(ref, nil, "")
	keys["kms:schedulekeydeletionpendingwindowindays"] = []string{strconv.Itoa(days)}
	if err := c.authorizeKey(ref, "ScheduleKeyDeletion", keys, nil); err != nil {
		return nil, err
	}
	k := ref.key
	if k.State == "PendingDeletion" {
		return nil, stateError(k)
	}
	k.State, k.PendingWindowDays, k.DeletionDate = "PendingDeletion", days, c.now.AddDate(0, 0, days)
	return map[string]any{"KeyId": k.ARN, "DeletionDate": epoch(k.DeletionDate), "KeyState": k.State, "PendingWindowInDays": days}, c.e.saveLocked()
}

func (c *call) kmsCancelKeyDeletion() (any, error) {
	ref, err := c.ownKey("CancelKeyDeletion")
	if err != nil {
		return nil, err
	}
	k := ref.key
	if k.State != "PendingDeletion" {
		return nil, errf(400, "KMSInvalidStateException", "%s is not pending deletion.", k.ARN)
	}
	k.State, k.PendingWindowDays, k.DeletionDate = "Disabled", 0, time.Time{}
	return map[string]any{"KeyId": k.ARN}, c.e.saveLocked()
}

func (c *call) policyNameMember() error {
	n, err := c.strMember("PolicyName", false, 1, 128, regexp.MustCompile(`^[\w]+$`))
	if err != nil {
		return err
	}
	if n != "" && n != "default" {
		return errf(400, "NotFoundException", "No such policy exists")
	}
	return nil
}

func (c *call) kmsGetKeyPolicy() (any, error) {
	ref, err := c.ownKey("GetKeyPolicy")
	if err != nil {
		return nil, err
	}
	if err := c.policyNameMember(); err != nil {
		return nil, err
	}
	return map[string]any{"Policy": c.e.displayPolicyLocked(ref.key.Policy), "PolicyName": "default"}, nil
}

func (c *call) kmsPutKeyPolicy() (any, error) {
	ref, err := c.ownKey("PutKeyPolicy")
	if err != nil {
		return nil, err
	}
	if err := c.policyNameMember(); err != nil {
		return nil, err
	}
	doc, err := c.strMember("Policy", true, 1, 131072, nil)
	if err != nil {
		return nil, err
	}
	bypass, err := c.boolMember("BypassPolicyLockoutSafetyCheck")
	if err != nil {
		return nil, err
	}
	sp, err := c.checkKeyPolicy(doc, bypass, ref.key.ARN)
	if err != nil {
		return nil, err
	}
	ref.key.Policy = sp
	return nil, c.e.saveLocked()
}

var grantOpsSymmetric = []string{"Decrypt", "Encrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext", "ReEncryptFrom", "ReEncryptTo",
	"CreateGrant", "RetireGrant", "DescribeKey", "GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext"}
var grantOpsRSA = []string{"Decrypt", "Encrypt", "ReEncryptFrom", "ReEncryptTo", "GetPublicKey", "CreateGrant", "RetireGrant", "DescribeKey"}
var ecGrantOps = map[string]bool{"Decrypt": true, "Encrypt": true, "GenerateDataKey": true, "GenerateDataKeyWithoutPlaintext": true,
	"ReEncryptFrom": true, "ReEncryptTo": true, "GenerateDataKeyPair": true, "GenerateDataKeyPairWithoutPlaintext": true, "RetireGrant": true}

var principalArnRE = regexp.MustCompile(`^arn:(aws|aws-cn|aws-us-gov):(iam::[0-9]{12}:(root|user/.+|role/.+)|sts::[0-9]{12}:assumed-role/.+/.+)$`)

func (c *call) principalMember(name string, required bool) (string, string, error) {
	v, err := c.strMember(name, required, 1, 256, regexp.MustCompile(`^[\w+=,.@:/-]+$`))
	if err != nil || v == "" {
		return v, "", err
	}
	if !principalArnRE.MatchString(v) {
		return "", "", errf(400, "ValidationException", "%s %s is not a valid principal ARN.", name, truncate(v, 256))
	}
	id := ""
	if strings.Contains(v, ":user/") || strings.Contains(v, ":role/") {
		if id = c.e.principalIDLocked(v); id == "" {
			return "", "", errf(400, "ValidationException", "%s %s does not exist.", name, v)
		}
	}
	return v, id, nil
}

func (c *call) kmsCreateGrant() (any, error) {
	ref, err := c.keyMember("KeyId")
	if err != nil {
		return nil, err
	}
	grantee, gid, err := c.principalMember("GranteePrincipal", true)
	if err != nil {
		return nil, err
	}
	retiring, _, err := c.principalMember("RetiringPrincipal", false)
	if err != nil {
		return nil, err
	}
	var ops []string
	if err := c.member("Operations", &ops); err != nil {
		return nil, err
	}
	if len(ops) == 0 {
		return nil, vErr("Value null at 'operations' failed to satisfy constraint: Member must not be null")
	}
	valid := grantOpsSymmetric
	if ref.key.Spec != "SYMMETRIC_DEFAULT" {
		valid = grantOpsRSA
	}
	for _, o := range ops {
		if !contains(valid, o) {
			return nil, errf(400, "ValidationException", "Grant operation %s is not valid for %s.", truncate(o, 64), ref.key.ARN)
		}
	}
	var cons struct {
		EncryptionContextSubset map[string]string
		EncryptionContextEquals map[string]string
		SourceArn               *string
	}
	if err := c.member("Constraints", &cons); err != nil {
		return nil, err
	}
	if cons.SourceArn != nil {
		return nil, errf(400, "UnsupportedOperationException", "The AWS emulator does not support the SourceArn grant constraint.")
	}
	if cons.EncryptionContextSubset != nil && cons.EncryptionContextEquals != nil {
		return nil, errf(400, "ValidationException", "Specify EncryptionContextSubset or EncryptionContextEquals, not both.")
	}
	if cons.EncryptionContextSubset != nil || cons.EncryptionContextEquals != nil {
		for _, o := range ops {
			if !ecGrantOps[o] {
				return nil, errf(400, "ValidationException", "Encryption context grant constraints are not valid for the %s operation.", o)
			}
		}
	}
	name, err := c.strMember("Name", false, 1, 256, grantNameR)
	if err != nil {
		return nil, err
	}
	if err := c.grantTokens(); err != nil {
		return nil, err
	}
	keys := c.kmsKeys(ref, nil, "")
	keys["kms:granteeprincipal"] = []string{grantee}
	keys["kms:grantoperations"] = ops
	keys["kms:grantisforawsresource"] = []string{"false"}
	if retiring != "" {
		keys["kms:retiringprincipal"] = []string{retiring}
	}
	if err := c.authorizeKey(ref, "CreateGrant", keys, nil); err != nil {
		return nil, err
	}
	if ref.key.State == "PendingDeletion" {
		return nil, stateError(ref.key)
	}
	if err := c.dryRun(); err != nil {
		return nil, err
	}
	if len(ref.key.Grants) >= 50_000 {
		return nil, errf(400, "LimitExceededException", "The request was rejected because a quota was exceeded.")
	}
	g := &grant{ID: randHexN(32), Token: "AQpAM2" + randHexN(64), Name: name, Grantee: grantee, GranteeID: gid, Retiring: retiring,
		Operations: ops, ECSubset: cons.EncryptionContextSubset, ECEquals: cons.EncryptionContextEquals,
		Issuer: c.caller.account.ID, Created: c.now}
	ref.key.Grants = append(ref.key.Grants, g)
	return map[string]any{"GrantToken": g.Token, "GrantId": g.ID}, c.e.saveLocked()
}

func removeGrant(k *kmsKey, id string) bool {
	for i, g := range k.Grants {
		if g.ID == id {
			k.Grants = append(k.Grants[:i:i], k.Grants[i+1:]...)
			return true
		}
	}
	return false
}

func (c *call) kmsRevokeGrant() (any, error) {
	ref, err := c.ownKey("RevokeGrant")
	if err != nil {
		return nil, err
	}
	id, err := c.strMember("GrantId", true, 1, 128, nil)
	if err != nil {
		return nil, err
	}
	if err := c.dryRun(); err != nil {
		return nil, err
	}
	if !removeGrant(ref.key, id) {
		return nil, errf(400, "NotFoundException", "Grant ID %s not found", truncate(id, 128))
	}
	return nil, c.e.saveLocked()
}

func (c *call) kmsRetireGrant() (any, error) {
	var g *grant
	var k *kmsKey
	if c.has("GrantToken") {
		tok, err := c.strMember("GrantToken", true, 1, 8192, nil)
		if err != nil {
			return nil, err
		}
		if g = c.e.grantByTokenLocked(tok); g == nil {
			return nil, errf(400, "InvalidGrantTokenException", "Invalid grant token")
		}
		for _, a := range c.e.st.Accounts {
			for _, kk := range a.Keys {
				if contains(grantIDs(kk), g.ID) {
					k = kk
				}
			}
		}
	} else {
		ref, err := c.keyMember("KeyId")
		if err != nil {
			return nil, err
		}
		id, err := c.strMember("GrantId", true, 1, 128, nil)
		if err != nil {
			return nil, err
		}
		k = ref.key
		for _, gg := range k.Grants {
			if gg.ID == id {
				g = gg
			}
		}
		if g == nil {
			return nil, errf(400, "InvalidGrantIdException", "Grant ID %s is not valid.", truncate(id, 128))
		}
	}
	p := c.caller
	ok := g.Retiring == p.arn || g.Retiring != "" && c.e.principalIDLocked(g.Retiring) == p.uniqueID && p.uniqueID != "" ||
		contains(g.Operations, "RetireGrant") && c.granteeMatches(g, true) || p.isRoot() && p.account.ID == k.Account
	if !ok {
		return nil, errf(400, "AccessDeniedException", "%s", accessDenied(p.arn, "kms:RetireGrant", k.ARN, becauseNo("resource-based", "kms:RetireGrant")))
	}
	if err := c.dryRun(); err != nil {
		return nil, err
	}
	removeGrant(k, g.ID)
	return nil, c.e.saveLocked()
}

func grantIDs(k *kmsKey) []string {
	out := make([]string, 0, len(k.Grants))
	for _, g := range k.Grants {
		out = append(out, g.ID)
	}
	return out
}

func (c *call) kmsListGrants() (any, error) {
	ref, err := c.ownKey("ListGrants")
	if err != nil {
		return nil, err
	}
	var gid, gp string
	if err := c.member("GrantId", &gid); err != nil {
		return nil, err
	}
	if err := c.member("GranteePrincipal", &gp); err != nil {
		return nil, err
	}
	var list []map[string]any
	for _, g := range ref.key.Grants {
		if gid != "" && g.ID != gid || gp != "" && g.Grantee != gp {
			continue
		}
		e := map[string]any{"KeyId": ref.key.ARN, "GrantId": g.ID, "GranteePrincipal": g.Grantee, "Operations": g.Operations,
			"IssuingAccount": "arn:" + c.caller.account.Partition + ":iam::" + g.Issuer + ":root", "CreationDate": epoch(g.Created)}
		if g.Name != "" {
			e["Name"] = g.Name
		}
		if g.Retiring != "" {
			e["RetiringPrincipal"] = g.Retiring
		}
		if g.ECSubset != nil || g.ECEquals != nil {
			cons := map[string]any{}
			if g.ECSubset != nil {
				cons["EncryptionContextSubset"] = g.ECSubset
			}
			if g.ECEquals != nil {
				cons["EncryptionContextEquals"] = g.ECEquals
			}
			e["Constraints"] = cons
		}
		list = append(list, e)
	}
	s, e, out, err := c.kmsPage(len(list))
	if err != nil {
		return nil, err
	}
	out["Grants"] = append([]map[string]any{}, list[s:e]...)
	return out, nil
}

func (c *call) rotatableKey(action string) (*keyRef, error) {
	ref, err := c.ownKey(action)
	if err != nil {
		return nil, err
	}
	if ref.key.Spec != "SYMMETRIC_DEFAULT" {
		return nil, errf(400, "UnsupportedOperationException", "%s key spec %s does not support key rotation.", ref.key.ARN, ref.key.Spec)
	}
	if err := stateError(ref.key); err != nil {
		return nil, err
	}
	return ref, nil
}

func (c *call) kmsEnableKeyRotation() (any, error) {
	days, ok, err := c.intMember("RotationPeriodInDays", 90, 2560)
	if err != nil {
		return nil, err
	}
	if !ok {
		days = 365
	}
	ref, err := c.rotatableKey("EnableKeyRotation")
	if err != nil {
		return nil, err
	}
	k := ref.key
	k.RotationEnabled, k.RotationPeriodDays, k.NextRotation = true, days, c.now.AddDate(0, 0, days)
	return nil, c.e.saveLocked()
}

func (c *call) kmsDisableKeyRotation() (any, error) {
	ref, err := c.rotatableKey("DisableKeyRotation")
	if err != nil {
		return nil, err
	}
	k := ref.key
	k.RotationEnabled, k.NextRotation = false, time.Time{}
	return nil, c.e.saveLocked()
}

func (c *call) kmsGetKeyRotationStatus() (any, error) {
	ref, err := c.ownKey("GetKeyRotationStatus")
	if err != nil {
		return nil, err
	}
	k := ref.key
	if k.Spec != "SYMMETRIC_DEFAULT" {
		return nil, errf(400, "UnsupportedOperationException", "%s key spec %s does not support key rotation.", k.ARN, k.Spec)
	}
	out := map[string]any{"KeyId": k.ARN, "KeyRotationEnabled": k.RotationEnabled}
	if k.RotationEnabled {
		out["RotationPeriodInDays"] = k.RotationPeriodDays
		out["NextRotationDate"] = epoch(k.NextRotation)
	}
	if !k.LastOnDemandStarted.IsZero() {
		out["OnDemandRotationStartDate"] = epoch(k.LastOnDemandStarted)
	}
	return out, nil
}

func (c *call) kmsRotateKeyOnDemand() (any, error) {
	ref, err := c.rotatableKey("RotateKeyOnDemand")
	if err != nil {
		return nil, err
	}
	k := ref.key
	if k.OnDemandRotations >= 25 {
		return nil, errf(400, "LimitExceededException", "The on-demand rotations limit has been reached for the given keyId. No more on-demand rotations can be performed for this key: %s", k.ARN)
	}
	if k.RotationEnabled && k.NextRotation.Sub(c.now) < 20*time.Minute {
		return nil, errf(400, "ConflictException", "An automatic rotation of %s is due within 20 minutes.", k.ARN)
	}
	m := newMaterial(c.now)
	m.OnDemand = true
	k.Materials = append(k.Materials, m)
	k.OnDemandRotations++
	k.LastOnDemandStarted = c.now
	return map[string]any{"KeyId": k.ARN}, c.e.saveLocked()
}

func (c *call) kmsGetPublicKey() (any, error) {
	ref, err := c.ownKey("GetPublicKey")
	if err != nil {
		return nil, err
	}
	if err := c.grantTokens(); err != nil {
		return nil, err
	}
	k := ref.key
	if k.Spec == "SYMMETRIC_DEFAULT" {
		return nil, errf(400, "UnsupportedOperationException", "%s is a symmetric key; GetPublicKey needs an asymmetric key.", k.ARN)
	}
	if err := stateError(k); err != nil {
		return nil, err
	}
	rk, err := rsaKey(k)
	if err != nil {
		return nil, err
	}
	der, _ := x509.MarshalPKIXPublicKey(&rk.PublicKey)
	return map[string]any{"KeyId": k.ARN, "PublicKey": der, "KeySpec": k.Spec, "CustomerMasterKeySpec": k.Spec,
		"KeyUsage": k.Usage, "EncryptionAlgorithms": encryptionAlgorithms(k)}, nil
}

func (c *call) kmsGenerateRandom() (any, error) {
	n, ok, err := c.intMember("NumberOfBytes", 1, 1024)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, errf(400, "ValidationException", "NumberOfBytes is required.")
	}
	if err := c.chargeQuota("symmetric"); err != nil {
		return nil, err
	}
	if err := c.identityOnly("GenerateRandom", "*"); err != nil {
		return nil, err
	}
	b := make([]byte, n)
	rand.Read(b)
	return map[string]any{"Plaintext": b}, nil
}
