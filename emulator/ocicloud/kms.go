package ocicloud

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"hash/crc32"
	"net/http"
	"slices"
	"strconv"
	"time"
)

// Key Management API 20180608: vaults on kms.<region>, keys on the vault's
// management endpoint, encrypt/decrypt on its crypto endpoint.

func init() {
	addRoute(svcVault, http.MethodPost, "/vaults", "CreateVault", (*call).createVault)
	addRoute(svcVault, http.MethodGet, "/vaults", "ListVaults", (*call).listVaults)
	addRoute(svcVault, http.MethodGet, "/vaults/{vaultId}", "GetVault", (*call).getVault)

	addRoute(svcManagement, http.MethodPost, "/keys", "CreateKey", (*call).createKey)
	addRoute(svcManagement, http.MethodGet, "/keys", "ListKeys", (*call).listKeys)
	addRoute(svcManagement, http.MethodGet, "/keys/{keyId}", "GetKey", (*call).getKey)
	addRoute(svcManagement, http.MethodPut, "/keys/{keyId}", "UpdateKey", (*call).updateKey)
	addRoute(svcManagement, http.MethodPost, "/keys/{keyId}/actions/enable", "EnableKey", (*call).keyAction)
	addRoute(svcManagement, http.MethodPost, "/keys/{keyId}/actions/disable", "DisableKey", (*call).keyAction)
	addRoute(svcManagement, http.MethodPost, "/keys/{keyId}/actions/scheduleDeletion", "ScheduleKeyDeletion", (*call).keyAction)
	addRoute(svcManagement, http.MethodPost, "/keys/{keyId}/actions/cancelDeletion", "CancelKeyDeletion", (*call).keyAction)
	addRoute(svcManagement, http.MethodPost, "/keys/{keyId}/keyVersions", "CreateKeyVersion", (*call).createKeyVersion)
	addRoute(svcManagement, http.MethodGet, "/keys/{keyId}/keyVersions", "ListKeyVersions", (*call).listKeyVersions)
	addRoute(svcManagement, http.MethodGet, "/keys/{keyId}/keyVersions/{keyVersionId}", "GetKeyVersion", (*call).getKeyVersion)

	addRoute(svcCrypto, http.MethodPost, "/encrypt", "Encrypt", (*call).encrypt)
	addRoute(svcCrypto, http.MethodPost, "/decrypt", "Decrypt", (*call).decrypt)
	addRoute(svcCrypto, http.MethodPost, "/generateDataEncryptionKey", "GenerateDataEncryptionKey", (*call).generateDEK)
}

// ---- vaults ----

func (e *Emulator) vaultJSON(v *vault) map[string]any {
	r := regionByID(v.Region)
	base := v.Prefix + "-%s.kms." + r.ID + "." + r.domain()
	return map[string]any{
		"compartmentId": v.Compartment, "id": v.ID, "displayName": v.Name, "timeCreated": ociTime(v.Created),
		"lifecycleState": v.State, "vaultType": v.Type, "wrappingkeyId": v.WrappingKey,
		"cryptoEndpoint": "https://" + sprintf(base, "crypto"), "managementEndpoint": "https://" + sprintf(base, "management"),
		"freeformTags": tags(v.FreeformTags), "definedTags": map[string]any{}, "isPrimary": true, "isVaultReplicable": false,
	}
}

func (c *call) createVault() error {
	var in struct {
		CompartmentID *string           `json:"compartmentId"`
		DisplayName   *string           `json:"displayName"`
		VaultType     string            `json:"vaultType"`
		FreeformTags  map[string]string `json:"freeformTags"`
	}
	if err := c.decode(&in); err != nil {
		return err
	}
	if in.CompartmentID == nil || in.DisplayName == nil {
		return errf(400, "MissingParameter", "compartmentId and displayName are required.")
	}
	if in.VaultType != "DEFAULT" && in.VaultType != "VIRTUAL_PRIVATE" {
		return invalidParam("vaultType must be DEFAULT or VIRTUAL_PRIVATE.")
	}
	if err := checkDisplayName(*in.DisplayName); err != nil {
		return err
	}
	if !c.allowed(*in.CompartmentID, verbManage, "vaults", nil) {
		return errNotFound
	}
	ten := c.e.tenancyOfLocked(*in.CompartmentID)
	if err := c.throttle(ten, true); err != nil {
		return err
	}
	if id, ok, err := c.retriedLocked(ten, "CreateVault"); err != nil {
		return err
	} else if ok {
		return c.reply(200, c.e.vaultJSON(c.e.st.Vaults[id]), "")
	}
	prefix := newVaultPrefix()
	v := &vault{ID: regionalOCID("vault", c.ep.region, prefix), Tenancy: ten, Compartment: *in.CompartmentID, Region: c.ep.region.ID,
		Prefix: prefix, Name: *in.DisplayName, Type: in.VaultType, State: "ACTIVE", Created: c.now, FreeformTags: in.FreeformTags}
	v.WrappingKey = regionalOCID("key", c.ep.region, prefix)
	c.e.st.Vaults[v.ID] = v
	c.log.Resource, c.log.ResourceTenancy = v.ID, ten
	c.rememberLocked(ten, "CreateVault", v.ID)
	if err := c.e.saveLocked(); err != nil {
		return err
	}
	return c.reply(200, c.e.vaultJSON(v), newEtag())
}

func (c *call) getVault() error {
	v := c.e.st.Vaults[c.params["vaultId"]]
	if v == nil || v.Region != c.ep.region.ID {
		return errNotFound
	}
	c.log.Resource, c.log.ResourceTenancy = v.ID, v.Tenancy
	if !c.allowed(v.Compartment, verbRead, "vaults", map[string]string{"target.vault.id": v.ID}) {
		return errNotFound
	}
	if err := c.throttle(v.Tenancy, false); err != nil {
		return err
	}
	return c.reply(200, c.e.vaultJSON(v), newEtag())
}

func (c *call) listVaults() error {
	comp := c.r.URL.Query().Get("compartmentId")
	if comp == "" {
		return errf(400, "MissingParameter", "compartmentId is required.")
	}
	if !c.allowed(comp, verbInspect, "vaults", nil) {
		return errNotFound
	}
	if err := c.throttle(c.e.tenancyOfLocked(comp), false); err != nil {
		return err
	}
	var out []map[string]any
	for _, id := range sortedKeys(c.e.st.Vaults) {
		v := c.e.st.Vaults[id]
		if v.Compartment == comp && v.Region == c.ep.region.ID {
			j := c.e.vaultJSON(v)
			delete(j, "wrappingkeyId")
			out = append(out, j)
		}
	}
	s, en, err := c.page(len(out))
	if err != nil {
		return err
	}
	return c.reply(200, nonNil(out[s:en]), "")
}

// ---- keys ----

// vaultOfEndpointLocked is the vault whose management or crypto host was
// called.
func (c *call) vaultOfEndpointLocked() *vault {
	for _, v := range c.e.st.Vaults {
		if v.Prefix == c.ep.prefix && v.Region == c.ep.region.ID && v.State == "ACTIVE" {
			return v
		}
	}
	return nil
}

// keyLocked finds a key of the called vault and advances its scheduled
// deletion; nil if absent (OCI answers 404 for keys of another vault).
func (c *call) keyLocked(id string) *key {
	v := c.vaultOfEndpointLocked()
	k := c.e.st.Keys[id]
	if v == nil || k == nil || k.Vault != v.ID {
		return nil
	}
	if k.State == "PENDING_DELETION" && !c.now.Before(k.TimeOfDeletion) {
		k.State, k.Etag = "DELETED", newEtag()
		for _, kv := range k.Versions {
			kv.State = "DELETED"
		}
	}
	c.log.Resource, c.log.ResourceTenancy = k.ID, k.Tenancy
	return k
}

func keyVars(k *key) map[string]string {
	return map[string]string{"target.key.id": k.ID, "target.vault.id": k.Vault}
}

func keyJSON(k *key) map[string]any {
	m := map[string]any{
		"compartmentId": k.Compartment, "currentKeyVersion": k.current().ID, "displayName": k.Name, "id": k.ID,
		"keyShape": map[string]any{"algorithm": k.Algorithm, "length": k.Length}, "lifecycleState": k.State,
		"timeCreated": ociTime(k.Created), "vaultId": k.Vault, "protectionMode": k.Protection,
		"freeformTags": tags(k.FreeformTags), "definedTags": map[string]any{}, "isPrimary": true, "isAutoRotationEnabled": false,
	}
	if !k.TimeOfDeletion.IsZero() {
		m["timeOfDeletion"] = ociTime(k.TimeOfDeletion)
	}
	return m
}

func versionJSON(k *key, kv *keyVersion) map[string]any {
	return map[string]any{"compartmentId": k.Compartment, "id": kv.ID, "keyId": k.ID, "vaultId": k.Vault,
		"timeCreated": ociTime(kv.Created), "lifecycleState": kv.State, "origin": "INTERNAL", "isPrimary": true, "isAutoRotated": false}
}

// getKeyFor finds the path's key and checks the caller may use verb on it.
func (c *call) getKeyFor(verb int, write bool) (*key, error) {
	k := c.keyLocked(c.params["keyId"])
	if k == nil || !c.allowed(k.Compartment, verb, "keys", keyVars(k)) {
		return nil, errNotFound
	}
	if err := c.throttle(k.Tenancy, write); err != nil {
		return nil, err
	}
	if im := c.r.Header.Get("If-Match"); write && im != "" && im != k.Etag {
		return nil, errf(412, "NoEtagMatch", "The resource's etag does not match the If-Match header.")
	}
	return k, nil
}

func (c *call) createKey() error {
	v := c.vaultOfEndpointLocked()
	if v == nil {
		return errNotFound
	}
	var in struct {
		CompartmentID *string `json:"compartmentId"`
		DisplayName   *string `json:"displayName"`
		KeyShape      *struct {
			Algorithm string `json:"algorithm"`
			Length    *int   `json:"length"`
			CurveID   string `json:"curveId"`
		} `json:"keyShape"`
		ProtectionMode string            `json:"protectionMode"`
		FreeformTags   map[string]string `json:"freeformTags"`
	}
	if err := c.decode(&in); err != nil {
		return err
	}
	if in.CompartmentID == nil || in.DisplayName == nil || in.KeyShape == nil || in.KeyShape.Length == nil {
		return errf(400, "MissingParameter", "compartmentId, displayName and keyShape (algorithm, length) are required.")
	}
	if err := checkDisplayName(*in.DisplayName); err != nil {
		return err
	}
	if err := checkTags(in.FreeformTags); err != nil {
		return err
	}
	alg, n := in.KeyShape.Algorithm, *in.KeyShape.Length
	valid := map[string][]int{"AES": {16, 24, 32}, "RSA": {256, 384, 512}, "ECDSA": {32, 48, 66}}[alg]
	if !containsInt(valid, n) {
		return invalidParam("keyShape: algorithm must be AES (length 16, 24 or 32 bytes), RSA (256, 384 or 512) or ECDSA (32, 48 or 66).")
	}
	if in.ProtectionMode == "" {
		in.ProtectionMode = "HSM"
	}
	if in.ProtectionMode != "HSM" && in.ProtectionMode != "SOFTWARE" {
		return invalidParam("protectionMode must be HSM or SOFTWARE (EXTERNAL keys need an external key manager, which is not emulated).")
	}
	if c.e.tenancyOfLocked(*in.CompartmentID) != v.Tenancy || !c.allowed(*in.CompartmentID, verbManage, "keys", map[string]string{"target.vault.id": v.ID}) {
		return errNotFound
	}
	if err := c.throttle(v.Tenancy, true); err != nil {
		return err
	}
	if id, ok, err := c.retriedLocked(v.Tenancy, "CreateKey"); err != nil {
		return err
	} else if ok {
		return c.reply(200, keyJSON(c.e.st.Keys[id]), c.e.st.Keys[id].Etag)
	}
	r := regionByID(v.Region)
	k := &key{ID: regionalOCID("key", r, v.Prefix), Tenancy: v.Tenancy, Compartment: *in.CompartmentID, Vault: v.ID, Region: v.Region,
		Name: *in.DisplayName, Algorithm: alg, Length: n, Protection: in.ProtectionMode, State: "ENABLED", Created: c.now,
		FreeformTags: in.FreeformTags, Etag: newEtag()}
	k.Versions = []*keyVersion{c.newVersion(k, r)}
	c.e.st.Keys[k.ID] = k
	c.log.Resource, c.log.ResourceTenancy = k.ID, k.Tenancy
	c.rememberLocked(v.Tenancy, "CreateKey", k.ID)
	if err := c.e.saveLocked(); err != nil {
		return err
	}
	return c.reply(200, keyJSON(k), k.Etag)
}

func (c *call) newVersion(k *key, r *region) *keyVersion {
	kv := &keyVersion{ID: regionalOCID("keyversion", r, c.e.st.Vaults[k.Vault].Prefix), Created: c.now, State: "ENABLED"}
	if k.Algorithm == "AES" {
		kv.Material = make([]byte, k.Length)
		rand.Read(kv.Material)
	}
	return kv
}

func (c *call) getKey() error {
	k, err := c.getKeyFor(verbRead, false)
	if err != nil {
		return err
	}
	return c.reply(200, keyJSON(k), k.Etag)
}

func (c *call) listKeys() error {
	v := c.vaultOfEndpointLocked()
	comp := c.r.URL.Query().Get("compartmentId")
	if comp == "" {
		return errf(400, "MissingParameter", "compartmentId is required.")
	}
	if v == nil || !c.allowed(comp, verbInspect, "keys", nil) {
		return errNotFound
	}
	if err := c.throttle(v.Tenancy, false); err != nil {
		return err
	}
	var out []map[string]any
	for _, id := range sortedKeys(c.e.st.Keys) {
		k := c.e.st.Keys[id]
		if k.Vault == v.ID && k.Compartment == comp {
			out = append(out, map[string]any{"compartmentId": k.Compartment, "displayName": k.Name, "id": k.ID,
				"lifecycleState": k.State, "timeCreated": ociTime(k.Created), "vaultId": k.Vault, "protectionMode": k.Protection,
				"algorithm": k.Algorithm, "freeformTags": tags(k.FreeformTags), "definedTags": map[string]any{}, "isAutoRotationEnabled": false})
		}
	}
	s, en, err := c.page(len(out))
	if err != nil {
		return err
	}
	return c.reply(200, nonNil(out[s:en]), "")
}

func (c *call) updateKey() error {
	k, err := c.getKeyFor(verbManage, true)
	if err != nil {
		return err
	}
	var in struct {
		DisplayName  *string           `json:"displayName"`
		FreeformTags map[string]string `json:"freeformTags"`
	}
	if err := c.decode(&in); err != nil {
		return err
	}
	if k.State != "ENABLED" && k.State != "CREATING" {
		return errf(409, "Conflict", "The key must be ENABLED to be updated; it is %s.", k.State)
	}
	if in.DisplayName != nil {
		if err := checkDisplayName(*in.DisplayName); err != nil {
			return err
		}
		k.Name = *in.DisplayName
	}
	if in.FreeformTags != nil {
		if err := checkTags(in.FreeformTags); err != nil {
			return err
		}
		k.FreeformTags = in.FreeformTags
	}
	k.Etag = newEtag()
	if err := c.e.saveLocked(); err != nil {
		return err
	}
	return c.reply(200, keyJSON(k), k.Etag)
}

// Deletion may be scheduled 7 to 30 days ahead (default 30).
const (
	minDeletionDays     = 7
	maxDeletionDays     = 30
	defaultDeletionDays = 30
)

func (c *call) keyAction() error {
	k, err := c.getKeyFor(verbManage, true)
	if err != nil {
		return err
	}
	op := c.op[len("kms."):]
	conflict := func() error {
		return errf(409, "Conflict", "The key cannot be changed by %s in state %s.", op, k.State)
	}
	switch op {
	case "EnableKey":
		switch k.State {
		case "ENABLED":
		case "DISABLED":
			k.State = "ENABLED"
		default:
			return conflict()
		}
	case "DisableKey":
		switch k.State {
		case "DISABLED":
		case "ENABLED":
			k.State = "DISABLED"
		default:
			return conflict()
		}
	case "ScheduleKeyDeletion":
		var in struct {
			TimeOfDeletion *time.Time `json:"timeOfDeletion"`
		}
		if len(c.body) > 0 {
			if err := c.decode(&in); err != nil {
				return err
			}
		}
		if k.State != "ENABLED" && k.State != "DISABLED" {
			return conflict()
		}
		at := c.now.AddDate(0, 0, defaultDeletionDays)
		if in.TimeOfDeletion != nil {
			at = *in.TimeOfDeletion
			if d := at.Sub(c.now); d < minDeletionDays*24*time.Hour-time.Minute || d > maxDeletionDays*24*time.Hour+time.Minute {
				return invalidParam("timeOfDeletion must be between %d and %d days from now.", minDeletionDays, maxDeletionDays)
			}
		}
		k.PriorState, k.State, k.TimeOfDeletion = k.State, "PENDING_DELETION", at.UTC()
	case "CancelKeyDeletion":
		if k.State != "PENDING_DELETION" {
			return conflict()
		}
		k.State, k.PriorState, k.TimeOfDeletion = k.PriorState, "", time.Time{}
		if k.State == "" {
			k.State = "ENABLED"
		}
	}
	k.Etag = newEtag()
	if err := c.e.saveLocked(); err != nil {
		return err
	}
	return c.reply(200, keyJSON(k), k.Etag)
}

func (c *call) createKeyVersion() error {
	k, err := c.getKeyFor(verbManage, true)
	if err != nil {
		return err
	}
	if k.State != "ENABLED" {
		return errf(409, "Conflict", "The key must be ENABLED to be rotated; it is %s.", k.State)
	}
	kv := c.newVersion(k, regionByID(k.Region))
	k.Versions = append(k.Versions, kv)
	k.Etag = newEtag()
	c.log.KeyVersion = kv.ID
	if err := c.e.saveLocked(); err != nil {
		return err
	}
	return c.reply(200, versionJSON(k, kv), newEtag())
}

func (c *call) listKeyVersions() error {
	k, err := c.getKeyFor(verbRead, false)
	if err != nil {
		return err
	}
	out := make([]map[string]any, 0, len(k.Versions))
	for i := range k.Versions {
		out = append(out, versionJSON(k, k.Versions[i]))
	}
	if c.r.URL.Query().Get("sortOrder") != "ASC" {
		slices.Reverse(out) // newest first (TIMECREATED DESC)
	}
	s, en, err := c.page(len(out))
	if err != nil {
		return err
	}
	return c.reply(200, out[s:en], "")
}

func (c *call) getKeyVersion() error {
	k, err := c.getKeyFor(verbRead, false)
	if err != nil {
		return err
	}
	for _, kv := range k.Versions {
		if kv.ID == c.params["keyVersionId"] {
			return c.reply(200, versionJSON(k, kv), newEtag())
		}
	}
	return errNotFound
}

// ---- crypto ----

// Ciphertexts are 0x01, the key version's index (uint32), a 12-byte nonce
// and AES-GCM over the plaintext, authenticating the key, the version and
// the associated data: a ciphertext names its version, as OCI's do (Decrypt
// needs no keyVersionId).
const (
	ctVersion      = 1
	maxPlaintext   = 4096
	maxAssociated  = 4096
	ctHeader       = 1 + 4 + 12
	gcmTagSize     = 16
	encryptionAlgo = "AES_256_GCM"
)

type cryptoIn struct {
	KeyID               *string           `json:"keyId"`
	Plaintext           *string           `json:"plaintext"`
	Ciphertext          *string           `json:"ciphertext"`
	AssociatedData      map[string]string `json:"associatedData"`
	KeyVersionID        *string           `json:"keyVersionId"`
	EncryptionAlgorithm string            `json:"encryptionAlgorithm"`
	LoggingContext      map[string]string `json:"loggingContext"`
}

// cryptoKey finds the request's key and checks it can be used now.
func (c *call) cryptoKey(in *cryptoIn) (*key, error) {
	if in.KeyID == nil {
		return nil, errf(400, "MissingParameter", "keyId is required.")
	}
	k := c.keyLocked(*in.KeyID)
	if k == nil || !c.allowed(k.Compartment, verbUse, "keys", keyVars(k)) {
		return nil, errNotFound
	}
	c.log.AssociatedData = in.AssociatedData
	if k.State == "DELETED" || k.State == "DELETING" {
		return nil, errNotFound
	}
	if k.State != "ENABLED" {
		if c.e.st.Settings.DisabledKeyError == "InvalidParameter" {
			return nil, invalidParam("The key is %s; only an ENABLED key can be used.", k.State)
		}
		return nil, errf(409, "IncorrectState", "The key is in lifecycle state %s; only an ENABLED key can be used.", k.State)
	}
	if k.Algorithm != "AES" {
		return nil, invalidParam("Only AES keys encrypt and decrypt with AES_256_GCM; this key is %s.", k.Algorithm)
	}
	if in.EncryptionAlgorithm != "" && in.EncryptionAlgorithm != encryptionAlgo {
		return nil, invalidParam("encryptionAlgorithm must be AES_256_GCM for an AES key.")
	}
	ad, _ := json.Marshal(in.AssociatedData)
	if len(ad) >= maxAssociated {
		return nil, invalidParam("associatedData must be shorter than %d characters.", maxAssociated)
	}
	return k, nil
}

func gcmAAD(k *key, kv *keyVersion, ad map[string]string) []byte {
	b, _ := json.Marshal(ad) // keys sorted: one encoding per map
	if len(ad) == 0 {
		b = nil
	}
	return append([]byte("ekm-oci-emulator\x00"+k.ID+"\x00"+kv.ID+"\x00"), b...)
}

func seal(k *key, idx int, ad map[string]string, pt []byte) ([]byte, error) {
	kv := k.Versions[idx]
	blk, err := aes.NewCipher(kv.Material)
	if err != nil {
		return nil, err
	}
	g, _ := cipher.NewGCM(blk)
	out := make([]byte, ctHeader, ctHeader+len(pt)+gcmTagSize)
	out[0] = ctVersion
	binary.BigEndian.PutUint32(out[1:5], uint32(idx))
	rand.Read(out[5:ctHeader])
	return g.Seal(out, out[5:ctHeader], pt, gcmAAD(k, kv, ad)), nil
}

// open decrypts; ok is false for any ciphertext that is not this key's
// with this associated data.
func open(k *key, ct []byte, ad map[string]string) (pt []byte, kv *keyVersion, ok bool) {
	if len(ct) < ctHeader+gcmTagSize || ct[0] != ctVersion {
		return nil, nil, false
	}
	idx := binary.BigEndian.Uint32(ct[1:5])
	if uint64(idx) >= uint64(len(k.Versions)) {
		return nil, nil, false
	}
	kv = k.Versions[idx]
	if kv.State != "ENABLED" {
		return nil, nil, false
	}
	blk, err := aes.NewCipher(kv.Material)
	if err != nil {
		return nil, nil, false
	}
	g, _ := cipher.NewGCM(blk)
	pt, err = g.Open(nil, ct[5:ctHeader], ct[ctHeader:], gcmAAD(k, kv, ad))
	return pt, kv, err == nil
}

func (c *call) encrypt() error {
	var in cryptoIn
	if err := c.decode(&in); err != nil {
		return err
	}
	if in.Plaintext == nil {
		return errf(400, "MissingParameter", "plaintext is required.")
	}
	k, err := c.cryptoKey(&in)
	if err != nil {
		return err
	}
	pt, err := base64.StdEncoding.DecodeString(*in.Plaintext)
	if err != nil || len(pt) == 0 || len(pt) > maxPlaintext {
		return invalidParam("plaintext must be base64 of 1 to %d bytes.", maxPlaintext)
	}
	idx := len(k.Versions) - 1
	if in.KeyVersionID != nil {
		idx = -1
		for i, kv := range k.Versions {
			if kv.ID == *in.KeyVersionID && kv.State == "ENABLED" {
				idx = i
			}
		}
		if idx < 0 {
			return invalidParam("keyVersionId is not an enabled version of the key.")
		}
	}
	ct, err := seal(k, idx, in.AssociatedData, pt)
	clear(pt)
	if err != nil {
		return err
	}
	kv := k.Versions[idx]
	c.log.KeyVersion = kv.ID
	return c.reply(200, map[string]any{"ciphertext": base64.StdEncoding.EncodeToString(ct), "keyId": k.ID,
		"keyVersionId": kv.ID, "encryptionAlgorithm": encryptionAlgo}, "")
}

func (c *call) decrypt() error {
	var in cryptoIn
	if err := c.decode(&in); err != nil {
		return err
	}
	if in.Ciphertext == nil {
		return errf(400, "MissingParameter", "ciphertext is required.")
	}
	k, err := c.cryptoKey(&in)
	if err != nil {
		return err
	}
	ct, err := base64.StdEncoding.DecodeString(*in.Ciphertext)
	if err != nil {
		return invalidParam("ciphertext is not base64.")
	}
	pt, kv, ok := open(k, ct, in.AssociatedData)
	if !ok || (in.KeyVersionID != nil && *in.KeyVersionID != kv.ID) {
		return invalidParam("The ciphertext cannot be decrypted with this key and associated data.")
	}
	c.log.KeyVersion = kv.ID
	out := map[string]any{"plaintext": base64.StdEncoding.EncodeToString(pt), "plaintextChecksum": strconv.FormatUint(uint64(crc32.ChecksumIEEE(pt)), 10),
		"keyId": k.ID, "keyVersionId": kv.ID, "encryptionAlgorithm": encryptionAlgo}
	clear(pt)
	return c.reply(200, out, "")
}

func (c *call) generateDEK() error {
	var in struct {
		cryptoIn
		IncludePlaintextKey *bool `json:"includePlaintextKey"`
		KeyShape            *struct {
			Algorithm string `json:"algorithm"`
			Length    int    `json:"length"`
		} `json:"keyShape"`
	}
	if err := c.decode(&in); err != nil {
		return err
	}
	if in.IncludePlaintextKey == nil || in.KeyShape == nil {
		return errf(400, "MissingParameter", "keyId, keyShape and includePlaintextKey are required.")
	}
	if in.KeyShape.Algorithm != "AES" || !containsInt([]int{16, 24, 32}, in.KeyShape.Length) {
		return invalidParam("keyShape must be AES of 16, 24 or 32 bytes.")
	}
	k, err := c.cryptoKey(&in.cryptoIn)
	if err != nil {
		return err
	}
	dek := make([]byte, in.KeyShape.Length)
	rand.Read(dek)
	defer clear(dek)
	idx := len(k.Versions) - 1
	ct, err := seal(k, idx, in.AssociatedData, dek)
	if err != nil {
		return err
	}
	c.log.KeyVersion = k.Versions[idx].ID
	out := map[string]any{"ciphertext": base64.StdEncoding.EncodeToString(ct)}
	if *in.IncludePlaintextKey {
		out["plaintext"] = base64.StdEncoding.EncodeToString(dek)
		out["plaintextChecksum"] = strconv.FormatUint(uint64(crc32.ChecksumIEEE(dek)), 10)
	}
	return c.reply(200, out, "")
}

// ---- helpers ----

func checkDisplayName(s string) error {
	if s == "" || len(s) > 255 {
		return invalidParam("displayName must be 1-255 characters.")
	}
	return nil
}

func checkTags(t map[string]string) error {
	if len(t) > 64 {
		return invalidParam("at most 64 freeform tags")
	}
	for k, v := range t {
		if k == "" || len(k) > 100 || len(v) > 256 {
			return invalidParam("freeform tag keys are 1-100 characters, values at most 256")
		}
	}
	return nil
}

func tags(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func nonNil(s []map[string]any) []map[string]any {
	if s == nil {
		return []map[string]any{}
	}
	return s
}

func containsInt(s []int, n int) bool {
	for _, v := range s {
		if v == n {
			return true
		}
	}
	return false
}

// retriedLocked returns the resource an earlier create with the same
// opc-retry-token made (same operation and body), if any.
func (c *call) retriedLocked(tenancy, op string) (string, bool, error) {
	tok := c.r.Header.Get("Opc-Retry-Token")
	if tok == "" {
		return "", false, nil
	}
	rt := c.e.st.RetryTokens[tenancy+" "+tok]
	if rt == nil || c.now.Sub(rt.At) > 24*time.Hour {
		return "", false, nil
	}
	if rt.Op != op || rt.BodyHash != bodyHash(c.body) {
		return "", false, errf(409, "InvalidatedRetryToken", "The retry token was used for another request.")
	}
	return rt.Resource, true, nil
}

func (c *call) rememberLocked(tenancy, op, resource string) {
	tok := c.r.Header.Get("Opc-Retry-Token")
	if tok == "" || len(tok) > 64 {
		return
	}
	if len(c.e.st.RetryTokens) >= 10_000 {
		for k, rt := range c.e.st.RetryTokens {
			if c.now.Sub(rt.At) > 24*time.Hour {
				delete(c.e.st.RetryTokens, k)
			}
		}
		if len(c.e.st.RetryTokens) >= 10_000 {
			return
		}
	}
	c.e.st.RetryTokens[tenancy+" "+tok] = &retryToken{Op: op, Resource: resource, BodyHash: bodyHash(c.body), At: c.now}
}

func bodyHash(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
