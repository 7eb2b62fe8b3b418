package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// decoder applies a YAML document to a Config by walking the yaml.Node tree
// against the struct's yaml tags. Walking the tree ourselves (instead of
// yaml.Unmarshal with KnownFields) lets every error carry its key path, and
// lets ${VAR} expansion run on parsed scalars, so a value from the
// environment can never change the document's structure.
type decoder struct {
	lookup func(string) (string, bool)
	errs   []*Error
	lines  map[string]int // key path -> line of its key in the file
}

var (
	headersType  = reflect.TypeFor[[]HeaderColumn]()
	tablesType   = reflect.TypeFor[[]Table]()
	durationType = reflect.TypeFor[time.Duration]()
)

func (d *decoder) fail(key string, line int, format string, args ...any) {
	d.errs = append(d.errs, &Error{Key: key, Line: line, Msg: fmt.Sprintf(format, args...)})
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// document parses b and applies it to c.
func (d *decoder) document(b []byte, c *Config) {
	root, err := parseYAML(b)
	if err != nil {
		msg := err.Error()
		line := 0
		if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
			line, _ = strconv.Atoi(m[1])
			msg = m[2]
		}
		d.fail("", line, "invalid YAML: %s", strings.TrimPrefix(msg, "yaml: "))
		return
	}
	if root == nil { // empty document: all defaults
		return
	}
	d.value("", root, reflect.ValueOf(c).Elem())
}

// parseYAML returns the content of the only document in b, or nil when b
// holds no document.
func parseYAML(b []byte) (n *yaml.Node, err error) {
	// yaml.v3 reports most problems by panicking internally and recovering;
	// guard against any that escape, so a bad file is an error, not a crash.
	defer func() {
		if r := recover(); r != nil {
			n, err = nil, fmt.Errorf("yaml: %v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("yaml: line %d: a second document starts here; the configuration must be a single YAML document", extra.Line)
	}
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return nil, nil
		}
		return doc.Content[0], nil
	}
	return &doc, nil
}

// resolve follows aliases. Anchors and aliases are allowed; the walk is
// driven by the struct, so an alias cycle cannot make it recurse forever.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!int", "!!float":
			return "a number"
		case "!!bool":
			return "a boolean"
		case "!!null":
			return "nothing (null)"
		}
		return "a string"
	case yaml.AliasNode:
		return "an unresolved alias"
	}
	return "nothing"
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// value applies n to v, whose type is a config struct, a string, or the
// header list.
func (d *decoder) value(path string, n *yaml.Node, v reflect.Value) {
	n = resolve(n)
	switch {
	case v.Kind() == reflect.Struct:
		d.mapping(path, n, v)
	case v.Type() == headersType:
		d.headers(path, n, v)
	case v.Type() == tablesType:
		d.tables(path, n, v)
	case v.Type() == durationType:
		if s, ok := d.scalar(path, n); ok {
			if s == "" || s == "0" {
				v.SetInt(0)
				break
			}
			dur, err := time.ParseDuration(s)
			if err != nil || dur < 0 {
				d.fail(path, n.Line, "expected a duration such as 30m, 1h or 24h, got %q", s)
				break
			}
			v.SetInt(int64(dur))
		}
	case v.Kind() == reflect.Int:
		if s, ok := d.scalar(path, n); ok {
			if s == "" {
				v.SetInt(0)
				break
			}
			i, err := strconv.Atoi(s)
			if err != nil {
				d.fail(path, n.Line, "expected a whole number, got %q", s)
				break
			}
			v.SetInt(int64(i))
		}
	case v.Kind() == reflect.String:
		if s, ok := d.scalar(path, n); ok {
			v.SetString(s)
		}
	default:
		panic(fmt.Sprintf("config: unsupported field type %s at %s", v.Type(), path))
	}
}

// scalar returns the expanded text of a scalar; null is "".
func (d *decoder) scalar(path string, n *yaml.Node) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		d.fail(path, n.Line, "expected a string, got %s", kindName(n))
		return "", false
	}
	if isNull(n) {
		return "", true
	}
	s, err := expand(n.Value, d.lookup)
	if err != nil {
		d.fail(path, n.Line, "%s", err)
		return "", false
	}
	return s, true
}

// mapping applies a YAML mapping to the struct v, field by field, over the
// defaults already in v. A null section keeps the defaults.
func (d *decoder) mapping(path string, n *yaml.Node, v reflect.Value) {
	if isNull(n) {
		return
	}
	keys := fieldKeys(v.Type())
	if n.Kind != yaml.MappingNode {
		d.fail(path, n.Line, "expected a mapping with keys %s, got %s", strings.Join(keys, ", "), kindName(n))
		return
	}
	seen := make(map[string]int)
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := resolve(n.Content[i]), n.Content[i+1]
		if kn.Kind != yaml.ScalarNode {
			d.fail(path, kn.Line, "keys must be plain names, got %s", kindName(kn))
			continue
		}
		key := kn.Value
		kp := join(path, quoteKey(key))
		if first, dup := seen[key]; dup {
			d.fail(kp, kn.Line, "duplicate key (first set on line %d)", first)
			continue
		}
		seen[key] = kn.Line
		idx := fieldIndex(v.Type(), key)
		if idx < 0 {
			d.fail(kp, kn.Line, "unknown key%s", suggestKey(path, key, keys))
			continue
		}
		d.lines[kp] = kn.Line
		d.value(kp, vn, v.Field(idx))
	}
}

// headers applies the outbox.headers mapping (column: Header-Name), keeping
// the file's order. It replaces the default (empty) list.
func (d *decoder) headers(path string, n *yaml.Node, v reflect.Value) {
	if isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.fail(path, n.Line, "expected a mapping of column name to header name, got %s", kindName(n))
		return
	}
	hs := make([]HeaderColumn, 0, len(n.Content)/2)
	seen := make(map[string]int)
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := resolve(n.Content[i]), n.Content[i+1]
		if kn.Kind != yaml.ScalarNode || isNull(kn) {
			d.fail(path, kn.Line, "expected a column name as key, got %s", kindName(kn))
			continue
		}
		col := kn.Value
		kp := join(path, quoteKey(col))
		if first, dup := seen[col]; dup {
			d.fail(kp, kn.Line, "duplicate key (first set on line %d)", first)
			continue
		}
		seen[col] = kn.Line
		d.lines[kp] = kn.Line
		if h, ok := d.scalar(kp, resolve(vn)); ok {
			hs = append(hs, HeaderColumn{Column: col, Header: h})
		}
	}
	if len(hs) == 0 {
		hs = nil // "headers: {}" is the default, not a different value
	}
	v.Set(reflect.ValueOf(hs))
}

// tables applies the outbox.tables sequence; each entry starts from the
// default column mapping.
func (d *decoder) tables(path string, n *yaml.Node, v reflect.Value) {
	if isNull(n) {
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.fail(path, n.Line, "expected a list of tables, each a mapping such as {table: public.outbox}, got %s", kindName(n))
		return
	}
	ts := make([]Table, len(n.Content))
	for i, en := range n.Content {
		ts[i].Columns = DefaultColumns()
		d.value(fmt.Sprintf("%s[%d]", path, i), resolve(en), reflect.ValueOf(&ts[i]).Elem())
	}
	v.Set(reflect.ValueOf(ts))
}

// fieldKeys returns the yaml keys of struct type t, in declaration order.
func fieldKeys(t reflect.Type) []string {
	keys := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		if k := yamlKey(t.Field(i)); k != "" {
			keys = append(keys, k)
		}
	}
	return keys
}

func fieldIndex(t reflect.Type, key string) int {
	for i := range t.NumField() {
		if yamlKey(t.Field(i)) == key {
			return i
		}
	}
	return -1
}

func yamlKey(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" {
		return ""
	}
	return name
}

// quoteKey quotes a key for a path when it would be ambiguous or
// unprintable as is.
func quoteKey(k string) string {
	if k == "" || strings.ContainsAny(k, ". \t\"") || !isPrintableASCII(k) {
		return strconv.Quote(k)
	}
	return k
}

func isPrintableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// suggestKey returns the hint for an unknown key: the nearest key at the
// same level, else the same key in another section, else the known keys.
func suggestKey(path, key string, known []string) string {
	if best := nearest(key, known); best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	var elsewhere []string
	walkKeys(reflect.TypeFor[Config](), "", func(p, k string) {
		if strings.EqualFold(k, key) && p != path {
			elsewhere = append(elsewhere, join(p, k))
		}
	})
	if len(elsewhere) > 0 {
		sort.Strings(elsewhere)
		for i, e := range elsewhere {
			elsewhere[i] = strconv.Quote(e)
		}
		return fmt.Sprintf(" (did you mean %s?)", strings.Join(elsewhere, " or "))
	}
	return fmt.Sprintf(" (known keys: %s)", strings.Join(known, ", "))
}

func walkKeys(t reflect.Type, path string, fn func(path, key string)) {
	for i := range t.NumField() {
		f := t.Field(i)
		k := yamlKey(f)
		if k == "" {
			continue
		}
		fn(path, k)
		switch {
		case f.Type == durationType:
		case f.Type.Kind() == reflect.Struct:
			walkKeys(f.Type, join(path, k), fn)
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct && f.Type != headersType:
			walkKeys(f.Type.Elem(), join(path, k), fn)
		}
	}
}

// nearest returns the candidate closest to key by edit distance, or "" when
// none is close enough to be a plausible typo.
func nearest(key string, candidates []string) string {
	lk := strings.ToLower(key)
	best, bestD := "", -1
	for _, c := range candidates {
		dist := editDistance(lk, c)
		if bestD < 0 || dist < bestD {
			best, bestD = c, dist
		}
	}
	if bestD < 0 || bestD > 2 || (bestD > 0 && bestD > len(key)/2) {
		return ""
	}
	return best
}

// editDistance is the optimal-string-alignment distance: insertions,
// deletions, substitutions and transpositions of adjacent bytes each cost 1.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return max(len(a), len(b)) // not a typo of a config key; stay cheap
	}
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
