package gcpcloud

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

var (
	enumPurpose = enum{0: "CRYPTO_KEY_PURPOSE_UNSPECIFIED", 1: "ENCRYPT_DECRYPT", 5: "ASYMMETRIC_SIGN", 6: "ASYMMETRIC_DECRYPT", 7: "RAW_ENCRYPT_DECRYPT", 9: "MAC"}
	enumState   = enum{0: "CRYPTO_KEY_VERSION_STATE_UNSPECIFIED", 5: "PENDING_GENERATION", 1: "ENABLED", 2: "DISABLED", 3: "DESTROYED",
		4: "DESTROY_SCHEDULED", 6: "PENDING_IMPORT", 7: "IMPORT_FAILED", 8: "GENERATION_FAILED", 9: "PENDING_EXTERNAL_DESTRUCTION", 10: "EXTERNAL_DESTRUCTION_FAILED"}
	enumProtection = enum{0: "PROTECTION_LEVEL_UNSPECIFIED", 1: "SOFTWARE", 2: "HSM", 3: "EXTERNAL", 4: "EXTERNAL_VPC", 5: "HSM_SINGLE_TENANT"}
	enumAlgorithm  = enum{0: "CRYPTO_KEY_VERSION_ALGORITHM_UNSPECIFIED", 1: "GOOGLE_SYMMETRIC_ENCRYPTION",
		2: "RSA_SIGN_PSS_2048_SHA256", 3: "RSA_SIGN_PSS_3072_SHA256", 4: "RSA_SIGN_PSS_4096_SHA256", 5: "RSA_SIGN_PKCS1_2048_SHA256",
		6: "RSA_SIGN_PKCS1_3072_SHA256", 7: "RSA_SIGN_PKCS1_4096_SHA256", 8: "RSA_DECRYPT_OAEP_2048_SHA256", 9: "RSA_DECRYPT_OAEP_3072_SHA256",
		10: "RSA_DECRYPT_OAEP_4096_SHA256", 12: "EC_SIGN_P256_SHA256", 13: "EC_SIGN_P384_SHA384"}
)

const (
	purposeEncryptDecrypt    = 1
	purposeAsymmetricSign    = 5
	purposeAsymmetricDecrypt = 6

	stateEnabled          = 1
	stateDisabled         = 2
	stateDestroyed        = 3
	stateDestroyScheduled = 4

	protSoftware = 1
	protHSM      = 2

	algSymmetric = 1

	maxPlaintext    = 64 << 10
	maxHSMPlaintext = 8 << 10
	defaultDestroy  = 30 * 24 * time.Hour
)

// algorithmPurpose tells which purpose each emulated algorithm belongs to.
func algorithmPurpose(alg int) int {
	switch {
	case alg == algSymmetric:
		return purposeEncryptDecrypt
	case alg >= 8 && alg <= 10:
		return purposeAsymmetricDecrypt
	case alg >= 2 && alg <= 7 || alg == 12 || alg == 13:
		return purposeAsymmetricSign
	}
	return 0
}

// kmsRoute is one routed Cloud KMS request.
type kmsRoute struct {
	op, perm string
	name     kmsName // the target (for create: the parent)
	quota    string  // "crypto", "read", "write"
}

func (e *Emulator) serveKMS(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), "/v1/")
	path := ""
	var err error
	if ok {
		path, err = url.PathUnescape(rest)
	}
	if !ok || err != nil {
		e.begin(w, r, svcKMS, "kms.invalid")
		writeGoogleError(w, http.StatusNotFound, "NOT_FOUND", "The requested URL was not found on this server.")
		return
	}
	path, verb := splitVerb(path)
	rt, aerr := routeKMS(r.Method, path, verb)
	if rt == nil {
		e.begin(w, r, svcKMS, "kms.invalid")
		if aerr == nil {
			aerr = notFound("The requested URL was not found on this server.")
		}
		writeAPIError(w, aerr)
		return
	}
	corrupt, ok := e.begin(w, r, svcKMS, rt.op)
	if !ok {
		return
	}
	if aerr != nil {
		writeAPIError(w, aerr)
		return
	}
	c, aerr := e.authenticate(w, r, "https://cloudkms.googleapis.com/", scopeCloudPlatform, scopeCloudKMS)
	if aerr != nil {
		writeAPIError(w, aerr)
		return
	}
	if aerr := e.kmsQuota(rt.name.Project, rt.quota); aerr != nil {
		writeAPIError(w, aerr)
		return
	}
	res, aerr := e.handleKMS(r, c, rt, corrupt)
	if aerr != nil {
		writeAPIError(w, aerr)
		return
	}
	writeJSON(w, res)
}

// routeKMS maps method, path and verb to an operation. A nil route means
// no such URL; a non-nil error with a route is a malformed name.
func routeKMS(method, path, verb string) (*kmsRoute, *apiError) {
	parts := strings.Split(path, "/")
	n := len(parts)
	if n < 4 || parts[0] != "projects" || parts[2] != "locations" {
		return nil, nil
	}
	seg := func(i int, s string) bool { return n > i && parts[i] == s }
	var rt kmsRoute
	var target string
	switch {
	// key rings
	case n == 5 && seg(4, "keyRings") && verb == "" && method == http.MethodPost:
		rt = kmsRoute{op: "kms.keyring.create", perm: "cloudkms.keyRings.create", quota: "write"}
		target = strings.Join(parts[:4], "/")
	case n == 5 && seg(4, "keyRings") && verb == "" && method == http.MethodGet:
		rt = kmsRoute{op: "kms.keyring.list", perm: "cloudkms.keyRings.list", quota: "read"}
		target = strings.Join(parts[:4], "/")
	case n == 6 && seg(4, "keyRings") && verb == "" && method == http.MethodGet:
		rt = kmsRoute{op: "kms.keyring.get", perm: "cloudkms.keyRings.get", quota: "read"}
	case n == 6 && seg(4, "keyRings") && (verb == "getIamPolicy" && (method == http.MethodGet || method == http.MethodPost)):
		rt = kmsRoute{op: "kms.getiampolicy", perm: "cloudkms.keyRings.getIamPolicy", quota: "read"}
	case n == 6 && seg(4, "keyRings") && verb == "setIamPolicy" && method == http.MethodPost:
		rt = kmsRoute{op: "kms.setiampolicy", perm: "cloudkms.keyRings.setIamPolicy", quota: "write"}
	case n == 6 && seg(4, "keyRings") && verb == "testIamPermissions" && method == http.MethodPost:
		rt = kmsRoute{op: "kms.testiampermissions", quota: "read"}
	// crypto keys
	case n == 7 && seg(4, "keyRings") && seg(6, "cryptoKeys") && verb == "" && method == http.MethodPost:
		rt = kmsRoute{op: "kms.key.create", perm: "cloudkms.cryptoKeys.create", quota: "write"}
		target = strings.Join(parts[:6], "/")
	case n == 7 && seg(4, "keyRings") && seg(6, "cryptoKeys") && verb == "" && method == http.MethodGet:
		rt = kmsRoute{op: "kms.key.list", perm: "cloudkms.cryptoKeys.list", quota: "read"}
		target = strings.Join(parts[:6], "/")
	case n == 8 && seg(4, "keyRings") && seg(6, "cryptoKeys"):
		switch {
		case verb == "" && method == http.MethodGet:
			rt = kmsRoute{op: "kms.key.get", perm: "cloudkms.cryptoKeys.get", quota: "read"}
		case verb == "" && method == http.MethodPatch:
			rt = kmsRoute{op: "kms.key.update", perm: "cloudkms.cryptoKeys.update", quota: "write"}
		case verb == "encrypt" && method == http.MethodPost:
			rt = kmsRoute{op: "kms.encrypt", perm: "cloudkms.cryptoKeyVersions.useToEncrypt", quota: "crypto"}
		case verb == "decrypt" && method == http.MethodPost:
			rt = kmsRoute{op: "kms.decrypt", perm: "cloudkms.cryptoKeyVersions.useToDecrypt", quota: "crypto"}
		case verb == "updatePrimaryVersion" && method == http.MethodPost:
			rt = kmsRoute{op: "kms.key.updateprimary", perm: "cloudkms.cryptoKeys.update", quota: "write"}
		case verb == "getIamPolicy" && (method == http.MethodGet || method == http.MethodPost):
			rt = kmsRoute{op: "kms.getiampolicy", perm: "cloudkms.cryptoKeys.getIamPolicy", quota: "read"}
		case verb == "setIamPolicy" && method == http.MethodPost:
			rt = kmsRoute{op: "kms.setiampolicy", perm: "cloudkms.cryptoKeys.setIamPolicy", quota: "write"}
		case verb == "testIamPermissions" && method == http.MethodPost:
			rt = kmsRoute{op: "kms.testiampermissions", quota: "read"}
		default:
			return nil, nil
		}
	// versions
	case n == 9 && seg(4, "keyRings") && seg(6, "cryptoKeys") && seg(8, "cryptoKeyVersions") && verb == "" && method == http.MethodPost:
		rt = kmsRoute{op: "kms.version.create", perm: "cloudkms.cryptoKeyVersions.create", quota: "write"}
		target = strings.Join(parts[:8], "/")
	case n == 9 && seg(4, "keyRings") && seg(6, "cryptoKeys") && seg(8, "cryptoKeyVersions") && verb == "" && method == http.MethodGet:
		rt = kmsRoute{op: "kms.version.list", perm: "cloudkms.cryptoKeyVersions.list", quota: "read"}
		target = strings.Join(parts[:8], "/")
	case n == 10 && seg(4, "keyRings") && seg(6, "cryptoKeys") && seg(8, "cryptoKeyVersions"):
		switch {
		case verb == "" && method == http.MethodGet:
			rt = kmsRoute{op: "kms.version.get", perm: "cloudkms.cryptoKeyVersions.get", quota: "read"}
		case verb == "" && method == http.MethodPatch:
			rt = kmsRoute{op: "kms.version.update", perm: "cloudkms.cryptoKeyVersions.update", quota: "write"}
		case verb == "destroy" && method == http.MethodPost:
			rt = kmsRoute{op: "kms.version.destroy", perm: "cloudkms.cryptoKeyVersions.destroy", quota: "write"}
		case verb == "restore" && method == http.MethodPost:
			rt = kmsRoute{op: "kms.version.restore", perm: "cloudkms.cryptoKeyVersions.restore", quota: "write"}
		case verb == "encrypt" && method == http.MethodPost:
			rt = kmsRoute{op: "kms.encrypt", perm: "cloudkms.cryptoKeyVersions.useToEncrypt", quota: "crypto"}
		case verb == "asymmetricSign" || verb == "asymmetricDecrypt" || verb == "getPublicKey" || verb == "macSign" || verb == "macVerify" || verb == "rawEncrypt" || verb == "rawDecrypt":
			rt = kmsRoute{op: "kms.unimplemented", quota: "crypto"}
			return &rt, errf(http.StatusNotImplemented, "UNIMPLEMENTED", "%s is not emulated.", verb)
		default:
			return nil, nil
		}
	default:
		return nil, nil
	}
	if target == "" {
		target = path
	}
	name, err := parseKMSName(target)
	if err != nil {
		rt.name = kmsName{Project: parts[1]}
		return &rt, invalidArg("Resource name [%s] does not match any known pattern.", truncate(target, 512))
	}
	rt.name = name
	return &rt, nil
}

// kmsResolved is the resource hierarchy of a request, as far as it exists.
type kmsResolved struct {
	// dirty: time changed the state (a due rotation or destruction), which
	// must be persisted even on a read.
	dirty bool
	p     *project
	ring  *keyRing
	key   *cryptoKey
	ver   *keyVersion
}

func (k *kmsResolved) policies() []*policy {
	var out []*policy
	if k.p != nil {
		out = append(out, k.p.Policy)
	}
	if k.ring != nil {
		out = append(out, k.ring.Policy)
	}
	if k.key != nil {
		out = append(out, k.key.Policy)
	}
	return out
}

func (e *Emulator) resolveKMS(n kmsName, now time.Time) kmsResolved {
	var res kmsResolved
	res.p = e.projectLocked(n.Project)
	if res.p == nil || n.Kind == "location" {
		return res
	}
	res.ring = res.p.KeyRings[n.Location+"/"+n.KeyRing]
	if res.ring == nil || n.Kind == "keyRing" {
		return res
	}
	res.key = res.ring.Keys[n.Key]
	if res.key == nil {
		return res
	}
	res.dirty = e.refreshKey(res.key, now)
	if n.Kind == "cryptoKeyVersion" {
		id, _ := strconv.Atoi(n.Version)
		res.ver = res.key.version(id)
	}
	return res
}

func (k *cryptoKey) version(id int) *keyVersion {
	if id >= 1 && id <= len(k.Versions) {
		return k.Versions[id-1]
	}
	return nil
}

// refreshKey applies what time did: scheduled destructions that are due
// and automatic rotations. It reports whether anything changed.
func (e *Emulator) refreshKey(k *cryptoKey, now time.Time) (changed bool) {
	for _, v := range k.Versions {
		if v.State == stateDestroyScheduled && !now.Before(v.DestroyTime) {
			v.State, v.Material, v.DestroyEvent = stateDestroyed, nil, v.DestroyTime
			changed = true
		}
	}
	if k.Purpose != purposeEncryptDecrypt || k.RotationPeriod <= 0 || k.NextRotation.IsZero() || now.Before(k.NextRotation) {
		return changed
	}
	changed = true
	for i := 0; !now.Before(k.NextRotation); i++ {
		if i >= 100 { // a far clock jump: skip to the next future rotation
			for !now.Before(k.NextRotation) {
				k.NextRotation = k.NextRotation.Add(k.RotationPeriod)
			}
			break
		}
		v := k.newVersion(k.NextRotation)
		k.Primary = v.ID
		k.NextRotation = k.NextRotation.Add(k.RotationPeriod)
	}
	return changed
}

func (k *cryptoKey) newVersion(now time.Time) *keyVersion {
	v := &keyVersion{ID: len(k.Versions) + 1, State: stateEnabled, Created: now}
	if k.Purpose == purposeEncryptDecrypt {
		v.Material = make([]byte, 32)
		rand.Read(v.Material)
	}
	k.Versions = append(k.Versions, v)
	return v
}

func notFoundKMS(n kmsName) *apiError {
	kind := map[string]string{"keyRing": "KeyRing", "cryptoKey": "CryptoKey", "cryptoKeyVersion": "CryptoKeyVersion"}[n.Kind]
	if kind == "" {
		kind = "Location"
	}
	return notFound("%s %s not found.", kind, n.String())
}

func (e *Emulator) handleKMS(r *http.Request, c *caller, rt *kmsRoute, corrupt string) (any, *apiError) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.clock.Now()
	n := rt.name
	res := e.resolveKMS(n, now)
	if res.dirty { // persist what time did, whatever the outcome of this request
		if err := e.saveLocked(); err != nil {
			return nil, errf(500, "INTERNAL", "Internal error encountered.")
		}
		res.dirty = false
	}
	sent := n.String()
	if rt.op == "kms.testiampermissions" {
		return e.testIAMPermissions(r, c, n, &res)
	}
	if res.p == nil || !e.allowedLocked(c, rt.perm, res.policies()...) {
		return nil, permissionDenied("cloudkms.googleapis.com", rt.perm, sent)
	}
	if !kmsLocations[n.Location] {
		return nil, invalidArg("The location %q is not a valid Cloud KMS location.", n.Location)
	}
	// Existence of the target (creates check their parent).
	switch {
	case n.Kind == "keyRing" && res.ring == nil,
		n.Kind == "cryptoKey" && res.key == nil,
		n.Kind == "cryptoKeyVersion" && (res.key == nil || res.ver == nil):
		if res.ring == nil && n.Kind != "keyRing" {
			return nil, notFoundKMS(kmsName{Project: n.Project, Location: n.Location, KeyRing: n.KeyRing, Kind: "keyRing"})
		}
		if res.key == nil && n.Kind == "cryptoKeyVersion" {
			return nil, notFoundKMS(kmsName{Project: n.Project, Location: n.Location, KeyRing: n.KeyRing, Key: n.Key, Kind: "cryptoKey"})
		}
		return nil, notFoundKMS(n)
	}
	out, aerr := e.kmsOp(r, rt, n, &res, now, corrupt)
	if aerr != nil {
		return nil, aerr
	}
	if rt.quota != "read" || res.dirty {
		if err := e.saveLocked(); err != nil {
			return nil, errf(500, "INTERNAL", "Internal error encountered.")
		}
	}
	return out, nil
}

func (e *Emulator) kmsOp(r *http.Request, rt *kmsRoute, n kmsName, res *kmsResolved, now time.Time, corrupt string) (any, *apiError) {
	ints := enumInts(r)
	switch rt.op {
	case "kms.keyring.create":
		id := r.URL.Query().Get("keyRingId")
		if !kmsIDRE.MatchString(id) {
			return nil, invalidArg("Invalid key ring id %q: it must match [a-zA-Z0-9_-]{1,63}.", id)
		}
		if _, err := readBody(r, "name", "createTime"); err != nil {
			return nil, err
		}
		rn := kmsName{Project: n.Project, Location: n.Location, KeyRing: id, Kind: "keyRing"}
		if res.p.KeyRings[n.Location+"/"+id] != nil {
			return nil, errf(http.StatusConflict, "ALREADY_EXISTS", "KeyRing %s already exists.", rn.String())
		}
		kr := &keyRing{Location: n.Location, ID: id, Created: now, Policy: &policy{Etag: newEtag()}, Keys: map[string]*cryptoKey{}}
		res.p.KeyRings[n.Location+"/"+id] = kr
		return keyRingJSON(rn, kr), nil
	case "kms.keyring.list":
		pg, err := parsePage(r)
		if err != nil {
			return nil, err
		}
		var out []any
		for _, k := range sortedKeys(res.p.KeyRings) {
			kr := res.p.KeyRings[k]
			if kr.Location == n.Location {
				out = append(out, keyRingJSON(kmsName{Project: n.Project, Location: n.Location, KeyRing: kr.ID, Kind: "keyRing"}, kr))
			}
		}
		items, next := pageOf(out, pg)
		m := map[string]any{"totalSize": len(out)}
		if len(items) > 0 {
			m["keyRings"] = items
		}
		if next != "" {
			m["nextPageToken"] = next
		}
		return m, nil
	case "kms.keyring.get":
		return keyRingJSON(n, res.ring), nil
	case "kms.getiampolicy":
		if v := r.URL.Query().Get("options.requestedPolicyVersion"); v != "" && v != "0" && v != "1" && v != "3" {
			return nil, invalidArg("Invalid requested policy version %s.", v)
		}
		if n.Kind == "keyRing" {
			return policyJSON(res.ring.Policy), nil
		}
		return policyJSON(res.key.Policy), nil
	case "kms.setiampolicy":
		body, err := readBody(r, "resource", "policy", "updateMask")
		if err != nil {
			return nil, err
		}
		var in policyIn
		if ok, err := field(body, "policy", &in); err != nil || !ok {
			if err == nil {
				err = invalidArg("The policy is required.")
			}
			return nil, err
		}
		var mask string
		field(body, "updateMask", &mask)
		if mask != "" && mask != "bindings" && mask != "etag" && mask != "bindings,etag" && mask != "etag,bindings" {
			return nil, invalidArg("Invalid update_mask %q: only bindings and etag can be updated.", mask)
		}
		target := res.key.policyOrNil()
		if n.Kind == "keyRing" {
			target = res.ring.Policy
		}
		if err := setPolicy(target, "kms", &in, now); err != nil {
			return nil, err
		}
		return policyJSON(target), nil
	case "kms.key.create":
		return e.createCryptoKey(r, n, res, now, ints)
	case "kms.key.list":
		pg, err := parsePage(r)
		if err != nil {
			return nil, err
		}
		var out []any
		for _, id := range sortedKeys(res.ring.Keys) {
			k := res.ring.Keys[id]
			if e.refreshKey(k, now) {
				res.dirty = true
			}
			out = append(out, cryptoKeyJSON(kmsName{Project: n.Project, Location: n.Location, KeyRing: n.KeyRing, Key: id, Kind: "cryptoKey"}, k, ints))
		}
		items, next := pageOf(out, pg)
		m := map[string]any{"totalSize": len(out)}
		if len(items) > 0 {
			m["cryptoKeys"] = items
		}
		if next != "" {
			m["nextPageToken"] = next
		}
		return m, nil
	case "kms.key.get":
		return cryptoKeyJSON(n, res.key, ints), nil
	case "kms.key.update":
		return e.updateCryptoKey(r, n, res.key, now, ints)
	case "kms.key.updateprimary":
		body, err := readBody(r, "name", "cryptoKeyVersionId")
		if err != nil {
			return nil, err
		}
		var id string
		if _, err := field(body, "cryptoKeyVersionId", &id); err != nil {
			return nil, err
		}
		if res.key.Purpose != purposeEncryptDecrypt {
			return nil, preconditionFailed(fmt.Sprintf("%s does not have purpose ENCRYPT_DECRYPT.", n.String()), "KEY_PURPOSE", n.String())
		}
		vid, _ := strconv.Atoi(id)
		v := res.key.version(vid)
		if !versionIDRE.MatchString(id) || v == nil {
			return nil, notFound("CryptoKeyVersion %s/cryptoKeyVersions/%s not found.", n.String(), id)
		}
		if v.State != stateEnabled {
			vn := n.String() + "/cryptoKeyVersions/" + id
			return nil, preconditionFailed(fmt.Sprintf("%s is not enabled, current state is: %s.", vn, enumState[v.State]), violationType(v.State), vn)
		}
		res.key.Primary = vid
		return cryptoKeyJSON(n, res.key, ints), nil
	case "kms.version.create":
		if _, err := readBody(r, "name", "state", "protectionLevel", "algorithm", "createTime"); err != nil {
			return nil, err
		}
		if len(res.key.Versions) >= 10_000 {
			return nil, errf(http.StatusTooManyRequests, "RESOURCE_EXHAUSTED", "Too many versions for %s.", n.String())
		}
		v := res.key.newVersion(now)
		return versionJSON(n, res.key, v, ints), nil
	case "kms.version.list":
		pg, err := parsePage(r)
		if err != nil {
			return nil, err
		}
		filter := r.URL.Query().Get("filter")
		var out []any
		for _, v := range res.key.Versions {
			if filter != "" && !matchStateFilter(filter, v.State) {
				continue
			}
			out = append(out, versionJSON(n, res.key, v, ints))
		}
		if filter != "" && !validStateFilter(filter) {
			return nil, invalidArg("The emulator supports only filters of the form state=ENABLED (got %q).", filter)
		}
		items, next := pageOf(out, pg)
		m := map[string]any{"totalSize": len(out)}
		if len(items) > 0 {
			m["cryptoKeyVersions"] = items
		}
		if next != "" {
			m["nextPageToken"] = next
		}
		return m, nil
	case "kms.version.get":
		return versionJSON(n, res.key, res.ver, ints), nil
	case "kms.version.update":
		mask, err := parseMask(r, "state")
		if err != nil {
			return nil, err
		}
		_ = mask
		body, err := readBody(r, "name", "state", "protectionLevel", "algorithm", "createTime", "generateTime", "destroyTime", "destroyEventTime")
		if err != nil {
			return nil, err
		}
		var raw any
		field(body, "state", &raw)
		st, ok := enumState.parse(raw)
		if !ok || (st != stateEnabled && st != stateDisabled) {
			return nil, invalidArg("The state can only be updated to ENABLED or DISABLED.")
		}
		if res.ver.State != stateEnabled && res.ver.State != stateDisabled {
			return nil, preconditionFailed(fmt.Sprintf("%s is not in a state that can be updated, current state is: %s.", n.String(), enumState[res.ver.State]),
				violationType(res.ver.State), n.String())
		}
		res.ver.State = st
		return versionJSON(n, res.key, res.ver, ints), nil
	case "kms.version.destroy":
		if _, err := readBody(r, "name"); err != nil {
			return nil, err
		}
		if res.ver.State != stateEnabled && res.ver.State != stateDisabled {
			return nil, preconditionFailed(fmt.Sprintf("%s is not in a state that can be destroyed, current state is: %s.", n.String(), enumState[res.ver.State]),
				violationType(res.ver.State), n.String())
		}
		res.ver.State = stateDestroyScheduled
		res.ver.DestroyTime = now.Add(res.key.DestroyScheduledDuration)
		return versionJSON(n, res.key, res.ver, ints), nil
	case "kms.version.restore":
		if _, err := readBody(r, "name"); err != nil {
			return nil, err
		}
		if res.ver.State != stateDestroyScheduled {
			return nil, preconditionFailed(fmt.Sprintf("%s is not scheduled for destruction, current state is: %s.", n.String(), enumState[res.ver.State]),
				violationType(res.ver.State), n.String())
		}
		res.ver.State, res.ver.DestroyTime = stateDisabled, time.Time{}
		return versionJSON(n, res.key, res.ver, ints), nil
	case "kms.encrypt":
		return e.encrypt(r, n, res, ints, corrupt)
	case "kms.decrypt":
		return e.decrypt(r, n, res, ints, corrupt)
	}
	return nil, errf(http.StatusNotImplemented, "UNIMPLEMENTED", "Not emulated.")
}

func (k *cryptoKey) policyOrNil() *policy {
	if k == nil {
		return nil
	}
	return k.Policy
}

func validStateFilter(f string) bool {
	st, ok := strings.CutPrefix(strings.ReplaceAll(f, " ", ""), "state=")
	if !ok {
		return false
	}
	_, ok = enumState.parse(st)
	return ok
}

func matchStateFilter(f string, state int) bool {
	st, _ := strings.CutPrefix(strings.ReplaceAll(f, " ", ""), "state=")
	return enumState[state] == st
}

// violationType is the PreconditionFailure type for a version that is
// not enabled: KEY_DISABLED is recorded for DISABLED; the others are
// best guesses.
func violationType(state int) string {
	switch state {
	case stateDisabled:
		return "KEY_DISABLED"
	case stateDestroyed, stateDestroyScheduled:
		return "KEY_DESTROYED"
	}
	return "KEY_NOT_ENABLED"
}

func keyRingJSON(n kmsName, kr *keyRing) map[string]any {
	return map[string]any{"name": n.keyRingName(), "createTime": timestamp(kr.Created)}
}

func durationJSON(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s"
}

func cryptoKeyJSON(n kmsName, k *cryptoKey, ints bool) map[string]any {
	m := map[string]any{
		"name":       n.keyName(),
		"purpose":    enumPurpose.out(ints, k.Purpose),
		"createTime": timestamp(k.Created),
		"versionTemplate": map[string]any{"protectionLevel": enumProtection.out(ints, k.ProtectionLevel),
			"algorithm": enumAlgorithm.out(ints, k.Algorithm)},
		"destroyScheduledDuration": durationJSON(k.DestroyScheduledDuration),
	}
	if k.Purpose == purposeEncryptDecrypt && k.Primary > 0 {
		if v := k.version(k.Primary); v != nil {
			m["primary"] = versionJSON(n, k, v, ints)
		}
	}
	if k.RotationPeriod > 0 {
		m["rotationPeriod"] = durationJSON(k.RotationPeriod)
	}
	if !k.NextRotation.IsZero() {
		m["nextRotationTime"] = timestamp(k.NextRotation)
	}
	if len(k.Labels) > 0 {
		m["labels"] = k.Labels
	}
	return m
}

func versionJSON(n kmsName, k *cryptoKey, v *keyVersion, ints bool) map[string]any {
	m := map[string]any{
		"name":            n.keyName() + "/cryptoKeyVersions/" + strconv.Itoa(v.ID),
		"state":           enumState.out(ints, v.State),
		"protectionLevel": enumProtection.out(ints, k.ProtectionLevel),
		"algorithm":       enumAlgorithm.out(ints, k.Algorithm),
		"createTime":      timestamp(v.Created),
		"generateTime":    timestamp(v.Created),
	}
	if !v.DestroyTime.IsZero() {
		m["destroyTime"] = timestamp(v.DestroyTime)
	}
	if !v.DestroyEvent.IsZero() {
		m["destroyEventTime"] = timestamp(v.DestroyEvent)
	}
	return m
}

// parseProtoDuration reads a google.protobuf.Duration ("7776000s").
func parseProtoDuration(s string) (time.Duration, bool) {
	num, ok := strings.CutSuffix(s, "s")
	if !ok || num == "" {
		return 0, false
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 || f > 315_576_000_000 {
		return 0, false
	}
	return time.Duration(f * float64(time.Second)), true
}

var cryptoKeyFields = []string{"name", "primary", "purpose", "createTime", "nextRotationTime", "rotationPeriod", "versionTemplate",
	"labels", "importOnly", "destroyScheduledDuration", "cryptoKeyBackend", "keyAccessJustificationsPolicy"}

func (e *Emulator) createCryptoKey(r *http.Request, n kmsName, res *kmsResolved, now time.Time, ints bool) (any, *apiError) {
	q := r.URL.Query()
	id := q.Get("cryptoKeyId")
	if !kmsIDRE.MatchString(id) {
		return nil, invalidArg("Invalid crypto key id %q: it must match [a-zA-Z0-9_-]{1,63}.", id)
	}
	if q.Get("trustedWrappingEnabled") == "true" {
		return nil, invalidArg("trustedWrappingEnabled is not supported by the emulator.")
	}
	body, err := readBody(r, cryptoKeyFields...)
	if err != nil {
		return nil, err
	}
	body = normalizeKeys(body)
	for _, f := range []string{"importOnly", "cryptoKeyBackend", "keyAccessJustificationsPolicy"} {
		if raw, ok := body[f]; ok && string(raw) != "null" && string(raw) != "false" && string(raw) != `""` {
			return nil, invalidArg("%s is not supported by the emulator.", f)
		}
	}
	k := &cryptoKey{ID: id, Created: now, Policy: &policy{Etag: newEtag()}, DestroyScheduledDuration: defaultDestroy, ProtectionLevel: protSoftware}
	var rawPurpose any
	field(body, "purpose", &rawPurpose)
	p, ok := enumPurpose.parse(rawPurpose)
	if !ok || p == 0 {
		return nil, invalidArg("The purpose of a CryptoKey must be specified.")
	}
	if p != purposeEncryptDecrypt && p != purposeAsymmetricSign && p != purposeAsymmetricDecrypt {
		return nil, invalidArg("Purpose %s is not supported by the emulator.", enumPurpose[p])
	}
	k.Purpose = p
	var tmpl map[string]json.RawMessage
	if _, err := field(body, "versionTemplate", &tmpl); err != nil {
		return nil, err
	}
	tmpl = normalizeKeys(tmpl)
	for key := range tmpl {
		if key != "algorithm" && key != "protectionLevel" {
			return nil, invalidArg("Invalid JSON payload received. Unknown name %q at 'crypto_key.version_template': Cannot find field.", key)
		}
	}
	if raw, ok := tmpl["protectionLevel"]; ok {
		var v any
		json.Unmarshal(raw, &v)
		pl, ok := enumProtection.parse(v)
		if !ok || (pl != protSoftware && pl != protHSM && pl != 0) {
			return nil, invalidArg("Protection level %v is not supported by the emulator (SOFTWARE or HSM).", v)
		}
		if pl != 0 {
			k.ProtectionLevel = pl
		}
	}
	if raw, ok := tmpl["algorithm"]; ok {
		var v any
		json.Unmarshal(raw, &v)
		alg, ok := enumAlgorithm.parse(v)
		if !ok {
			return nil, invalidArg("Algorithm %v is not supported by the emulator.", v)
		}
		k.Algorithm = alg
	}
	if k.Algorithm == 0 {
		if p != purposeEncryptDecrypt {
			return nil, invalidArg("An algorithm must be specified in the version template for purpose %s.", enumPurpose[p])
		}
		k.Algorithm = algSymmetric
	}
	if algorithmPurpose(k.Algorithm) != p {
		return nil, invalidArg("Algorithm %s is not compatible with purpose %s.", enumAlgorithm[k.Algorithm], enumPurpose[p])
	}
	if err := applyKeySchedule(k, body, nil, now); err != nil {
		return nil, err
	}
	var s string
	if _, err := field(body, "destroyScheduledDuration", &s); err != nil {
		return nil, err
	}
	if s != "" {
		d, ok := parseProtoDuration(s)
		if !ok || d < 24*time.Hour || d > 120*24*time.Hour {
			return nil, invalidArg("destroy_scheduled_duration must be between 1 and 120 days.")
		}
		k.DestroyScheduledDuration = d
	}
	if err := applyLabels(k, body); err != nil {
		return nil, err
	}
	kn := kmsName{Project: n.Project, Location: n.Location, KeyRing: n.KeyRing, Key: id, Kind: "cryptoKey"}
	if res.ring.Keys[id] != nil {
		return nil, errf(http.StatusConflict, "ALREADY_EXISTS", "CryptoKey %s already exists.", kn.String())
	}
	if q.Get("skipInitialVersionCreation") != "true" {
		v := k.newVersion(now)
		if p == purposeEncryptDecrypt {
			k.Primary = v.ID
		}
	}
	res.ring.Keys[id] = k
	return cryptoKeyJSON(kn, k, ints), nil
}

// applyKeySchedule sets rotationPeriod and nextRotationTime from body
// (all, or those in mask).
func applyKeySchedule(k *cryptoKey, body map[string]json.RawMessage, mask map[string]bool, now time.Time) *apiError {
	want := func(f string) bool { return mask == nil || mask[f] }
	if want("rotationPeriod") {
		var s string
		if _, err := field(body, "rotationPeriod", &s); err != nil {
			return err
		}
		k.RotationPeriod = 0
		if s != "" {
			d, ok := parseProtoDuration(s)
			if !ok || d < 24*time.Hour || d > 876_000*time.Hour {
				return invalidArg("The rotation period must be between 1 day and 100 years.")
			}
			k.RotationPeriod = d
		}
	}
	if want("nextRotationTime") {
		var s string
		if _, err := field(body, "nextRotationTime", &s); err != nil {
			return err
		}
		k.NextRotation = time.Time{}
		if s != "" {
			t, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				return invalidArg("Invalid value at 'next_rotation_time' (type.googleapis.com/google.protobuf.Timestamp), Field 'nextRotationTime', Invalid time format.")
			}
			k.NextRotation = t
		}
	}
	if (k.RotationPeriod > 0 || !k.NextRotation.IsZero()) && k.Purpose != purposeEncryptDecrypt {
		return invalidArg("Automatic rotation is only supported for keys with purpose ENCRYPT_DECRYPT.")
	}
	if k.RotationPeriod > 0 && k.NextRotation.IsZero() {
		return invalidArg("next_rotation_time must be set when rotation_period is set.")
	}
	return nil
}

func applyLabels(k *cryptoKey, body map[string]json.RawMessage) *apiError {
	var labels map[string]string
	if _, err := field(body, "labels", &labels); err != nil {
		return err
	}
	if len(labels) > 64 {
		return invalidArg("A resource can have at most 64 labels.")
	}
	for lk, lv := range labels {
		if len(lk) == 0 || len(lk) > 63 || len(lv) > 63 || strings.ToLower(lk) != lk || strings.ToLower(lv) != lv {
			return invalidArg("Invalid label %q: keys and values are at most 63 lower-case characters.", lk)
		}
	}
	k.Labels = labels
	return nil
}

func (e *Emulator) updateCryptoKey(r *http.Request, n kmsName, k *cryptoKey, now time.Time, ints bool) (any, *apiError) {
	mask, err := parseMask(r, "rotationPeriod", "nextRotationTime", "labels")
	if err != nil {
		return nil, err
	}
	body, err := readBody(r, cryptoKeyFields...)
	if err != nil {
		return nil, err
	}
	body = normalizeKeys(body)
	upd := *k
	if err := applyKeySchedule(&upd, body, mask, now); err != nil {
		return nil, err
	}
	if mask["labels"] {
		if err := applyLabels(&upd, body); err != nil {
			return nil, err
		}
	}
	*k = upd
	return cryptoKeyJSON(n, k, ints), nil
}

// usable checks that v can encrypt or decrypt.
func usable(vn string, v *keyVersion) *apiError {
	if v.State == stateEnabled {
		return nil
	}
	return preconditionFailed(fmt.Sprintf("%s is not enabled, current state is: %s.", vn, enumState[v.State]), violationType(v.State), vn)
}

func wrongPurpose(keyName string, purpose int, op string) *apiError {
	return preconditionFailed(fmt.Sprintf("%s has purpose %s, but %s requires purpose ENCRYPT_DECRYPT.", keyName, enumPurpose[purpose], op), "KEY_PURPOSE", keyName)
}

func crcMismatch(f string) *apiError {
	return invalidArg("The checksum in field %s did not match the data in field %s.", f+"_crc32c", f)
}

func (e *Emulator) encrypt(r *http.Request, n kmsName, res *kmsResolved, ints bool, corrupt string) (any, *apiError) {
	body, err := readBody(r, "name", "plaintext", "additionalAuthenticatedData", "plaintextCrc32c", "additionalAuthenticatedDataCrc32c",
		"additional_authenticated_data", "plaintext_crc32c", "additional_authenticated_data_crc32c")
	if err != nil {
		return nil, err
	}
	body = normalizeKeys(body)
	keyName := n.keyName()
	if res.key.Purpose != purposeEncryptDecrypt {
		return nil, wrongPurpose(keyName, res.key.Purpose, "Encrypt")
	}
	pt, _, err := bytesField(body, "plaintext")
	if err != nil {
		return nil, err
	}
	aad, _, err := bytesField(body, "additionalAuthenticatedData")
	if err != nil {
		return nil, err
	}
	if len(pt) == 0 {
		return nil, invalidArg("The plaintext must not be empty.")
	}
	limit := maxPlaintext
	if res.key.ProtectionLevel == protHSM {
		limit = maxHSMPlaintext
	}
	if len(pt) > limit || len(aad) > limit || res.key.ProtectionLevel == protHSM && len(pt)+len(aad) > limit {
		return nil, invalidArg("The plaintext and additional authenticated data must be at most %d bytes.", limit)
	}
	ptCRC, hasPtCRC, err := crcField(body, "plaintextCrc32c")
	if err != nil {
		return nil, err
	}
	aadCRC, hasAADCRC, err := crcField(body, "additionalAuthenticatedDataCrc32c")
	if err != nil {
		return nil, err
	}
	if hasPtCRC && crc32c(pt) != ptCRC {
		return nil, crcMismatch("plaintext")
	}
	if hasAADCRC && crc32c(aad) != aadCRC {
		return nil, crcMismatch("additional_authenticated_data")
	}
	v := res.ver
	if n.Kind == "cryptoKey" {
		v = res.key.version(res.key.Primary)
		if v == nil {
			return nil, preconditionFailed(fmt.Sprintf("%s has no primary version.", keyName), "KEY_NOT_ENABLED", keyName)
		}
	}
	vn := keyName + "/cryptoKeyVersions/" + strconv.Itoa(v.ID)
	if err := usable(vn, v); err != nil {
		return nil, err
	}
	canon := kmsName{Project: res.p.ID, Location: n.Location, KeyRing: n.KeyRing, Key: n.Key, Kind: "cryptoKey"}.keyName()
	ct, serr := sealCiphertext(v.Material, canon, v.ID, pt, aad)
	if serr != nil {
		return nil, errf(500, "INTERNAL", "Internal error encountered.")
	}
	ctCRC := crc32c(ct)
	if corrupt == "ciphertext_crc32c" {
		ctCRC ^= 1
	}
	out := map[string]any{
		"name":                    vn,
		"ciphertext":              b64std.EncodeToString(ct),
		"ciphertextCrc32c":        strconv.FormatUint(uint64(ctCRC), 10),
		"verifiedPlaintextCrc32c": hasPtCRC && corrupt != "unverified",
		"verifiedAdditionalAuthenticatedDataCrc32c": hasAADCRC && corrupt != "unverified",
		"protectionLevel": enumProtection.out(ints, res.key.ProtectionLevel),
	}
	return out, nil
}

func (e *Emulator) decrypt(r *http.Request, n kmsName, res *kmsResolved, ints bool, corrupt string) (any, *apiError) {
	body, err := readBody(r, "name", "ciphertext", "additionalAuthenticatedData", "ciphertextCrc32c", "additionalAuthenticatedDataCrc32c",
		"additional_authenticated_data", "ciphertext_crc32c", "additional_authenticated_data_crc32c")
	if err != nil {
		return nil, err
	}
	body = normalizeKeys(body)
	keyName := n.keyName()
	if res.key.Purpose != purposeEncryptDecrypt {
		return nil, wrongPurpose(keyName, res.key.Purpose, "Decrypt")
	}
	ct, _, err := bytesField(body, "ciphertext")
	if err != nil {
		return nil, err
	}
	aad, _, err := bytesField(body, "additionalAuthenticatedData")
	if err != nil {
		return nil, err
	}
	if len(ct) == 0 {
		return nil, invalidArg("The ciphertext must not be empty.")
	}
	if len(ct) > maxPlaintext+800 || len(aad) > maxPlaintext {
		return nil, invalidArg("The ciphertext or additional authenticated data is too large.")
	}
	ctCRC, hasCtCRC, err := crcField(body, "ciphertextCrc32c")
	if err != nil {
		return nil, err
	}
	aadCRC, hasAADCRC, err := crcField(body, "additionalAuthenticatedDataCrc32c")
	if err != nil {
		return nil, err
	}
	if hasCtCRC && crc32c(ct) != ctCRC {
		return nil, crcMismatch("ciphertext")
	}
	if hasAADCRC && crc32c(aad) != aadCRC {
		return nil, crcMismatch("additional_authenticated_data")
	}
	failed := invalidArg("Decryption failed: verify that 'name' refers to the correct CryptoKey.")
	vid, sealed, perr := ciphertextVersion(ct)
	if perr != nil {
		return nil, failed
	}
	v := res.key.version(vid)
	if v == nil {
		return nil, failed
	}
	vn := keyName + "/cryptoKeyVersions/" + strconv.Itoa(v.ID)
	if err := usable(vn, v); err != nil {
		return nil, err
	}
	canon := kmsName{Project: res.p.ID, Location: n.Location, KeyRing: n.KeyRing, Key: n.Key, Kind: "cryptoKey"}.keyName()
	pt, oerr := openCiphertext(v.Material, canon, v.ID, sealed, aad)
	if oerr != nil {
		return nil, failed
	}
	ptCRC := crc32c(pt)
	if corrupt == "plaintext_crc32c" {
		ptCRC ^= 1
	}
	out := map[string]any{
		"plaintext":       b64std.EncodeToString(pt),
		"plaintextCrc32c": strconv.FormatUint(uint64(ptCRC), 10),
		"usedPrimary":     v.ID == res.key.Primary,
		"protectionLevel": enumProtection.out(ints, res.key.ProtectionLevel),
	}
	return out, nil
}

// testIAMPermissions answers with the subset of the asked permissions the
// caller holds; it never fails for missing resources (empty answer).
func (e *Emulator) testIAMPermissions(r *http.Request, c *caller, n kmsName, res *kmsResolved) (any, *apiError) {
	body, err := readBody(r, "resource", "permissions")
	if err != nil {
		return nil, err
	}
	var perms []string
	if _, err := field(body, "permissions", &perms); err != nil {
		return nil, err
	}
	if len(perms) > 100 {
		return nil, invalidArg("At most 100 permissions can be tested.")
	}
	var out []string
	if res.p != nil && (n.Kind == "keyRing" && res.ring != nil || n.Kind == "cryptoKey" && res.key != nil) {
		for _, p := range perms {
			if strings.ContainsAny(p, "*") {
				return nil, invalidArg("Permissions with wildcards are not allowed: %s", p)
			}
			if e.allowedLocked(c, p, res.policies()...) {
				out = append(out, p)
			}
		}
	}
	sort.Strings(out)
	m := map[string]any{}
	if len(out) > 0 {
		m["permissions"] = out
	}
	return m, nil
}

// ---- quotas ----

type quotaLimiter struct {
	mu   sync.Mutex
	sec  map[string]int64 // project/category -> current window
	used map[string]int
}

var quotaNames = map[string][2]string{
	"crypto": {"Cryptographic requests", "Cryptographic requests per minute"},
	"read":   {"Read requests", "Read requests per minute"},
	"write":  {"Write requests", "Write requests per minute"},
}

// kmsQuota charges one request to the quota of the project that holds the
// resource.
func (e *Emulator) kmsQuota(projectKey, category string) *apiError {
	e.mu.RLock()
	q := e.st.Settings.Quota
	var number string
	if p := e.projectLocked(projectKey); p != nil {
		number = p.Number
	}
	e.mu.RUnlock()
	if q.Disabled || number == "" {
		return nil
	}
	limit := map[string]int{"crypto": q.CryptoPerMinute, "read": q.ReadPerMinute, "write": q.WritePerMinute}[category]
	// Cryptographic requests count against the hosting project and are
	// enforced per second (limit/60); reads and writes per minute.
	perWindow, now := limit, e.clock.Now().Unix()/60
	if category == "crypto" {
		perWindow, now = (limit+59)/60, e.clock.Now().Unix()
	}
	key := number + "/" + category
	l := &e.quota
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sec == nil {
		l.sec, l.used = map[string]int64{}, map[string]int{}
	}
	if l.sec[key] != now {
		l.sec[key], l.used[key] = now, 0
	}
	if l.used[key] >= perWindow {
		names := quotaNames[category]
		return &apiError{HTTP: http.StatusTooManyRequests, Status: "RESOURCE_EXHAUSTED",
			Message: fmt.Sprintf("Quota exceeded for quota metric '%s' and limit '%s' of service 'cloudkms.googleapis.com' for consumer 'project_number:%s'.", names[0], names[1], number),
			Details: []any{map[string]any{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED", "domain": "googleapis.com",
				"metadata": map[string]string{"service": "cloudkms.googleapis.com", "consumer": "projects/" + number,
					"quota_metric": "cloudkms.googleapis.com/" + category + "_requests", "quota_limit": names[1]}}}}
	}
	l.used[key]++
	return nil
}
