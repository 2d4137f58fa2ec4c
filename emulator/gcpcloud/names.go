package gcpcloud

import (
	"errors"
	"regexp"
	"strings"
)

// Identifier rules, as Google documents them for each resource.
var (
	// Workload identity pool and provider ids: 4-32 of [a-z0-9-]; the
	// "gcp-" prefix is reserved (iam/v1 field docs).
	wipIDRE = regexp.MustCompile(`^[a-z0-9-]{4,32}$`)
	// Key ring and crypto key ids (CreateKeyRingRequest, CreateCryptoKeyRequest).
	kmsIDRE = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,63}$`)
	// Project ids: 6-30 chars, a lower-case letter first, no trailing hyphen.
	projectIDRE = regexp.MustCompile(`^[a-z][a-z0-9-]{4,28}[a-z0-9]$`)
	// Project numbers.
	projectNumberRE = regexp.MustCompile(`^[1-9][0-9]{0,18}$`)
	// Service account ids (accountId): 6-30 chars.
	saAccountIDRE = regexp.MustCompile(`^[a-z]([-a-z0-9]{4,28}[a-z0-9])$`)
	// Custom attribute names in attribute mappings.
	attrNameRE = regexp.MustCompile(`^[a-z0-9_]{1,100}$`)
	// Version ids are decimal numbers assigned by the server.
	versionIDRE = regexp.MustCompile(`^[1-9][0-9]{0,17}$`)
)

func validWIPID(id string) bool { return wipIDRE.MatchString(id) && !strings.HasPrefix(id, "gcp-") }

// kmsLocations are the Cloud KMS locations the emulator accepts (a subset
// of Google's list: global, the multi-regions and common regions).
var kmsLocations = map[string]bool{
	"global": true, "us": true, "europe": true, "asia": true, "nam4": true, "eur4": true, "nam-eur-asia1": true,
	"us-central1": true, "us-east1": true, "us-east4": true, "us-east5": true, "us-south1": true, "us-west1": true,
	"us-west2": true, "us-west3": true, "us-west4": true, "northamerica-northeast1": true, "northamerica-northeast2": true,
	"southamerica-east1": true, "europe-west1": true, "europe-west2": true, "europe-west3": true, "europe-west4": true,
	"europe-west6": true, "europe-west8": true, "europe-west9": true, "europe-north1": true, "europe-central2": true,
	"europe-southwest1": true, "asia-east1": true, "asia-east2": true, "asia-northeast1": true, "asia-northeast2": true,
	"asia-northeast3": true, "asia-south1": true, "asia-southeast1": true, "asia-southeast2": true,
	"australia-southeast1": true, "australia-southeast2": true, "me-west1": true, "me-central1": true,
}

// kmsName is a parsed Cloud KMS resource name. Kind tells which parts are
// set: "location", "keyRing", "cryptoKey" or "cryptoKeyVersion".
type kmsName struct {
	Project, Location, KeyRing, Key, Version string
	Kind                                     string
}

func (n kmsName) locationName() string { return "projects/" + n.Project + "/locations/" + n.Location }
func (n kmsName) keyRingName() string  { return n.locationName() + "/keyRings/" + n.KeyRing }
func (n kmsName) keyName() string      { return n.keyRingName() + "/cryptoKeys/" + n.Key }
func (n kmsName) versionName() string  { return n.keyName() + "/cryptoKeyVersions/" + n.Version }

// String renders the name at its own depth.
func (n kmsName) String() string {
	switch n.Kind {
	case "keyRing":
		return n.keyRingName()
	case "cryptoKey":
		return n.keyName()
	case "cryptoKeyVersion":
		return n.versionName()
	}
	return n.locationName()
}

var errBadName = errors.New("malformed resource name")

// parseKMSName parses projects/P/locations/L[/keyRings/R[/cryptoKeys/K[/cryptoKeyVersions/V]]].
// Ids are checked against Google's patterns; the location must be known.
func parseKMSName(s string) (kmsName, error) {
	parts := strings.Split(s, "/")
	var n kmsName
	if len(parts) < 4 || len(parts)%2 != 0 || parts[0] != "projects" || parts[2] != "locations" || len(parts) > 10 {
		return n, errBadName
	}
	n.Project, n.Location, n.Kind = parts[1], parts[3], "location"
	if !projectIDRE.MatchString(n.Project) && !projectNumberRE.MatchString(n.Project) {
		return n, errBadName
	}
	if n.Location == "" {
		return n, errBadName
	}
	kinds := []struct{ seg, kind string }{{"keyRings", "keyRing"}, {"cryptoKeys", "cryptoKey"}, {"cryptoKeyVersions", "cryptoKeyVersion"}}
	for i := 4; i < len(parts); i += 2 {
		k := kinds[(i-4)/2]
		if parts[i] != k.seg {
			return n, errBadName
		}
		id := parts[i+1]
		switch k.kind {
		case "keyRing":
			n.KeyRing = id
		case "cryptoKey":
			n.Key = id
		case "cryptoKeyVersion":
			n.Version = id
		}
		if k.kind == "cryptoKeyVersion" {
			if !versionIDRE.MatchString(id) {
				return n, errBadName
			}
		} else if !kmsIDRE.MatchString(id) {
			return n, errBadName
		}
		n.Kind = k.kind
	}
	return n, nil
}

// wipName is a parsed workload identity pool or provider name (IAM API):
// projects/P/locations/global/workloadIdentityPools/POOL[/providers/PROV].
// Project may be an id or a number.
type wipName struct {
	Project, Pool, Provider string
}

func parseWIPName(s string) (wipName, error) {
	parts := strings.Split(s, "/")
	var n wipName
	if (len(parts) != 6 && len(parts) != 8) || parts[0] != "projects" || parts[2] != "locations" ||
		parts[3] != "global" || parts[4] != "workloadIdentityPools" {
		return n, errBadName
	}
	n.Project, n.Pool = parts[1], parts[5]
	if !projectIDRE.MatchString(n.Project) && !projectNumberRE.MatchString(n.Project) {
		return n, errBadName
	}
	if !validWIPID(n.Pool) {
		return n, errBadName
	}
	if len(parts) == 8 {
		if parts[6] != "providers" || !validWIPID(parts[7]) {
			return n, errBadName
		}
		n.Provider = parts[7]
	}
	return n, nil
}

// parseSTSAudience parses an STS audience: the provider's full resource
// name, "//iam.googleapis.com/projects/NUMBER/locations/global/
// workloadIdentityPools/POOL/providers/PROV". Google requires the project
// number here (project ids are refused).
func parseSTSAudience(aud string) (wipName, bool) {
	rest, ok := strings.CutPrefix(aud, "//iam.googleapis.com/")
	if !ok {
		return wipName{}, false
	}
	n, err := parseWIPName(rest)
	if err != nil || n.Provider == "" || !projectNumberRE.MatchString(n.Project) {
		return wipName{}, false
	}
	return n, true
}

// poolPrefix is the common part of principal identifiers of a pool.
func poolPrefix(number, pool string) string {
	return "//iam.googleapis.com/projects/" + number + "/locations/global/workloadIdentityPools/" + pool
}

// principalMember is the allow-policy member for one federated identity.
func principalMember(number, pool, subject string) string {
	return "principal:" + poolPrefix(number, pool) + "/subject/" + subject
}

// member is a parsed allow-policy member.
type member struct {
	Kind  string // user, serviceAccount, group, domain, principal, principalSet
	Value string // email / domain, or for principal(Set) the part after the pool
	// For principal and principalSet:
	Number, Pool string
}

// parseMember checks an allow-policy member string. Members the emulator
// cannot evaluate (allUsers, allAuthenticatedUsers, deleted:..., workforce
// pools, projectOwner:...) are refused.
func parseMember(s string) (member, error) {
	if len(s) > 2048 {
		return member{}, errors.New("member too long")
	}
	kind, val, ok := strings.Cut(s, ":")
	if !ok || val == "" {
		return member{}, errors.New("malformed member")
	}
	switch kind {
	case "user", "serviceAccount", "group":
		at := strings.IndexByte(val, '@')
		if at <= 0 || at == len(val)-1 || strings.ContainsAny(val, " /:") {
			return member{}, errors.New("malformed email")
		}
		return member{Kind: kind, Value: strings.ToLower(val)}, nil
	case "domain":
		if strings.ContainsAny(val, " /:@") || !strings.Contains(val, ".") {
			return member{}, errors.New("malformed domain")
		}
		return member{Kind: kind, Value: strings.ToLower(val)}, nil
	case "principal", "principalSet":
		rest, ok := strings.CutPrefix(val, "//iam.googleapis.com/projects/")
		if !ok {
			return member{}, errors.New("only workload identity pool principals are supported")
		}
		parts := strings.SplitN(rest, "/", 6)
		// NUMBER / locations / global / workloadIdentityPools / POOL / tail
		if len(parts) != 6 || !projectNumberRE.MatchString(parts[0]) || parts[1] != "locations" || parts[2] != "global" ||
			parts[3] != "workloadIdentityPools" || !validWIPID(parts[4]) {
			return member{}, errors.New("malformed workload identity pool principal")
		}
		m := member{Kind: kind, Number: parts[0], Pool: parts[4], Value: parts[5]}
		tail := parts[5]
		if kind == "principal" {
			sub, ok := strings.CutPrefix(tail, "subject/")
			if !ok || sub == "" || len(sub) > 127 {
				return member{}, errors.New("principal must end in /subject/SUBJECT")
			}
			return m, nil
		}
		switch {
		case tail == "*":
		case strings.HasPrefix(tail, "group/") && len(tail) > len("group/"):
		case strings.HasPrefix(tail, "attribute."):
			name, value, ok := strings.Cut(strings.TrimPrefix(tail, "attribute."), "/")
			if !ok || value == "" || !attrNameRE.MatchString(name) {
				return member{}, errors.New("malformed attribute principal set")
			}
		default:
			return member{}, errors.New("principalSet must end in /*, /group/G or /attribute.NAME/VALUE")
		}
		return m, nil
	}
	return member{}, errors.New("unsupported member type " + kind)
}
