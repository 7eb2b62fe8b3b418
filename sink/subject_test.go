package sink_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/outboxrelay/outboxrelay/config"
	"github.com/outboxrelay/outboxrelay/decode"
	"github.com/outboxrelay/outboxrelay/sink"
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
			if got := sink.Escape(tt.in); got != tt.want {
				t.Errorf("Escape(%q) = %q, want %q", tt.in, got, tt.want)
			}
			if got, want := string(sink.AppendEscaped([]byte("outbox."), tt.in)), "outbox."+tt.want; got != want {
				t.Errorf("AppendEscaped(\"outbox.\", %q) = %q, want %q", tt.in, got, want)
			}
			got, err := sink.Unescape(tt.want)
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
		got, err := sink.Unescape(tt.in)
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
		got, err := sink.Unescape(tt.in)
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
		tok := sink.Escape(s)
		checkToken(t, s, tok)
		got, err := sink.Unescape(tok)
		if err != nil {
			t.Fatalf("Unescape(Escape(%q)) = %v", s, err)
		}
		if got != s {
			t.Errorf("Unescape(Escape(%q)) = %q", s, got)
		}
		if got, want := string(sink.AppendEscaped([]byte("p."), s)), "p."+tok; got != want {
			t.Errorf("AppendEscaped(\"p.\", %q) = %q, want %q", s, got, want)
		}
	})
}

func TestParseSubject(t *testing.T) {
	ev := &decode.Event{AggregateType: "customer.account", AggregateID: "a b*", Type: "Opened>1"}
	tests := []struct {
		tmpl, prefix, rendered string
	}{
		{"outbox.{aggregate_type}.{aggregate_id}", "outbox", "outbox.customer%2Eaccount.a%20b%2A"},
		{"outbox.{aggregate_type}.agg-{aggregate_id}", "outbox", "outbox.customer%2Eaccount.agg-a%20b%2A"},
		{"outbox.{aggregate_id}-x.{type}", "outbox", "outbox.a%20b%2A-x.Opened%3E1"},
		{"svc.events.v1.{type}.{aggregate_id}", "svc.events.v1", "svc.events.v1.Opened%3E1.a%20b%2A"},
		{"outbox.{aggregate_type}.fixed.{aggregate_id}", "outbox", "outbox.customer%2Eaccount.fixed.a%20b%2A"},
	}
	for _, tt := range tests {
		t.Run(tt.tmpl, func(t *testing.T) {
			s, err := sink.ParseSubject(tt.tmpl)
			if err != nil {
				t.Fatalf("ParseSubject(%q): %v", tt.tmpl, err)
			}
			if s.Prefix != tt.prefix {
				t.Errorf("Prefix = %q, want %q", s.Prefix, tt.prefix)
			}
			if got := string(s.Render(nil, ev)); got != tt.rendered {
				t.Errorf("Render = %q, want %q", got, tt.rendered)
			}
			// Render appends: what is in buf stays.
			if got, want := string(s.Render([]byte("keep|"), ev)), "keep|"+tt.rendered; got != want {
				t.Errorf("Render(\"keep|\", ev) = %q, want %q", got, want)
			}
		})
	}
}

// The stream captures Prefix+".>", so every subject a template renders must
// fall under it, or each publish gets "no responders" and nothing is stored.
func TestParseSubjectPrefixCapturesRenderedSubjects(t *testing.T) {
	ev := &decode.Event{AggregateType: "Order", AggregateID: "42", Type: "Placed"}
	for _, tmpl := range []string{
		"outbox.{aggregate_type}.{aggregate_id}",
		"outbox.{aggregate_type}.agg-{aggregate_id}",
		"svc.events.{aggregate_id}",
		"outbox.events", // no placeholder at all
	} {
		s, err := sink.ParseSubject(tmpl)
		if err != nil {
			continue // refusing such a template is fine too
		}
		subj := string(s.Render(nil, ev))
		if !sink.Covers([]string{s.Prefix + ".>"}, subj) {
			t.Errorf("ParseSubject(%q): rendered subject %q is not captured by the stream subject %q", tmpl, subj, s.Prefix+".>")
		}
	}
}

func TestParseSubjectErrors(t *testing.T) {
	tests := []struct {
		name, tmpl, want string
	}{
		{"empty template", "", "not a valid subject token"},
		{"unknown placeholder", "outbox.{aggregate}.{aggregate_id}", "unknown placeholder {aggregate}"},
		{"misspelt placeholder", "outbox.{aggregateid}", "unknown placeholder {aggregateid}"},
		{"empty placeholder", "outbox.{}", "unknown placeholder {}"},
		{"unclosed brace", "outbox.{aggregate_id", "unclosed '{'"},
		{"first token a placeholder", "{aggregate_type}.{aggregate_id}", "the first token must be literal"},
		{"first token mixes literal and placeholder", "pre-{aggregate_type}.{aggregate_id}", "the first token must be literal"},
		{"empty token in the middle", "outbox..{aggregate_id}", `token ""`},
		{"leading dot", ".outbox.{aggregate_id}", `token ""`},
		{"trailing dot", "outbox.{aggregate_id}.", `token ""`},
		{"star in a literal", "outbox.*.{aggregate_id}", `token "*"`},
		{"greater than in a literal", "outbox.{aggregate_id}.>", `token ">"`},
		{"wildcard inside a token", "out*box.{aggregate_id}", `token "out*box"`},
		{"space in a literal", "out box.{aggregate_id}", `token "out box"`},
		{"tab next to a placeholder", "outbox.\t{aggregate_id}", "not a valid subject token"},
		{"newline in a literal", "outbox\n.{aggregate_id}", "not a valid subject token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := sink.ParseSubject(tt.tmpl)
			if err == nil {
				t.Fatalf("ParseSubject(%q) = {Prefix: %q}, nil; want an error", tt.tmpl, s.Prefix)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseSubject(%q) error = %q, want it to contain %q", tt.tmpl, err, tt.want)
			}
		})
	}
}

func TestPartition(t *testing.T) {
	// FNV-1a 32 reference values, so other languages can match them.
	for _, tc := range []struct {
		id   string
		n    int
		want uint32
	}{
		{"", 16, 2166136261 % 16},
		{"a", 1000, 3826002220 % 1000},
		{"order-42", 1, 0},
	} {
		if got := sink.Partition(tc.id, tc.n); got != tc.want {
			t.Errorf("Partition(%q, %d) = %d, want %d", tc.id, tc.n, got, tc.want)
		}
	}
	// Spread: 16 partitions over 10k ids, none empty or more than twice
	// its share.
	counts := make([]int, 16)
	for i := range 10000 {
		counts[sink.Partition(fmt.Sprintf("agg-%d", i), 16)]++
	}
	for p, c := range counts {
		if c < 10000/16/2 || c > 10000/16*2 {
			t.Errorf("partition %d got %d of 10000 ids", p, c)
		}
	}

	s, err := sink.ParseSubject("outbox.{partition}.{aggregate_type}.{aggregate_id}")
	if err != nil || !s.UsesPartition() {
		t.Fatalf("ParseSubject: %v, UsesPartition %v", err, s != nil && s.UsesPartition())
	}
	s.Partitions = 8
	ev := &decode.Event{AggregateType: "order", AggregateID: "a.b"}
	want := fmt.Sprintf("outbox.%d.order.a%%2Eb", sink.Partition("a.b", 8))
	if got := string(s.Render(nil, ev)); got != want {
		t.Errorf("Render = %q, want %q", got, want)
	}
	if _, err := sink.New(nil, sink.Config{Stream: "S", Subject: "outbox.{partition}.{aggregate_id}"}, newAcker()); err == nil ||
		!strings.Contains(err.Error(), "nats.partitions") {
		t.Errorf("New with {partition} and no partitions: err = %v, want it to name nats.partitions", err)
	}
}

func TestNewRejectsBadTemplate(t *testing.T) {
	_, err := sink.New(nil, sink.Config{Stream: "S", Subject: "{aggregate_id}"}, newAcker())
	if err == nil || !strings.Contains(err.Error(), "first token must be literal") {
		t.Errorf("New with template %q: err = %v, want the template error", "{aggregate_id}", err)
	}
}

// The config validates subject templates and the sink compiles them, each
// with its own parser. Whatever the config accepts, the sink must compile,
// to a subject that starts with the prefix the stream is made to capture:
// otherwise the relay would start, and stop at its first event.
func FuzzConfigTemplatesCompile(f *testing.F) {
	for _, tmpl := range []string{
		"outbox.{aggregate_type}.{aggregate_id}", "outbox.{aggregate_id}", "a.b.{aggregate_type}.x.{type}",
		"outbox.{partition}.{aggregate_type}.{aggregate_id}", "o.agg-{aggregate_id}-x", "o.{aggregate_id}{type}",
		"{aggregate_id}.x", "o..{aggregate_id}", "o.{aggregate_id}.", "o.{unknown}", "o.{aggregate_id", "o.a b.{type}",
		"ö.{aggregate_id}", "o.*.{aggregate_id}", "o.>.{aggregate_id}", "o.{type}", "o.{{aggregate_id}}",
	} {
		f.Add(tmpl)
	}
	f.Fuzz(func(t *testing.T, tmpl string) {
		yaml := fmt.Sprintf("postgres: {url: \"postgres://u@h/d\"}\nnats: {subject: %q, partitions: 4}\n", tmpl)
		if !strings.Contains(tmpl, "{partition}") {
			yaml = fmt.Sprintf("postgres: {url: \"postgres://u@h/d\"}\nnats: {subject: %q}\n", tmpl)
		}
		if _, err := config.ParseConfigEnv(strings.NewReader(yaml), func(string) (string, bool) { return "", false }); err != nil {
			return // the config refuses it; the sink never sees it
		}
		s, err := sink.ParseSubject(tmpl)
		if err != nil {
			t.Fatalf("config accepts subject template %q, but the sink does not compile it: %v", tmpl, err)
		}
		s.Partitions = 4
		got := string(s.Render(nil, &decode.Event{AggregateType: "order", AggregateID: "o-1", Type: "Created"}))
		if !strings.HasPrefix(got, s.Prefix+".") {
			t.Fatalf("template %q renders %q, outside the stream's %s.>", tmpl, got, s.Prefix)
		}
	})
}
