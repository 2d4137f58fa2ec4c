package httpx

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/url"
	"strconv"
	"strings"
)

// Strict input: what the standard library accepts silently but an API
// should refuse, since the caller cannot have meant it.

// CheckQuery parses a raw query string strictly. url.Values drops pairs it
// cannot decode (?limit=%zz reads as no limit at all); CheckQuery instead
// names the parameter at fault: the decoded name when only the value is
// malformed, else the raw name.
func CheckQuery(raw string) (param string, err error) {
	for pair := range strings.SplitSeq(raw, "&") {
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		if strings.Contains(k, ";") {
			return clipParam(k), errors.New("semicolons are not parameter separators")
		}
		name, err := url.QueryUnescape(k)
		if err != nil {
			return clipParam(k), errors.New("the parameter name is not valid URL encoding")
		}
		if _, err := url.QueryUnescape(v); err != nil {
			return clipParam(name), errors.New("the value is not valid URL encoding")
		}
		if strings.Contains(v, ";") {
			return clipParam(name), errors.New("semicolons are not parameter separators")
		}
	}
	return "", nil
}

func clipParam(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// DuplicateKey reports the first object member name that appears twice in
// one object of the JSON document b, as a path (batch_input[3].plaintext).
// encoding/json keeps the last of duplicates silently, so two values for
// one field would otherwise pass unnoticed. b must be valid JSON (decode it
// first); the check is one pass over the bytes.
func DuplicateKey(b []byte) (path string, dup bool) {
	s := &dupScanner{b: b}
	s.value("")
	return s.path, s.dup
}

type dupScanner struct {
	b    []byte
	i    int
	path string
	dup  bool
}

func (s *dupScanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\r', '\n':
			s.i++
		default:
			return
		}
	}
}

// str returns the raw contents of the string at s.i (past its quotes) and
// whether it has escapes.
func (s *dupScanner) str() ([]byte, bool) {
	s.i++ // opening quote
	start, esc := s.i, false
	for s.i < len(s.b) {
		j := bytes.IndexAny(s.b[s.i:], "\"\\")
		if j < 0 {
			break
		}
		s.i += j
		if s.b[s.i] == '\\' {
			esc = true
			s.i += 2
			continue
		}
		raw := s.b[start:s.i]
		s.i++
		return raw, esc
	}
	s.i = len(s.b)
	return s.b[start:], esc
}

func (s *dupScanner) value(path string) {
	if s.dup {
		return
	}
	s.ws()
	if s.i >= len(s.b) {
		return
	}
	switch s.b[s.i] {
	case '{':
		s.i++
		seen := map[string]bool{}
		for !s.dup {
			s.ws()
			if s.i >= len(s.b) || s.b[s.i] == '}' {
				s.i++
				return
			}
			if s.b[s.i] == ',' {
				s.i++
				continue
			}
			raw, esc := s.str()
			name := string(raw)
			if esc {
				var u string
				if json.Unmarshal(append(append([]byte{'"'}, raw...), '"'), &u) == nil {
					name = u
				}
			}
			p := name
			if path != "" {
				p = path + "." + name
			}
			if seen[name] {
				s.path, s.dup = p, true
				return
			}
			seen[name] = true
			s.ws()
			s.i++ // colon
			s.value(p)
		}
	case '[':
		s.i++
		for n := 0; !s.dup; {
			s.ws()
			if s.i >= len(s.b) || s.b[s.i] == ']' {
				s.i++
				return
			}
			if s.b[s.i] == ',' {
				s.i++
				n++
				continue
			}
			s.value(path + "[" + strconv.Itoa(n) + "]")
		}
	case '"':
		s.str()
	default:
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case ',', '}', ']', ' ', '\t', '\r', '\n':
				return
			}
			s.i++
		}
	}
}
