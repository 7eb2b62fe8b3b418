package decode_test

import (
	"encoding/binary"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/pgoutputtest"
)

// This file builds malformed pgoutput messages by hand, so the tests do not
// depend on the parser they test.

type wire []byte

func (w wire) u8(v byte) wire    { return append(w, v) }
func (w wire) u16(v uint16) wire { return binary.BigEndian.AppendUint16(w, v) }
func (w wire) u32(v uint32) wire { return binary.BigEndian.AppendUint32(w, v) }
func (w wire) u64(v uint64) wire { return binary.BigEndian.AppendUint64(w, v) }
func (w wire) str(s string) wire { return append(append(w, s...), 0) }
func (w wire) raw(b []byte) wire { return append(w, b...) }
func (w wire) i32(v int32) wire  { return w.u32(uint32(v)) }
func (w wire) lsn(v uint64) wire { return w.u64(v) }
func (w wire) pgtime(t time.Time) wire {
	return w.u64(uint64(t.Sub(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)).Microseconds()))
}

// Type OIDs used in the tests.
const (
	oidBytea   = pgoutputtest.OIDBytea
	oidName    = pgoutputtest.OIDName
	oidInt8    = pgoutputtest.OIDInt8
	oidInt4    = pgoutputtest.OIDInt4
	oidText    = pgoutputtest.OIDText
	oidJSON    = pgoutputtest.OIDJSON
	oidBpchar  = pgoutputtest.OIDBpchar
	oidVarchar = pgoutputtest.OIDVarchar
	oidUUID    = pgoutputtest.OIDUUID
	oidJSONB   = pgoutputtest.OIDJSONB
)

// The well-formed messages come from pgoutputtest, shared with the
// pipeline's tests; wire above builds the malformed ones.
type val = pgoutputtest.Val

// col is one column of a relation.
type col struct {
	name string
	oid  uint32
}

func relationMsg(relid uint32, ns, name string, cols ...col) []byte {
	pc := make([]pgoutputtest.Col, len(cols))
	for i, c := range cols {
		pc[i] = pgoutputtest.Col{Name: c.name, OID: c.oid}
	}
	return pgoutputtest.Relation(relid, ns, name, pc...)
}

var (
	beginMsg    = pgoutputtest.Begin
	commitMsg   = pgoutputtest.Commit
	txt         = pgoutputtest.Text
	null        = pgoutputtest.Null
	insertMsg   = pgoutputtest.Insert
	updateMsg   = pgoutputtest.Update
	deleteMsg   = pgoutputtest.Delete
	truncateMsg = pgoutputtest.Truncate
	messageMsg  = pgoutputtest.Message
	originMsg   = pgoutputtest.Origin
	typeMsg     = pgoutputtest.Type
)

func (w wire) tuple(vals []val) wire {
	w = w.u16(uint16(len(vals)))
	for _, v := range vals {
		w = w.u8(v.Kind)
		if v.Kind == 't' || v.Kind == 'b' {
			w = w.u32(uint32(len(v.Data))).raw([]byte(v.Data))
		}
	}
	return w
}

// The Debezium outbox table, as most users will have it.
const outboxRelid = 16384

var debeziumCols = []col{
	{"id", oidUUID},
	{"aggregatetype", oidVarchar},
	{"aggregateid", oidVarchar},
	{"type", oidVarchar},
	{"payload", oidJSONB},
}

func debeziumRelation() []byte {
	return relationMsg(outboxRelid, "public", "outbox", debeziumCols...)
}

func debeziumRow(id, aggType, aggID, typ, payload string) []byte {
	return insertMsg(outboxRelid, txt(id), txt(aggType), txt(aggID), txt(typ), txt(payload))
}
