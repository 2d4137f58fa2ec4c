package ocicloud

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// The subset of OCI's policy language the emulator evaluates
// (https://docs.oracle.com/iaas/Content/Identity/policieshow/Policy_Basics.htm,
// iam-cross-domain.htm):
//
//	Allow group <name> | group id <ocid> | any-user | any-group
//	      to <verb> <resource-type> in tenancy | compartment <name[:child…]> | compartment id <ocid>
//	      [where <condition>]
//	Define tenancy | group | dynamic-group <alias> as <ocid>
//	Endorse group <name> to <verb> <resource-type> in tenancy <alias> | any-tenancy [where …]
//	Admit group <alias> | any-user of tenancy <alias> to <verb> <resource-type> in <location> [where …]
//
// with <verb> inspect < read < use < manage, resource types such as keys,
// vaults, key-family, policies, compartments, all-resources, and
// conditions <variable> = | != '<value>', any {…}, all {…} over
// target.key.id, target.vault.id, target.compartment.id,
// target.compartment.name, request.operation and request.permission. A
// variable that does not apply to a request makes its condition false.
// Keywords and names are case-insensitive.

// Verbs, cumulative.
const (
	verbInspect = 1 + iota
	verbRead
	verbUse
	verbManage
)

var verbs = map[string]int{"inspect": verbInspect, "read": verbRead, "use": verbUse, "manage": verbManage}

// families are the aggregate resource types.
var families = map[string][]string{
	"key-family":    {"vaults", "keys", "key-delegate"},
	"secret-family": {"secrets", "secret-versions", "secret-bundles"},
}

// Limits on what a policy may hold (OCI: 50 statements per policy).
const (
	maxStatements   = 50
	maxStatementLen = 1024
)

type statement struct {
	kind string // allow, define, endorse, admit
	// define
	defType, alias, ocid string
	// subject
	subjType  string // group, dynamic-group, any-user, any-group
	subj      string // group name, group OCID (subjByID) or, in admit, the group alias
	subjByID  bool
	ofTenancy string // admit: the tenancy alias
	verb      int
	resource  string
	locType   string // tenancy, compartment, compartment-id, any-tenancy, tenancy-alias
	loc       string
	cond      *cond
}

type cond struct {
	op    string // all, any, eq, ne
	kids  []*cond
	vname string
	value string
}

type token struct {
	v      string
	quoted bool
}

var (
	aliasRE   = regexp.MustCompile(`^[A-Za-z0-9_-]{1,100}$`)
	nameRE    = regexp.MustCompile(`^[A-Za-z0-9_.@+ -]{1,100}$`)
	resTypeRE = regexp.MustCompile(`^[a-z][a-z-]{0,63}$`)
	varRE     = regexp.MustCompile(`^[a-z][a-z0-9]*(\.[a-z][a-z0-9-]*)+$`)
	// ocidRE is Oracle's relaxed OCID pattern (at least five segments).
	ocidRE = regexp.MustCompile(`^ocid1\.[a-z0-9-]+\.[a-z0-9-]+\.[a-z0-9-]*(\.[a-z0-9-]+)*\.[a-z0-9]+$`)
)

func tokenize(s string) ([]token, error) {
	var out []token
	i := 0
	for i < len(s) {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '{' || c == '}' || c == ',':
			out = append(out, token{v: string(c)})
			i++
		case c == '=':
			out = append(out, token{v: "="})
			i++
		case c == '!' && i+1 < len(s) && s[i+1] == '=':
			out = append(out, token{v: "!="})
			i += 2
		case c == '\'':
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				return nil, errors.New("unterminated quoted string")
			}
			out = append(out, token{v: s[i+1 : i+1+end], quoted: true})
			i += end + 2
		default:
			j := i
			for j < len(s) && !strings.ContainsRune(" \t\n\r{},='!", rune(s[j])) {
				j++
			}
			if j == i {
				return nil, fmt.Errorf("unexpected character %q", c)
			}
			out = append(out, token{v: s[i:j]})
			i = j
		}
	}
	return out, nil
}

type parser struct {
	toks []token
	pos  int
}

func (p *parser) peek() (token, bool) {
	if p.pos >= len(p.toks) {
		return token{}, false
	}
	return p.toks[p.pos], true
}

func (p *parser) next() (token, error) {
	t, ok := p.peek()
	if !ok {
		return t, errors.New("unexpected end of statement")
	}
	p.pos++
	return t, nil
}

// keyword consumes one of words (case-insensitive, unquoted) and returns it
// in lower case.
func (p *parser) keyword(words ...string) (string, error) {
	t, err := p.next()
	if err != nil {
		return "", err
	}
	if !t.quoted {
		for _, w := range words {
			if strings.EqualFold(t.v, w) {
				return w, nil
			}
		}
	}
	return "", fmt.Errorf("expected %s, found %q", strings.Join(words, " or "), t.v)
}

func (p *parser) isKeyword(w string) bool {
	t, ok := p.peek()
	return ok && !t.quoted && strings.EqualFold(t.v, w)
}

func (p *parser) ocid() (string, error) {
	t, err := p.next()
	if err != nil {
		return "", err
	}
	if len(t.v) > 255 || !ocidRE.MatchString(t.v) {
		return "", fmt.Errorf("%q is not an OCID", t.v)
	}
	return t.v, nil
}

func (p *parser) name(re *regexp.Regexp, what string) (string, error) {
	t, err := p.next()
	if err != nil {
		return "", err
	}
	if !re.MatchString(t.v) {
		return "", fmt.Errorf("%q is not a valid %s", t.v, what)
	}
	return t.v, nil
}

// parseStatement parses one policy statement.
func parseStatement(s string) (*statement, error) {
	if len(s) > maxStatementLen {
		return nil, fmt.Errorf("statement longer than %d characters", maxStatementLen)
	}
	toks, err := tokenize(s)
	if err != nil {
		return nil, err
	}
	p := &parser{toks: toks}
	st := &statement{}
	if st.kind, err = p.keyword("allow", "define", "endorse", "admit"); err != nil {
		return nil, err
	}
	switch st.kind {
	case "define":
		if st.defType, err = p.keyword("tenancy", "group", "dynamic-group"); err != nil {
			return nil, err
		}
		if st.alias, err = p.name(aliasRE, "alias"); err != nil {
			return nil, err
		}
		if _, err = p.keyword("as"); err != nil {
			return nil, err
		}
		if st.ocid, err = p.ocid(); err != nil {
			return nil, err
		}
		want := map[string]string{"tenancy": "ocid1.tenancy.", "group": "ocid1.group.", "dynamic-group": "ocid1.dynamicgroup."}[st.defType]
		if !strings.HasPrefix(st.ocid, want) {
			return nil, fmt.Errorf("a %s is defined as an OCID starting with %s", st.defType, want)
		}
	case "admit":
		if st.subjType, err = p.keyword("group", "dynamic-group", "any-user"); err != nil {
			return nil, err
		}
		if st.subjType != "any-user" {
			if st.subj, err = p.name(aliasRE, "alias"); err != nil {
				return nil, err
			}
		}
		if _, err = p.keyword("of"); err != nil {
			return nil, err
		}
		if _, err = p.keyword("tenancy"); err != nil {
			return nil, err
		}
		if st.ofTenancy, err = p.name(aliasRE, "tenancy alias"); err != nil {
			return nil, err
		}
	default: // allow, endorse
		if st.subjType, err = p.keyword("group", "dynamic-group", "any-user", "any-group"); err != nil {
			return nil, err
		}
		if st.subjType == "group" || st.subjType == "dynamic-group" {
			if p.isKeyword("id") {
				p.pos++
				st.subjByID = true
				if st.subj, err = p.ocid(); err != nil {
					return nil, err
				}
			} else if st.subj, err = p.name(nameRE, "group name"); err != nil {
				return nil, err
			}
		}
	}
	if st.kind != "define" {
		if err := p.grant(st); err != nil {
			return nil, err
		}
	}
	if t, ok := p.peek(); ok {
		return nil, fmt.Errorf("unexpected %q after the statement", t.v)
	}
	return st, nil
}

// grant parses "to <verb> <resource-type> in <location> [where <cond>]".
func (p *parser) grant(st *statement) error {
	if _, err := p.keyword("to"); err != nil {
		return err
	}
	t, err := p.next()
	if err != nil {
		return err
	}
	if st.verb = verbs[strings.ToLower(t.v)]; st.verb == 0 || t.quoted {
		return fmt.Errorf("%q is not a verb (inspect, read, use, manage)", t.v)
	}
	if t, err = p.next(); err != nil {
		return err
	}
	st.resource = strings.ToLower(t.v)
	if t.quoted || !resTypeRE.MatchString(st.resource) {
		return fmt.Errorf("%q is not a resource type", t.v)
	}
	if _, err := p.keyword("in"); err != nil {
		return err
	}
	if st.kind == "endorse" {
		w, err := p.keyword("tenancy", "any-tenancy")
		if err != nil {
			return err
		}
		if w == "any-tenancy" {
			st.locType = "any-tenancy"
		} else {
			st.locType = "tenancy-alias"
			if st.loc, err = p.name(aliasRE, "tenancy alias"); err != nil {
				return err
			}
		}
	} else {
		w, err := p.keyword("tenancy", "compartment")
		if err != nil {
			return err
		}
		switch {
		case w == "tenancy":
			st.locType = "tenancy"
		case p.isKeyword("id"):
			p.pos++
			st.locType = "compartment-id"
			if st.loc, err = p.ocid(); err != nil {
				return err
			}
		default:
			st.locType = "compartment"
			if st.loc, err = p.compartmentPath(); err != nil {
				return err
			}
		}
	}
	if !p.isKeyword("where") {
		return nil
	}
	p.pos++
	c, err := p.condition(0)
	if err != nil {
		return err
	}
	st.cond = c
	return nil
}

func (p *parser) compartmentPath() (string, error) {
	t, err := p.next()
	if err != nil {
		return "", err
	}
	for _, part := range strings.Split(t.v, ":") {
		if !nameRE.MatchString(part) {
			return "", fmt.Errorf("%q is not a compartment name or path", t.v)
		}
	}
	return t.v, nil
}

// maxCondDepth bounds nested any/all.
const maxCondDepth = 8

func (p *parser) condition(depth int) (*cond, error) {
	if depth > maxCondDepth {
		return nil, errors.New("conditions nested too deeply")
	}
	if p.isKeyword("any") || p.isKeyword("all") {
		t, _ := p.next()
		c := &cond{op: strings.ToLower(t.v)}
		if _, err := p.keyword("{"); err != nil {
			return nil, err
		}
		for {
			k, err := p.condition(depth + 1)
			if err != nil {
				return nil, err
			}
			c.kids = append(c.kids, k)
			sep, err := p.keyword(",", "}")
			if err != nil {
				return nil, err
			}
			if sep == "}" {
				return c, nil
			}
		}
	}
	t, err := p.next()
	if err != nil {
		return nil, err
	}
	c := &cond{vname: strings.ToLower(t.v)}
	if t.quoted || !varRE.MatchString(c.vname) {
		return nil, fmt.Errorf("%q is not a policy variable", t.v)
	}
	op, err := p.keyword("=", "!=")
	if err != nil {
		return nil, err
	}
	c.op = map[string]string{"=": "eq", "!=": "ne"}[op]
	v, err := p.next()
	if err != nil {
		return nil, err
	}
	if !v.quoted && (v.v == "{" || v.v == "}" || v.v == ",") {
		return nil, fmt.Errorf("expected a value, found %q", v.v)
	}
	c.value = v.v
	return c, nil
}

// eval evaluates a condition; a variable the request does not have makes
// its comparison false.
func (c *cond) eval(vars map[string]string) bool {
	switch c.op {
	case "all":
		for _, k := range c.kids {
			if !k.eval(vars) {
				return false
			}
		}
		return true
	case "any":
		for _, k := range c.kids {
			if k.eval(vars) {
				return true
			}
		}
		return false
	}
	v, ok := vars[c.vname]
	if !ok {
		return false
	}
	eq := strings.EqualFold(v, c.value)
	if c.op == "ne" {
		return !eq
	}
	return eq
}

func covers(stmtResource, resource string) bool {
	if stmtResource == "all-resources" || stmtResource == resource {
		return true
	}
	for _, r := range families[stmtResource] {
		if r == resource {
			return true
		}
	}
	return false
}

// ---- binding a policy to a tenancy ----

// bindPolicyLocked parses statements and resolves the names they use for
// a policy attached to compartment comp of tenancy ten: Define aliases
// (which must be in the same policy), group names (in ten) and compartment
// paths (below comp). It returns the bindings to store.
func (e *Emulator) bindPolicyLocked(ten *tenancy, comp string, statements []string) (map[string]string, []*statement, error) {
	if len(statements) == 0 {
		return nil, nil, errors.New("a policy needs at least one statement")
	}
	if len(statements) > maxStatements {
		return nil, nil, fmt.Errorf("a policy holds at most %d statements", maxStatements)
	}
	root := comp == ten.ID
	defs := map[string]*statement{}
	var parsed []*statement
	for i, s := range statements {
		st, err := parseStatement(s)
		if err != nil {
			return nil, nil, fmt.Errorf("statement %d (%q) is invalid: %v", i+1, truncate(s, 120), err)
		}
		parsed = append(parsed, st)
		if st.kind == "define" {
			a := strings.ToLower(st.alias)
			if defs[a] != nil {
				return nil, nil, fmt.Errorf("alias %s is defined twice", st.alias)
			}
			defs[a] = st
		}
	}
	bind := map[string]string{}
	for i, st := range parsed {
		bad := func(format string, args ...any) error {
			return fmt.Errorf("statement %d (%q): %s", i+1, truncate(statements[i], 120), fmt.Sprintf(format, args...))
		}
		if (st.kind == "define" || st.kind == "endorse" || st.kind == "admit") && !root {
			return nil, nil, bad("Define, Endorse and Admit statements belong in a policy of the root compartment (the tenancy)")
		}
		alias := func(name, typ string) error {
			d := defs[strings.ToLower(name)]
			if d == nil {
				return bad("%s is not defined in this policy (Define %s %s as <ocid>)", name, typ, name)
			}
			if d.defType != typ {
				return bad("%s is defined as a %s, not a %s", name, d.defType, typ)
			}
			return nil
		}
		switch st.kind {
		case "allow", "endorse":
			if (st.subjType == "group") && !st.subjByID {
				g := e.groupByNameLocked(ten.ID, st.subj)
				if g == nil {
					return nil, nil, bad("group %s does not exist in this tenancy", st.subj)
				}
				bind["group "+strings.ToLower(st.subj)] = g.ID
			}
			if st.kind == "endorse" && st.locType == "tenancy-alias" {
				if err := alias(st.loc, "tenancy"); err != nil {
					return nil, nil, err
				}
			}
		case "admit":
			if st.subjType != "any-user" {
				if err := alias(st.subj, st.subjType); err != nil {
					return nil, nil, err
				}
			}
			if err := alias(st.ofTenancy, "tenancy"); err != nil {
				return nil, nil, err
			}
		}
		switch st.locType {
		case "tenancy":
			if !root {
				return nil, nil, bad("'in tenancy' is only valid in a policy of the root compartment")
			}
		case "compartment":
			id := e.compartmentByPathLocked(ten.ID, comp, st.loc)
			if id == "" {
				return nil, nil, bad("compartment %s does not exist under the policy's compartment", st.loc)
			}
			bind["compartment "+strings.ToLower(st.loc)] = id
		}
	}
	return bind, parsed, nil
}

func (e *Emulator) groupByNameLocked(ten, name string) *group {
	for _, g := range e.st.Groups {
		if g.Tenancy == ten && strings.EqualFold(g.Name, name) {
			return g
		}
	}
	return nil
}

// compartmentByPathLocked resolves "a:b:c" below parent (a compartment or
// the tenancy); "" when absent.
func (e *Emulator) compartmentByPathLocked(ten, parent, path string) string {
	cur := parent
	for _, name := range strings.Split(path, ":") {
		next := ""
		for _, c := range e.st.Compartment {
			if c.Tenancy == ten && c.Parent == cur && strings.EqualFold(c.Name, name) && c.State == "ACTIVE" {
				next = c.ID
				break
			}
		}
		if next == "" {
			return ""
		}
		cur = next
	}
	return cur
}

// ---- evaluation ----

// authzRequest is what a call needs: a verb on a resource type in a
// compartment of a tenancy, with the request's policy variables.
type authzRequest struct {
	tenancy  string
	chain    []string // the target compartment and its ancestors, up to the tenancy
	verb     int
	resource string
	vars     map[string]string
	// caller
	callerTenancy string
	callerGroups  map[string]bool
}

func (v *policyVersion) statements() []*statement {
	if v.stmts == nil {
		for _, s := range v.Statements {
			if st, err := parseStatement(s); err == nil {
				v.stmts = append(v.stmts, st)
			}
		}
	}
	return v.stmts
}

func (v *policyVersion) defined(alias, typ string) string {
	for _, st := range v.statements() {
		if st.kind == "define" && st.defType == typ && strings.EqualFold(st.alias, alias) {
			return st.ocid
		}
	}
	return ""
}

// authorizedLocked reports whether the caller may do req: by an Allow in
// the target tenancy for its own users, or by an Endorse in the caller's
// tenancy and an Admit in the target's for another tenancy's.
func (e *Emulator) authorizedLocked(req authzRequest) bool {
	now := e.clock.Now()
	inChain := func(id string) bool {
		for _, c := range req.chain {
			if c == id {
				return true
			}
		}
		return false
	}
	grants := func(p *policy, v *policyVersion, st *statement) bool {
		if st.verb < req.verb || !covers(st.resource, req.resource) {
			return false
		}
		switch st.locType {
		case "tenancy":
		case "compartment":
			if !inChain(v.Bindings["compartment "+strings.ToLower(st.loc)]) {
				return false
			}
		case "compartment-id":
			if !inChain(st.loc) || !inChain(p.Compartment) {
				return false
			}
		case "any-tenancy":
		case "tenancy-alias":
			if v.defined(st.loc, "tenancy") != req.tenancy {
				return false
			}
		default:
			return false
		}
		return st.cond == nil || st.cond.eval(req.vars)
	}
	groupMatch := func(v *policyVersion, st *statement) bool {
		switch st.subjType {
		case "any-user":
			return true
		case "any-group":
			return len(req.callerGroups) > 0
		case "group":
			if st.subjByID {
				return req.callerGroups[st.subj]
			}
			return req.callerGroups[v.Bindings["group "+strings.ToLower(st.subj)]]
		}
		return false
	}
	find := func(ten, kind string, match func(*policy, *policyVersion, *statement) bool) bool {
		for _, p := range e.st.Policies {
			if p.Tenancy != ten {
				continue
			}
			v := p.effective(now)
			if v == nil {
				continue
			}
			for _, st := range v.statements() {
				if st.kind == kind && match(p, v, st) {
					return true
				}
			}
		}
		return false
	}
	if req.callerTenancy == req.tenancy {
		return find(req.tenancy, "allow", func(p *policy, v *policyVersion, st *statement) bool {
			return groupMatch(v, st) && grants(p, v, st)
		})
	}
	endorsed := find(req.callerTenancy, "endorse", func(p *policy, v *policyVersion, st *statement) bool {
		return groupMatch(v, st) && grants(p, v, st)
	})
	if !endorsed {
		return false
	}
	return find(req.tenancy, "admit", func(p *policy, v *policyVersion, st *statement) bool {
		if v.defined(st.ofTenancy, "tenancy") != req.callerTenancy {
			return false
		}
		if st.subjType == "group" && !req.callerGroups[v.defined(st.subj, "group")] {
			return false
		}
		if st.subjType == "dynamic-group" {
			return false // instance principals are not emulated
		}
		return grants(p, v, st)
	})
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
