// Key Vault keys: create, import, get, list, update and rotate.

package azurecloud

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
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
	Key        jwkOut            `json:"key"`
	Attributes attrsOut          `json:"attributes"`
	Tags       map[string]string `json:"tags,omitempty"`
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

func (kv *keyVersion) attrs() attrsOut {
	return attrsOut{Enabled: kv.Enabled, NBF: kv.NBF, EXP: kv.EXP, Created: kv.Created, Updated: kv.Updated,
		RecoveryLevel: "Recoverable+Purgeable", RecoverableDays: 90}
}

func (kv *keyVersion) bundle(host, name string) bundleOut {
	j := jwkOut{Kid: keyURL(host, name) + "/" + kv.Version, Kty: kv.Kty, KeyOps: slices.Clone(kv.Ops)}
	switch pub := kv.priv.Public().(type) {
	case *rsa.PublicKey:
		j.N, j.E = rsaJWK(pub)
	case *ecdsa.PublicKey:
		j.Crv = kv.Curve
		size := (pub.Curve.Params().BitSize + 7) / 8
		j.X = b64url.EncodeToString(pub.X.FillBytes(make([]byte, size)))
		j.Y = b64url.EncodeToString(pub.Y.FillBytes(make([]byte, size)))
	}
	if j.KeyOps == nil {
		j.KeyOps = []string{}
	}
	return bundleOut{Key: j, Attributes: kv.attrs(), Tags: kv.Tags}
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
}

// newVersion generates key material per a create request.
func newVersion(req createReq, now time.Time) (*keyVersion, error) {
	kv := &keyVersion{Version: randHex(16), Kty: req.Kty, Enabled: true, Created: now.Unix(), Updated: now.Unix()}
	switch req.Kty {
	case "RSA", "RSA-HSM":
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
	case "EC", "EC-HSM":
		kv.Curve = req.Crv
		if kv.Curve == "" {
			kv.Curve = "P-256"
		}
		c, ok := curves[kv.Curve]
		if !ok {
			return nil, fmt.Errorf("The curve %s is not supported by the emulator. Supported curves are P-256, P-384 and P-521.", truncate(kv.Curve, 16))
		}
		k, err := ecdsa.GenerateKey(c, rand.Reader)
		if err != nil {
			return nil, err
		}
		kv.priv = k
		kv.Ops = []string{"sign", "verify"}
	case "":
		return nil, errors.New("The property kty is required.")
	default:
		return nil, fmt.Errorf("The key type %s is not supported by this vault. Supported types are RSA, RSA-HSM, EC and EC-HSM.", truncate(req.Kty, 16))
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
	der, err := x509.MarshalPKCS8PrivateKey(kv.priv)
	if err != nil {
		return nil, err
	}
	kv.PrivDER = der
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
		if len(v.Keys) >= maxKeysPerVault {
			badParam(w, "The emulator's per-vault key limit was reached.")
			return
		}
		k = &key{Name: name}
		v.Keys[ln] = k
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
	writeJSON(w, http.StatusOK, kv.bundle(host, k.Name))
}

func (e *Emulator) kvCreate(w http.ResponseWriter, r *http.Request, host string, v *vault, name string) {
	var req createReq
	if err := readJSON(r, &req); err != nil {
		badParam(w, err.Error())
		return
	}
	kv, err := newVersion(req, e.clock.Now())
	if err != nil {
		badParam(w, err.Error())
		return
	}
	e.addVersion(w, host, v, name, kv)
}

type importReq struct {
	Key struct {
		Kty string   `json:"kty"`
		N   string   `json:"n"`
		E   string   `json:"e"`
		D   string   `json:"d"`
		P   string   `json:"p"`
		Q   string   `json:"q"`
		Crv string   `json:"crv"`
		X   string   `json:"x"`
		Y   string   `json:"y"`
		Ops []string `json:"key_ops"`
	} `json:"key"`
	HSM        bool              `json:"hsm"`
	Attributes *attrsIn          `json:"attributes"`
	Tags       map[string]string `json:"tags"`
}

func (e *Emulator) kvImport(w http.ResponseWriter, r *http.Request, host string, v *vault, name string) {
	var req importReq
	if err := readJSON(r, &req); err != nil {
		badParam(w, err.Error())
		return
	}
	now := e.clock.Now()
	kv := &keyVersion{Version: randHex(16), Enabled: true, Created: now.Unix(), Updated: now.Unix()}
	ints := func(ss ...string) ([]*big.Int, bool) {
		var out []*big.Int
		for _, s := range ss {
			b, err := decodeB64URL(s)
			if err != nil || len(b) == 0 || len(b) > 1024 {
				return nil, false
			}
			out = append(out, new(big.Int).SetBytes(b))
		}
		return out, true
	}
	switch strings.TrimSuffix(req.Key.Kty, "-HSM") {
	case "RSA":
		n, ok := ints(req.Key.N, req.Key.E, req.Key.D, req.Key.P, req.Key.Q)
		if !ok || !n[1].IsInt64() || n[1].Int64() > 1<<31 {
			badParam(w, "The RSA key to import must include n, e, d, p and q.")
			return
		}
		k := &rsa.PrivateKey{PublicKey: rsa.PublicKey{N: n[0], E: int(n[1].Int64())}, D: n[2], Primes: []*big.Int{n[3], n[4]}}
		if err := k.Validate(); err != nil {
			badParam(w, "The RSA key to import is not valid.")
			return
		}
		k.Precompute()
		kv.Size = k.N.BitLen()
		if kv.Size != 2048 && kv.Size != 3072 && kv.Size != 4096 {
			badParam(w, "The key size is not supported. Supported sizes are 2048, 3072 and 4096.")
			return
		}
		kv.priv, kv.Kty = k, "RSA"
		kv.Ops = []string{"encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"}
	case "EC":
		c, ok := curves[req.Key.Crv]
		d, ok2 := ints(req.Key.D)
		if !ok || !ok2 || d[0].BitLen() > c.Params().BitSize {
			badParam(w, "The EC key to import must include a supported crv and d.")
			return
		}
		k, err := ecdsa.ParseRawPrivateKey(c, d[0].FillBytes(make([]byte, (c.Params().BitSize+7)/8)))
		if err != nil {
			badParam(w, "The EC key to import is not valid.")
			return
		}
		kv.priv, kv.Kty, kv.Curve = k, "EC", req.Key.Crv
		kv.Ops = []string{"sign", "verify"}
	default:
		badParam(w, "The key type to import is not supported. Supported types are RSA and EC.")
		return
	}
	if req.HSM {
		kv.Kty += "-HSM"
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
	der, err := x509.MarshalPKCS8PrivateKey(kv.priv)
	if err != nil {
		badParam(w, "The key to import is not valid.")
		return
	}
	kv.PrivDER = der
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
	writeJSON(w, http.StatusOK, kv.bundle(host, k.Name))
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
			items = append(items, itemOut{Kid: keyURL(host, k.Name), Attributes: kv.attrs(), Tags: kv.Tags})
		}
	} else {
		k := v.Keys[strings.ToLower(name)]
		if k == nil {
			e.mu.RUnlock()
			keyNotFound(w, name, "")
			return
		}
		for _, kv := range k.Versions {
			items = append(items, itemOut{Kid: keyURL(host, k.Name) + "/" + kv.Version, Attributes: kv.attrs(), Tags: kv.Tags})
		}
	}
	e.mu.RUnlock()
	page(w, r, host, items)
}

type updateReq struct {
	KeyOps     []string          `json:"key_ops"`
	Attributes *attrsIn          `json:"attributes"`
	Tags       map[string]string `json:"tags"`
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
	old := *kv
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
	writeJSON(w, http.StatusOK, kv.bundle(host, k.Name))
}

func (e *Emulator) kvRotate(w http.ResponseWriter, host string, v *vault, name string) {
	e.mu.RLock()
	_, cur := v.lookup(name, "")
	var req createReq
	if cur != nil {
		size := cur.Size
		req = createReq{Kty: cur.Kty, KeySize: &size, Crv: cur.Curve, KeyOps: slices.Clone(cur.Ops), Tags: cur.Tags}
	}
	e.mu.RUnlock()
	if cur == nil {
		keyNotFound(w, name, "")
		return
	}
	if req.Kty == "EC" || req.Kty == "EC-HSM" {
		req.KeySize = nil
	}
	kv, err := newVersion(req, e.clock.Now())
	if err != nil {
		badParam(w, err.Error())
		return
	}
	e.addVersion(w, host, v, name, kv)
}
