package sink

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/outboxrelay/outboxrelay/decode"
	"github.com/outboxrelay/outboxrelay/internal/testenv"
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

// unrepresentable names the value that cannot travel, the first in the
// order id, type, aggregate_type, aggregate_id, then the headers.
func TestUnrepresentableNamesTheValue(t *testing.T) {
	good := func() *decode.Event {
		return &decode.Event{ID: "e-1", Type: "Placed", AggregateType: "order", AggregateID: "42",
			Headers: []decode.Header{{Name: "Tenant", Value: "acme"}, {Name: "Trace", Value: "t-1"}}}
	}
	if r := unrepresentable(good()); r != "" {
		t.Fatalf("a good event: %q, want \"\"", r)
	}
	for _, tc := range []struct {
		set  func(*decode.Event)
		want string
	}{
		{func(e *decode.Event) { e.ID = " e-1" }, `id " e-1"`},
		{func(e *decode.Event) { e.Type = "Placed\n" }, `type "Placed\n"`},
		{func(e *decode.Event) { e.AggregateType = "or\rder" }, `aggregate_type "or\rder"`},
		{func(e *decode.Event) { e.AggregateID = "42 " }, `aggregate_id "42 "`},
		{func(e *decode.Event) { e.Headers[1].Value = "\tt-1" }, `header Trace "\tt-1"`},
		{func(e *decode.Event) { e.AggregateID, e.Headers[0].Value = "42 ", " acme" }, `aggregate_id "42 "`},
	} {
		ev := good()
		tc.set(ev)
		if r := unrepresentable(ev); !strings.HasPrefix(r, tc.want+" has surrounding white space") {
			t.Errorf("got %q, want it to start with %q", r, tc.want)
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

// headerLen must be exactly what nats.go sends, or send's max_msg_size check
// would pass a message the stream then refuses, or refuse one it would
// store. nats.go refuses a message whose headers and data are over the
// server's max_payload, so with max_payload 1024 a message with
// 1024-headerLen bytes of data must go and one with a byte more must not.
func TestHeaderLenIsWhatNATSSends(t *testing.T) {
	const maxPayload = 1024
	n := testenv.StartNATS(t, testenv.NATSOptions{Config: fmt.Sprintf("max_payload: %d\n", maxPayload)})
	nc, err := nats.Connect(n.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for _, h := range []nats.Header{
		{HeaderMsgID: {"ev-1"}},
		{HeaderMsgID: {"3fa85f64-5717-4562-b3fc-2c963f66afa6"}, HeaderExpectedSeq: {"41"}, HeaderEventID: {"3fa85f64-5717-4562-b3fc-2c963f66afa6"},
			HeaderEventType: {"OrderPaid"}, HeaderAggregateType: {"order"}, HeaderAggregateID: {"ordér 42"}, HeaderCommitLSN: {"0/16B3748"},
			HeaderTxSeq: {"1"}, HeaderCommitTime: {"2026-11-26T15:04:05.123456Z"}, "X-Tenant": {"acme"}},
	} {
		hl := headerLen(h)
		for _, tc := range []struct {
			data int
			ok   bool
		}{{maxPayload - hl, true}, {maxPayload - hl + 1, false}} {
			err := nc.PublishMsg(&nats.Msg{Subject: "x", Header: h, Data: make([]byte, tc.data)})
			if tc.ok && err != nil {
				t.Errorf("headerLen = %d; %d bytes of data with those headers: %v, want it sent", hl, tc.data, err)
			}
			if !tc.ok && !errors.Is(err, nats.ErrMaxPayload) {
				t.Errorf("headerLen = %d; %d bytes of data with those headers: %v, want %v", hl, tc.data, err, nats.ErrMaxPayload)
			}
		}
	}
}
