package decode

import (
	"time"

	"github.com/jackc/pglogrepl"
)

// Event is one committed outbox row, decoded and ready to publish.
//
// Its position in the log is (CommitLSN, TxSeq): transactions are totally
// ordered by CommitLSN, events within one by TxSeq. The sink relies on that
// order to resume exactly once.
type Event struct {
	ID            string
	AggregateType string
	AggregateID   string
	Type          string
	// Payload is the payload column's bytes: json/jsonb as their text, text as
	// is, bytea raw. It may alias the WAL buffer it was decoded from.
	Payload []byte
	// ContentType is the payload's media type, from the payload column's
	// type: application/json (json, jsonb, and message events),
	// application/octet-stream (bytea), text/plain; charset=utf-8 (text
	// types). It is a constant string: setting it costs nothing per event.
	ContentType string
	// Headers are the configured extra columns, in configuration order.
	// A NULL column is omitted.
	Headers []Header

	CommitLSN  pglogrepl.LSN // LSN of the transaction's commit record
	TxSeq      uint32        // 1-based index among the outbox events of the transaction
	CommitTime time.Time
	Xid        uint32
	// Table is "schema.table" the row came from, or
	// "pg_logical_emit_message(<prefix>)" for a message event.
	Table string
	// Source is the index of the row's table in NewDecoder's list; message
	// events have the index after the last table.
	Source int

	// Invalid, when not empty, says why the event cannot be published as is
	// (for example "aggregate_id is NULL"). The caller applies the
	// errors.invalid_event policy; the decoder never drops a row.
	Invalid string
}

// Media types of payloads (Event.ContentType).
const (
	ContentJSON   = "application/json"
	ContentBinary = "application/octet-stream"
	ContentText   = "text/plain; charset=utf-8"
)

// Header is one extra message header taken from an outbox column.
type Header struct {
	Name  string
	Value string
}

// AtOrBefore reports whether e sits at or before the position (lsn, seq).
func (e *Event) AtOrBefore(lsn pglogrepl.LSN, seq uint32) bool {
	return e.CommitLSN < lsn || (e.CommitLSN == lsn && e.TxSeq <= seq)
}
