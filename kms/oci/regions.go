package oci

import "strings"

// The regions and realms of the OCI Go SDK v65.131.0 (common/regions.go:
// regionRealm, shortNameRegion, realm). ekm calls only hosts it derives
// from this table (kms.<region>.<domain>) and the vault endpoints OCI
// answers within the same region and domain: never a region or endpoint
// from the SDK's region metadata files or environment.
type region struct {
	id, realm, key string
}

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

// realmDomains maps a realm to its second-level domain.
var realmDomains = map[string]string{
	"oc1": "oraclecloud.com", "oc2": "oraclegovcloud.com", "oc3": "oraclegovcloud.com", "oc4": "oraclegovcloud.uk",
	"oc8": "oraclecloud8.com", "oc9": "oraclecloud9.com", "oc10": "oraclecloud10.com", "oc14": "oraclecloud14.com",
	"oc15": "oraclecloud15.com", "oc19": "oraclecloud.eu", "oc20": "oraclecloud20.com", "oc21": "oraclecloud21.com",
	"oc23": "oraclecloud23.com", "oc24": "oraclecloud24.com", "oc26": "oraclecloud26.com", "oc29": "oraclecloud29.com",
	"oc35": "oraclecloud35.com", "oc42": "oraclecloud42.com", "oc51": "oraclecloud51.com", "oc52": "oraclecloud52.com",
}

// regionOf resolves a region id or its short code (as OCIDs of the oldest
// regions carry it), case-insensitively.
func regionOf(s string) (region, bool) {
	s = strings.ToLower(s)
	for _, r := range regions {
		if r.id == s || r.key == s {
			return r, true
		}
	}
	return region{}, false
}

func (r region) domain() string { return realmDomains[r.realm] }

// kmsHost is the region's vault API host.
func (r region) kmsHost() string { return "kms." + r.id + "." + r.domain() }

// KnownRealm reports whether ekm knows a realm (oc1, oc2, ...).
func KnownRealm(realm string) bool { _, ok := realmDomains[realm]; return ok }
