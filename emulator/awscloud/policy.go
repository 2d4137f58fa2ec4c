package awscloud

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
)

// policyKind says where a policy document is used; it decides which
// elements are required or prohibited.
type policyKind int

const (
	identityPolicy policyKind = iota // IAM inline/managed, session policies
	trustPolicy                      // a role's AssumeRolePolicyDocument
	keyPolicy                        // a KMS key policy
)

// policyError is a document rejected at write time; msg is IAM's wording
// where known.
type policyError struct{ msg string }

func (e *policyError) Error() string { return e.msg }

func perr(format string, args ...any) error { return &policyError{fmt.Sprintf(format, args...)} }

var errSyntax = &policyError{"Syntax errors in policy."}

type policyDoc struct {
	Version    string
	Statements []*statement
}

type principalSet struct {
	Any           bool
	AWS           []string
	Service       []string
	Federated     []string
	CanonicalUser []string
}

type statement struct {
	Sid          string
	Effect       string // Allow or Deny
	Principal    *principalSet
	NotPrincipal bool
	Actions      []string
	NotAction    bool
	Resources    []string
	NotResource  bool
	HasResource  bool
	HasAction    bool
	Conditions   []condition
}

type condition struct {
	Op        string // lower-case base operator, e.g. "stringequals"
	Qualifier string // "", "foranyvalue", "forallvalues"
	IfExists  bool
	Key       string // lower-case context key
	Values    []string
}

var conditionOps = map[string]bool{
	"stringequals": true, "stringnotequals": true, "stringequalsignorecase": true, "stringnotequalsignorecase": true,
	"stringlike": true, "stringnotlike": true,
	"arnequals": true, "arnlike": true, "arnnotequals": true, "arnnotlike": true,
	"numericequals": true, "numericnotequals": true, "numericlessthan": true, "numericlessthanequals": true,
	"numericgreaterthan": true, "numericgreaterthanequals": true,
	"dateequals": true, "datenotequals": true, "datelessthan": true, "datelessthanequals": true,
	"dategreaterthan": true, "dategreaterthanequals": true,
	"bool": true, "ipaddress": true, "notipaddress": true, "null": true,
}

// parsePolicy parses and validates a policy document of the given kind.
func parsePolicy(doc string, kind policyKind) (*policyDoc, error) {
	if strings.TrimSpace(doc) == "" {
		return nil, perr("Syntax errors in policy.")
	}
	dec := json.NewDecoder(strings.NewReader(doc))
	dec.UseNumber()
	var raw any
	if err := dec.Decode(&raw); err != nil {
		return nil, perr("This policy contains invalid Json")
	}
	if dec.More() {
		return nil, perr("This policy contains invalid Json")
	}
	top, ok := raw.(map[string]any)
	if !ok {
		return nil, perr("This policy contains invalid Json")
	}
	p := &policyDoc{Version: "2008-10-17"}
	for k, v := range top {
		switch k {
		case "Version":
			s, ok := v.(string)
			if !ok || (s != "2012-10-17" && s != "2008-10-17") {
				return nil, perr("The policy failed legacy parsing")
			}
			p.Version = s
		case "Id":
			if _, ok := v.(string); !ok {
				return nil, errSyntax
			}
		case "Statement":
			var list []any
			switch t := v.(type) {
			case []any:
				list = t
			case map[string]any:
				list = []any{t}
			default:
				return nil, errSyntax
			}
			for _, item := range list {
				m, ok := item.(map[string]any)
				if !ok {
					return nil, errSyntax
				}
				st, err := parseStatement(m, kind)
				if err != nil {
					return nil, err
				}
				p.Statements = append(p.Statements, st)
			}
		default:
			return nil, errSyntax
		}
	}
	if top["Statement"] == nil {
		return nil, perr("Missing required field Statement")
	}
	return p, nil
}

// stringList reads a string or a list of strings (numbers and booleans
// are accepted as their text, as IAM does in condition values).
func stringList(v any, scalarsOK bool) ([]string, bool) {
	conv := func(x any) (string, bool) {
		switch t := x.(type) {
		case string:
			return t, true
		case json.Number:
			return t.String(), scalarsOK
		case bool:
			return strconv.FormatBool(t), scalarsOK
		}
		return "", false
	}
	if l, ok := v.([]any); ok {
		if len(l) == 0 {
			return nil, false
		}
		out := make([]string, 0, len(l))
		for _, x := range l {
			s, ok := conv(x)
			if !ok {
				return nil, false
			}
			out = append(out, s)
		}
		return out, true
	}
	s, ok := conv(v)
	if !ok {
		return nil, false
	}
	return []string{s}, true
}

var actionRE = regexp.MustCompile(`^[a-zA-Z0-9-]+:[a-zA-Z0-9*?]+$`)

func parseStatement(m map[string]any, kind policyKind) (*statement, error) {
	st := &statement{}
	for k, v := range m {
		switch k {
		case "Sid":
			s, ok := v.(string)
			if !ok {
				return nil, errSyntax
			}
			st.Sid = s
		case "Effect":
			s, ok := v.(string)
			if !ok || (s != "Allow" && s != "Deny") {
				return nil, perr("Invalid effect: %v", v)
			}
			st.Effect = s
		case "Action", "NotAction":
			if st.HasAction {
				return nil, errSyntax
			}
			l, ok := stringList(v, false)
			if !ok {
				return nil, errSyntax
			}
			for _, a := range l {
				if a != "*" && !actionRE.MatchString(a) {
					if !strings.Contains(a, ":") {
						return nil, perr("Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc.")
					}
					return nil, perr("Action vendors must not contain wildcards or invalid characters: %s", a)
				}
			}
			st.Actions, st.NotAction, st.HasAction = l, k == "NotAction", true
		case "Resource", "NotResource":
			if kind == trustPolicy {
				return nil, perr("Has prohibited field %s", k)
			}
			if st.HasResource {
				return nil, errSyntax
			}
			l, ok := stringList(v, false)
			if !ok {
				return nil, errSyntax
			}
			for _, r := range l {
				if r != "*" && !strings.HasPrefix(r, "arn:") {
					return nil, perr("Resource %s must be in ARN format or \"*\".", r)
				}
			}
			st.Resources, st.NotResource, st.HasResource = l, k == "NotResource", true
		case "Principal", "NotPrincipal":
			if kind == identityPolicy {
				return nil, perr("Policy document should not specify a principal.")
			}
			if st.Principal != nil {
				return nil, errSyntax
			}
			ps, err := parsePrincipal(v)
			if err != nil {
				return nil, err
			}
			st.Principal, st.NotPrincipal = ps, k == "NotPrincipal"
		case "Condition":
			cm, ok := v.(map[string]any)
			if !ok {
				return nil, errSyntax
			}
			for op, body := range cm {
				keys, ok := body.(map[string]any)
				if !ok {
					return nil, errSyntax
				}
				base, qual, ifExists := splitOperator(op)
				if !conditionOps[base] {
					return nil, perr("Invalid Condition type : %s.", op)
				}
				for key, vals := range keys {
					l, ok := stringList(vals, true)
					if !ok || key == "" || !strings.Contains(key, ":") {
						return nil, perr("Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc.")
					}
					if base == "ipaddress" || base == "notipaddress" {
						for _, s := range l {
							if _, err := parseIPOrPrefix(s); err != nil {
								return nil, perr("Invalid IP address in condition: %s", s)
							}
						}
					}
					st.Conditions = append(st.Conditions, condition{Op: base, Qualifier: qual, IfExists: ifExists, Key: strings.ToLower(key), Values: l})
				}
			}
		default:
			return nil, errSyntax
		}
	}
	if st.Effect == "" {
		return nil, perr("Missing required field Effect")
	}
	if !st.HasAction && kind != keyPolicy {
		return nil, perr("Missing required field Action")
	}
	if kind == identityPolicy && !st.HasResource {
		return nil, perr("Missing required field Resource")
	}
	if kind != identityPolicy && st.Principal == nil {
		return nil, perr("Missing required field Principal")
	}
	return st, nil
}

func splitOperator(op string) (base, qualifier string, ifExists bool) {
	l := strings.ToLower(op)
	for _, q := range []string{"foranyvalue:", "forallvalues:"} {
		if rest, ok := strings.CutPrefix(l, q); ok {
			qualifier, l = strings.TrimSuffix(q, ":"), rest
		}
	}
	if rest, ok := strings.CutSuffix(l, "ifexists"); ok && l != "null" {
		l, ifExists = rest, true
	}
	return l, qualifier, ifExists
}

var (
	accountRE     = regexp.MustCompile(`^[0-9]{12}$`)
	iamPrincipal  = regexp.MustCompile(`^arn:(aws|aws-cn|aws-us-gov):iam::([0-9]{12}):(root|user/.+|role/.+|oidc-provider/.+)$`)
	stsPrincipal  = regexp.MustCompile(`^arn:(aws|aws-cn|aws-us-gov):sts::([0-9]{12}):assumed-role/[\w+=,.@-]+/[\w+=,.@-]+$`)
	serviceNameRE = regexp.MustCompile(`^[a-z0-9.-]+\.(amazonaws\.com|amazonaws\.com\.cn)$`)
)

func parsePrincipal(v any) (*principalSet, error) {
	if s, ok := v.(string); ok {
		if s != "*" {
			return nil, perr("Invalid principal in policy: %q", s)
		}
		return &principalSet{Any: true}, nil
	}
	m, ok := v.(map[string]any)
	if !ok || len(m) == 0 {
		return nil, errSyntax
	}
	ps := &principalSet{}
	for k, raw := range m {
		l, ok := stringList(raw, false)
		if !ok {
			return nil, errSyntax
		}
		for _, s := range l {
			bad := false
			switch k {
			case "AWS":
				bad = !(s == "*" || accountRE.MatchString(s) || iamPrincipal.MatchString(s) && !strings.Contains(s, ":oidc-provider/") || stsPrincipal.MatchString(s))
				bad = bad || s != "*" && strings.ContainsAny(s, "*?")
			case "Service":
				bad = !serviceNameRE.MatchString(s)
			case "Federated":
				bad = !(iamPrincipal.MatchString(s) && strings.Contains(s, ":oidc-provider/") || s == "cognito-identity.amazonaws.com" || s == "www.amazon.com" || s == "accounts.google.com" || s == "graph.facebook.com")
			case "CanonicalUser":
				bad = len(s) != 64
			default:
				return nil, errSyntax
			}
			if bad {
				return nil, perr("Invalid principal in policy: \"%s\":\"%s\"", k, s)
			}
		}
		switch k {
		case "AWS":
			ps.AWS = l
		case "Service":
			ps.Service = l
		case "Federated":
			ps.Federated = l
		case "CanonicalUser":
			ps.CanonicalUser = l
		}
	}
	return ps, nil
}

// ---- evaluation ----

// evalContext is one request as policies see it.
type evalContext struct {
	Action   string // "kms:Decrypt"
	Resource string // ARN
	Keys     map[string][]string
	Multi    map[string]bool // multivalued keys (kms:EncryptionContextKeys)
	// principal matching (resource policies): returns the match kind.
	MatchPrincipal func(ps *principalSet) principalMatch
}

type principalMatch int

const (
	matchNone    principalMatch = iota
	matchAccount                // the caller's account (delegation to IAM)
	matchDirect                 // the caller's user/role or "*"
	matchSession                // the caller's exact role-session ARN
)

// decision of one policy for a request.
type decision struct {
	Deny  bool
	Allow principalMatch // matchNone: no allow; for identity policies matchDirect
}

// evaluate returns the policy's decision. implicitResource makes
// statements without Resource apply (trust policies).
func (p *policyDoc) evaluate(c *evalContext, implicitResource bool) decision {
	var d decision
	for _, st := range p.Statements {
		pm := matchDirect
		if st.Principal != nil {
			pm = c.MatchPrincipal(st.Principal)
			if st.NotPrincipal {
				if pm == matchNone {
					pm = matchDirect
				} else {
					pm = matchNone
				}
			}
			if pm == matchNone {
				continue
			}
		}
		if !st.HasAction || !matchAny(st.Actions, c.Action, true) != st.NotAction {
			continue
		}
		if st.HasResource {
			if p.matchResources(st, c) == st.NotResource {
				continue
			}
		} else if !implicitResource {
			continue
		}
		if !p.conditionsHold(st, c) {
			continue
		}
		if st.Effect == "Deny" {
			d.Deny = true
			continue
		}
		if pm > d.Allow {
			d.Allow = pm
		}
	}
	return d
}

func (p *policyDoc) matchResources(st *statement, c *evalContext) bool {
	for _, r := range st.Resources {
		pat, ok := p.substitute(r, c)
		if ok && globMatch(pat, c.Resource, false) {
			return true
		}
	}
	return false
}

// substitute resolves ${...} policy variables (Version 2012-10-17 only).
func (p *policyDoc) substitute(s string, c *evalContext) (string, bool) {
	if p.Version != "2012-10-17" || !strings.Contains(s, "${") {
		return s, true
	}
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			return b.String(), true
		}
		b.WriteString(s[:i])
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			b.WriteString(s[i:])
			return b.String(), true
		}
		name := strings.TrimSpace(s[i+2 : i+j])
		def, hasDef := "", false
		if k, d, ok := strings.Cut(name, ","); ok {
			name = strings.TrimSpace(k)
			d = strings.TrimSpace(d)
			if len(d) >= 2 && d[0] == '\'' && d[len(d)-1] == '\'' {
				def, hasDef = d[1:len(d)-1], true
			}
		}
		switch name {
		case "*", "?", "$":
			b.WriteString(name)
		default:
			v := c.Keys[strings.ToLower(name)]
			switch {
			case len(v) == 1:
				b.WriteString(v[0])
			case hasDef:
				b.WriteString(def)
			default:
				return "", false
			}
		}
		s = s[i+j+1:]
	}
}

func (p *policyDoc) conditionsHold(st *statement, c *evalContext) bool {
	for _, cond := range st.Conditions {
		if !p.conditionHolds(cond, c) {
			return false
		}
	}
	return true
}

func negated(op string) bool {
	switch op {
	case "stringnotequals", "stringnotequalsignorecase", "stringnotlike", "arnnotequals", "arnnotlike",
		"numericnotequals", "datenotequals", "notipaddress":
		return true
	}
	return false
}

func (p *policyDoc) conditionHolds(cond condition, c *evalContext) bool {
	vals, present := c.Keys[cond.Key]
	if cond.Op == "null" {
		want := len(cond.Values) > 0 && strings.EqualFold(cond.Values[0], "true")
		missing := !present || len(vals) == 0
		if len(cond.Values) > 1 {
			for _, v := range cond.Values {
				if strings.EqualFold(v, "true") == missing {
					return true
				}
			}
			return false
		}
		return want == missing
	}
	if !present || len(vals) == 0 {
		switch {
		case cond.Qualifier == "forallvalues":
			return true
		case cond.Qualifier == "foranyvalue":
			return false
		case cond.IfExists:
			return true
		}
		return negated(cond.Op)
	}
	policyVals := make([]string, 0, len(cond.Values))
	for _, v := range cond.Values {
		if s, ok := p.substitute(v, c); ok {
			policyVals = append(policyVals, s)
		}
	}
	base := cond.Op
	neg := negated(base)
	pos := positiveOf(base)
	// matchOne: does request value rv match any policy value (positive op)?
	matchOne := func(rv string) bool {
		for _, pv := range policyVals {
			if compare(pos, rv, pv) {
				return true
			}
		}
		return false
	}
	switch cond.Qualifier {
	case "forallvalues":
		for _, rv := range vals {
			if matchOne(rv) == neg {
				return false
			}
		}
		return true
	default: // foranyvalue, or a single-valued operator: any request value
		if cond.Qualifier == "" && neg {
			for _, rv := range vals {
				if matchOne(rv) {
					return false
				}
			}
			return true
		}
		for _, rv := range vals {
			if matchOne(rv) != neg {
				return true
			}
		}
		return false
	}
}

func positiveOf(op string) string {
	switch op {
	case "stringnotequals":
		return "stringequals"
	case "stringnotequalsignorecase":
		return "stringequalsignorecase"
	case "stringnotlike":
		return "stringlike"
	case "arnnotequals", "arnnotlike":
		return "arnlike"
	case "numericnotequals":
		return "numericequals"
	case "datenotequals":
		return "dateequals"
	case "notipaddress":
		return "ipaddress"
	case "arnequals":
		return "arnlike"
	}
	return op
}

// compare applies a positive operator to one request value and one
// policy value.
func compare(op, rv, pv string) bool {
	switch op {
	case "stringequals":
		return rv == pv
	case "stringequalsignorecase":
		return strings.EqualFold(rv, pv)
	case "stringlike":
		return globMatch(pv, rv, false)
	case "arnlike":
		return arnLike(pv, rv)
	case "bool":
		return strings.EqualFold(rv, pv)
	case "ipaddress":
		addr, err := netip.ParseAddr(rv)
		if err != nil {
			return false
		}
		pfx, err := parseIPOrPrefix(pv)
		return err == nil && pfx.Contains(addr)
	}
	if strings.HasPrefix(op, "numeric") {
		a, err1 := strconv.ParseFloat(rv, 64)
		b, err2 := strconv.ParseFloat(pv, 64)
		if err1 != nil || err2 != nil {
			return false
		}
		return ordered(strings.TrimPrefix(op, "numeric"), cmpFloat(a, b))
	}
	if strings.HasPrefix(op, "date") {
		a, ok1 := parseDate(rv)
		b, ok2 := parseDate(pv)
		if !ok1 || !ok2 {
			return false
		}
		return ordered(strings.TrimPrefix(op, "date"), a.Compare(b))
	}
	return false
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func ordered(rel string, c int) bool {
	switch rel {
	case "equals":
		return c == 0
	case "lessthan":
		return c < 0
	case "lessthanequals":
		return c <= 0
	case "greaterthan":
		return c > 0
	case "greaterthanequals":
		return c >= 0
	}
	return false
}

func parseDate(s string) (time.Time, bool) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Unix(n, 0), true
	}
	for _, f := range []string{time.RFC3339Nano, "2006-01-02T15:04:05Z", "2006-01-02"} {
		if t, err := time.Parse(f, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

func parseIPOrPrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		return netip.ParsePrefix(s)
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// arnLike compares ARNs component-wise with wildcards (the resource part
// may contain colons).
func arnLike(pattern, arn string) bool {
	pp := strings.SplitN(pattern, ":", 6)
	ap := strings.SplitN(arn, ":", 6)
	if len(pp) != 6 || len(ap) != 6 {
		return false
	}
	for i := range pp {
		if !globMatch(pp[i], ap[i], false) {
			return false
		}
	}
	return true
}

func matchAny(patterns []string, s string, fold bool) bool {
	for _, p := range patterns {
		if globMatch(p, s, fold) {
			return true
		}
	}
	return false
}

// globMatch matches s against a pattern with '*' (any run) and '?' (one
// character), iteratively (no exponential backtracking).
func globMatch(pattern, s string, fold bool) bool {
	if fold {
		pattern, s = strings.ToLower(pattern), strings.ToLower(s)
	}
	pr, sr := []rune(pattern), []rune(s)
	pi, si := 0, 0
	star, mark := -1, 0
	for si < len(sr) {
		switch {
		case pi < len(pr) && (pr[pi] == '?' || pr[pi] == sr[si]):
			pi++
			si++
		case pi < len(pr) && pr[pi] == '*':
			star, mark = pi, si
			pi++
		case star >= 0:
			pi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for pi < len(pr) && pr[pi] == '*' {
		pi++
	}
	return pi == len(pr)
}

// policySize counts a document's characters excluding whitespace, as IAM's
// size quotas do.
func policySize(doc string) int {
	n := 0
	for _, r := range doc {
		if !unicode.IsSpace(r) {
			n++
		}
	}
	return n
}

// ---- parse cache ----

type policyCacheKey struct {
	doc  string
	kind policyKind
}

var policyCache = struct {
	sync.Mutex
	m map[policyCacheKey]*policyDoc
}{m: map[policyCacheKey]*policyDoc{}}

// cachedPolicy parses a stored (already validated) document, memoised.
// A stored document that no longer parses (it cannot happen unless the
// state file was edited) yields an empty policy, which allows nothing.
func cachedPolicy(doc string, kind policyKind) *policyDoc {
	k := policyCacheKey{doc, kind}
	policyCache.Lock()
	p := policyCache.m[k]
	policyCache.Unlock()
	if p != nil {
		return p
	}
	p, err := parsePolicy(doc, kind)
	if err != nil {
		p = &policyDoc{}
	}
	policyCache.Lock()
	if len(policyCache.m) > 4096 {
		policyCache.m = map[policyCacheKey]*policyDoc{}
	}
	policyCache.m[k] = p
	policyCache.Unlock()
	return p
}

// compactJSON is used to compare documents regardless of formatting.
func compactJSON(doc string) string {
	var b bytes.Buffer
	if json.Compact(&b, []byte(doc)) != nil {
		return doc
	}
	return b.String()
}
