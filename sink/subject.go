package sink

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/outboxrelay/outboxrelay/decode"
)

// Subject renders the per-event subject from a template such as
// "outbox.{aggregate_type}.{aggregate_id}". It is compiled once, then
// rendered for every event without parsing.
type Subject struct {
	parts []part
	// Prefix is the template's literal tokens before the first placeholder,
	// e.g. "outbox"; the stream captures Prefix + ".>".
	Prefix string
	// Partitions is N for {partition}; set it before Render when
	// UsesPartition.
	Partitions int
}

type part struct {
	lit   string
	field field // fieldNone for a literal
}

type field uint8

const (
	fieldNone field = iota
	fieldAggregateType
	fieldAggregateID
	fieldType
	fieldPartition
)

var placeholders = map[string]field{
	"{aggregate_type}": fieldAggregateType,
	"{aggregate_id}":   fieldAggregateID,
	"{type}":           fieldType,
	"{partition}":      fieldPartition,
}

// ParseSubject compiles a subject template. Placeholders are {aggregate_type},
// {aggregate_id}, {type} and {partition}; the first token must be literal.
func ParseSubject(tmpl string) (*Subject, error) {
	s := &Subject{}
	var prefix []string
	fixed := true
	for i, tok := range strings.Split(tmpl, ".") {
		if i > 0 {
			s.parts = append(s.parts, part{lit: "."})
		}
		rest := tok
		for rest != "" {
			open := strings.IndexByte(rest, '{')
			if open < 0 {
				s.parts = append(s.parts, part{lit: rest})
				break
			}
			if open > 0 {
				s.parts = append(s.parts, part{lit: rest[:open]})
			}
			end := strings.IndexByte(rest[open:], '}')
			if end < 0 {
				return nil, fmt.Errorf("subject template %q: unclosed '{'", tmpl)
			}
			name := rest[open : open+end+1]
			f, ok := placeholders[name]
			if !ok {
				return nil, fmt.Errorf("subject template %q: unknown placeholder %s", tmpl, name)
			}
			s.parts = append(s.parts, part{field: f})
			rest = rest[open+end+1:]
		}
		if tok == "" || strings.ContainsFunc(tok, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '*' || r == '>' }) {
			return nil, fmt.Errorf("subject template %q: token %q is not a valid subject token", tmpl, tok)
		}
		if strings.Contains(tok, "{") {
			fixed = false
		}
		if fixed {
			prefix = append(prefix, tok)
		}
	}
	if fixed {
		return nil, fmt.Errorf("subject template %q has no placeholder: use {aggregate_type} or {aggregate_id}, e.g. \"outbox.{aggregate_type}.{aggregate_id}\"", tmpl)
	}
	if len(prefix) == 0 {
		return nil, fmt.Errorf("subject template %q: the first token must be literal, e.g. \"outbox.{aggregate_type}.{aggregate_id}\"", tmpl)
	}
	s.Prefix = strings.Join(prefix, ".")
	return s, nil
}

// Render appends the subject of ev to buf. Each placeholder value is escaped
// so that it is exactly one valid subject token.
func (s *Subject) Render(buf []byte, ev *decode.Event) []byte {
	for _, p := range s.parts {
		switch p.field {
		case fieldNone:
			buf = append(buf, p.lit...)
		case fieldAggregateType:
			buf = AppendEscaped(buf, ev.AggregateType)
		case fieldAggregateID:
			buf = AppendEscaped(buf, ev.AggregateID)
		case fieldType:
			buf = AppendEscaped(buf, ev.Type)
		case fieldPartition:
			buf = strconv.AppendUint(buf, uint64(Partition(ev.AggregateID, s.Partitions)), 10)
		}
	}
	return buf
}

// UsesPartition reports whether the template has {partition}.
func (s *Subject) UsesPartition() bool {
	for _, p := range s.parts {
		if p.field == fieldPartition {
			return true
		}
	}
	return false
}

// Partition is the {partition} of an aggregate: the 32-bit FNV-1a hash of
// the aggregate id's bytes, modulo n. It is stable across versions and
// languages, so a consumer can compute it too.
func Partition(aggregateID string, n int) uint32 {
	if n <= 1 {
		return 0
	}
	h := uint32(2166136261)
	for i := 0; i < len(aggregateID); i++ {
		h ^= uint32(aggregateID[i])
		h *= 16777619
	}
	return h % uint32(n)
}

const hexDigits = "0123456789ABCDEF"

// mustEscape reports whether b cannot stand as itself inside a subject
// token: the separators and wildcards, the escape byte, white space, and
// anything outside printable ASCII (clients differ on non-ASCII subjects).
func mustEscape(b byte) bool {
	return b <= ' ' || b >= 0x7f || b == '.' || b == '*' || b == '>' || b == '%'
}

// AppendEscaped appends v to buf as one subject token, percent-escaping the
// bytes that may not appear in it: '.', '*', '>', '%', white space and
// non-printable or non-ASCII bytes become %XX. The escaping is
// deterministic and reversed by Unescape.
func AppendEscaped(buf []byte, v string) []byte {
	for i := 0; i < len(v); i++ {
		b := v[i]
		if mustEscape(b) {
			buf = append(buf, '%', hexDigits[b>>4], hexDigits[b&0xf])
		} else {
			buf = append(buf, b)
		}
	}
	return buf
}

// Escape returns v escaped as one subject token; see AppendEscaped.
func Escape(v string) string { return string(AppendEscaped(nil, v)) }

// Unescape reverses Escape, for consumers that read ids back from subjects.
func Unescape(tok string) (string, error) {
	if !strings.Contains(tok, "%") {
		return tok, nil
	}
	out := make([]byte, 0, len(tok))
	for i := 0; i < len(tok); i++ {
		if tok[i] != '%' {
			out = append(out, tok[i])
			continue
		}
		if i+2 >= len(tok) {
			return "", fmt.Errorf("unescape %q: truncated escape at byte %d", tok, i)
		}
		hi, lo := unhex(tok[i+1]), unhex(tok[i+2])
		if hi < 0 || lo < 0 {
			return "", fmt.Errorf("unescape %q: bad escape at byte %d", tok, i)
		}
		out = append(out, byte(hi<<4|lo))
		i += 2
	}
	return string(out), nil
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'A' <= c && c <= 'F':
		return int(c - 'A' + 10)
	case 'a' <= c && c <= 'f':
		return int(c - 'a' + 10)
	}
	return -1
}
