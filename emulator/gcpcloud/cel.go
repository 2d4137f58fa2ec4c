package gcpcloud

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// The subset of CEL (https://github.com/google/cel-spec) that customers
// use in workload identity attribute mappings and conditions:
//
//	expr    = or
//	or      = and { "||" and }
//	and     = rel { "&&" rel }
//	rel     = unary [ ("==" | "!=" | "in") unary ]
//	unary   = "!" unary | postfix
//	postfix = primary { "." IDENT [ "(" expr ")" ] | "[" expr "]" }
//	primary = STRING | "true" | "false" | "null" | IDENT | "(" expr ")" | "[" [ expr { "," expr } ] "]"
//
// Methods: startsWith, endsWith, contains (on strings). Top-level
// identifiers are limited per use (assertion only in mappings; assertion,
// google and attribute in conditions). Anything else (numbers, arithmetic,
// macros, other functions) is refused when the provider is written, so the
// emulator never accepts an expression it would evaluate differently from
// Google.

type celNode struct {
	op   string // "str", "bool", "null", "ident", "list", "sel", "index", "call", "!", "==", "!=", "in", "&&", "||"
	str  string // literal, identifier, field or method name
	b    bool
	args []*celNode
}

type celParser struct {
	src  string
	pos  int
	tok  string // current token text
	kind string // "str", "ident", "op", "eof"
	val  string // decoded string literal
	err  error
	deep int
}

const (
	maxCELDepth = 64
	maxCELNodes = 4096
)

// parseCEL parses an expression; idents lists the allowed top-level
// identifiers.
func parseCEL(src string, idents ...string) (*celNode, error) {
	if !utf8.ValidString(src) {
		return nil, errors.New("expression is not valid UTF-8")
	}
	p := &celParser{src: src}
	p.next()
	n := p.expr()
	if p.err == nil && p.kind != "eof" {
		p.fail("unexpected %q", p.tok)
	}
	if p.err != nil {
		return nil, p.err
	}
	count := 0
	var check func(*celNode) error
	check = func(n *celNode) error {
		count++
		if count > maxCELNodes {
			return errors.New("expression too complex")
		}
		if n.op == "ident" {
			ok := false
			for _, id := range idents {
				ok = ok || n.str == id
			}
			if !ok {
				return fmt.Errorf("undeclared reference to '%s'", n.str)
			}
		}
		if n.op == "call" {
			switch n.str {
			case "startsWith", "endsWith", "contains":
			default:
				return fmt.Errorf("found no matching overload for '%s'", n.str)
			}
		}
		for _, a := range n.args {
			if err := check(a); err != nil {
				return err
			}
		}
		return nil
	}
	if err := check(n); err != nil {
		return nil, err
	}
	return n, nil
}

func (p *celParser) fail(format string, a ...any) {
	if p.err == nil {
		p.err = fmt.Errorf("Syntax error: "+format+" at position %d", append(a, p.pos)...)
	}
	p.kind, p.tok = "eof", ""
}

func (p *celParser) next() {
	if p.err != nil {
		return
	}
	for p.pos < len(p.src) && strings.IndexByte(" \t\r\n", p.src[p.pos]) >= 0 {
		p.pos++
	}
	if p.pos >= len(p.src) {
		p.kind, p.tok = "eof", ""
		return
	}
	c := p.src[p.pos]
	switch {
	case c == '\'' || c == '"':
		p.lexString(c)
	case c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
		start := p.pos
		for p.pos < len(p.src) {
			c := p.src[p.pos]
			if c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
				p.pos++
				continue
			}
			break
		}
		p.kind, p.tok = "ident", p.src[start:p.pos]
	default:
		for _, op := range []string{"==", "!=", "&&", "||", "!", "(", ")", "[", "]", ".", ","} {
			if strings.HasPrefix(p.src[p.pos:], op) {
				p.pos += len(op)
				p.kind, p.tok = "op", op
				return
			}
		}
		p.fail("unsupported character %q", string(c))
	}
}

func (p *celParser) lexString(q byte) {
	start := p.pos
	p.pos++
	var b strings.Builder
	for {
		if p.pos >= len(p.src) {
			p.fail("unterminated string")
			return
		}
		c := p.src[p.pos]
		switch {
		case c == q:
			p.pos++
			p.kind, p.tok, p.val = "str", p.src[start:p.pos], b.String()
			return
		case c == '\n' || c == '\r':
			p.fail("newline in string")
			return
		case c == '\\':
			if p.pos+1 >= len(p.src) {
				p.fail("unterminated string")
				return
			}
			e := p.src[p.pos+1]
			switch e {
			case '\\', '\'', '"', '`', '?':
				b.WriteByte(e)
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			case 'r':
				b.WriteByte('\r')
			default:
				p.fail("unsupported escape \\%c", e)
				return
			}
			p.pos += 2
		default:
			b.WriteByte(c)
			p.pos++
		}
	}
}

func (p *celParser) accept(op string) bool {
	if p.kind == "op" && p.tok == op {
		p.next()
		return true
	}
	return false
}

func (p *celParser) enter() bool {
	p.deep++
	if p.deep > maxCELDepth {
		p.fail("expression nested too deeply")
		return false
	}
	return true
}

func (p *celParser) expr() *celNode {
	if !p.enter() {
		return nil
	}
	defer func() { p.deep-- }()
	n := p.and()
	for p.err == nil && p.accept("||") {
		n = &celNode{op: "||", args: []*celNode{n, p.and()}}
	}
	return n
}

func (p *celParser) and() *celNode {
	n := p.rel()
	for p.err == nil && p.accept("&&") {
		n = &celNode{op: "&&", args: []*celNode{n, p.rel()}}
	}
	return n
}

func (p *celParser) rel() *celNode {
	n := p.unary()
	if p.err != nil {
		return n
	}
	switch {
	case p.kind == "op" && (p.tok == "==" || p.tok == "!="):
		op := p.tok
		p.next()
		return &celNode{op: op, args: []*celNode{n, p.unary()}}
	case p.kind == "ident" && p.tok == "in":
		p.next()
		return &celNode{op: "in", args: []*celNode{n, p.unary()}}
	}
	return n
}

func (p *celParser) unary() *celNode {
	if p.accept("!") {
		if !p.enter() {
			return nil
		}
		defer func() { p.deep-- }()
		return &celNode{op: "!", args: []*celNode{p.unary()}}
	}
	return p.postfix()
}

func (p *celParser) postfix() *celNode {
	n := p.primary()
	for p.err == nil {
		switch {
		case p.accept("."):
			if p.kind != "ident" || p.tok == "in" {
				p.fail("expected a field name")
				return n
			}
			name := p.tok
			p.next()
			if p.accept("(") {
				arg := p.expr()
				if !p.accept(")") {
					p.fail("expected ')'")
					return n
				}
				n = &celNode{op: "call", str: name, args: []*celNode{n, arg}}
			} else {
				n = &celNode{op: "sel", str: name, args: []*celNode{n}}
			}
		case p.accept("["):
			idx := p.expr()
			if !p.accept("]") {
				p.fail("expected ']'")
				return n
			}
			n = &celNode{op: "index", args: []*celNode{n, idx}}
		default:
			return n
		}
	}
	return n
}

func (p *celParser) primary() *celNode {
	switch p.kind {
	case "str":
		v := p.val
		p.next()
		return &celNode{op: "str", str: v}
	case "ident":
		t := p.tok
		switch t {
		case "true", "false":
			p.next()
			return &celNode{op: "bool", b: t == "true"}
		case "null":
			p.next()
			return &celNode{op: "null"}
		case "in":
			p.fail("unexpected 'in'")
			return nil
		}
		p.next()
		if p.kind == "op" && p.tok == "(" {
			p.fail("found no matching overload for '%s'", t)
			return nil
		}
		return &celNode{op: "ident", str: t}
	case "op":
		if p.accept("(") {
			n := p.expr()
			if !p.accept(")") {
				p.fail("expected ')'")
			}
			return n
		}
		if p.accept("[") {
			n := &celNode{op: "list"}
			if p.accept("]") {
				return n
			}
			for p.err == nil {
				n.args = append(n.args, p.expr())
				if p.accept("]") {
					return n
				}
				if !p.accept(",") {
					p.fail("expected ',' or ']'")
				}
			}
			return n
		}
	}
	p.fail("unexpected %q", p.tok)
	return nil
}

// celEnv holds the values of the top-level identifiers: assertion is the
// JWT claims (decoded JSON), google and attribute are string-keyed maps.
type celEnv map[string]any

var errNoSuchKey = errors.New("no such key")

// evalCEL evaluates n. Values are JSON values (string, bool, float64,
// nil, []any, map[string]any) and []string from mappings.
func evalCEL(n *celNode, env celEnv) (any, error) {
	switch n.op {
	case "str":
		return n.str, nil
	case "bool":
		return n.b, nil
	case "null":
		return nil, nil
	case "ident":
		v, ok := env[n.str]
		if !ok {
			return nil, fmt.Errorf("undeclared reference to '%s'", n.str)
		}
		return v, nil
	case "list":
		out := make([]any, 0, len(n.args))
		for _, a := range n.args {
			v, err := evalCEL(a, env)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case "sel", "index":
		base, err := evalCEL(n.args[0], env)
		if err != nil {
			return nil, err
		}
		key := n.str
		if n.op == "index" {
			k, err := evalCEL(n.args[1], env)
			if err != nil {
				return nil, err
			}
			s, ok := k.(string)
			if !ok {
				return nil, errors.New("unsupported index type")
			}
			key = s
		}
		switch m := base.(type) {
		case map[string]any:
			v, ok := m[key]
			if !ok {
				return nil, fmt.Errorf("%w: %s", errNoSuchKey, key)
			}
			return v, nil
		case map[string]string:
			v, ok := m[key]
			if !ok {
				return nil, fmt.Errorf("%w: %s", errNoSuchKey, key)
			}
			return v, nil
		}
		return nil, errors.New("type does not support field selection")
	case "call":
		recv, err := evalCEL(n.args[0], env)
		if err != nil {
			return nil, err
		}
		arg, err := evalCEL(n.args[1], env)
		if err != nil {
			return nil, err
		}
		s, ok1 := recv.(string)
		a, ok2 := arg.(string)
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("found no matching overload for '%s'", n.str)
		}
		switch n.str {
		case "startsWith":
			return strings.HasPrefix(s, a), nil
		case "endsWith":
			return strings.HasSuffix(s, a), nil
		case "contains":
			return strings.Contains(s, a), nil
		}
		return nil, fmt.Errorf("found no matching overload for '%s'", n.str)
	case "!":
		v, err := evalCEL(n.args[0], env)
		if err != nil {
			return nil, err
		}
		b, ok := v.(bool)
		if !ok {
			return nil, errors.New("found no matching overload for '!_'")
		}
		return !b, nil
	case "==", "!=":
		l, err := evalCEL(n.args[0], env)
		if err != nil {
			return nil, err
		}
		r, err := evalCEL(n.args[1], env)
		if err != nil {
			return nil, err
		}
		eq := celEqual(l, r)
		if n.op == "!=" {
			return !eq, nil
		}
		return eq, nil
	case "in":
		l, err := evalCEL(n.args[0], env)
		if err != nil {
			return nil, err
		}
		r, err := evalCEL(n.args[1], env)
		if err != nil {
			return nil, err
		}
		switch c := r.(type) {
		case []any:
			for _, e := range c {
				if celEqual(l, e) {
					return true, nil
				}
			}
			return false, nil
		case []string:
			for _, e := range c {
				if celEqual(l, e) {
					return true, nil
				}
			}
			return false, nil
		case map[string]any:
			k, ok := l.(string)
			if !ok {
				return false, nil
			}
			_, found := c[k]
			return found, nil
		case map[string]string:
			k, ok := l.(string)
			if !ok {
				return false, nil
			}
			_, found := c[k]
			return found, nil
		}
		return nil, errors.New("found no matching overload for '@in'")
	case "&&", "||":
		// CEL's logical operators are commutative over errors: a
		// decisive operand wins over an error on the other side.
		decisive := n.op == "||"
		var firstErr error
		for _, a := range n.args {
			v, err := evalCEL(a, env)
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				continue
			}
			b, ok := v.(bool)
			if !ok {
				if firstErr == nil {
					firstErr = fmt.Errorf("found no matching overload for '_%s_'", n.op)
				}
				continue
			}
			if b == decisive {
				return decisive, nil
			}
		}
		if firstErr != nil {
			return nil, firstErr
		}
		return !decisive, nil
	}
	return nil, fmt.Errorf("unsupported operator %q", n.op)
}

// celEqual is CEL's heterogeneous equality over the value types used here
// (values of different types are unequal).
func celEqual(a, b any) bool {
	switch x := a.(type) {
	case string:
		y, ok := b.(string)
		return ok && x == y
	case bool:
		y, ok := b.(bool)
		return ok && x == y
	case float64:
		y, ok := b.(float64)
		return ok && x == y
	case nil:
		return b == nil
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !celEqual(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	return false
}
