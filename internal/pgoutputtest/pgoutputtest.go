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

// Wire appends the protocol's fields, big-endian; tests build malformed
// messages with it.
type Wire []byte

func (w Wire) U8(v byte) Wire    { return append(w, v) }
func (w Wire) U16(v uint16) Wire { return binary.BigEndian.AppendUint16(w, v) }
func (w Wire) U32(v uint32) Wire { return binary.BigEndian.AppendUint32(w, v) }
func (w Wire) U64(v uint64) Wire { return binary.BigEndian.AppendUint64(w, v) }
func (w Wire) I32(v int32) Wire  { return w.U32(uint32(v)) }

// Str is a NUL-terminated string.
func (w Wire) Str(s string) Wire { return append(append(w, s...), 0) }

func (w Wire) pgtime(t time.Time) Wire {
	return w.U64(uint64(t.Sub(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)).Microseconds()))
}

// Col is one column of a Relation message.
type Col struct {
	Name string
	OID  uint32
}

// Relation describes table relid; its first column is the key.
func Relation(relid uint32, ns, name string, cols ...Col) []byte {
	w := Wire{'R'}.U32(relid).Str(ns).Str(name).U8('d').U16(uint16(len(cols)))
	for i, c := range cols {
		flags := byte(0)
		if i == 0 {
			flags = 1 // part of the key
		}
		w = w.U8(flags).Str(c.Name).U32(c.OID).U32(^uint32(0)) // atttypmod -1
	}
	return w
}

// Begin opens the transaction that commits at lsn.
func Begin(lsn uint64, t time.Time, xid uint32) []byte {
	return Wire{'B'}.U64(lsn).pgtime(t).U32(xid)
}

// Commit closes the transaction that commits at lsn and ends at end.
func Commit(lsn, end uint64, t time.Time) []byte {
	return Wire{'C'}.U8(0).U64(lsn).U64(end).pgtime(t)
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

// Tuple is TupleData: a column count, then each column.
func (w Wire) Tuple(vals []Val) Wire {
	w = w.U16(uint16(len(vals)))
	for _, v := range vals {
		w = w.U8(v.Kind)
		if v.Kind == 't' || v.Kind == 'b' {
			w = append(w.U32(uint32(len(v.Data))), v.Data...)
		}
	}
	return w
}

// Insert is a new row of relid.
func Insert(relid uint32, vals ...Val) []byte {
	return Wire{'I'}.U32(relid).U8('N').Tuple(vals)
}

// Update changes a row of relid; old is 0 (no old tuple), 'K' or 'O'.
func Update(relid uint32, old byte, oldVals, newVals []Val) []byte {
	w := Wire{'U'}.U32(relid)
	if old != 0 {
		w = w.U8(old).Tuple(oldVals)
	}
	return w.U8('N').Tuple(newVals)
}

// Delete removes a row of relid; old is 'K' or 'O'.
func Delete(relid uint32, old byte, vals ...Val) []byte {
	return Wire{'D'}.U32(relid).U8(old).Tuple(vals)
}

// Truncate empties the relations.
func Truncate(relids ...uint32) []byte {
	w := Wire{'T'}.U32(uint32(len(relids))).U8(0)
	for _, id := range relids {
		w = w.U32(id)
	}
	return w
}

// Message is a logical decoding message (pg_logical_emit_message).
func Message(transactional bool, lsn uint64, prefix string, content []byte) []byte {
	flags := byte(0)
	if transactional {
		flags = 1
	}
	return append(Wire{'M'}.U8(flags).U64(lsn).Str(prefix).U32(uint32(len(content))), content...)
}

// Origin names the origin of the transaction's changes.
func Origin(lsn uint64, name string) []byte { return Wire{'O'}.U64(lsn).Str(name) }

// Type describes a data type.
func Type(oid uint32, ns, name string) []byte { return Wire{'Y'}.U32(oid).Str(ns).Str(name) }
