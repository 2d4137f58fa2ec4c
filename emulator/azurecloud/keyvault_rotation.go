// Key rotation policies: GET and PUT /keys/{name}/rotationpolicy, and the
// automatic rotation they drive on the emulator clock.

package azurecloud

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// rotationPolicy is a key's rotation policy as stored.
type rotationPolicy struct {
	LifetimeActions []lifetimeAction `json:"lifetimeActions"`
	ExpiryTime      string           `json:"expiryTime,omitempty"`
	Created         int64            `json:"created"`
	Updated         int64            `json:"updated"`
}

type lifetimeAction struct {
	Trigger struct {
		TimeAfterCreate  string `json:"timeAfterCreate,omitempty"`
		TimeBeforeExpiry string `json:"timeBeforeExpiry,omitempty"`
	} `json:"trigger"`
	Action struct {
		Type string `json:"type"`
	} `json:"action"`
}

// defaultNotify is the action Key Vault adds to every policy (and the
// whole default policy of a key without one): notify 30 days before
// expiry.
func defaultNotify() lifetimeAction {
	var a lifetimeAction
	a.Trigger.TimeBeforeExpiry = "P30D"
	a.Action.Type = "Notify"
	return a
}

// isoDuration is an ISO 8601 duration (PnYnMnDTnHnMnS or PnW).
type isoDuration struct {
	years, months, days int
	clock               time.Duration
}

var isoDurRE = regexp.MustCompile(`^P(?:(\d{1,4})Y)?(?:(\d{1,4})M)?(?:(\d{1,5})W)?(?:(\d{1,5})D)?(?:T(?:(\d{1,6})H)?(?:(\d{1,7})M)?(?:(\d{1,8})S)?)?$`)

func parseISODuration(s string) (isoDuration, error) {
	m := isoDurRE.FindStringSubmatch(strings.ToUpper(s))
	if m == nil || s == "P" || strings.HasSuffix(strings.ToUpper(s), "T") {
		return isoDuration{}, fmt.Errorf("%q is not an ISO 8601 duration (for example P90D, P3M, P1Y10D or PT48H)", truncate(s, 32))
	}
	n := func(i int) int { v, _ := strconv.Atoi(m[i]); return v }
	return isoDuration{years: n(1), months: n(2), days: 7*n(3) + n(4),
		clock: time.Duration(n(5))*time.Hour + time.Duration(n(6))*time.Minute + time.Duration(n(7))*time.Second}, nil
}

func (d isoDuration) addTo(t time.Time) time.Time {
	return t.AddDate(d.years, d.months, d.days).Add(d.clock)
}

func (d isoDuration) subFrom(t time.Time) time.Time {
	return t.AddDate(-d.years, -d.months, -d.days).Add(-d.clock)
}

// atLeast reports whether d, counted from a fixed reference, lasts at least
// min (months and years are taken as calendar periods from 2000-01-01).
func (d isoDuration) atLeast(min time.Duration) bool {
	ref := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	return d.addTo(ref).Sub(ref) >= min
}

const day = 24 * time.Hour

// rotationPolicyIn is the PUT body.
type rotationPolicyIn struct {
	LifetimeActions []lifetimeAction `json:"lifetimeActions"`
	Attributes      *struct {
		ExpiryTime *string `json:"expiryTime"`
	} `json:"attributes"`
}

// validate checks a policy per Key Vault's rules: at most one Rotate and
// one Notify action; each trigger sets exactly one of timeAfterCreate and
// timeBeforeExpiry (Notify only timeBeforeExpiry); expiryTime at least 28
// days; rotation at least 7 days after creation and at least 7 days before
// expiry; timeBeforeExpiry needs expiryTime. A missing Notify action gets
// the default (30 days before expiry).
func (in rotationPolicyIn) validate() (*rotationPolicy, error) {
	p := &rotationPolicy{}
	var expiry isoDuration
	hasExpiry := false
	if in.Attributes != nil && in.Attributes.ExpiryTime != nil && *in.Attributes.ExpiryTime != "" {
		d, err := parseISODuration(*in.Attributes.ExpiryTime)
		if err != nil {
			return nil, fmt.Errorf("Invalid expiryTime: %v.", err)
		}
		if !d.atLeast(28 * day) {
			return nil, errors.New("The expiryTime of a rotation policy must be at least 28 days (P28D).")
		}
		p.ExpiryTime, expiry, hasExpiry = *in.Attributes.ExpiryTime, d, true
	}
	if len(in.LifetimeActions) > 2 {
		return nil, errors.New("A rotation policy has at most two lifetime actions: one Rotate and one Notify.")
	}
	seen := map[string]bool{}
	for _, a := range in.LifetimeActions {
		typ := ""
		switch strings.ToLower(a.Action.Type) {
		case "rotate":
			typ = "Rotate"
		case "notify":
			typ = "Notify"
		default:
			return nil, fmt.Errorf("Invalid lifetime action type %q: use Rotate or Notify.", truncate(a.Action.Type, 32))
		}
		if seen[typ] {
			return nil, fmt.Errorf("A rotation policy has at most one %s action.", typ)
		}
		seen[typ] = true
		tac, tbe := a.Trigger.TimeAfterCreate, a.Trigger.TimeBeforeExpiry
		if (tac == "") == (tbe == "") {
			return nil, fmt.Errorf("The %s trigger must set exactly one of timeAfterCreate and timeBeforeExpiry.", typ)
		}
		if typ == "Notify" && tac != "" {
			return nil, errors.New("The Notify action only supports timeBeforeExpiry.")
		}
		s := tac + tbe
		d, err := parseISODuration(s)
		if err != nil {
			return nil, fmt.Errorf("Invalid %s trigger: %v.", typ, err)
		}
		if !d.atLeast(7 * day) {
			return nil, fmt.Errorf("The %s trigger must be at least 7 days (P7D).", typ)
		}
		if tbe != "" && !hasExpiry && typ == "Rotate" {
			return nil, errors.New("A timeBeforeExpiry rotation trigger requires expiryTime in the policy attributes.")
		}
		if hasExpiry && typ == "Rotate" {
			ref := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
			end := expiry.addTo(ref)
			var at time.Time
			if tac != "" {
				at = d.addTo(ref)
			} else {
				at = d.subFrom(end)
			}
			if end.Sub(at) < 7*day || at.Sub(ref) < 7*day {
				return nil, errors.New("The rotation time must be at least 7 days after creation and at least 7 days before expiry.")
			}
		}
		var out lifetimeAction
		out.Trigger.TimeAfterCreate, out.Trigger.TimeBeforeExpiry, out.Action.Type = tac, tbe, typ
		p.LifetimeActions = append(p.LifetimeActions, out)
	}
	if !seen["Notify"] {
		p.LifetimeActions = append(p.LifetimeActions, defaultNotify())
	}
	return p, nil
}

// rotationPolicyJSON is the wire form of a key's policy (the default when
// p is nil).
func rotationPolicyJSON(host, name string, p *rotationPolicy) map[string]any {
	attrs := map[string]any{}
	actions := []lifetimeAction{defaultNotify()}
	if p != nil {
		actions = p.LifetimeActions
		if p.ExpiryTime != "" {
			attrs["expiryTime"] = p.ExpiryTime
		}
		attrs["created"], attrs["updated"] = p.Created, p.Updated
	}
	return map[string]any{"id": keyURL(host, name) + "/rotationpolicy", "lifetimeActions": actions, "attributes": attrs}
}

func (e *Emulator) kvGetRotationPolicy(w http.ResponseWriter, host string, v *vault, name string) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	k := v.Keys[strings.ToLower(name)]
	if k == nil {
		keyNotFound(w, name, "")
		return
	}
	writeJSON(w, http.StatusOK, rotationPolicyJSON(host, k.Name, k.Policy))
}

func (e *Emulator) kvPutRotationPolicy(w http.ResponseWriter, r *http.Request, host string, v *vault, name string) {
	var in rotationPolicyIn
	if err := readJSON(r, &in); err != nil {
		badParam(w, err.Error())
		return
	}
	p, err := in.validate()
	if err != nil {
		badParam(w, err.Error())
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	k := v.Keys[strings.ToLower(name)]
	if k == nil {
		keyNotFound(w, name, "")
		return
	}
	now := e.clock.Now().Unix()
	p.Created, p.Updated = now, now
	if k.Policy != nil {
		p.Created = k.Policy.Created
	}
	old := k.Policy
	k.Policy = p
	if err := e.saveLocked(); err != nil {
		k.Policy = old
		kvError(w, http.StatusInternalServerError, "InternalError", "The emulator could not persist its state.", "")
		return
	}
	writeJSON(w, http.StatusOK, rotationPolicyJSON(host, k.Name, p))
}

// applyExpiry sets a rotated version's expiry from the policy's
// expiryTime (counted from the version's creation).
func (p *rotationPolicy) applyExpiry(kv *keyVersion) {
	if p == nil || p.ExpiryTime == "" {
		return
	}
	d, err := parseISODuration(p.ExpiryTime)
	if err != nil {
		return // validated on PUT
	}
	exp := d.addTo(time.Unix(kv.Created, 0).UTC()).Unix()
	kv.EXP = &exp
}

// rotationDue returns when the key's current version is due for rotation
// under its policy; ok is false when the policy has no Rotate action or
// its trigger cannot fire (timeBeforeExpiry on a version without expiry).
func (k *key) rotationDue() (time.Time, bool) {
	if k.Policy == nil {
		return time.Time{}, false
	}
	cur := k.current()
	for _, a := range k.Policy.LifetimeActions {
		if a.Action.Type != "Rotate" {
			continue
		}
		if s := a.Trigger.TimeAfterCreate; s != "" {
			d, err := parseISODuration(s)
			if err != nil {
				return time.Time{}, false
			}
			return d.addTo(time.Unix(cur.Created, 0).UTC()), true
		}
		if cur.EXP == nil {
			return time.Time{}, false
		}
		d, err := parseISODuration(a.Trigger.TimeBeforeExpiry)
		if err != nil {
			return time.Time{}, false
		}
		return d.subFrom(time.Unix(*cur.EXP, 0).UTC()), true
	}
	return time.Time{}, false
}

// maxAutoRotations bounds the rotations one housekeeping pass makes per key
// (a clock moved far ahead).
const maxAutoRotations = 100

// housekeep applies what the passage of emulator time does to a vault:
// automatic rotations that have come due (each new version is created at
// its due time, as if the clock had run), and purges of soft-deleted keys
// past their scheduled purge date. It runs before each data-plane request
// and when the control API moves the clock.
func (e *Emulator) housekeep(v *vault) {
	now := e.clock.Now()
	e.mu.RLock()
	due := false
	for _, k := range v.Keys {
		if t, ok := k.rotationDue(); ok && !t.After(now) {
			due = true
			break
		}
	}
	for _, d := range v.Deleted {
		if d.ScheduledPurgeDate <= now.Unix() {
			due = true
			break
		}
	}
	e.mu.RUnlock()
	if !due {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	changed := false
	for _, k := range v.Keys {
		for i := 0; i < maxAutoRotations && len(k.Versions) < maxVersionsPerKey; i++ {
			at, ok := k.rotationDue()
			if !ok || at.After(now) {
				break
			}
			kv, err := nextVersion(k.current(), v, at)
			if err != nil {
				e.log.Warn("azure emulator: automatic rotation failed", "vault", v.Name, "key", k.Name, "err", err)
				break
			}
			k.Policy.applyExpiry(kv)
			k.Versions = append(k.Versions, kv)
			e.counters.Inc("kv.auto_rotate")
			changed = true
		}
	}
	for ln, d := range v.Deleted {
		if d.ScheduledPurgeDate <= now.Unix() {
			delete(v.Deleted, ln)
			e.counters.Inc("kv.auto_purge")
			changed = true
		}
	}
	if changed {
		if err := e.saveLocked(); err != nil {
			e.log.Warn("azure emulator: could not persist housekeeping", "err", err)
		}
	}
}

// housekeepAll runs housekeep on every vault and pool (after a clock move).
func (e *Emulator) housekeepAll() {
	e.mu.RLock()
	all := e.st.allVaults()
	e.mu.RUnlock()
	for _, v := range all {
		e.housekeep(v)
	}
}
