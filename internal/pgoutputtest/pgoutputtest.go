// Package pgoutputtest builds pgoutput protocol version 1 messages by hand,
// following the PostgreSQL documentation "Logical Replication Message
// Formats", so that tests of the decoder and the pipeline do not depend on
// the parser they test.
package pgoutputtest

import (
	"encoding/binary"
	"time"
)

// Type OIDs of the columns tests use.
const (
	OIDBytea   = 17
	OIDName    = 19
	OIDInt8    = 20
	OIDInt4    = 23
	OIDText    = 25
	OIDJSON    = 114
	OIDBpchar  = 1042
	OIDVarchar = 1043
	OIDUUID    = 2950
	OIDJSONB   = 3802
)

type wire []byte

func (w wire) u8(v byte) wire    { return append(w, v) }
func (w wire) u16(v uint16) wire { return binary.BigEndian.AppendUint16(w, v) }
func (w wire) u32(v uint32) wire { return binary.BigEndian.AppendUint32(w, v) }
func (w wire) u64(v uint64) wire { return binary.BigEndian.AppendUint64(w, v) }
func (w wire) str(s string) wire { return append(append(w, s...), 0) }
func (w wire) pgtime(t time.Time) wire {
	return w.u64(uint64(t.Sub(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)).Microseconds()))
}

// Col is one column of a Relation message.
type Col struct {
	Name string
	OID  uint32
}

// Relation describes table relid; its first column is the key.
func Relation(relid uint32, ns, name string, cols ...Col) []byte {
	w := wire{'R'}.u32(relid).str(ns).str(name).u8('d').u16(uint16(len(cols)))
	for i, c := range cols {
		flags := byte(0)
		if i == 0 {
			flags = 1 // part of the key
		}
		w = w.u8(flags).str(c.Name).u32(c.OID).u32(^uint32(0)) // atttypmod -1
	}
	return w
}

// Begin opens the transaction that commits at lsn.
func Begin(lsn uint64, t time.Time, xid uint32) []byte {
	return wire{'B'}.u64(lsn).pgtime(t).u32(xid)
}

// Commit closes the transaction that commits at lsn and ends at end.
func Commit(lsn, end uint64, t time.Time) []byte {
	return wire{'C'}.u8(0).u64(lsn).u64(end).pgtime(t)
}

// Val is one TupleData column: Kind 'n' (null), 'u' (unchanged TOAST),
// 't' (text) or 'b' (binary).
type Val struct {
	Kind byte
	Data string
}

// Text is a column in text format.
func Text(s string) Val { return Val{Kind: 't', Data: s} }

// Null is a NULL column.
var Null = Val{Kind: 'n'}

func (w wire) tuple(vals []Val) wire {
	w = w.u16(uint16(len(vals)))
	for _, v := range vals {
		w = w.u8(v.Kind)
		if v.Kind == 't' || v.Kind == 'b' {
			w = append(w.u32(uint32(len(v.Data))), v.Data...)
		}
	}
	return w
}

// Insert is a new row of relid.
func Insert(relid uint32, vals ...Val) []byte {
	return wire{'I'}.u32(relid).u8('N').tuple(vals)
}

// Update changes a row of relid; old is 0 (no old tuple), 'K' or 'O'.
func Update(relid uint32, old byte, oldVals, newVals []Val) []byte {
	w := wire{'U'}.u32(relid)
	if old != 0 {
		w = w.u8(old).tuple(oldVals)
	}
	return w.u8('N').tuple(newVals)
}

// Delete removes a row of relid; old is 'K' or 'O'.
func Delete(relid uint32, old byte, vals ...Val) []byte {
	return wire{'D'}.u32(relid).u8(old).tuple(vals)
}

// Truncate empties the relations.
func Truncate(relids ...uint32) []byte {
	w := wire{'T'}.u32(uint32(len(relids))).u8(0)
	for _, id := range relids {
		w = w.u32(id)
	}
	return w
}

// Message is a logical decoding message (pg_logical_emit_message).
func Message(transactional bool, lsn uint64, prefix string, content []byte) []byte {
	flags := byte(0)
	if transactional {
		flags = 1
	}
	return append(wire{'M'}.u8(flags).u64(lsn).str(prefix).u32(uint32(len(content))), content...)
}

// Origin names the origin of the transaction's changes.
func Origin(lsn uint64, name string) []byte { return wire{'O'}.u64(lsn).str(name) }

// Type describes a data type.
func Type(oid uint32, ns, name string) []byte { return wire{'Y'}.u32(oid).str(ns).str(name) }
