package subject_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/outboxrelay/outboxrelay/subject"
)

func TestParse(t *testing.T) {
	f := subject.Fields{AggregateType: "customer.account", AggregateID: "a b*", Type: "Opened>1"}
	tests := []struct {
		tmpl, prefix, rendered string
	}{
		{"outbox.{aggregate_type}.{aggregate_id}", "outbox", "outbox.customer%2Eaccount.a%20b%2A"},
		{"outbox.{aggregate_type}.agg-{aggregate_id}", "outbox", "outbox.customer%2Eaccount.agg-a%20b%2A"},
		{"outbox.{aggregate_id}-x.{type}", "outbox", "outbox.a%20b%2A-x.Opened%3E1"},
		{"svc.events.v1.{type}.{aggregate_id}", "svc.events.v1", "svc.events.v1.Opened%3E1.a%20b%2A"},
		{"outbox.{aggregate_type}.fixed.{aggregate_id}", "outbox", "outbox.customer%2Eaccount.fixed.a%20b%2A"},
		{"a.b.c.{aggregate_id}", "a.b.c", "a.b.c.a%20b%2A"},
		{"a.x-{aggregate_id}.y", "a", "a.x-a%20b%2A.y"},
		{"ö.{aggregate_id}", "ö", "ö.a%20b%2A"},
	}
	for _, tt := range tests {
		t.Run(tt.tmpl, func(t *testing.T) {
			s, err := subject.Parse(tt.tmpl)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.tmpl, err)
			}
			if s.Prefix != tt.prefix {
				t.Errorf("Prefix = %q, want %q", s.Prefix, tt.prefix)
			}
			if s.UsesPartition() {
				t.Errorf("UsesPartition() = true for %q", tt.tmpl)
			}
			if got := string(s.Render(nil, &f)); got != tt.rendered {
				t.Errorf("Render = %q, want %q", got, tt.rendered)
			}
			// Render appends: what is in buf stays.
			if got, want := string(s.Render([]byte("keep|"), &f)), "keep|"+tt.rendered; got != want {
				t.Errorf("Render(\"keep|\", f) = %q, want %q", got, want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, tmpl, want string
	}{
		{"empty template", "", `is required (for example "outbox.{aggregate_type}.{aggregate_id}")`},
		{"unknown placeholder", "outbox.{aggregate}.{aggregate_id}", "unknown placeholder {aggregate} (known: {aggregate_type}, {aggregate_id}, {type}, {partition})"},
		{"misspelt placeholder", "outbox.{aggregateid}", "unknown placeholder {aggregateid}"},
		{"empty placeholder", "outbox.{}", "unknown placeholder {}"},
		{"unprintable placeholder", "outbox.{a\tb}", `unknown placeholder "{a\tb}"`},
		{"unclosed brace", "outbox.{aggregate_id", `token 2 ("{aggregate_id") has an unbalanced brace`},
		{"unopened brace", "outbox.aggregate_id}", `token 2 ("aggregate_id}") has an unbalanced brace`},
		{"brace in a literal", "outbox.a}b.{aggregate_id}", `token 2 ("a}b") has an unbalanced brace`},
		{"two placeholders in a token", "outbox.{type}{aggregate_id}", `token 2 ("{type}{aggregate_id}") has more than one placeholder or an unbalanced brace; use one placeholder per token`},
		{"doubled braces", "outbox.{{aggregate_id}}", "has more than one placeholder"},
		{"first token a placeholder", "{aggregate_type}.{aggregate_id}", "the first token must be literal"},
		{"first token mixes literal and placeholder", "pre-{aggregate_type}.{aggregate_id}", "the first token must be literal"},
		{"no aggregate", "outbox.{type}", "must contain {aggregate_id} or {aggregate_type}, so consumers can filter by aggregate and keep its order"},
		{"no placeholder", "outbox.events", "must contain {aggregate_id} or {aggregate_type}"},
		{"empty token in the middle", "outbox..{aggregate_id}", "token 2 is empty; tokens are separated by single '.', with none at the start or end"},
		{"leading dot", ".outbox.{aggregate_id}", "token 1 is empty"},
		{"trailing dot", "outbox.{aggregate_id}.", "token 3 is empty"},
		{"star in a literal", "outbox.*.{aggregate_id}", `token 2 ("*") contains '*'; subject tokens cannot contain whitespace, '*' or '>'`},
		{"greater than in a literal", "outbox.{aggregate_id}.>", `token 3 (">") contains '>'`},
		{"wildcard inside a token", "out*box.{aggregate_id}", `token 1 ("out*box") contains '*'`},
		{"space in a literal", "out box.{aggregate_id}", `token 1 ("out box") contains ' '`},
		{"tab next to a placeholder", "outbox.\t{aggregate_id}", `token 2 ("\t{aggregate_id}") contains '\t'`},
		{"newline in a literal", "outbox\n.{aggregate_id}", `token 1 ("outbox\n") contains '\n'`},
		{"DEL in a suffix", "outbox.{aggregate_id}\x7f", `token 2 ("{aggregate_id}\x7f") contains '\x7f'`},
		{"no-break space", "outbox\u00a0x.{aggregate_id}", `contains '\u00a0'`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := subject.Parse(tt.tmpl)
			if err == nil {
				t.Fatalf("Parse(%q) = {Prefix: %q}, nil; want an error", tt.tmpl, s.Prefix)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse(%q) error = %q, want it to contain %q", tt.tmpl, err, tt.want)
			}
		})
	}
}

func TestUnknownPlaceholderError(t *testing.T) {
	_, err := subject.Parse("outbox.{aggregate-id}")
	var up *subject.UnknownPlaceholderError
	if !errors.As(err, &up) || up.Name != "aggregate-id" {
		t.Fatalf("Parse error = %#v, want an *UnknownPlaceholderError named aggregate-id", err)
	}
	up.Suggestion = "aggregate_id"
	if got, want := up.Error(), "unknown placeholder {aggregate-id} (did you mean {aggregate_id}?)"; got != want {
		t.Errorf("Error() with a suggestion = %q, want %q", got, want)
	}
	if got, want := subject.Placeholders(), []string{"aggregate_type", "aggregate_id", "type", "partition"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Placeholders() = %q, want %q", got, want)
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
		if got := subject.Partition(tc.id, tc.n); got != tc.want {
			t.Errorf("Partition(%q, %d) = %d, want %d", tc.id, tc.n, got, tc.want)
		}
	}
	// Spread: 16 partitions over 10k ids, none empty or more than twice
	// its share.
	counts := make([]int, 16)
	for i := range 10000 {
		counts[subject.Partition(fmt.Sprintf("agg-%d", i), 16)]++
	}
	for p, c := range counts {
		if c < 10000/16/2 || c > 10000/16*2 {
			t.Errorf("partition %d got %d of 10000 ids", p, c)
		}
	}

	s, err := subject.Parse("outbox.{partition}.{aggregate_type}.{aggregate_id}")
	if err != nil || !s.UsesPartition() {
		t.Fatalf("Parse: %v, UsesPartition %v", err, s != nil && s.UsesPartition())
	}
	s.Partitions = 8
	want := fmt.Sprintf("outbox.%d.order.a%%2Eb", subject.Partition("a.b", 8))
	if got := string(s.Render(nil, &subject.Fields{AggregateType: "order", AggregateID: "a.b"})); got != want {
		t.Errorf("Render = %q, want %q", got, want)
	}
}

// Whatever Parse accepts must render, for any non-empty values (decode marks
// an event with an empty one invalid), to a valid subject under Prefix+".>",
// the subjects the stream is made to capture: otherwise the relay would
// start, and stop at its first event.
func FuzzParse(f *testing.F) {
	for _, tmpl := range []string{
		"outbox.{aggregate_type}.{aggregate_id}", "outbox.{aggregate_id}", "a.b.{aggregate_type}.x.{type}",
		"outbox.{partition}.{aggregate_type}.{aggregate_id}", "o.agg-{aggregate_id}-x", "o.{aggregate_id}{type}",
		"{aggregate_id}.x", "o..{aggregate_id}", "o.{aggregate_id}.", "o.{unknown}", "o.{aggregate_id", "o.a b.{type}",
		"ö.{aggregate_id}", "o.*.{aggregate_id}", "o.>.{aggregate_id}", "o.{type}", "o.{{aggregate_id}}",
	} {
		f.Add(tmpl, "order", "o-1", "Created")
	}
	f.Add("outbox.{aggregate_type}.{aggregate_id}.{type}", "ä", "a.b *>", "\x00 %")
	f.Fuzz(func(t *testing.T, tmpl, aggType, aggID, typ string) {
		if aggType == "" || aggID == "" || typ == "" {
			return
		}
		s, err := subject.Parse(tmpl)
		if err != nil {
			return
		}
		if s.Prefix == "" {
			t.Fatalf("Parse(%q) accepted it with no literal prefix", tmpl)
		}
		if s.UsesPartition() != strings.Contains(tmpl, "{partition}") {
			t.Errorf("Parse(%q).UsesPartition() = %v", tmpl, s.UsesPartition())
		}
		s.Partitions = 4
		got := string(s.Render(nil, &subject.Fields{AggregateType: aggType, AggregateID: aggID, Type: typ}))
		if !strings.HasPrefix(got, s.Prefix+".") {
			t.Fatalf("template %q renders %q, outside the stream's %s.>", tmpl, got, s.Prefix)
		}
		for i, tok := range strings.Split(got, ".") {
			if tok == "" || tok == "*" || tok == ">" || strings.ContainsFunc(tok, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
				t.Fatalf("template %q renders %q: token %d (%q) is not a valid subject token", tmpl, got, i+1, tok)
			}
		}
	})
}

func BenchmarkRender(b *testing.B) {
	for _, bc := range []struct {
		name, tmpl string
		f          subject.Fields
	}{
		{"plain", "outbox.{aggregate_type}.{aggregate_id}",
			subject.Fields{AggregateType: "order", AggregateID: "3f2c8a9e-1b7d-4c55-9a0e-7f4d2b9c1e08", Type: "Created"}},
		{"escaped+partition", "svc.events.{partition}.{aggregate_type}.agg-{aggregate_id}.{type}",
			subject.Fields{AggregateType: "customer.account", AggregateID: "Bär 日本.42", Type: "Opened>1"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s, err := subject.Parse(bc.tmpl)
			if err != nil {
				b.Fatal(err)
			}
			s.Partitions = 16
			buf := make([]byte, 0, 256)
			b.ReportAllocs()
			for b.Loop() {
				buf = s.Render(buf[:0], &bc.f)
			}
		})
	}
}
