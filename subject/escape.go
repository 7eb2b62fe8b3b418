package subject

import (
	"fmt"
	"strings"
)

const hexDigits = "0123456789ABCDEF"

// mustEscape reports whether b cannot stand as itself inside a subject
// token: the separators and wildcards, the escape byte, white space, and
// anything outside printable ASCII (clients differ on non-ASCII subjects).
func mustEscape(b byte) bool {
	return b <= ' ' || b >= 0x7f || b == '.' || b == '*' || b == '>' || b == '%'
}

// escapes is mustEscape of every byte, read from a table in AppendEscaped.
var escapes = func() (t [256]bool) {
	for b := range t {
		t[b] = mustEscape(byte(b))
	}
	return t
}()

// AppendEscaped appends v to buf as one subject token, percent-escaping the
// bytes that may not appear in it: '.', '*', '>', '%', white space and
// non-printable or non-ASCII bytes become %XX. The escaping is
// deterministic and reversed by Unescape.
func AppendEscaped(buf []byte, v string) []byte {
	plain := 0 // where the bytes not yet appended start
	for i := 0; i < len(v); i++ {
		if b := v[i]; escapes[b] {
			buf = append(buf, v[plain:i]...)
			buf = append(buf, '%', hexDigits[b>>4], hexDigits[b&0xf])
			plain = i + 1
		}
	}
	// Most values need no escape, and are appended here whole.
	return append(buf, v[plain:]...)
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
