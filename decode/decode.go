// Package decode turns pgoutput messages (logical replication protocol
// version 1, text format) into outbox events. It is pure: the caller feeds
// the XLogData payloads in stream order and gets one Result per message, with
// no I/O and no goroutines. It keeps the relation cache and the current
// transaction's position, and it parses the wire format itself so that
// payloads can alias the caller's buffer.
package decode

import (
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
)

// Kind says what a decoded message was.
type Kind uint8

const (
	// KindNone is a message with nothing for the relay: an origin, a type,
	// or a change to a relation that is not an outbox table.
	KindNone Kind = iota
	// KindBegin starts a transaction.
	KindBegin
	// KindEvent is an insert into an outbox table.
	KindEvent
	// KindCommit ends a transaction.
	KindCommit
	// KindRelation describes a relation's columns (sent before its first
	// change in a session, and again after its schema changes).
	KindRelation
	// KindChange is an update, delete or truncate of an outbox table. The
	// relay ignores them (deleting rows after inserting them is the
	// recommended cleanup), but an update may deserve a warning.
	KindChange
	// KindMessage is a logical decoding message (pg_logical_emit_message).
	KindMessage
)

var kindNames = [...]string{"none", "begin", "event", "commit", "relation", "change", "message"}

// String returns the kind in lower case, for logs.
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", k)
}

// Result is what one message decoded to. Which fields are set depends on
// Kind.
type Result struct {
	Kind Kind

	// CommitLSN is the transaction's commit LSN (Begin and Commit).
	CommitLSN pglogrepl.LSN
	// EndLSN is the end of the commit record (Commit): the position to
	// confirm to Postgres once the transaction's events are stored.
	EndLSN pglogrepl.LSN
	// CommitTime is the commit timestamp (Begin and Commit).
	CommitTime time.Time
	// Xid is the transaction id (Begin and Commit).
	Xid uint32
	// Events is the number of KindEvent results of the transaction
	// (Commit), so a caller can tell an outbox-free transaction at once.
	Events uint32
	// Standalone marks a KindEvent that belongs to no transaction: a
	// non-transactional message. It is always Invalid. The caller treats
	// it as a transaction of its own, committed at Event.CommitLSN and
	// ending at EndLSN.
	Standalone bool

	// Event is the outbox row (KindEvent), nil for the other kinds. Each
	// is a new allocation the caller may keep.
	Event *Event

	// Table is "schema.name" of the relation concerned (KindRelation,
	// KindChange, and KindNone for changes to other relations).
	Table string
	// Misfit, for a KindRelation of an outbox table, says which configured
	// columns the relation lacks; until a later Relation message fits the
	// configuration again, every insert into it is an invalid event with
	// this reason, and its KindEvent carries Misfit too. Empty when the
	// relation fits.
	Misfit string
	// Change is "update", "delete" or "truncate" (KindChange).
	Change string

	// Message is the logical decoding message (KindMessage).
	Message Message
}

// Message is a logical decoding message emitted with
// pg_logical_emit_message.
type Message struct {
	// Transactional messages are delivered inside their transaction, the
	// others as soon as they are written.
	Transactional bool
	LSN           pglogrepl.LSN
	Prefix        string
	// Content aliases the decoded buffer.
	Content []byte
}

// Decoder decodes one replication session's messages, in order. It is not
// safe for concurrent use.
type Decoder struct {
	tables []Table
	// msgPrefix, when set, turns logical decoding messages with this
	// prefix into events (see AcceptMessages).
	msgPrefix string
	rels      map[uint32]*relation
	tx        txState

	// Scratch space reused across messages, so decoding an insert does
	// not allocate for its columns.
	vals []value
	cols []relColumn
}

type txState struct {
	open   bool
	lsn    pglogrepl.LSN
	time   time.Time
	xid    uint32
	events uint32
}

// NewDecoder returns a decoder for the given outbox tables. Empty fields of
// a Table take the documented defaults (schema public, Debezium column
// names).
func NewDecoder(tables ...Table) *Decoder {
	d := &Decoder{rels: make(map[uint32]*relation)}
	for _, t := range tables {
		d.tables = append(d.tables, t.normalize())
	}
	return d
}

// Reset forgets the relation cache and any open transaction. Call it when a
// new replication session starts: Postgres then re-sends Begin and Relation
// messages, and a transaction cut off by the disconnect is replayed whole.
func (d *Decoder) Reset() {
	clear(d.rels)
	d.tx = txState{}
}

// Decode decodes one pgoutput message: the payload of one XLogData. The
// returned Event's Payload and string fields, and Message's Content, may
// alias msg, so the caller must not modify msg while it uses them.
//
// An error means the stream cannot be followed (a malformed message, a
// message out of protocol order, or an outbox table that does not match the
// configuration); the caller should stop rather than skip the message.
func (d *Decoder) Decode(msg []byte) (Result, error) {
	if len(msg) == 0 {
		return Result{}, fmt.Errorf("%w: empty message", ErrMalformed)
	}
	r := reader{b: msg, off: 1}
	switch msg[0] {
	case 'B':
		return d.begin(&r)
	case 'I':
		return d.insert(&r)
	case 'C':
		return d.commit(&r)
	case 'R':
		return d.relation(&r)
	case 'U':
		return d.update(&r)
	case 'D':
		return d.delete(&r)
	case 'T':
		return d.truncate(&r)
	case 'M':
		return d.message(&r)
	case 'O':
		r.u64()     // origin LSN
		r.cstring() // origin name
		return Result{}, r.done("origin")
	case 'Y':
		r.u32()     // type OID
		r.cstring() // namespace
		r.cstring() // name
		return Result{}, r.done("type")
	default:
		// Streaming and two-phase messages exist only in later protocol
		// versions; skipping them would drop rows.
		return Result{}, fmt.Errorf("%w: unknown message type %q (0x%02x); the relay speaks pgoutput protocol version 1",
			ErrMalformed, msg[0], msg[0])
	}
}

// pgEpochMicros is 2000-01-01T00:00:00Z, the Postgres epoch, in Unix
// microseconds.
const pgEpochMicros = 946_684_800 * 1_000_000

func pgTime(us uint64) time.Time {
	return time.UnixMicro(pgEpochMicros + int64(us)).UTC()
}

func (d *Decoder) begin(r *reader) (Result, error) {
	lsn := pglogrepl.LSN(r.u64())
	ts := pgTime(r.u64())
	xid := r.u32()
	if err := r.done("begin"); err != nil {
		return Result{}, err
	}
	if d.tx.open {
		return Result{}, fmt.Errorf("begin of transaction %d at %s while transaction %d at %s is open; "+
			"call Reset when a replication session restarts", xid, lsn, d.tx.xid, d.tx.lsn)
	}
	d.tx = txState{open: true, lsn: lsn, time: ts, xid: xid}
	return Result{Kind: KindBegin, CommitLSN: lsn, CommitTime: ts, Xid: xid}, nil
}

func (d *Decoder) commit(r *reader) (Result, error) {
	r.u8() // flags: unused in protocol version 1
	lsn := pglogrepl.LSN(r.u64())
	end := pglogrepl.LSN(r.u64())
	ts := pgTime(r.u64())
	if err := r.done("commit"); err != nil {
		return Result{}, err
	}
	if !d.tx.open {
		return Result{}, fmt.Errorf("commit at %s without a begin", lsn)
	}
	// Events carry the Begin's LSN as their position; if the Commit
	// disagreed, resuming from the stream would skip or repeat rows.
	if lsn != d.tx.lsn {
		return Result{}, fmt.Errorf("commit LSN %s of transaction %d differs from its begin's %s", lsn, d.tx.xid, d.tx.lsn)
	}
	res := Result{Kind: KindCommit, CommitLSN: lsn, EndLSN: end, CommitTime: ts, Xid: d.tx.xid, Events: d.tx.events}
	d.tx = txState{}
	return res, nil
}

// inTx checks that a data change arrives inside a transaction, as pgoutput
// always sends them.
func (d *Decoder) inTx(what string, rel *relation) error {
	if !d.tx.open {
		return fmt.Errorf("%s of %s outside a transaction", what, rel.table)
	}
	return nil
}

func (d *Decoder) insert(r *reader) (Result, error) {
	relid := r.u32()
	if r.u8() != 'N' {
		r.fail()
	}
	// Only outbox rows are kept; other tuples are still checked, so a
	// corrupt stream is noticed wherever it is corrupt.
	rel := d.rels[relid]
	if rel != nil && rel.outbox != nil {
		d.vals = r.tuple(d.vals)
	} else {
		r.skipTuple()
	}
	if err := r.done("insert"); err != nil {
		return Result{}, err
	}
	rel, err := d.lookup(relid, "insert")
	if err != nil {
		return Result{}, err
	}
	if err := d.inTx("insert", rel); err != nil {
		return Result{}, err
	}
	if rel.outbox == nil {
		return Result{Kind: KindNone, Table: rel.table}, nil
	}
	if len(d.vals) != rel.ncols {
		return Result{}, fmt.Errorf("insert into %s has %d columns, its Relation message said %d",
			rel.table, len(d.vals), rel.ncols)
	}
	d.tx.events++
	ev := new(Event)
	d.fill(ev, rel)
	return Result{Kind: KindEvent, Table: rel.table, Misfit: rel.outbox.misfit, Event: ev}, nil
}

func (d *Decoder) update(r *reader) (Result, error) {
	relid := r.u32()
	kind := r.u8()
	if kind == 'K' || kind == 'O' { // old key or old row, then the new row
		r.skipTuple()
		kind = r.u8()
	}
	if kind != 'N' {
		r.fail()
	}
	r.skipTuple()
	return d.change(r, relid, "update")
}

func (d *Decoder) delete(r *reader) (Result, error) {
	relid := r.u32()
	if kind := r.u8(); kind != 'K' && kind != 'O' {
		r.fail()
	}
	r.skipTuple()
	return d.change(r, relid, "delete")
}

func (d *Decoder) change(r *reader, relid uint32, what string) (Result, error) {
	if err := r.done(what); err != nil {
		return Result{}, err
	}
	rel, err := d.lookup(relid, what)
	if err != nil {
		return Result{}, err
	}
	if err := d.inTx(what, rel); err != nil {
		return Result{}, err
	}
	if rel.outbox == nil {
		return Result{Kind: KindNone, Table: rel.table}, nil
	}
	return Result{Kind: KindChange, Table: rel.table, Change: what}, nil
}

func (d *Decoder) truncate(r *reader) (Result, error) {
	n := r.count32()
	r.u8() // options: CASCADE, RESTART IDENTITY
	first := r.off
	for i := 0; i < n && !r.bad; i++ {
		r.u32()
	}
	if err := r.done("truncate"); err != nil {
		return Result{}, err
	}
	// One statement can truncate several tables; report the outbox if it
	// is among them, else the first.
	res := Result{Kind: KindNone}
	ids := reader{b: r.b, off: first}
	for i := 0; i < n; i++ {
		rel, err := d.lookup(ids.u32(), "truncate")
		if err != nil {
			return Result{}, err
		}
		if err := d.inTx("truncate", rel); err != nil {
			return Result{}, err
		}
		switch {
		case rel.outbox != nil && res.Kind == KindNone:
			res = Result{Kind: KindChange, Table: rel.table, Change: "truncate"}
		case res.Table == "":
			res.Table = rel.table
		}
	}
	return res, nil
}

func (d *Decoder) message(r *reader) (Result, error) {
	flags := r.u8()
	lsn := pglogrepl.LSN(r.u64())
	prefix := r.cstring()
	content := r.bytes(r.count32())
	if err := r.done("logical decoding"); err != nil {
		return Result{}, err
	}
	transactional := flags&1 != 0
	if transactional && !d.tx.open {
		return Result{}, fmt.Errorf("transactional message %q at %s outside a transaction", prefix, lsn)
	}
	if d.msgPrefix != "" && string(prefix) == d.msgPrefix {
		return d.messageEvent(transactional, lsn, content), nil
	}
	m := Message{Transactional: transactional, LSN: lsn, Prefix: string(prefix), Content: content}
	return Result{Kind: KindMessage, Message: m}, nil
}
