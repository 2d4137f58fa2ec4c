// Key Vault keys: create, import, get, list, update and rotate.

package azurecloud

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ---- key bodies ----

type attrsIn struct {
	Enabled    *bool  `json:"enabled"`
	NBF        *int64 `json:"nbf"`
	EXP        *int64 `json:"exp"`
	Exportable *bool  `json:"exportable"`
}

type jwkOut struct {
	Kid    string   `json:"kid"`
	Kty    string   `json:"kty"`
	KeyOps []string `json:"key_ops"`
	N      string   `json:"n,omitempty"`
	E      string   `json:"e,omitempty"`
	Crv    string   `json:"crv,omitempty"`
	X      string   `json:"x,omitempty"`
	Y      string   `json:"y,omitempty"`
}

type attrsOut struct {
	Enabled         bool   `json:"enabled"`
	NBF             *int64 `json:"nbf,omitempty"`
	EXP             *int64 `json:"exp,omitempty"`
	Created         int64  `json:"created"`
	Updated         int64  `json:"updated"`
	RecoveryLevel   string `json:"recoveryLevel"`
	RecoverableDays int    `json:"recoverableDays"`
	Exportable      bool   `json:"exportable"`
}

type bundleOut struct {
	Key           jwkOut            `json:"key"`
	Attributes    attrsOut          `json:"attributes"`
	Tags          map[string]string `json:"tags,omitempty"`
	ReleasePolicy *releasePolicyOut `json:"release_policy,omitempty"`
	// Deleted-key fields.
	RecoveryID         string `json:"recoveryId,omitempty"`
	DeletedDate        int64  `json:"deletedDate,omitempty"`
	ScheduledPurgeDate int64  `json:"scheduledPurgeDate,omitempty"`
}

type itemOut struct {
	Kid        string            `json:"kid"`
	Attributes attrsOut          `json:"attributes"`
	Tags       map[string]string `json:"tags,omitempty"`
	// Deleted-key fields.
	RecoveryID         string `json:"recoveryId,omitempty"`
	DeletedDate        int64  `json:"deletedDate,omitempty"`
	ScheduledPurgeDate int64  `json:"scheduledPurgeDate,omitempty"`
}

func keyURL(host, name string) string { return "https://" + host + "/keys/" + name }

func (kv *keyVersion) attrs(v *vault) attrsOut {
	a := attrsOut{Enabled: kv.Enabled, NBF: kv.NBF, EXP: kv.EXP, Created: kv.Created, Updated: kv.Updated,
		RecoveryLevel: v.recoveryLevel(), RecoverableDays: v.retentionDays(), Exportable: kv.Exportable}
	return a
}

func (kv *keyVersion) bundle(v *vault, host, name string) bundleOut {
	j := jwkOut{Kid: keyURL(host, name) + "/" + kv.Version, Kty: kv.Kty, KeyOps: slices.Clone(kv.Ops)}
	if kv.priv != nil {
		switch pub := kv.priv.Public().(type) {
		case *rsa.PublicKey:
			j.N, j.E = rsaJWK(pub)
		default:
			x, y := ecJWK(pub)
			j.Crv, j.X, j.Y = kv.Curve, b64url.EncodeToString(x), b64url.EncodeToString(y)
		}
	}
	if j.KeyOps == nil {
		j.KeyOps = []string{}
	}
	return bundleOut{Key: j, Attributes: kv.attrs(v), Tags: kv.Tags, ReleasePolicy: kv.ReleasePolicy.out()}
}

func validateTags(tags map[string]string) error {
	if len(tags) > 15 {
		return errors.New("A maximum of 15 tags are allowed.")
	}
	for k, v := range tags {
		if k == "" || len(k) > 512 || len(v) > 256 {
			return errors.New("Tag names must be 1-512 characters and values at most 256 characters.")
		}
	}
	return nil
}

func validateOps(ops []string) error {
	for _, o := range ops {
		if !slices.Contains(validKeyOps, o) {
			return fmt.Errorf("Invalid key operation: %s.", truncate(o, 32))
		}
	}
	return nil
}

type createReq struct {
	Kty            string            `json:"kty"`
	KeySize        *int              `json:"key_size"`
	PublicExponent *int              `json:"public_exponent"`
	KeyOps         []string          `json:"key_ops"`
	Attributes     *attrsIn          `json:"attributes"`
	Tags           map[string]string `json:"tags"`
	Crv            string            `json:"crv"`
	ReleasePolicy  *releasePolicyIn  `json:"release_policy"`
}

// keyType resolves the requested key type against where the key is made:
// a Managed HSM stores every key in its HSM (RSA, EC and oct become
// RSA-HSM, EC-HSM and oct-HSM); a vault has no symmetric keys, and only a
// premium vault has HSM-protected ones.
func keyType(kty string, v *vault) (string, error) {
	switch {
	case kty == "":
		return "", errors.New("The property kty is required.")
	case v.HSM:
		switch kty {
		case "RSA", "RSA-HSM", "EC", "EC-HSM", "oct", "oct-HSM":
			return baseKty(kty) + "-HSM", nil
		}
		return "", fmt.Errorf("The key type %s is not supported by Managed HSM. Supported types are RSA-HSM, EC-HSM and oct-HSM.", truncate(kty, 16))
	}
	switch kty {
	case "RSA", "EC":
		return kty, nil
	case "RSA-HSM", "EC-HSM":
		if v.SKU != "premium" {
			return "", fmt.Errorf("The key type %s requires a premium vault; this vault's SKU is %s.", kty, v.SKU)
		}
		return kty, nil
	case "oct", "oct-HSM":
		return "", fmt.Errorf("The key type %s is only supported by Managed HSM.", kty)
	}
	return "", fmt.Errorf("The key type %s is not supported by this vault. Supported types are RSA, RSA-HSM, EC and EC-HSM.", truncate(kty, 16))
}

// newVersion generates key material per a create request for vault v.
func newVersion(req createReq, v *vault, now time.Time) (*keyVersion, error) {
	kty, err := keyType(req.Kty, v)
	if err != nil {
		return nil, err
	}
	kv := &keyVersion{Version: randHex(16), Kty: kty, Enabled: true, Created: now.Unix(), Updated: now.Unix()}
	switch baseKty(kty) {
	case "RSA":
		kv.Size = 2048
		if req.KeySize != nil {
			kv.Size = *req.KeySize
		}
		if kv.Size != 2048 && kv.Size != 3072 && kv.Size != 4096 {
			return nil, fmt.Errorf("The key size %d is not supported. Supported sizes are 2048, 3072 and 4096.", kv.Size)
		}
		if req.PublicExponent != nil && *req.PublicExponent != 65537 {
			return nil, errors.New("Only the public exponent 65537 is supported.")
		}
		k, err := rsa.GenerateKey(rand.Reader, kv.Size)
		if err != nil {
			return nil, err
		}
		kv.priv = k
		kv.Ops = []string{"encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"}
	case "EC":
		kv.Curve = req.Crv
		if kv.Curve == "" {
			kv.Curve = "P-256"
		}
		if kv.Curve == curveP256K {
			k, err := newK1Key(rand.Reader)
			if err != nil {
				return nil, err
			}
			kv.priv = k
		} else {
			c, ok := curves[kv.Curve]
			if !ok {
				return nil, fmt.Errorf("The curve %s is not supported. Supported curves are P-256, P-256K, P-384 and P-521.", truncate(kv.Curve, 16))
			}
			k, err := ecdsa.GenerateKey(c, rand.Reader)
			if err != nil {
				return nil, err
			}
			kv.priv = k
		}
		kv.Ops = []string{"sign", "verify"}
	case "oct":
		kv.Size = 256
		if req.KeySize != nil {
			kv.Size = *req.KeySize
		}
		if kv.Size != 128 && kv.Size != 192 && kv.Size != 256 {
			return nil, fmt.Errorf("The key size %d is not supported for oct-HSM keys. Supported sizes are 128, 192 and 256.", kv.Size)
		}
		kv.sym = make([]byte, kv.Size/8)
		if _, err := rand.Read(kv.sym); err != nil {
			return nil, err
		}
		kv.Ops = []string{"encrypt", "decrypt", "wrapKey", "unwrapKey"}
	}
	if req.KeyOps != nil {
		if err := validateOps(req.KeyOps); err != nil {
			return nil, err
		}
		kv.Ops = slices.Clone(req.KeyOps)
	}
	if err := validateTags(req.Tags); err != nil {
		return nil, err
	}
	kv.Tags = req.Tags
	applyAttrs(kv, req.Attributes)
	if err := applyExport(kv, req.Attributes, req.ReleasePolicy); err != nil {
		return nil, err
	}
	if err := kv.encodeMaterial(); err != nil {
		return nil, err
	}
	return kv, nil
}

func applyAttrs(kv *keyVersion, a *attrsIn) {
	if a == nil {
		return
	}
	if a.Enabled != nil {
		kv.Enabled = *a.Enabled
	}
	if a.NBF != nil {
		kv.NBF = a.NBF
	}
	if a.EXP != nil {
		kv.EXP = a.EXP
	}
}

// maxKeysPerVault and maxVersionsPerKey bound memory use.
const (
	maxKeysPerVault   = 10_000
	maxVersionsPerKey = 500
)

func deletedConflict(w http.ResponseWriter, name string) {
	kvError(w, http.StatusConflict, "Conflict", fmt.Sprintf(
		"Key %s is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the key can only be recovered or purged.", name), "")
}

// addVersion stores a new version and answers with its bundle.
func (e *Emulator) addVersion(w http.ResponseWriter, host string, v *vault, name string, kv *keyVersion) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ln := strings.ToLower(name)
	if v.Deleted[ln] != nil {
		deletedConflict(w, name)
		return
	}
	k := v.Keys[ln]
	if k == nil {
		if err := checkFirstVersionExport(kv); err != nil {
			badParam(w, err.Error())
			return
		}
		if len(v.Keys) >= maxKeysPerVault {
			badParam(w, "The emulator's per-vault key limit was reached.")
			return
		}
		k = &key{Name: name}
		v.Keys[ln] = k
	} else if err := checkNewVersionExport(k.current(), kv); err != nil {
		badParam(w, err.Error())
		return
	}
	if len(k.Versions) >= maxVersionsPerKey {
		badParam(w, "The emulator's per-key version limit was reached.")
		return
	}
	k.Versions = append(k.Versions, kv)
	if err := e.saveLocked(); err != nil {
		k.Versions = k.Versions[:len(k.Versions)-1]
		if len(k.Versions) == 0 {
			delete(v.Keys, ln)
		}
		kvError(w, http.StatusInternalServerError, "InternalError", "The emulator could not persist its state.", "")
		return
	}
	writeJSON(w, http.StatusOK, kv.bundle(v, host, k.Name))
}

func (e *Emulator) kvCreate(w http.ResponseWriter, r *http.Request, host string, v *vault, name string) {
	var req createReq
	if err := readJSON(r, &req); err != nil {
		badParam(w, err.Error())
		return
	}
	kv, err := newVersion(req, v, e.clock.Now())
	if err != nil {
		badParam(w, err.Error())
		return
	}
	e.addVersion(w, host, v, name, kv)
}

type importJWK struct {
	Kty string   `json:"kty"`
	N   string   `json:"n"`
	E   string   `json:"e"`
	D   string   `json:"d"`
	P   string   `json:"p"`
	Q   string   `json:"q"`
	K   string   `json:"k"`
	T   string   `json:"key_hsm"`
	Crv string   `json:"crv"`
	X   string   `json:"x"`
	Y   string   `json:"y"`
	Ops []string `json:"key_ops"`
}

type importReq struct {
	Key           importJWK         `json:"key"`
	HSM           bool              `json:"hsm"`
	Attributes    *attrsIn          `json:"attributes"`
	Tags          map[string]string `json:"tags"`
	ReleasePolicy *releasePolicyIn  `json:"release_policy"`
}

// importMaterial parses the private key of an import request.
func importMaterial(kv *keyVersion, j importJWK) error {
	ints := func(ss ...string) ([]*big.Int, bool) {
		var out []*big.Int
		for _, s := range ss {
			b, err := decodeB64URL(s)
			if err != nil || len(b) == 0 || len(b) > 1024 {
				return nil, false
			}
			out = append(out, bigBytes(b))
		}
		return out, true
	}
	if j.T != "" {
		return errors.New("Bring-your-own-key (key_hsm) import is not emulated; import the plaintext key.")
	}
	switch baseKty(j.Kty) {
	case "RSA":
		n, ok := ints(j.N, j.E, j.D, j.P, j.Q)
		if !ok || !n[1].IsInt64() || n[1].Int64() > 1<<31 {
			return errors.New("The RSA key to import must include n, e, d, p and q.")
		}
		k := &rsa.PrivateKey{PublicKey: rsa.PublicKey{N: n[0], E: int(n[1].Int64())}, D: n[2], Primes: []*big.Int{n[3], n[4]}}
		if err := k.Validate(); err != nil {
			return errors.New("The RSA key to import is not valid.")
		}
		k.Precompute()
		kv.Size = k.N.BitLen()
		if kv.Size != 2048 && kv.Size != 3072 && kv.Size != 4096 {
			return errors.New("The key size is not supported. Supported sizes are 2048, 3072 and 4096.")
		}
		kv.priv = k
		kv.Ops = []string{"encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"}
	case "EC":
		d, err := decodeB64URL(j.D)
		if err != nil || len(d) == 0 {
			return errors.New("The EC key to import must include a supported crv and d.")
		}
		kv.Curve = j.Crv
		if j.Crv == curveP256K {
			k, err := parseK1Scalar(d)
			if err != nil {
				return errors.New("The EC key to import is not valid.")
			}
			kv.priv = k
		} else {
			c, ok := curves[j.Crv]
			if !ok || len(d) > (c.Params().BitSize+7)/8 {
				return errors.New("The EC key to import must include a supported crv and d.")
			}
			k, err := ecdsa.ParseRawPrivateKey(c, bigBytes(d).FillBytes(make([]byte, (c.Params().BitSize+7)/8)))
			if err != nil {
				return errors.New("The EC key to import is not valid.")
			}
			kv.priv = k
		}
		if j.X != "" || j.Y != "" { // a public part given must match
			x, err1 := decodeB64URL(j.X)
			y, err2 := decodeB64URL(j.Y)
			px, py := ecJWK(kv.priv.Public())
			if err1 != nil || err2 != nil || bigBytes(x).Cmp(bigBytes(px)) != 0 || bigBytes(y).Cmp(bigBytes(py)) != 0 {
				return errors.New("The EC key to import is not valid: x and y do not match d.")
			}
		}
		kv.Ops = []string{"sign", "verify"}
	case "oct":
		k, err := decodeB64URL(j.K)
		if err != nil || (len(k) != 16 && len(k) != 24 && len(k) != 32) {
			return errors.New("The oct key to import must have k of 128, 192 or 256 bits.")
		}
		kv.sym, kv.Size = k, 8*len(k)
		kv.Ops = []string{"encrypt", "decrypt", "wrapKey", "unwrapKey"}
	default:
		return errors.New("The key type to import is not supported. Supported types are RSA, EC and oct (Managed HSM).")
	}
	return nil
}

func (e *Emulator) kvImport(w http.ResponseWriter, r *http.Request, host string, v *vault, name string) {
	var req importReq
	if err := readJSON(r, &req); err != nil {
		badParam(w, err.Error())
		return
	}
	now := e.clock.Now()
	kv := &keyVersion{Version: randHex(16), Enabled: true, Created: now.Unix(), Updated: now.Unix()}
	kty := baseKty(req.Key.Kty)
	if req.HSM || strings.HasSuffix(req.Key.Kty, "-HSM") {
		kty += "-HSM"
	}
	var err error
	if kv.Kty, err = keyType(kty, v); err != nil {
		badParam(w, err.Error())
		return
	}
	if err := importMaterial(kv, req.Key); err != nil {
		badParam(w, err.Error())
		return
	}
	if req.Key.Ops != nil {
		if err := validateOps(req.Key.Ops); err != nil {
			badParam(w, err.Error())
			return
		}
		kv.Ops = slices.Clone(req.Key.Ops)
	}
	if err := validateTags(req.Tags); err != nil {
		badParam(w, err.Error())
		return
	}
	kv.Tags = req.Tags
	applyAttrs(kv, req.Attributes)
	if err := applyExport(kv, req.Attributes, req.ReleasePolicy); err != nil {
		badParam(w, err.Error())
		return
	}
	if err := kv.encodeMaterial(); err != nil {
		badParam(w, "The key to import is not valid.")
		return
	}
	e.addVersion(w, host, v, name, kv)
}

// lookup finds a key version (latest when version is ""); callers hold e.mu.
func (v *vault) lookup(name, version string) (*key, *keyVersion) {
	k := v.Keys[strings.ToLower(name)]
	if k == nil {
		return nil, nil
	}
	if version == "" {
		return k, k.current()
	}
	return k, k.version(version)
}

func (e *Emulator) kvGet(w http.ResponseWriter, host string, v *vault, rt kvRoute) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	k, kv := v.lookup(rt.name, rt.version)
	if kv == nil {
		keyNotFound(w, rt.name, rt.version)
		return
	}
	if !kv.Enabled && e.st.Settings.DisabledKeyBlocksGet {
		kvError(w, http.StatusForbidden, "Forbidden", "Operation get is not allowed on a disabled key.", "KeyDisabled")
		return
	}
	writeJSON(w, http.StatusOK, kv.bundle(v, host, k.Name))
}

// maxResults parses the optional page size (1..25, default 25).
func maxResults(q url.Values) (int, error) {
	s := q.Get("maxresults")
	if s == "" {
		return 25, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 25 {
		return 0, errors.New("The value of maxresults must be between 1 and 25.")
	}
	return n, nil
}

// page slices items per $skiptoken/maxresults and builds the absolute
// nextLink the SDK pager follows.
func page[T any](w http.ResponseWriter, r *http.Request, host string, items []T) {
	q := r.URL.Query()
	n, err := maxResults(q)
	if err != nil {
		badParam(w, err.Error())
		return
	}
	start := 0
	if tok := q.Get("$skiptoken"); tok != "" {
		b, err := decodeB64URL(tok)
		s, err2 := strconv.Atoi(string(b))
		if err != nil || err2 != nil || s < 0 || s > len(items) {
			badParam(w, "The $skiptoken is not valid.")
			return
		}
		start = s
	}
	end := min(start+n, len(items))
	var next *string
	if end < len(items) {
		nq := url.Values{}
		nq.Set("api-version", q.Get("api-version"))
		nq.Set("maxresults", strconv.Itoa(n))
		nq.Set("$skiptoken", b64url.EncodeToString([]byte(strconv.Itoa(end))))
		s := "https://" + host + r.URL.Path + "?" + nq.Encode()
		next = &s
	}
	page := items[start:end]
	if page == nil {
		page = []T{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"value": page, "nextLink": next})
}

func (e *Emulator) kvList(w http.ResponseWriter, r *http.Request, host string, v *vault, name string) {
	e.mu.RLock()
	var items []itemOut
	if name == "" {
		for _, ln := range sortedKeys(v.Keys) {
			k := v.Keys[ln]
			kv := k.current()
			items = append(items, itemOut{Kid: keyURL(host, k.Name), Attributes: kv.attrs(v), Tags: kv.Tags})
		}
	} else {
		k := v.Keys[strings.ToLower(name)]
		if k == nil {
			e.mu.RUnlock()
			keyNotFound(w, name, "")
			return
		}
		for _, kv := range k.Versions {
			items = append(items, itemOut{Kid: keyURL(host, k.Name) + "/" + kv.Version, Attributes: kv.attrs(v), Tags: kv.Tags})
		}
	}
	e.mu.RUnlock()
	page(w, r, host, items)
}

type updateReq struct {
	KeyOps        []string          `json:"key_ops"`
	Attributes    *attrsIn          `json:"attributes"`
	Tags          map[string]string `json:"tags"`
	ReleasePolicy *releasePolicyIn  `json:"release_policy"`
}

func (e *Emulator) kvUpdate(w http.ResponseWriter, r *http.Request, host string, v *vault, rt kvRoute) {
	var req updateReq
	if err := readJSON(r, &req); err != nil && !errors.Is(err, errEmptyBody) {
		badParam(w, err.Error())
		return
	}
	if req.KeyOps != nil {
		if err := validateOps(req.KeyOps); err != nil {
			badParam(w, err.Error())
			return
		}
	}
	if req.Tags != nil {
		if err := validateTags(req.Tags); err != nil {
			badParam(w, err.Error())
			return
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	k, kv := v.lookup(rt.name, rt.version)
	if kv == nil {
		keyNotFound(w, rt.name, rt.version)
		return
	}
	if err := checkUpdateExport(kv, req.Attributes, req.ReleasePolicy); err != nil {
		badParam(w, err.Error())
		return
	}
	old := *kv
	if req.ReleasePolicy != nil {
		kv.ReleasePolicy, _ = req.ReleasePolicy.parse() // checked above
	}
	if req.KeyOps != nil {
		kv.Ops = slices.Clone(req.KeyOps)
	}
	if req.Tags != nil {
		kv.Tags = req.Tags
	}
	applyAttrs(kv, req.Attributes)
	kv.Updated = e.clock.Now().Unix()
	if err := e.saveLocked(); err != nil {
		*kv = old
		kvError(w, http.StatusInternalServerError, "InternalError", "The emulator could not persist its state.", "")
		return
	}
	writeJSON(w, http.StatusOK, kv.bundle(v, host, k.Name))
}

func (e *Emulator) kvRotate(w http.ResponseWriter, host string, v *vault, name string) {
	e.mu.RLock()
	k, cur := v.lookup(name, "")
	var kv *keyVersion
	var err error
	if cur != nil {
		if kv, err = nextVersion(cur, v, e.clock.Now()); err == nil {
			k.Policy.applyExpiry(kv)
		}
	}
	e.mu.RUnlock()
	if cur == nil {
		keyNotFound(w, name, "")
		return
	}
	if err != nil {
		badParam(w, err.Error())
		return
	}
	e.addVersion(w, host, v, name, kv)
}

// nextVersion makes the version a rotation creates: new material of the
// same type, size and curve, with the current version's key_ops, tags,
// exportability and release policy. Callers hold e.mu (read).
func nextVersion(cur *keyVersion, v *vault, now time.Time) (*keyVersion, error) {
	size := cur.Size
	req := createReq{Kty: cur.Kty, KeySize: &size, Crv: cur.Curve, KeyOps: slices.Clone(cur.Ops), Tags: maps.Clone(cur.Tags)}
	if baseKty(cur.Kty) == "EC" {
		req.KeySize = nil
	}
	if cur.Exportable {
		req.Attributes = &attrsIn{Exportable: &cur.Exportable}
		req.ReleasePolicy = cur.ReleasePolicy.in()
	}
	return newVersion(req, v, now)
}
