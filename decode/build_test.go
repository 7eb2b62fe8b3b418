package decode_test

import (
	"encoding/binary"
	"time"
)

// This file builds pgoutput protocol version 1 messages by hand, following
// the PostgreSQL documentation "Logical Replication Message Formats", so the
// tests do not depend on the parser they test.

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
	oidBytea   = 17
	oidName    = 19
	oidInt8    = 20
	oidInt4    = 23
	oidText    = 25
	oidJSON    = 114
	oidBpchar  = 1042
	oidVarchar = 1043
	oidUUID    = 2950
	oidJSONB   = 3802
)

type col struct {
	name string
	oid  uint32
}

func relationMsg(relid uint32, ns, name string, cols ...col) []byte {
	w := wire{'R'}.u32(relid).str(ns).str(name).u8('d').u16(uint16(len(cols)))
	for i, c := range cols {
		flags := byte(0)
		if i == 0 {
			flags = 1 // part of the key
		}
		w = w.u8(flags).str(c.name).u32(c.oid).i32(-1)
	}
	return w
}

func beginMsg(lsn uint64, t time.Time, xid uint32) []byte {
	return wire{'B'}.lsn(lsn).pgtime(t).u32(xid)
}

func commitMsg(lsn, end uint64, t time.Time) []byte {
	return wire{'C'}.u8(0).lsn(lsn).lsn(end).pgtime(t)
}

// val is one TupleData column: kind 'n', 'u', 't' or 'b'.
type val struct {
	kind byte
	data string
}

func txt(s string) val { return val{kind: 't', data: s} }

var null = val{kind: 'n'}

func (w wire) tuple(vals []val) wire {
	w = w.u16(uint16(len(vals)))
	for _, v := range vals {
		w = w.u8(v.kind)
		if v.kind == 't' || v.kind == 'b' {
			w = w.u32(uint32(len(v.data))).raw([]byte(v.data))
		}
	}
	return w
}

func insertMsg(relid uint32, vals ...val) []byte {
	return wire{'I'}.u32(relid).u8('N').tuple(vals)
}

func updateMsg(relid uint32, old byte, oldVals, newVals []val) []byte {
	w := wire{'U'}.u32(relid)
	if old != 0 {
		w = w.u8(old).tuple(oldVals)
	}
	return w.u8('N').tuple(newVals)
}

func deleteMsg(relid uint32, old byte, vals ...val) []byte {
	return wire{'D'}.u32(relid).u8(old).tuple(vals)
}

func truncateMsg(relids ...uint32) []byte {
	w := wire{'T'}.u32(uint32(len(relids))).u8(0)
	for _, id := range relids {
		w = w.u32(id)
	}
	return w
}

func messageMsg(transactional bool, lsn uint64, prefix string, content []byte) []byte {
	flags := byte(0)
	if transactional {
		flags = 1
	}
	return wire{'M'}.u8(flags).lsn(lsn).str(prefix).u32(uint32(len(content))).raw(content)
}

func originMsg(lsn uint64, name string) []byte { return wire{'O'}.lsn(lsn).str(name) }

func typeMsg(oid uint32, ns, name string) []byte { return wire{'Y'}.u32(oid).str(ns).str(name) }

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
