package decode_test

import (
	"github.com/outboxrelay/outboxrelay/internal/pgoutputtest"
)

// The tests' pgoutput messages are built by hand with pgoutputtest, so they
// do not depend on the parser they test; wire builds the malformed ones.
type wire = pgoutputtest.Wire

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
