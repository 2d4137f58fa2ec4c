// Exportable keys, key release policies and secure key release
// (POST /keys/{name}/{version}/release).

package azurecloud

import (
	"bytes"
	"crypto/aes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"math/big"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// releasePolicyContentType is the only content type of release policies.
const releasePolicyContentType = "application/json; charset=utf-8"

// releasePolicy is a key's release policy as stored: the policy document
// (JSON) exactly as the caller encoded it.
type releasePolicy struct {
	ContentType string `json:"contentType"`
	Data        []byte `json:"data"`
	Immutable   bool   `json:"immutable,omitempty"`
}

type releasePolicyIn struct {
	ContentType *string `json:"contentType"`
	Data        *string `json:"data"`
	Immutable   *bool   `json:"immutable"`
}

type releasePolicyOut struct {
	ContentType string `json:"contentType"`
	Data        string `json:"data"`
	Immutable   bool   `json:"immutable"`
}

func (p *releasePolicy) out() *releasePolicyOut {
	if p == nil {
		return nil
	}
	return &releasePolicyOut{ContentType: p.ContentType, Data: b64url.EncodeToString(p.Data), Immutable: p.Immutable}
}

func (p *releasePolicy) in() *releasePolicyIn {
	if p == nil {
		return nil
	}
	ct, d, im := p.ContentType, b64url.EncodeToString(p.Data), p.Immutable
	return &releasePolicyIn{ContentType: &ct, Data: &d, Immutable: &im}
}

// parse validates a release policy: its content type, its base64url data
// and the policy document's grammar (docs: "Azure Key Vault secure key
// release policy grammar").
func (in *releasePolicyIn) parse() (*releasePolicy, error) {
	p := &releasePolicy{ContentType: releasePolicyContentType}
	if in.ContentType != nil && *in.ContentType != "" {
		if !strings.EqualFold(strings.ReplaceAll(*in.ContentType, " ", ""), strings.ReplaceAll(releasePolicyContentType, " ", "")) {
			return nil, fmt.Errorf("The release policy content type %q is not supported; use %q.", truncate(*in.ContentType, 64), releasePolicyContentType)
		}
		p.ContentType = *in.ContentType
	}
	if in.Data == nil || *in.Data == "" {
		return nil, errors.New("The release policy must have data (the base64url-encoded policy).")
	}
	data, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(*in.Data, "="))
	if err != nil {
		if data, err = base64.StdEncoding.DecodeString(*in.Data); err != nil {
			return nil, errors.New("The release policy data is not base64url.")
		}
	}
	if len(data) > 16*1024 {
		return nil, errors.New("The release policy is too large.")
	}
	if _, err := parsePolicyDoc(data); err != nil {
		return nil, fmt.Errorf("The release policy is not valid: %v.", err)
	}
	p.Data = data
	if in.Immutable != nil {
		p.Immutable = *in.Immutable
	}
	return p, nil
}

// policyCond is a claim condition or an anyOf/allOf group.
type policyCond struct {
	claim  string
	equals any
	anyOf  bool // group kind when subs != nil
	subs   []policyCond
}

// policyAuthority is one authority of a release policy with its conditions.
type policyAuthority struct {
	authority string
	cond      policyCond
}

// parsePolicyDoc parses {"version":"1.0.0","anyOf":[authority...]}.
func parsePolicyDoc(data []byte) ([]policyAuthority, error) {
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return nil, errors.New("not a JSON object")
	}
	var list []any
	for k, v := range doc {
		switch strings.ToLower(k) {
		case "version":
			if s, _ := v.(string); s != "1.0.0" {
				return nil, errors.New(`version must be "1.0.0"`)
			}
		case "anyof":
			l, ok := v.([]any)
			if !ok {
				return nil, errors.New("anyOf must be an array of authorities")
			}
			list = l
		default:
			return nil, fmt.Errorf("unknown property %q", truncate(k, 32))
		}
	}
	if _, ok := doc["version"]; !ok {
		return nil, errors.New("version is required")
	}
	if len(list) == 0 {
		return nil, errors.New("anyOf must list at least one authority")
	}
	var out []policyAuthority
	for _, a := range list {
		m, ok := a.(map[string]any)
		if !ok {
			return nil, errors.New("an authority must be an object")
		}
		auth, _ := m["authority"].(string)
		if auth == "" {
			return nil, errors.New("an authority needs its authority (issuer) URL")
		}
		rest := map[string]any{}
		for k, v := range m {
			if k != "authority" {
				rest[k] = v
			}
		}
		c, err := parseCond(rest, 0)
		if err != nil {
			return nil, err
		}
		if c.subs == nil {
			return nil, errors.New("an authority needs anyOf or allOf conditions")
		}
		out = append(out, policyAuthority{authority: strings.TrimSuffix(auth, "/"), cond: c})
	}
	return out, nil
}

func parseCond(m map[string]any, depth int) (policyCond, error) {
	if depth > 8 {
		return policyCond{}, errors.New("conditions are nested too deeply")
	}
	var c policyCond
	group := ""
	for k := range m {
		switch strings.ToLower(k) {
		case "anyof", "allof":
			if group != "" {
				return c, errors.New("anyOf and allOf cannot be combined in one object")
			}
			group = strings.ToLower(k)
		case "claim", "equals":
		default:
			return c, fmt.Errorf("unknown condition property %q (only claim/equals, anyOf and allOf are supported)", truncate(k, 32))
		}
	}
	if group != "" {
		if len(m) != 1 {
			return c, errors.New("a group condition has only anyOf or allOf")
		}
		var l []any
		for _, v := range m {
			l, _ = v.([]any)
		}
		if len(l) == 0 {
			return c, fmt.Errorf("%s must be a non-empty array", group)
		}
		c.anyOf, c.subs = group == "anyof", []policyCond{}
		for _, x := range l {
			sm, ok := x.(map[string]any)
			if !ok {
				return c, errors.New("a condition must be an object")
			}
			sc, err := parseCond(sm, depth+1)
			if err != nil {
				return c, err
			}
			c.subs = append(c.subs, sc)
		}
		return c, nil
	}
	claim, _ := m["claim"].(string)
	eq, hasEq := m["equals"]
	if claim == "" || !hasEq {
		return c, errors.New(`a claim condition needs "claim" and "equals"`)
	}
	switch eq.(type) {
	case string, bool, json.Number:
	default:
		return c, errors.New("equals takes a string, number or boolean")
	}
	c.claim, c.equals = claim, eq
	return c, nil
}

// scalarString renders a JSON scalar for comparison: strings as they are,
// booleans as true/false, numbers as written. Key Vault compares a
// condition's value with the claim this way, so "equals": "true" matches a
// boolean true claim (the azkeys suite's policy relies on it).
func scalarString(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case bool:
		return strconv.FormatBool(x), true
	case json.Number:
		return x.String(), true
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), true
	}
	return "", false
}

// claimAt resolves a dotted claim name in the token's claims.
func claimAt(claims map[string]any, name string) (any, bool) {
	var cur any = claims
	for _, part := range strings.Split(name, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[part]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func (c policyCond) eval(claims map[string]any) bool {
	if c.subs != nil {
		for _, s := range c.subs {
			ok := s.eval(claims)
			if c.anyOf && ok {
				return true
			}
			if !c.anyOf && !ok {
				return false
			}
		}
		return !c.anyOf
	}
	v, ok := claimAt(claims, c.claim)
	if !ok {
		return false
	}
	got, ok1 := scalarString(v)
	want, ok2 := scalarString(c.equals)
	return ok1 && ok2 && got == want
}

// satisfies evaluates a release policy for an assertion from issuer.
func (p *releasePolicy) satisfies(issuer string, claims map[string]any) bool {
	auths, err := parsePolicyDoc(p.Data)
	if err != nil {
		return false
	}
	for _, a := range auths {
		if strings.EqualFold(a.authority, issuer) && a.cond.eval(claims) {
			return true
		}
	}
	return false
}

// applyExport sets exportability and the release policy of a new version.
// Exportable keys must be HSM-protected and need a release policy (which a
// later version may inherit from the current one, see
// checkNewVersionExport); a release policy on a key that is not exportable
// is refused rather than dropped.
func applyExport(kv *keyVersion, a *attrsIn, rp *releasePolicyIn) error {
	kv.Exportable = a != nil && a.Exportable != nil && *a.Exportable
	if rp != nil {
		if !kv.Exportable {
			return errors.New("A release policy can only be set on an exportable key (attributes.exportable: true).")
		}
		p, err := rp.parse()
		if err != nil {
			return err
		}
		kv.ReleasePolicy = p
	}
	if kv.Exportable && !kv.hsm() {
		return fmt.Errorf("Only HSM-protected keys (RSA-HSM, EC-HSM, oct-HSM) can be exportable; this key is %s.", kv.Kty)
	}
	return nil
}

// checkNewVersionExport applies the release rules to a new version of an
// existing key: an exportable version without a policy inherits the
// current one's; an immutable policy cannot be replaced.
func checkNewVersionExport(cur, kv *keyVersion) error {
	if cur.ReleasePolicy != nil && cur.ReleasePolicy.Immutable && kv.ReleasePolicy != nil &&
		!bytes.Equal(cur.ReleasePolicy.Data, kv.ReleasePolicy.Data) {
		return errors.New("The key's release policy is immutable and cannot be changed.")
	}
	if kv.Exportable && kv.ReleasePolicy == nil {
		if cur.ReleasePolicy == nil {
			return errors.New("An exportable key needs a release policy (release_policy).")
		}
		p := *cur.ReleasePolicy
		kv.ReleasePolicy = &p
	}
	return nil
}

// checkFirstVersionExport: the first version of an exportable key must
// bring its policy.
func checkFirstVersionExport(kv *keyVersion) error {
	if kv.Exportable && kv.ReleasePolicy == nil {
		return errors.New("An exportable key needs a release policy (release_policy) when its first version is created.")
	}
	return nil
}

// checkUpdateExport validates an update's exportable flag and release
// policy against the version.
func checkUpdateExport(kv *keyVersion, a *attrsIn, rp *releasePolicyIn) error {
	if a != nil && a.Exportable != nil && *a.Exportable != kv.Exportable {
		return errors.New("The exportable attribute of a key cannot be changed.")
	}
	if rp == nil {
		return nil
	}
	if !kv.Exportable {
		return errors.New("A release policy can only be set on an exportable key.")
	}
	p, err := rp.parse()
	if err != nil {
		return err
	}
	if kv.ReleasePolicy != nil && kv.ReleasePolicy.Immutable && !bytes.Equal(kv.ReleasePolicy.Data, p.Data) {
		return errors.New("The key's release policy is immutable and cannot be changed.")
	}
	if kv.ReleasePolicy != nil && kv.ReleasePolicy.Immutable && !p.Immutable {
		return errors.New("An immutable release policy cannot be made mutable.")
	}
	return nil
}

type releaseReq struct {
	Target string `json:"target"`
	Nonce  string `json:"nonce"`
	Enc    string `json:"enc"`
}

// releaseHash is the OAEP hash of each release wrapping algorithm.
func releaseHash(enc string) (func() hash.Hash, bool) {
	switch enc {
	case "CKM_RSA_AES_KEY_WRAP":
		return sha1.New, true
	case "RSA_AES_KEY_WRAP_256":
		return sha256.New, true
	case "RSA_AES_KEY_WRAP_384":
		return sha512.New384, true
	}
	return nil, false
}

// runtimeKey picks the wrapping key from the assertion: the first RSA key
// of x-ms-runtime.keys usable for encryption (use "enc", or key_ops with
// encrypt), per the release policy documentation.
func runtimeKey(claims map[string]any) (*rsa.PublicKey, error) {
	var keys []any
	for _, path := range []string{"x-ms-runtime.keys", "x-ms-runtime-claims.keys"} {
		if v, ok := claimAt(claims, path); ok {
			keys, _ = v.([]any)
			break
		}
	}
	for _, k := range keys {
		m, ok := k.(map[string]any)
		if !ok || m["kty"] != "RSA" {
			continue
		}
		use, _ := m["use"].(string)
		ops, _ := m["key_ops"].([]any)
		if use != "enc" && !slices.Contains(ops, any("encrypt")) && !slices.Contains(ops, any("wrapKey")) {
			continue
		}
		n, err1 := decodeB64URL(fmt.Sprint(m["n"]))
		e, err2 := decodeB64URL(fmt.Sprint(m["e"]))
		if err1 != nil || err2 != nil || len(n) < 256 || len(e) == 0 || len(e) > 4 {
			continue
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}, nil
	}
	return nil, errors.New("The target environment assertion has no RSA encryption key (x-ms-runtime.keys) of at least 2048 bits to release the key to.")
}

// wrapForTarget encrypts the key material for the target: a fresh AES-256
// key wrapped with RSA-OAEP (SHA-1, SHA-256 or SHA-384 per enc) followed
// by the material wrapped with that AES key (RFC 5649), as PKCS #11's
// CKM_RSA_AES_KEY_WRAP lays it out.
func wrapForTarget(pub *rsa.PublicKey, enc string, material []byte) ([]byte, error) {
	newHash, ok := releaseHash(enc)
	if !ok {
		return nil, fmt.Errorf("unsupported enc %q", enc)
	}
	kek := make([]byte, 32)
	if _, err := rand.Read(kek); err != nil {
		return nil, err
	}
	wk, err := rsa.EncryptOAEP(newHash(), rand.Reader, pub, kek, nil)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	wm, err := aesKeyWrapPad(block, material)
	if err != nil {
		return nil, err
	}
	return append(wk, wm...), nil
}

func (e *Emulator) kvRelease(w http.ResponseWriter, r *http.Request, host string, v *vault, rt kvRoute, apiVersion string) {
	var req releaseReq
	if err := readJSON(r, &req); err != nil {
		badParam(w, err.Error())
		return
	}
	if req.Target == "" {
		badParam(w, "The property target (the target environment's attestation token) is required.")
		return
	}
	if req.Enc == "" {
		req.Enc = "CKM_RSA_AES_KEY_WRAP"
	}
	if _, ok := releaseHash(req.Enc); !ok {
		badParam(w, fmt.Sprintf("The key wrapping algorithm %s is not supported. Supported: CKM_RSA_AES_KEY_WRAP, RSA_AES_KEY_WRAP_256, RSA_AES_KEY_WRAP_384.", truncate(req.Enc, 32)))
		return
	}
	e.mu.RLock()
	k, kv := v.lookup(rt.name, rt.version)
	var snap keyVersion
	var keyName string
	if kv != nil {
		snap, keyName = *kv, k.Name
	}
	e.mu.RUnlock()
	if kv == nil {
		keyNotFound(w, rt.name, rt.version)
		return
	}
	if !snap.Enabled {
		kvError(w, http.StatusForbidden, "Forbidden", "Operation release is not allowed on a disabled key.", "KeyDisabled")
		return
	}
	if !snap.Exportable || snap.ReleasePolicy == nil {
		kvError(w, http.StatusForbidden, "Forbidden", "Operation release is not allowed: the key is not exportable.", "KeyOperationForbidden")
		return
	}
	issuer, claims, err := e.verifyAttestation(req.Target)
	if err != nil {
		badParam(w, err.Error())
		return
	}
	if !snap.ReleasePolicy.satisfies(issuer, claims) {
		kvError(w, http.StatusForbidden, "Forbidden", "Target environment attestation statement does not satisfy the key's release policy.", "AccessDenied")
		return
	}
	target, err := runtimeKey(claims)
	if err != nil {
		badParam(w, err.Error())
		return
	}
	material, err := snap.exportMaterial()
	if err != nil {
		kvError(w, http.StatusInternalServerError, "InternalError", "The key material could not be exported.", "")
		return
	}
	ct, err := wrapForTarget(target, req.Enc, material)
	if err != nil {
		badParam(w, "The key could not be wrapped for the target: "+err.Error())
		return
	}
	kid := keyURL(host, keyName) + "/" + snap.Version
	keyHSM, _ := json.Marshal(map[string]any{
		"schema_version": "1.0",
		"header":         map[string]string{"kid": kid, "alg": "dir", "enc": req.Enc},
		"ciphertext":     b64url.EncodeToString(ct),
	})
	b := snap.bundle(v, host, keyName)
	released := map[string]any{"kid": kid, "kty": b.Key.Kty, "key_ops": b.Key.KeyOps, "key_hsm": b64url.EncodeToString(keyHSM)}
	if b.Key.N != "" {
		released["n"], released["e"] = b.Key.N, b.Key.E
	}
	if b.Key.Crv != "" {
		released["crv"], released["x"], released["y"] = b.Key.Crv, b.Key.X, b.Key.Y
	}
	payload := map[string]any{
		"request":  map[string]any{"api-version": apiVersion, "enc": req.Enc, "kid": kid, "nonce": req.Nonce},
		"response": map[string]any{"key": map[string]any{"key": released, "attributes": b.Attributes, "tags": b.Tags, "release_policy": b.ReleasePolicy}},
	}
	jws, err := e.signRelease(payload)
	if err != nil {
		kvError(w, http.StatusInternalServerError, "InternalError", "The release response could not be signed.", "")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"value": jws})
}

// signRelease signs a release response (RS256). Its x5c is the emulator's
// Key Vault signing certificate, issued by the emulator CA for the vault
// and Managed HSM host names, so a client that checks the chain against
// the CA and the vault's DNS name accepts it.
func (e *Emulator) signRelease(payload map[string]any) (string, error) {
	s := sha256.Sum256(e.st.ReleaseCertDER)
	h := map[string]any{
		"alg": "RS256", "kid": b64url.EncodeToString(s[:]), "x5t#S256": b64url.EncodeToString(s[:]),
		"x5c": []string{base64.StdEncoding.EncodeToString(e.st.ReleaseCertDER), base64.StdEncoding.EncodeToString(e.st.CACertDER)},
	}
	return signJWS(h, payload, e.releaseKey)
}
