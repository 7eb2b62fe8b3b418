package sink

import "testing"

func TestCEEncode(t *testing.T) {
	for in, want := range map[string]string{
		"o-1":                         "o-1",
		"ägg 1% \"q\"":                "%C3%A4gg%201%25%20%22q%22",
		"text/plain; charset=utf-8":   "text/plain;%20charset=utf-8",
		"line\nbreak\x7f~!":           "line%0Abreak%7F~!",
		"/postgres/app/public.outbox": "/postgres/app/public.outbox",
	} {
		if got := ceEncode(in); got != want {
			t.Errorf("ceEncode(%q) = %q, want %q", in, got, want)
		}
	}
}
