// Key backup and restore: POST /keys/{name}/backup and POST /keys/restore.
//
// A backup is an opaque blob: the key (every version, its material, tags,
// attributes, release and rotation policies) sealed with AES-256-GCM under
// the emulator's own backup key, so it cannot be read or altered outside
// the emulator. As Azure documents ("Azure Key Vault backup and restore";
// "Azure Key Vault security worlds"), a vault's backup restores only into
// a vault of the same subscription in the same Azure geography; a Managed
// HSM's backup restores only into a pool sharing its security domain,
// which here means the same pool.

package azurecloud

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// backupMagic starts every blob (after base64url decoding).
const backupMagic = "ekm-azure-emulator-key-backup-v1\x00"

// backupDoc is a blob's sealed content.
type backupDoc struct {
	TenantID       string `json:"tenant_id"`
	SubscriptionID string `json:"subscription_id"`
	Geography      string `json:"geography"`
	HSM            string `json:"hsm,omitempty"` // source pool for Managed HSM backups
	Key            *key   `json:"key"`
}

// geographies maps Azure regions to their geography (the security world a
// backup is bound to). Regions not listed are their own geography.
var geographies = map[string]string{
	"eastus": "us", "eastus2": "us", "westus": "us", "westus2": "us", "westus3": "us", "centralus": "us",
	"northcentralus": "us", "southcentralus": "us", "westcentralus": "us",
	"northeurope": "europe", "westeurope": "europe",
	"uksouth": "uk", "ukwest": "uk",
	"francecentral": "france", "francesouth": "france",
	"germanywestcentral": "germany", "germanynorth": "germany",
	"australiaeast": "australia", "australiasoutheast": "australia", "australiacentral": "australia", "australiacentral2": "australia",
	"japaneast": "japan", "japanwest": "japan",
	"canadacentral": "canada", "canadaeast": "canada",
	"koreacentral": "korea", "koreasouth": "korea",
	"centralindia": "india", "southindia": "india", "westindia": "india",
	"eastasia": "asiapacific", "southeastasia": "asiapacific",
	"switzerlandnorth": "switzerland", "switzerlandwest": "switzerland",
	"norwayeast": "norway", "norwaywest": "norway",
	"uaenorth": "uae", "uaecentral": "uae",
	"southafricanorth": "southafrica", "southafricawest": "southafrica",
	"brazilsouth": "brazil", "brazilsoutheast": "brazil",
}

func geography(location string) string {
	if g, ok := geographies[location]; ok {
		return g
	}
	return location
}

// maxBackupVersions is Key Vault's limit on versions in one backup.
const maxBackupVersions = 500

func (e *Emulator) backupAEAD() (cipher.AEAD, error) {
	b, err := aes.NewCipher(e.st.BackupKey)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

func (e *Emulator) kvBackup(w http.ResponseWriter, v *vault, name string) {
	e.mu.RLock()
	k := v.Keys[strings.ToLower(name)]
	var doc []byte
	var err error
	if k != nil && len(k.Versions) <= maxBackupVersions {
		d := backupDoc{TenantID: v.TenantID, SubscriptionID: v.SubscriptionID, Geography: geography(v.Location), Key: k}
		if v.HSM {
			d.HSM = v.Name
		}
		doc, err = json.Marshal(d)
	}
	e.mu.RUnlock()
	if k == nil {
		keyNotFound(w, name, "")
		return
	}
	if doc == nil && err == nil {
		badParam(w, fmt.Sprintf("Key Vault does not back up a key with more than %d versions.", maxBackupVersions))
		return
	}
	aead, err2 := e.backupAEAD()
	if err != nil || err2 != nil {
		kvError(w, http.StatusInternalServerError, "InternalError", "The backup could not be created.", "")
		return
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		kvError(w, http.StatusInternalServerError, "InternalError", "The backup could not be created.", "")
		return
	}
	blob := append([]byte(backupMagic), nonce...)
	blob = aead.Seal(blob, nonce, doc, []byte(backupMagic))
	writeJSON(w, http.StatusOK, map[string]string{"value": b64url.EncodeToString(blob)})
}

// openBackup authenticates and decodes a blob.
func (e *Emulator) openBackup(s string) (*backupDoc, error) {
	invalid := errors.New("The backup blob is invalid or corrupted.")
	raw, err := decodeB64URL(s)
	if err != nil || !strings.HasPrefix(string(raw), backupMagic) {
		return nil, invalid
	}
	aead, err := e.backupAEAD()
	if err != nil {
		return nil, invalid
	}
	raw = raw[len(backupMagic):]
	if len(raw) < aead.NonceSize()+aead.Overhead() {
		return nil, invalid
	}
	pt, err := aead.Open(nil, raw[:aead.NonceSize()], raw[aead.NonceSize():], []byte(backupMagic))
	if err != nil {
		return nil, invalid
	}
	var d backupDoc
	if err := json.Unmarshal(pt, &d); err != nil || d.Key == nil || len(d.Key.Versions) == 0 {
		return nil, invalid
	}
	for _, kv := range d.Key.Versions {
		if err := kv.decodeMaterial(); err != nil {
			return nil, invalid
		}
	}
	return &d, nil
}

func (e *Emulator) kvRestore(w http.ResponseWriter, r *http.Request, host string, v *vault) {
	var req struct {
		Value string `json:"value"`
	}
	if err := readJSON(r, &req); err != nil {
		badParam(w, err.Error())
		return
	}
	if req.Value == "" {
		badParam(w, "The property value (the backup blob) is required.")
		return
	}
	d, err := e.openBackup(req.Value)
	if err != nil {
		badParam(w, err.Error())
		return
	}
	switch {
	case v.HSM && d.HSM == "", !v.HSM && d.HSM != "":
		badParam(w, "A backup can only be restored into the same kind of service it was taken from (a vault or a Managed HSM).")
		return
	case v.HSM && !strings.EqualFold(d.HSM, v.Name):
		badParam(w, "The backup was taken from a Managed HSM with a different security domain and cannot be restored into this one.")
		return
	case !strings.EqualFold(d.SubscriptionID, v.SubscriptionID) || !strings.EqualFold(d.TenantID, v.TenantID):
		badParam(w, "The backup can only be restored into a key vault in the same subscription it was taken from.")
		return
	case d.Geography != geography(v.Location):
		badParam(w, "The backup can only be restored into a key vault in the same Azure geography it was taken from.")
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	ln := strings.ToLower(d.Key.Name)
	if !keyNameRE.MatchString(d.Key.Name) {
		badParam(w, "The backup blob is invalid or corrupted.")
		return
	}
	if v.Deleted[ln] != nil {
		deletedConflict(w, d.Key.Name)
		return
	}
	if v.Keys[ln] != nil {
		kvError(w, http.StatusConflict, "Conflict", fmt.Sprintf("There is already a key named %s in this vault; a backup restores only under a name that is free.", d.Key.Name), "")
		return
	}
	if len(v.Keys) >= maxKeysPerVault {
		badParam(w, "The emulator's per-vault key limit was reached.")
		return
	}
	v.Keys[ln] = d.Key
	if err := e.saveLocked(); err != nil {
		delete(v.Keys, ln)
		kvError(w, http.StatusInternalServerError, "InternalError", "The emulator could not persist its state.", "")
		return
	}
	writeJSON(w, http.StatusOK, d.Key.current().bundle(v, host, d.Key.Name))
}
