// Key Vault soft delete: delete, deleted keys, purge and recover.

package azurecloud

import (
	"fmt"
	"net/http"
	"strings"
	"time"
)

func (d *deletedKey) bundle(v *vault, host string) bundleOut {
	b := d.Key.current().bundle(v, host, d.Key.Name)
	b.RecoveryID = "https://" + host + "/deletedkeys/" + d.Key.Name
	b.DeletedDate, b.ScheduledPurgeDate = d.DeletedDate, d.ScheduledPurgeDate
	return b
}

func (e *Emulator) kvDelete(w http.ResponseWriter, host string, v *vault, name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ln := strings.ToLower(name)
	k := v.Keys[ln]
	if k == nil {
		keyNotFound(w, name, "")
		return
	}
	now := e.clock.Now()
	purgeAt := now.Add(time.Duration(v.retentionDays()) * 24 * time.Hour)
	d := &deletedKey{Key: k, DeletedDate: now.Unix(), ScheduledPurgeDate: purgeAt.Unix()}
	delete(v.Keys, ln)
	v.Deleted[ln] = d
	if err := e.saveLocked(); err != nil {
		v.Keys[ln] = k
		delete(v.Deleted, ln)
		kvError(w, http.StatusInternalServerError, "InternalError", "The emulator could not persist its state.", "")
		return
	}
	writeJSON(w, http.StatusOK, d.bundle(v, host))
}

func (e *Emulator) kvListDeleted(w http.ResponseWriter, host string, v *vault) {
	e.mu.RLock()
	items := []itemOut{}
	for _, ln := range sortedKeys(v.Deleted) {
		d := v.Deleted[ln]
		kv := d.Key.current()
		items = append(items, itemOut{Kid: keyURL(host, d.Key.Name), Attributes: kv.attrs(v), Tags: kv.Tags,
			RecoveryID: "https://" + host + "/deletedkeys/" + d.Key.Name, DeletedDate: d.DeletedDate, ScheduledPurgeDate: d.ScheduledPurgeDate})
	}
	e.mu.RUnlock()
	writeJSON(w, http.StatusOK, map[string]any{"value": items, "nextLink": nil})
}

func deletedNotFound(w http.ResponseWriter, name string) {
	kvError(w, http.StatusNotFound, "KeyNotFound", fmt.Sprintf("Deleted Key not found: %s", name), "")
}

func (e *Emulator) kvGetDeleted(w http.ResponseWriter, host string, v *vault, name string) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	d := v.Deleted[strings.ToLower(name)]
	if d == nil {
		deletedNotFound(w, name)
		return
	}
	writeJSON(w, http.StatusOK, d.bundle(v, host))
}

func (e *Emulator) kvPurge(w http.ResponseWriter, v *vault, name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ln := strings.ToLower(name)
	d := v.Deleted[ln]
	if d == nil {
		deletedNotFound(w, name)
		return
	}
	if v.PurgeProtection {
		kvError(w, http.StatusForbidden, "Forbidden", fmt.Sprintf(
			"Operation \"purge\" is not allowed because purge protection is enabled for this vault. Key Vault service will automatically purge it after the retention period has passed. Key: %s", name), "")
		return
	}
	delete(v.Deleted, ln)
	if err := e.saveLocked(); err != nil {
		v.Deleted[ln] = d
		kvError(w, http.StatusInternalServerError, "InternalError", "The emulator could not persist its state.", "")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (e *Emulator) kvRecover(w http.ResponseWriter, host string, v *vault, name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ln := strings.ToLower(name)
	d := v.Deleted[ln]
	if d == nil {
		deletedNotFound(w, name)
		return
	}
	delete(v.Deleted, ln)
	v.Keys[ln] = d.Key
	if err := e.saveLocked(); err != nil {
		v.Deleted[ln] = d
		delete(v.Keys, ln)
		kvError(w, http.StatusInternalServerError, "InternalError", "The emulator could not persist its state.", "")
		return
	}
	writeJSON(w, http.StatusOK, d.Key.current().bundle(v, host, d.Key.Name))
}
