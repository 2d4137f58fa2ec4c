package oci

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/ekm-dev/ekm/kms"
)

// Registration (Check) diagnosis codes. Each is Class Invalid.
const (
	CodeInvalidKeyOCID        = "invalid_key_ocid"
	CodeInvalidVaultOCID      = "invalid_vault_ocid"
	CodeInvalidKeyVersionOCID = "invalid_key_version_ocid"
	CodeInvalidRegion         = "invalid_region"
	CodeRealmNotEnabled       = "oci_realm_not_enabled"
	CodeRegionMismatch        = "oci_region_mismatch"
	CodeUnknownParameter      = "unknown_parameter"
	CodeMissingParameter      = "missing_parameter"
	CodeParameterTooLong      = "parameter_too_long"
)

// ocidRE: ocid1.<type>.<realm>.<region>.<future use…>.<unique id>, lower
// case; the resource types ekm registers are regional.
var ocidRE = regexp.MustCompile(`^ocid1\.([a-z]+)\.(oc[0-9]{1,3})\.([a-z0-9-]{1,32})((?:\.[a-z0-9]{1,64}){1,4})$`)

// ocid is a parsed regional OCID.
type ocid struct {
	raw    string
	typ    string
	realm  string
	region region
}

// parseOCID parses s as a regional OCID of type typ.
func parseOCID(s, typ, param, code string) (ocid, error) {
	bad := func(why string) (ocid, error) {
		return ocid{}, invalid(code, param, fmt.Sprintf("%s must be the OCID of the %s, ocid1.%s.<realm>.<region>.…: %s", param, typ, typ, why))
	}
	m := ocidRE.FindStringSubmatch(s)
	if m == nil {
		return bad("it does not have that form")
	}
	if m[1] != typ {
		return bad(fmt.Sprintf("it is the OCID of a %s", m[1]))
	}
	if !KnownRealm(m[2]) {
		return bad(fmt.Sprintf("realm %q is not an OCI realm", m[2]))
	}
	r, ok := regionOf(m[3])
	if !ok || r.realm != m[2] {
		return bad(fmt.Sprintf("%q is not a region of realm %s", m[3], m[2]))
	}
	return ocid{raw: s, typ: typ, realm: m[2], region: r}, nil
}

func invalid(code, param, msg string) error {
	return &kms.Error{Class: kms.Invalid, Code: code, Param: param, Message: msg}
}

// params is a checked registration.
type params struct {
	key, vault ocid
	version    *ocid // optional: pin wraps to this key version
	region     region
}

// checkParams validates registration params against the realms the
// operator enabled. It never touches the network.
func checkParams(p kms.Params, realms map[string]bool) (kms.Params, params, error) {
	limits := map[string]int{}
	for _, f := range Spec().Fields {
		limits[f.Name] = f.MaxLen
	}
	for k, v := range p {
		max, ok := limits[k]
		if !ok {
			return nil, params{}, invalid(CodeUnknownParameter, k, fmt.Sprintf("unknown parameter %q for an oci key", k))
		}
		if len(v) > max {
			return nil, params{}, invalid(CodeParameterTooLong, k, fmt.Sprintf("%s is longer than %d characters", k, max))
		}
	}
	for _, k := range []string{ParamKeyOCID, ParamVaultOCID, ParamRegion} {
		if p[k] == "" {
			return nil, params{}, invalid(CodeMissingParameter, k, k+" is required")
		}
	}
	reg, ok := regionOf(p[ParamRegion])
	if !ok || (p[ParamRegion] != reg.id && p[ParamRegion] != reg.key) {
		return nil, params{}, invalid(CodeInvalidRegion, ParamRegion, fmt.Sprintf("region %q is not an OCI region identifier such as us-ashburn-1", p[ParamRegion]))
	}
	if !realms[reg.realm] {
		return nil, params{}, invalid(CodeRealmNotEnabled, ParamRegion, fmt.Sprintf("this server is not set up for keys in realm %s (region %s)", reg.realm, reg.id))
	}
	var ps params
	ps.region = reg
	var err error
	if ps.key, err = parseOCID(p[ParamKeyOCID], "key", ParamKeyOCID, CodeInvalidKeyOCID); err != nil {
		return nil, params{}, err
	}
	if ps.vault, err = parseOCID(p[ParamVaultOCID], "vault", ParamVaultOCID, CodeInvalidVaultOCID); err != nil {
		return nil, params{}, err
	}
	out := kms.Params{ParamKeyOCID: ps.key.raw, ParamVaultOCID: ps.vault.raw, ParamRegion: reg.id}
	if v := p[ParamKeyVersionOCID]; v != "" {
		kv, err := parseOCID(v, "keyversion", ParamKeyVersionOCID, CodeInvalidKeyVersionOCID)
		if err != nil {
			return nil, params{}, err
		}
		ps.version = &kv
		out[ParamKeyVersionOCID] = kv.raw
	}
	for _, o := range []struct {
		id    ocid
		param string
	}{{ps.key, ParamKeyOCID}, {ps.vault, ParamVaultOCID}} {
		if o.id.region != reg {
			return nil, params{}, invalid(CodeRegionMismatch, o.param, fmt.Sprintf("%s is in region %s, not in %s: register the region of the vault", o.param, o.id.region.id, reg.id))
		}
	}
	if ps.version != nil && ps.version.region != reg {
		return nil, params{}, invalid(CodeRegionMismatch, ParamKeyVersionOCID, fmt.Sprintf("key_version_ocid is in region %s, not in %s", ps.version.region.id, reg.id))
	}
	return out, ps, nil
}

// versionOK reports whether s is a key version OCID of the key's realm and
// region (as a stored wrap or OCI's answer names it).
func (ps params) versionOK(s string) bool {
	v, err := parseOCID(s, "keyversion", "", "")
	return err == nil && v.region == ps.region && !strings.ContainsAny(s, " \n")
}
