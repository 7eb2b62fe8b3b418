// Package subject parses and renders the NATS subject templates of outbox
// events, such as "outbox.{aggregate_type}.{aggregate_id}": the grammar the
// configuration is validated against and the sink renders with, so the two
// cannot disagree. It builds on the standard library only.
package subject

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// placeholders are the names a template may use, between braces.
var placeholders = []string{"aggregate_type", "aggregate_id", "type", "partition"}

// Placeholders returns the names a template may use, without their braces.
func Placeholders() []string { return append([]string(nil), placeholders...) }

type field uint8

const (
	fieldNone field = iota // a literal
	fieldAggregateType
	fieldAggregateID
	fieldType
	fieldPartition
)

// fields maps each of placeholders to the value it renders.
var fields = map[string]field{
	"aggregate_type": fieldAggregateType,
	"aggregate_id":   fieldAggregateID,
	"type":           fieldType,
	"partition":      fieldPartition,
}

type part struct {
	lit   string
	field field
}

// Template is a parsed subject template. Parse it once, then Render it for
// every event without parsing.
type Template struct {
	parts []part
	// Prefix is the template's literal tokens before the first placeholder,
	// e.g. "outbox"; every rendered subject falls under Prefix + ".>".
	Prefix string
	// Partitions is N for {partition}; set it before Render when
	// UsesPartition.
	Partitions int
}

// Fields are the values of an event that a template's placeholders stand
// for ({partition} is derived from AggregateID).
type Fields struct {
	AggregateType, AggregateID, Type string
}

// UnknownPlaceholderError is returned by Parse for a placeholder it does not
// know.
type UnknownPlaceholderError struct {
	Name string // between the braces
	// Suggestion, when set, is the placeholder the caller guesses was meant
	// (a typo finder is the caller's): the message names it instead of
	// listing every placeholder.
	Suggestion string
}

func (e *UnknownPlaceholderError) Error() string {
	name := "{" + e.Name + "}"
	if !isPrintableASCII(name) {
		name = strconv.Quote(name)
	}
	if e.Suggestion != "" {
		return fmt.Sprintf("unknown placeholder %s (did you mean {%s}?)", name, e.Suggestion)
	}
	return fmt.Sprintf("unknown placeholder %s (known: {aggregate_type}, {aggregate_id}, {type}, {partition})", name)
}

// Parse checks a subject template and compiles it. Tokens are separated by
// single '.'; each is a literal, or one placeholder with an optional literal
// prefix and suffix, as in "agg-{aggregate_id}". The first token must be
// literal: the stream's subjects are derived from the literal prefix. The
// template must use {aggregate_id} or {aggregate_type}, so consumers can
// filter by aggregate. The errors say what to change and are meant to follow
// the name of the setting that holds the template.
func Parse(tmpl string) (*Template, error) {
	if tmpl == "" {
		return nil, errors.New(`is required (for example "outbox.{aggregate_type}.{aggregate_id}")`)
	}
	t := &Template{}
	var prefix []string
	aggregate := false
	for i, raw := range strings.Split(tmpl, ".") {
		n := i + 1
		if raw == "" {
			return nil, fmt.Errorf("token %d is empty; tokens are separated by single '.', with none at the start or end", n)
		}
		open, close := strings.IndexByte(raw, '{'), strings.IndexByte(raw, '}')
		lit, name, suffix := raw, "", ""
		switch {
		case open < 0 && close < 0:
		case open < 0 || close < open:
			return nil, fmt.Errorf("token %d (%q) has an unbalanced brace", n, raw)
		default:
			lit, name, suffix = raw[:open], raw[open+1:close], raw[close+1:]
			if strings.ContainsAny(name, "{") || strings.ContainsAny(suffix, "{}") {
				return nil, fmt.Errorf("token %d (%q) has more than one placeholder or an unbalanced brace; use one placeholder per token", n, raw)
			}
			if _, ok := fields[name]; !ok {
				return nil, &UnknownPlaceholderError{Name: name}
			}
		}
		if r, bad := BadRune(lit + suffix); bad {
			return nil, fmt.Errorf("token %d (%q) contains %q; subject tokens cannot contain whitespace, '*' or '>'", n, raw, r)
		}
		if name == "" && len(prefix) == i {
			prefix = append(prefix, raw)
		}
		if i == 0 && name != "" {
			return nil, fmt.Errorf("the first token must be literal (for example \"outbox.{aggregate_type}.{aggregate_id}\"): the stream's subjects are derived from the literal prefix")
		}
		if name == "aggregate_id" || name == "aggregate_type" {
			aggregate = true
		}
		if i > 0 {
			lit = "." + lit
		}
		t.appendLit(lit)
		if name != "" {
			t.parts = append(t.parts, part{field: fields[name]})
			t.appendLit(suffix)
		}
	}
	if !aggregate {
		return nil, errors.New("must contain {aggregate_id} or {aggregate_type}, so consumers can filter by aggregate and keep its order")
	}
	t.Prefix = strings.Join(prefix, ".")
	return t, nil
}

// appendLit appends a literal, joined to the one before it, so Render
// appends once per run of literal text.
func (t *Template) appendLit(lit string) {
	switch {
	case lit == "":
	case len(t.parts) > 0 && t.parts[len(t.parts)-1].field == fieldNone:
		t.parts[len(t.parts)-1].lit += lit
	default:
		t.parts = append(t.parts, part{lit: lit})
	}
}

// BadRune returns the first rune of a literal subject token that NATS does
// not allow in it.
func BadRune(tok string) (rune, bool) {
	for _, r := range tok {
		if unicode.IsSpace(r) || unicode.IsControl(r) || r == '*' || r == '>' || r == '.' {
			return r, true
		}
	}
	return 0, false
}

func isPrintableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// Render appends the subject for f to buf. Each placeholder's value is
// escaped (AppendEscaped) so that it is exactly one valid subject token.
// Render does not keep f: taking it by pointer lets a caller build it on the
// stack, and passes one word instead of six on every event.
func (t *Template) Render(buf []byte, f *Fields) []byte {
	for _, p := range t.parts {
		switch p.field {
		case fieldNone:
			buf = append(buf, p.lit...)
		case fieldAggregateType:
			buf = AppendEscaped(buf, f.AggregateType)
		case fieldAggregateID:
			buf = AppendEscaped(buf, f.AggregateID)
		case fieldType:
			buf = AppendEscaped(buf, f.Type)
		case fieldPartition:
			buf = strconv.AppendUint(buf, uint64(Partition(f.AggregateID, t.Partitions)), 10)
		}
	}
	return buf
}

// UsesPartition reports whether the template has {partition}.
func (t *Template) UsesPartition() bool {
	for _, p := range t.parts {
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
