package ocicloud

import (
	"sort"
	"strings"

	"github.com/ekm-dev/ekm/emulator/emukit"
)

// region is an OCI region the emulator serves.
type region struct {
	ID    string // us-ashburn-1
	Realm string // oc1
	Key   string // iad (the short code StringToRegion accepts)
}

// regions lists the regions of the OCI Go SDK (v65.131.0,
// common/regions.go regionRealm and shortNameRegion).
var regions = []region{
	{"ap-chuncheon-1", "oc1", "yny"}, {"ap-hyderabad-1", "oc1", "hyd"}, {"ap-melbourne-1", "oc1", "mel"}, {"ap-mumbai-1", "oc1", "bom"},
	{"ap-osaka-1", "oc1", "kix"}, {"ap-seoul-1", "oc1", "icn"}, {"ap-sydney-1", "oc1", "syd"}, {"ap-tokyo-1", "oc1", "nrt"},
	{"ca-montreal-1", "oc1", "yul"}, {"ca-toronto-1", "oc1", "yyz"}, {"eu-amsterdam-1", "oc1", "ams"}, {"eu-frankfurt-1", "oc1", "fra"},
	{"eu-zurich-1", "oc1", "zrh"}, {"me-jeddah-1", "oc1", "jed"}, {"me-dubai-1", "oc1", "dxb"}, {"sa-saopaulo-1", "oc1", "gru"},
	{"uk-cardiff-1", "oc1", "cwl"}, {"uk-london-1", "oc1", "lhr"}, {"us-ashburn-1", "oc1", "iad"}, {"us-phoenix-1", "oc1", "phx"},
	{"us-sanjose-1", "oc1", "sjc"}, {"sa-vinhedo-1", "oc1", "vcp"}, {"sa-santiago-1", "oc1", "scl"}, {"il-jerusalem-1", "oc1", "mtz"},
	{"eu-marseille-1", "oc1", "mrs"}, {"ap-singapore-1", "oc1", "sin"}, {"me-abudhabi-1", "oc1", "auh"}, {"eu-milan-1", "oc1", "lin"},
	{"eu-stockholm-1", "oc1", "arn"}, {"af-johannesburg-1", "oc1", "jnb"}, {"eu-paris-1", "oc1", "cdg"}, {"mx-queretaro-1", "oc1", "qro"},
	{"eu-madrid-1", "oc1", "mad"}, {"us-chicago-1", "oc1", "ord"}, {"mx-monterrey-1", "oc1", "mty"}, {"us-saltlake-2", "oc1", "aga"},
	{"sa-bogota-1", "oc1", "bog"}, {"sa-valparaiso-1", "oc1", "vap"}, {"ap-singapore-2", "oc1", "xsp"}, {"me-riyadh-1", "oc1", "ruh"},
	{"ap-delhi-1", "oc1", "onm"}, {"ap-batam-1", "oc1", "hsg"}, {"eu-madrid-3", "oc1", "orf"}, {"eu-turin-1", "oc1", "nrq"},
	{"ap-kulai-2", "oc1", "jbp"}, {"af-casablanca-1", "oc1", "lej"},
	{"us-langley-1", "oc2", "lfi"}, {"us-luke-1", "oc2", "luf"},
	{"us-gov-ashburn-1", "oc3", "ric"}, {"us-gov-chicago-1", "oc3", "pia"}, {"us-gov-phoenix-1", "oc3", "tus"},
	{"uk-gov-london-1", "oc4", "ltn"}, {"uk-gov-cardiff-1", "oc4", "brs"},
	{"ap-chiyoda-1", "oc8", "nja"}, {"ap-ibaraki-1", "oc8", "ukb"},
	{"me-dcc-muscat-1", "oc9", "mct"}, {"me-ibri-1", "oc9", "ibr"},
	{"ap-dcc-canberra-1", "oc10", "wga"},
	{"eu-dcc-milan-1", "oc14", "bgy"}, {"eu-dcc-milan-2", "oc14", "mxp"}, {"eu-dcc-dublin-2", "oc14", "snn"}, {"eu-dcc-rating-2", "oc14", "dtm"},
	{"eu-dcc-rating-1", "oc14", "dus"}, {"eu-dcc-dublin-1", "oc14", "ork"},
	{"ap-dcc-gazipur-1", "oc15", "dac"},
	{"eu-madrid-2", "oc19", "vll"}, {"eu-frankfurt-2", "oc19", "str"},
	{"eu-jovanovac-1", "oc20", "beg"},
	{"me-dcc-doha-1", "oc21", "doh"}, {"me-alrayyan-1", "oc21", "vve"},
	{"us-somerset-1", "oc23", "ebb"}, {"us-thames-1", "oc23", "ebl"},
	{"eu-dcc-zurich-1", "oc24", "avz"}, {"eu-crissier-1", "oc24", "avf"},
	{"me-abudhabi-3", "oc26", "ahu"}, {"me-alain-1", "oc26", "rba"},
	{"me-abudhabi-2", "oc29", "rkt"}, {"me-abudhabi-4", "oc29", "shj"},
	{"ap-seoul-2", "oc35", "dtz"}, {"ap-suwon-1", "oc35", "dln"}, {"ap-chuncheon-2", "oc35", "bno"},
	{"us-ashburn-2", "oc42", "yxj"}, {"us-newark-1", "oc42", "pgc"},
	{"eu-budapest-1", "oc51", "jsk"},
	{"sa-riodejaneiro-1", "oc52", "hnw"},
}

// realmDomains maps a realm to its second-level domain (common/regions.go
// realm).
var realmDomains = map[string]string{
	"oc1": "oraclecloud.com", "oc2": "oraclegovcloud.com", "oc3": "oraclegovcloud.com", "oc4": "oraclegovcloud.uk",
	"oc8": "oraclecloud8.com", "oc9": "oraclecloud9.com", "oc10": "oraclecloud10.com", "oc14": "oraclecloud14.com",
	"oc15": "oraclecloud15.com", "oc19": "oraclecloud.eu", "oc20": "oraclecloud20.com", "oc21": "oraclecloud21.com",
	"oc23": "oraclecloud23.com", "oc24": "oraclecloud24.com", "oc26": "oraclecloud26.com", "oc29": "oraclecloud29.com",
	"oc35": "oraclecloud35.com", "oc42": "oraclecloud42.com", "oc51": "oraclecloud51.com", "oc52": "oraclecloud52.com",
}

// DefaultRegion is where tenancies are created when none is given.
const DefaultRegion = "us-ashburn-1"

func regionByID(id string) *region {
	for i := range regions {
		if regions[i].ID == id {
			return &regions[i]
		}
	}
	return nil
}

// regionByAny accepts a region id or its short code.
func regionByAny(s string) *region {
	s = strings.ToLower(s)
	for i := range regions {
		if regions[i].ID == s || regions[i].Key == s {
			return &regions[i]
		}
	}
	return nil
}

func (r *region) domain() string { return realmDomains[r.Realm] }

// ocidRegion is the region segment of the region's OCIDs: the short code
// for the first two regions (Phoenix, Ashburn), the region id for later
// ones, as OCI does.
func (r *region) ocidRegion() string {
	if r.ID == "us-ashburn-1" || r.ID == "us-phoenix-1" {
		return r.Key
	}
	return r.ID
}

// KMSHost is the vault-management host of a region.
func KMSHost(regionID string) string {
	r := regionByID(regionID)
	if r == nil {
		return ""
	}
	return "kms." + r.ID + "." + r.domain()
}

// IdentityHost is the Identity host of a region.
func IdentityHost(regionID string) string {
	r := regionByID(regionID)
	if r == nil {
		return ""
	}
	return "identity." + r.ID + ".oci." + r.domain()
}

type service int

const (
	svcUnknown    service = iota
	svcIdentity           // identity.<region>.oci.<domain>
	svcVault              // kms.<region>.<domain>
	svcManagement         // <prefix>-management.kms.<region>.<domain>
	svcCrypto             // <prefix>-crypto.kms.<region>.<domain>
	svcControl
)

// serviceName is the service of counters, faults and the request log.
func (s service) name() string {
	switch s {
	case svcIdentity:
		return "identity"
	case svcVault, svcManagement, svcCrypto:
		return "kms"
	}
	return ""
}

// endpoint is what a host name means.
type endpoint struct {
	svc    service
	region *region
	// prefix is the vault's endpoint prefix (management and crypto hosts).
	prefix string
}

// classify maps a Host header to an endpoint.
func classify(hostport string) (endpoint, string) {
	host := emukit.HostName(hostport)
	if emukit.IsControlHost(host) {
		return endpoint{svc: svcControl}, host
	}
	for i := range regions {
		r := &regions[i]
		d := r.domain()
		switch {
		case host == "identity."+r.ID+".oci."+d:
			return endpoint{svc: svcIdentity, region: r}, host
		case host == "kms."+r.ID+"."+d:
			return endpoint{svc: svcVault, region: r}, host
		}
		rest, ok := strings.CutSuffix(host, ".kms."+r.ID+"."+d)
		if !ok || strings.Contains(rest, ".") {
			continue
		}
		if p, ok := strings.CutSuffix(rest, "-management"); ok && vaultPrefixRE.MatchString(p) {
			return endpoint{svc: svcManagement, region: r, prefix: p}, host
		}
		if p, ok := strings.CutSuffix(rest, "-crypto"); ok && vaultPrefixRE.MatchString(p) {
			return endpoint{svc: svcCrypto, region: r, prefix: p}, host
		}
	}
	return endpoint{}, host
}

// serverDNSNames are the certificate's names: per region the Identity
// host, the KMS host and a wildcard for the vaults' management and crypto
// hosts; plus the control API's names.
func serverDNSNames() []string {
	set := map[string]bool{emukit.ControlHost: true, "localhost": true}
	for i := range regions {
		r := &regions[i]
		d := r.domain()
		set["identity."+r.ID+".oci."+d] = true
		set["kms."+r.ID+"."+d] = true
		set["*.kms."+r.ID+"."+d] = true
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Regions lists the region ids the emulator serves.
func Regions() []string {
	out := make([]string, 0, len(regions))
	for _, r := range regions {
		out = append(out, r.ID)
	}
	sort.Strings(out)
	return out
}
