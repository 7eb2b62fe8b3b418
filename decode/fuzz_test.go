package decode_test

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/decode"
)

// frame joins messages into one fuzz input: each is preceded by its length
// as a big-endian uint16. split undoes it, so the fuzzer mutates sequences
// of messages and the relation cache and transaction state get exercised,
// not just single messages.
func frame(msgs ...[]byte) []byte {
	var b []byte
	for _, m := range msgs {
		b = binary.BigEndian.AppendUint16(b, uint16(len(m)))
		b = append(b, m...)
	}
	return b
}

func split(b []byte) [][]byte {
	var msgs [][]byte
	for len(b) >= 2 {
		n := int(binary.BigEndian.Uint16(b))
		b = b[2:]
		if n > len(b) {
			n = len(b)
		}
		msgs = append(msgs, b[:n:n])
		b = b[n:]
	}
	return msgs
}

func FuzzDecode(f *testing.F) {
	prelude, msgs := allMessages()
	f.Add(frame(append(prelude, msgs...)...))
	for _, m := range msgs {
		f.Add(frame(append(prelude, m)...))
	}
	byteaCols := append([]col(nil), debeziumCols...)
	byteaCols[4].oid = oidBytea
	f.Add(frame(
		relationMsg(outboxRelid, "public", "outbox", append(byteaCols, col{"trace", oidText})...),
		relationMsg(7, "", "box", col{"k", oidText}, col{"b", oidInt4}),
		beginMsg(0x100, time.Unix(0, 0), 1),
		insertMsg(outboxRelid, txt("e1"), txt("a"), txt("b"), txt("c"), txt(`\x0102`), txt("trace")),
		insertMsg(outboxRelid, txt("e2"), txt("a"), txt("b"), txt("c"), txt(`a\\b\001`), null),
		insertMsg(7, txt("x"), txt("box")),
		truncateMsg(7, outboxRelid),
		commitMsg(0x100, 0x140, time.Unix(0, 0)),
	))
	f.Add(frame(
		beginMsg(0x200, time.Unix(0, 0), 2),
		messageMsg(true, 0x1f0, "outbox", []byte(`{"id":"m1","aggregate_type":"a","aggregate_id":7,"type":"t","payload":{"x":[1]},"headers":{"H":"v"}}`)),
		messageMsg(true, 0x1f8, "outbox", []byte(`{"id":"m2","aggregate_type":"a","aggregate_id":"\u00e9.*","type":"t","payload":"s"}`)),
		commitMsg(0x200, 0x240, time.Unix(0, 0)),
		messageMsg(false, 0x250, "outbox", []byte(`{"id":1}`)),
	))

	f.Fuzz(func(t *testing.T, data []byte) {
		d := decode.NewDecoder(
			decode.Table{Name: "outbox", Headers: []decode.HeaderColumn{{Column: "trace", Header: "Trace"}}},
			decode.Table{Schema: "pg_catalog", Name: "box", Columns: decode.Columns{ID: "k", AggregateType: "k",
				AggregateID: "k", Type: "k", Payload: "b"}},
		)
		d.AcceptMessages("outbox")
		var seq uint32
		for _, m := range split(data) {
			orig := bytes.Clone(m)
			res, err := d.Decode(m)
			if !bytes.Equal(m, orig) {
				t.Fatalf("Decode modified its input")
			}
			if err != nil {
				if res.Kind != decode.KindNone {
					t.Fatalf("error %v with result kind %v", err, res.Kind)
				}
				continue
			}
			if (res.Kind == decode.KindEvent) != (res.Event != nil) {
				t.Fatalf("result kind %v with Event %v: want an Event exactly for KindEvent", res.Kind, res.Event)
			}
			switch res.Kind {
			case decode.KindBegin, decode.KindCommit:
				seq = 0
			case decode.KindEvent:
				if res.Standalone {
					if res.Event.Invalid == "" || res.Event.TxSeq != 1 || res.EndLSN <= res.CommitLSN {
						t.Fatalf("standalone event %+v: want it invalid, alone, ending after it starts", res)
					}
					continue
				}
				seq++
				if res.Event.TxSeq != seq {
					t.Fatalf("TxSeq = %d, want %d", res.Event.TxSeq, seq)
				}
				if res.Event.Table == "" {
					t.Fatal("event without a table")
				}
			}
		}
	})
}
