package decode

import (
	"fmt"
	"strings"
)

// Table says which relation is an outbox table and how its columns map to
// event fields.
type Table struct {
	// Schema and Name identify the table, e.g. "public" and "outbox".
	// An empty Schema means "public".
	Schema, Name string
	Columns      Columns
	// Headers are extra columns copied to message headers, in this order.
	Headers []HeaderColumn
}

// Columns names the outbox columns. An empty name means the Debezium default
// (id, aggregatetype, aggregateid, type, payload).
type Columns struct {
	ID, AggregateType, AggregateID, Type, Payload string
}

// HeaderColumn copies Column's text value to the message header Header.
type HeaderColumn struct {
	Column, Header string
}

// Type OIDs of the payload column types the relay accepts. Their text form
// is the payload itself, except bytea whose text form is an encoding.
const (
	oidBytea   = 17
	oidName    = 19
	oidText    = 25
	oidJSON    = 114
	oidBpchar  = 1042
	oidVarchar = 1043
	oidJSONB   = 3802
)

// PayloadTypeProblem says why a payload column of type oid cannot carry
// events, or "" when it can. The rule is the decoder's, and check reports
// it from the catalog with the same words.
func PayloadTypeProblem(column string, oid uint32) string {
	switch oid {
	case oidJSON, oidJSONB, oidText, oidVarchar, oidBpchar, oidName, oidBytea:
		return ""
	}
	// A domain over a supported type has its own OID, which pgoutput sends
	// instead of the base type's: say so, it is the likely case.
	return fmt.Sprintf("payload (column %q) has type OID %d; supported payload types are "+
		"json, jsonb, text, varchar, char, name and bytea (not domains over them)", column, oid)
}

// relation is what the decoder remembers from a Relation message.
type relation struct {
	table  string   // "schema.name", for results and errors
	ncols  int      // columns in every TupleData of this relation
	outbox *mapping // nil unless the relation is a configured outbox table
}

// field is one required outbox column resolved against a relation.
type field struct {
	key    string // config key under outbox.columns, used in Invalid reasons
	column string
	idx    int // -1 when the relation lacks the column
}

// Indexes into mapping.req.
const (
	reqID = iota
	reqAggregateType
	reqAggregateID
	reqType
	numReq
)

type headerField struct {
	column, header string
	idx            int
	trace          bool // mapped to traceparent: read as trace context (trace.go)
}

// mapping is an outbox table's configuration resolved to tuple indexes.
// It is rebuilt on every Relation message, so ALTER TABLE is picked up.
type mapping struct {
	req     [numReq]field
	payload field
	// bytea payloads arrive hex-encoded and must be decoded to raw bytes.
	bytea bool
	// contentType is the payload column's media type (Event.ContentType).
	contentType string
	// unsupported, when set, is why the payload column's type cannot be
	// published; it is computed once here rather than for every event.
	unsupported string
	headers     []headerField
	// source is the table's index in NewDecoder's list (Event.Source).
	source int
	// misfit, when set, says which configured columns the relation lacks:
	// every insert into it is invalid for that reason (see resolve).
	misfit string
}

// normalize applies the documented defaults.
func (t Table) normalize() Table {
	if t.Schema == "" {
		t.Schema = "public"
	}
	c := &t.Columns
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.ID, "id")
	def(&c.AggregateType, "aggregatetype")
	def(&c.AggregateID, "aggregateid")
	def(&c.Type, "type")
	def(&c.Payload, "payload")
	t.Headers = append([]HeaderColumn(nil), t.Headers...)
	return t
}

// relColumn is one column of a Relation message; name aliases the message.
type relColumn struct {
	name    []byte
	typeOID uint32
}

// resolve maps t's configured columns onto the relation's columns. A
// configured column the relation lacks does not stop the stream: the row
// may be far behind the table's present shape (the WAL keeps the relation
// as it was when the row was written), so each of its inserts becomes an
// invalid event whose reason says what is missing, and the invalid_event
// policy decides. Its field has index -1 and reads as empty.
func resolve(t *Table, table string, cols []relColumn) *mapping {
	var missing []string
	find := func(column, key string) int {
		for i, c := range cols {
			if string(c.name) == column {
				return i
			}
		}
		missing = append(missing, fmt.Sprintf("outbox table %s has no column %q (%s)", table, column, key))
		return -1
	}
	m := &mapping{
		req: [numReq]field{
			reqID:            {key: "id", column: t.Columns.ID},
			reqAggregateType: {key: "aggregate_type", column: t.Columns.AggregateType},
			reqAggregateID:   {key: "aggregate_id", column: t.Columns.AggregateID},
			reqType:          {key: "type", column: t.Columns.Type},
		},
		payload: field{key: "payload", column: t.Columns.Payload},
	}
	for i := range m.req {
		f := &m.req[i]
		f.idx = find(f.column, "outbox.columns."+f.key)
	}
	if m.payload.idx = find(m.payload.column, "outbox.columns.payload"); m.payload.idx >= 0 {
		oid := cols[m.payload.idx].typeOID
		m.bytea = oid == oidBytea
		switch oid {
		case oidJSON, oidJSONB:
			m.contentType = ContentJSON
		case oidBytea:
			m.contentType = ContentBinary
		default:
			m.contentType = ContentText
		}
		m.unsupported = PayloadTypeProblem(m.payload.column, oid)
	}
	for _, h := range t.Headers {
		idx := find(h.Column, "outbox.headers."+h.Column)
		m.headers = append(m.headers, headerField{column: h.Column, header: h.Header, idx: idx, trace: strings.EqualFold(h.Header, HeaderTraceparent)})
	}
	if len(missing) > 0 {
		names := make([]string, len(cols))
		for i, c := range cols {
			names[i] = string(c.name)
		}
		m.misfit = fmt.Sprintf("%s, as the table was when this row was written (renamed or dropped? its columns were: %s)",
			strings.Join(missing, "; "), strings.Join(names, ", "))
	}
	return m
}

// relation parses a Relation message and replaces the cache entry, so a
// re-sent relation (after ALTER TABLE) takes effect for the rows after it.
func (d *Decoder) relation(r *reader) (Result, error) {
	relid := r.u32()
	ns := r.cstring()
	name := r.cstring()
	r.u8() // replica identity: irrelevant, the relay only reads inserts
	n := r.count16()
	cols := d.cols[:0]
	for i := 0; i < n && !r.bad; i++ {
		r.u8() // flags: key column or not
		c := relColumn{name: r.cstring(), typeOID: r.u32()}
		r.u32() // type modifier
		cols = append(cols, c)
	}
	d.cols = cols
	if err := r.done("relation"); err != nil {
		return Result{}, err
	}

	schema := "pg_catalog" // pgoutput sends an empty namespace for it
	if len(ns) > 0 {
		schema = string(ns)
	}
	rel := &relation{table: schema + "." + string(name), ncols: n}
	for i := range d.tables {
		t := &d.tables[i]
		if t.Schema != schema || t.Name != string(name) {
			continue
		}
		m := resolve(t, rel.table, cols)
		m.source = i
		rel.outbox = m
		break
	}
	d.rels[relid] = rel
	res := Result{Kind: KindRelation, Table: rel.table}
	if rel.outbox != nil {
		res.Misfit = rel.outbox.misfit
	}
	return res, nil
}

// lookup returns the cached relation for relid. pgoutput sends a Relation
// message before the first change of a relation in each session, so a miss
// means messages were lost or the decoder was reset mid-session.
func (d *Decoder) lookup(relid uint32, what string) (*relation, error) {
	rel, ok := d.rels[relid]
	if !ok {
		return nil, fmt.Errorf("%s for relation %d, which no Relation message described", what, relid)
	}
	return rel, nil
}
