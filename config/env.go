package config

import (
	"fmt"
	"strings"
)

// expand replaces ${NAME} and ${NAME:-default} in s with values from
// lookup, and $$ with a literal $. ${NAME:-default} takes the default when
// NAME is unset or empty; the default is used literally, up to the first
// '}'. A '$' followed by anything else is an error rather than a literal, so
// "$PGPASSWORD" (a likely typo) is not silently kept as text. Values from
// the environment are not expanded again.
//
// Errors never quote s: it may hold a password.
func expand(s string, lookup func(string) (string, bool)) (string, error) {
	if !strings.Contains(s, "$") {
		return s, nil
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '$' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == '$' {
			b.WriteByte('$')
			i++
			continue
		}
		if i+1 >= len(s) || s[i+1] != '{' {
			return "", fmt.Errorf("'$' at character %d is not followed by '{' or '$' (write ${NAME} for an environment variable, $$ for a literal '$')", i+1)
		}
		end := strings.IndexByte(s[i+2:], '}')
		if end < 0 {
			return "", fmt.Errorf("'${' at character %d has no closing '}' (write $$ for a literal '$')", i+1)
		}
		ref := s[i+2 : i+2+end]
		name, def, hasDef := strings.Cut(ref, ":-")
		if !validEnvName(name) {
			return "", fmt.Errorf("'${' at character %d does not start a valid reference: write ${NAME} or ${NAME:-default}, where NAME is letters, digits and '_' (or $$ for a literal '$')", i+1)
		}
		val, ok := lookup(name)
		switch {
		case hasDef && (!ok || val == ""):
			val = def
		case !ok:
			return "", fmt.Errorf("environment variable %s is not set (use ${%s:-} to allow empty)", name, name)
		}
		b.WriteString(val)
		i += 2 + end // at the closing '}'
	}
	return b.String(), nil
}

func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
