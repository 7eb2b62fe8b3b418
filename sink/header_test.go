package sink

import (
	"strings"
	"testing"

	"github.com/outboxrelay/outboxrelay/decode"
)

// The fast check must agree with its definition: a value is representable
// when trimming Unicode white space leaves it unchanged and it holds no CR
// or LF.
func TestRepresentable(t *testing.T) {
	for _, v := range []string{
		"", "a", "order-42", "3fa85f64-5717-4562-b3fc-2c963f66afa6", " a", "a ", "\ta", "a\t",
		"a\rb", "a\nb", "\r", "\n", " ", "\u00a0a", "a\u00a0", "a\u0085", "é", "aé", "éa", "a\u2003",
		"a\x00b", "a\x7f", "\x85", "\xff", "a\xc2", "\xc2\x85",
	} {
		want := strings.TrimSpace(v) == v && !strings.ContainsAny(v, "\r\n")
		if got := representable(v); got != want {
			t.Errorf("representable(%q) = %v, want %v", v, got, want)
		}
	}
}

func BenchmarkUnrepresentable(b *testing.B) {
	ev := &decode.Event{
		ID: "3fa85f64-5717-4562-b3fc-2c963f66afa6", Type: "OrderUpdated",
		AggregateType: "order", AggregateID: "agg-4242",
		Headers: []decode.Header{{Name: "Traceparent", Value: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}},
	}
	for b.Loop() {
		if r := unrepresentable(ev); r != "" {
			b.Fatal(r)
		}
	}
}
