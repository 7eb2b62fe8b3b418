package recovery

// This file builds the pgoutput (protocol version 1) messages that carry
// rows read by SQL to the decoder, so that recovered rows become events by
// the same code as rows from the WAL. SQL's text output of a value is what
// pgoutput sends for it.

import (
	"encoding/binary"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
)

var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

func beginMsg(lsn pglogrepl.LSN, t time.Time) []byte {
	b := []byte{'B'}
	b = binary.BigEndian.AppendUint64(b, uint64(lsn))
	b = binary.BigEndian.AppendUint64(b, uint64(t.Sub(pgEpoch).Microseconds()))
	return binary.BigEndian.AppendUint32(b, 0) // no xid: not one transaction of the WAL
}

func relationMsg(relid uint32, schema, name string, fields []pgconn.FieldDescription) []byte {
	b := binary.BigEndian.AppendUint32([]byte{'R'}, relid)
	b = append(append(b, schema...), 0)
	b = append(append(b, name...), 0)
	b = append(b, 'd')
	b = binary.BigEndian.AppendUint16(b, uint16(len(fields)))
	for _, f := range fields {
		b = append(b, 0) // flags: the key does not matter for inserts
		b = append(append(b, f.Name...), 0)
		b = binary.BigEndian.AppendUint32(b, f.DataTypeOID)
		b = binary.BigEndian.AppendUint32(b, ^uint32(0)) // atttypmod -1
	}
	return b
}

func insertMsg(relid uint32, vals [][]byte) []byte {
	b := binary.BigEndian.AppendUint32([]byte{'I'}, relid)
	b = append(b, 'N')
	b = binary.BigEndian.AppendUint16(b, uint16(len(vals)))
	for _, v := range vals {
		if v == nil {
			b = append(b, 'n')
			continue
		}
		b = append(b, 't')
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	return b
}
