package subject_test

import (
	"strings"
	"testing"

	"github.com/outboxrelay/outboxrelay/subject"
)

// printable is every printable ASCII byte that may stand as itself in a
// subject token: all of 0x21..0x7e except '.', '*', '>' and '%'.
const printable = "!\"#$&'()+,-/0123456789:;<=?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~"

var escapeTests = []struct {
	name, in, want string
}{
	{"empty", "", ""},
	{"uuid", "3f2c8a9e-1b7d-4c55-9a0e-7f4d2b9c1e08", "3f2c8a9e-1b7d-4c55-9a0e-7f4d2b9c1e08"},
	{"printable ASCII unchanged", printable, printable},
	{"dot", "order.1", "order%2E1"},
	{"dots only", "..", "%2E%2E"},
	{"space", "a b", "a%20b"},
	{"tab", "a\tb", "a%09b"},
	{"newline and CR", "a\r\nb", "a%0D%0Ab"},
	{"star", "*", "%2A"},
	{"greater than", ">", "%3E"},
	{"wildcard subject", "a.*.>", "a%2E%2A%2E%3E"},
	{"percent", "100%", "100%25"},
	{"looks escaped", "%2E", "%252E"},
	{"umlaut", "ä", "%C3%A4"},
	{"non-ASCII word", "Bär 日本", "B%C3%A4r%20%E6%97%A5%E6%9C%AC"},
	{"invalid UTF-8", "\x80\xff", "%80%FF"},
	{"control bytes", "\x00\x01\x1b\x1f", "%00%01%1B%1F"},
	{"DEL", "\x7f", "%7F"},
	{"1,000 bytes, none escaped", strings.Repeat("x", 1000), strings.Repeat("x", 1000)},
	{"1,000 bytes, every other escaped", strings.Repeat("x.", 500), strings.Repeat("x%2E", 500)},
}

func TestEscape(t *testing.T) {
	for _, tt := range escapeTests {
		t.Run(tt.name, func(t *testing.T) {
			if got := subject.Escape(tt.in); got != tt.want {
				t.Errorf("Escape(%q) = %q, want %q", tt.in, got, tt.want)
			}
			if got, want := string(subject.AppendEscaped([]byte("outbox."), tt.in)), "outbox."+tt.want; got != want {
				t.Errorf("AppendEscaped(\"outbox.\", %q) = %q, want %q", tt.in, got, want)
			}
			got, err := subject.Unescape(tt.want)
			if err != nil {
				t.Fatalf("Unescape(%q): %v", tt.want, err)
			}
			if got != tt.in {
				t.Errorf("Unescape(%q) = %q, want %q", tt.want, got, tt.in)
			}
		})
	}
}

func TestUnescape(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{"", ""},
		{"%2e%2E", ".."}, // lower-case hex is read too
		{"%41%42c", "ABc"},
		{"a%25b", "a%b"},
		{"%00", "\x00"},
	}
	for _, tt := range tests {
		got, err := subject.Unescape(tt.in)
		if err != nil {
			t.Errorf("Unescape(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("Unescape(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestUnescapeErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{"%", "truncated escape at byte 0"},
		{"%4", "truncated escape at byte 0"},
		{"abc%", "truncated escape at byte 3"},
		{"abc%A", "truncated escape at byte 3"},
		{"%41%4", "truncated escape at byte 3"},
		{"%G1", "bad escape at byte 0"},
		{"%4g", "bad escape at byte 0"},
		{"%%41", "bad escape at byte 0"},
		{"ok%2E%zz", "bad escape at byte 5"},
		{"% 1", "bad escape at byte 0"},
	}
	for _, tt := range tests {
		got, err := subject.Unescape(tt.in)
		if err == nil {
			t.Errorf("Unescape(%q) = %q, nil; want an error", tt.in, got)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Unescape(%q) error = %q, want it to contain %q", tt.in, err, tt.want)
		}
		if !strings.Contains(err.Error(), tt.in) {
			t.Errorf("Unescape(%q) error = %q, want it to quote the token", tt.in, err)
		}
	}
}

// checkToken fails t unless tok is one valid subject token that needs no
// quoting in any client: printable ASCII without '.', '*', '>' or space.
func checkToken(t *testing.T, in, tok string) {
	t.Helper()
	if in != "" && tok == "" {
		t.Errorf("Escape(%q) is empty", in)
	}
	for i := 0; i < len(tok); i++ {
		b := tok[i]
		if b < 0x21 || b > 0x7e || b == '.' || b == '*' || b == '>' {
			t.Errorf("Escape(%q) = %q: byte %d (%#x) may not stand in a subject token", in, tok, i, b)
			return
		}
	}
}

func FuzzEscape(f *testing.F) {
	for _, tt := range escapeTests {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok := subject.Escape(s)
		checkToken(t, s, tok)
		got, err := subject.Unescape(tok)
		if err != nil {
			t.Fatalf("Unescape(Escape(%q)) = %v", s, err)
		}
		if got != s {
			t.Errorf("Unescape(Escape(%q)) = %q", s, got)
		}
		if got, want := string(subject.AppendEscaped([]byte("p."), s)), "p."+tok; got != want {
			t.Errorf("AppendEscaped(\"p.\", %q) = %q, want %q", s, got, want)
		}
	})
}
