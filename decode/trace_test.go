package decode

import (
	"strings"
	"testing"
)

const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func TestTraceContext(t *testing.T) {
	for _, c := range []struct {
		name, in           string
		parent, state, err string
	}{
		{"bare", tp, tp, "", ""},
		{"debezium", "#Mon Dec 01 10:00:00 UTC 2026\ntraceparent=" + tp + "\n", tp, "", ""},
		{"debezium with tracestate", "#comment\r\ntraceparent=" + tp + "\r\ntracestate=rojo\\=00f067aa0ba902b7,congo\\=t61rcWkgMzE\n", tp, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", ""},
		{"colon separator", "traceparent: " + tp, tp, "", ""},
		{"white space separator", "traceparent " + tp + "\n tracestate \t= a\\=b", tp, "a=b", ""},
		{"bare with a trailing newline", " " + tp + "\n", tp, "", ""},
		{"later version, more fields", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", "", ""},
		{"upper case", strings.ToUpper(tp), "", "", "not lower-case hex"},
		{"short", tp[:54], "", "", "wrong length"},
		{"version 00 with more", tp + "-x", "", "", "exactly four fields"},
		{"version ff", "ff" + tp[2:], "", "", "version ff"},
		{"zero trace id", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "", "", "trace id is all zero"},
		{"zero parent id", "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "", "", "parent id is all zero"},
		{"separators", "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "", "", "separated"},
		{"properties without traceparent", "tracestate=a\\=b\n", "", "", "no traceparent entry"},
		{"properties with a bad traceparent", "traceparent=nope\n", "", "", "not W3C trace context"},
		{"not a property", "traceparent=" + tp + "\njunk\n", "", "", "neither key=value"},
		{"two values", tp + " " + tp, "", "", "no traceparent entry"},
	} {
		t.Run(c.name, func(t *testing.T) {
			parent, state, err := traceContext(c.in)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("traceContext(%q) = %q, %q, %v; want an error containing %q", c.in, parent, state, err, c.err)
				}
				return
			}
			if err != nil || parent != c.parent || state != c.state {
				t.Fatalf("traceContext(%q) = %q, %q, %v; want %q, %q", c.in, parent, state, err, c.parent, c.state)
			}
		})
	}
}
