package decode_test

import (
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/outboxrelay/outboxrelay/decode"
)

func TestMessageEvents(t *testing.T) {
	d := decode.NewDecoder(debezium)
	d.AcceptMessages("outbox")
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	res := decodeAll(t, d,
		beginMsg(0x100, at, 7),
		debeziumRelation(),
		debeziumRow("r1", "order", "o1", "Created", `{"a":1}`),
		messageMsg(true, 0x60, "outbox", []byte(`{"id":"m1","aggregate_type":"order","aggregate_id":42,"type":"Paid","payload":{"amount": 5},"headers":{"Trace":"t1","A":"x"}}`)),
		messageMsg(true, 0x70, "other", []byte(`not ours`)),
		messageMsg(true, 0x80, "outbox", []byte(`{"id":"m2","aggregate_type":"order","aggregate_id":"o1","type":"Shipped"}`)),
		commitMsg(0x100, 0x180, at),
	)
	row, m1, other, m2, commit := res[2].Event, res[3], res[4], res[5], res[6]
	if row.Source != 0 || row.TxSeq != 1 {
		t.Errorf("row: Source %d TxSeq %d, want 0 and 1", row.Source, row.TxSeq)
	}
	if m1.Kind != decode.KindEvent || m1.Standalone {
		t.Fatalf("m1 = %+v, want a transactional event", m1)
	}
	e := m1.Event
	if e.ID != "m1" || e.AggregateType != "order" || e.AggregateID != "42" || e.Type != "Paid" ||
		string(e.Payload) != `{"amount": 5}` || e.Invalid != "" {
		t.Errorf("m1 event = %+v", e)
	}
	if e.CommitLSN != 0x100 || e.TxSeq != 2 || !e.CommitTime.Equal(at) || e.Xid != 7 || e.Source != 1 || e.Table != "pg_logical_emit_message(outbox)" {
		t.Errorf("m1 position = %s/%d time %v xid %d source %d table %q", e.CommitLSN, e.TxSeq, e.CommitTime, e.Xid, e.Source, e.Table)
	}
	if len(e.Headers) != 2 || e.Headers[0] != (decode.Header{Name: "A", Value: "x"}) || e.Headers[1] != (decode.Header{Name: "Trace", Value: "t1"}) {
		t.Errorf("m1 headers = %+v, want sorted by name", e.Headers)
	}
	if other.Kind != decode.KindMessage {
		t.Errorf("a message with another prefix = %v, want KindMessage", other.Kind)
	}
	if m2.Event.TxSeq != 3 || m2.Event.Payload != nil || m2.Event.Invalid != "" {
		t.Errorf("m2 = %+v, want TxSeq 3 and no payload", m2.Event)
	}
	if commit.Events != 3 {
		t.Errorf("commit Events = %d, want 3 (a row and two messages)", commit.Events)
	}
}

func TestInvalidMessages(t *testing.T) {
	cases := []struct {
		name, content, want string
	}{
		{"not json", `{"id":`, "message content is not an outbox JSON object"},
		{"not an object", `[1,2]`, "message content is not an outbox JSON object"},
		{"unknown field", `{"id":"1","aggregateType":"o","aggregate_id":"1","type":"t"}`, `unknown field "aggregateType"`},
		{"trailing data", `{"id":"1","aggregate_type":"o","aggregate_id":"1","type":"t"} {}`, "data after its JSON object"},
		{"missing id", `{"aggregate_type":"o","aggregate_id":"1","type":"t"}`, "id is missing"},
		{"null aggregate id", `{"id":"1","aggregate_type":"o","aggregate_id":null,"type":"t"}`, "aggregate_id is missing"},
		{"empty type", `{"id":"1","aggregate_type":"o","aggregate_id":"1","type":""}`, "type is empty"},
		{"object id", `{"id":{},"aggregate_type":"o","aggregate_id":"1","type":"t"}`, "id must be a string or a number"},
		{"reserved header", `{"id":"1","aggregate_type":"o","aggregate_id":"1","type":"t","headers":{"Nats-Msg-Id":"x"}}`, `header "Nats-Msg-Id" is reserved`},
		{"control header", `{"id":"1","aggregate_type":"o","aggregate_id":"1","type":"t","headers":{"Status":"503"}}`, `header "Status" is reserved: NATS uses Status and Description for control messages`},
		{"bad header", `{"id":"1","aggregate_type":"o","aggregate_id":"1","type":"t","headers":{"a b":"x"}}`, `header "a b" is not a valid header name`},
		{"header not a string", `{"id":"1","aggregate_type":"o","aggregate_id":"1","type":"t","headers":{"a":1}}`, "message content is not an outbox JSON object"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := decode.NewDecoder()
			d.AcceptMessages("outbox")
			res := decodeAll(t, d, beginMsg(0x100, time.Unix(0, 0), 1), messageMsg(true, 0x60, "outbox", []byte(tc.content)))
			ev := res[1].Event
			if res[1].Kind != decode.KindEvent || !strings.Contains(ev.Invalid, tc.want) {
				t.Fatalf("kind %v, Invalid = %q, want it to contain %q", res[1].Kind, ev.Invalid, tc.want)
			}
			if len(ev.Payload) == 0 {
				t.Errorf("invalid message lost its content; a dead letter must keep it")
			}
			if ev.CommitLSN != 0x100 || ev.TxSeq != 1 {
				t.Errorf("position %s/%d, want 0/100 and 1: an invalid event keeps its place", ev.CommitLSN, ev.TxSeq)
			}
		})
	}
}

func TestNonTransactionalMessage(t *testing.T) {
	d := decode.NewDecoder()
	d.AcceptMessages("outbox")
	res := decodeAll(t, d, messageMsg(false, 0x60, "outbox", []byte(`{"id":"1","aggregate_type":"o","aggregate_id":"1","type":"t"}`)))
	r := res[0]
	if r.Kind != decode.KindEvent || !r.Standalone || r.CommitLSN != 0x60 || r.EndLSN != pglogrepl.LSN(0x61) {
		t.Fatalf("result = %+v, want a standalone event at 0/60 ending at 0/61", r)
	}
	if !strings.Contains(r.Event.Invalid, "transactional=false") || r.Event.ID != "1" {
		t.Errorf("event = %+v, want it invalid, saying to use transactional=true", r.Event)
	}
}
