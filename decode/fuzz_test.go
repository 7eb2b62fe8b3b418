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

	f.Fuzz(func(t *testing.T, data []byte) {
		d := decode.NewDecoder(
			decode.Table{Name: "outbox", Headers: []decode.HeaderColumn{{Column: "trace", Header: "Trace"}}},
			decode.Table{Schema: "pg_catalog", Name: "box", Columns: decode.Columns{ID: "k", AggregateType: "k",
				AggregateID: "k", Type: "k", Payload: "b"}},
		)
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
			switch res.Kind {
			case decode.KindBegin, decode.KindCommit:
				seq = 0
			case decode.KindEvent:
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
