package decode

// This file reads W3C trace context from an outbox column mapped to the
// traceparent header (docs/consuming.md, "Trace context").

import (
	"errors"
	"fmt"
	"strings"
)

// HeaderTraceparent and HeaderTracestate are the W3C Trace Context headers,
// lower case as the specification and OpenTelemetry's propagators write
// them.
const (
	HeaderTraceparent = "traceparent"
	HeaderTracestate  = "tracestate"
)

// traceContext reads a column mapped to the traceparent header. It accepts
// a bare traceparent value, or Debezium's tracingspancontext column: a
// java.util.Properties text with traceparent and, optionally, tracestate
// (the form the Debezium outbox router's ActivateTracingSpan reads). It
// returns the traceparent, the tracestate ("" for none), or why the value
// cannot be used.
func traceContext(v string) (parent, state string, err error) {
	// A writer's trailing newline or padding is not part of either form.
	v = strings.TrimSpace(v)
	if !strings.ContainsAny(v, "=: \t\f\r\n") {
		if err := checkTraceparent(v); err != nil {
			return "", "", err
		}
		return v, "", nil
	}
	for line := range strings.Lines(v) {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == '!' {
			continue
		}
		key, val, ok := splitProperty(line)
		if !ok {
			return "", "", fmt.Errorf("line %q is neither key=value nor a comment", line)
		}
		switch key {
		case HeaderTraceparent:
			parent = val
		case HeaderTracestate:
			state = val
		}
	}
	if parent == "" {
		return "", "", errors.New("it has no traceparent entry (want a W3C traceparent, or Debezium's tracingspancontext with traceparent=...)")
	}
	if err := checkTraceparent(parent); err != nil {
		return "", "", err
	}
	if len(state) > 512 || strings.ContainsAny(state, "\r\n") {
		return "", "", fmt.Errorf("tracestate %q is longer than 512 characters or has a line break", state)
	}
	return parent, state, nil
}

// splitProperty splits a java.util.Properties line as Properties.load
// does: the key ends at the first unescaped '=', ':' or white space, and
// white space then one '=' or ':' separate it from the value. Both sides
// are unescaped (Properties.store escapes '=', ':', '#' and '!' in values
// too).
func splitProperty(line string) (key, val string, ok bool) {
	for i := 0; i < len(line); i++ {
		switch line[i] {
		case '\\':
			i++
		case '=', ':', ' ', '\t', '\f':
			rest := strings.TrimLeft(line[i:], " \t\f")
			if rest != "" && (rest[0] == '=' || rest[0] == ':') {
				rest = rest[1:]
			}
			return unescapeProperty(line[:i]), unescapeProperty(strings.TrimLeft(rest, " \t\f")), true
		}
	}
	return "", "", false
}

func unescapeProperty(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// checkTraceparent checks a traceparent value against W3C Trace Context
// level 1: version-traceid-parentid-flags in lower-case hex, ids not all
// zero, version not ff; version 00 has exactly these four fields, later
// versions may add more after a '-'.
func checkTraceparent(v string) error {
	bad := func(why string) error {
		return fmt.Errorf("traceparent %q is not W3C trace context (version-traceid-parentid-flags, e.g. 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01): %s", v, why)
	}
	if len(v) < 55 || (len(v) > 55 && v[55] != '-') {
		return bad("wrong length")
	}
	if v[:2] == "00" && len(v) != 55 {
		return bad("version 00 has exactly four fields")
	}
	if v[2] != '-' || v[35] != '-' || v[52] != '-' {
		return bad("fields not separated by '-'")
	}
	for _, f := range []struct{ name, s string }{{"version", v[:2]}, {"trace id", v[3:35]}, {"parent id", v[36:52]}, {"flags", v[53:55]}} {
		if strings.Trim(f.s, "0123456789abcdef") != "" {
			return bad(f.name + " is not lower-case hex")
		}
	}
	switch {
	case v[:2] == "ff":
		return bad("version ff is invalid")
	case strings.Trim(v[3:35], "0") == "":
		return bad("trace id is all zero")
	case strings.Trim(v[36:52], "0") == "":
		return bad("parent id is all zero")
	}
	return nil
}
