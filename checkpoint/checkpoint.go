// Package checkpoint keeps the relay's position bookkeeping: which transactions
// are in flight, and the watermark, the highest WAL position at or below which
// every outbox event is stored in JetStream. It is the only path by which acks
// reach the replication connection, so it is what enforces invariant I1.
package checkpoint

import (
	"fmt"
	"sync"

	"github.com/jackc/pglogrepl"
)

// Tracker follows transactions from Begin to Commit and their events from
// publish to ack. Callers announce work in WAL order (Begin, Add, Commit,
// Mark); acks may arrive from another goroutine in any order.
//
// The zero value is not usable; call New.
type Tracker struct {
	mu sync.Mutex
	// queue holds, in WAL order, every transaction and position mark that is
	// not yet below the watermark. It is a FIFO: the head is popped once it is
	// closed and fully acked.
	queue []entry
	head  int
	// lastCommit is the commit LSN of the newest transaction announced, so a
	// transaction that Postgres sends again after a reconnect is recognised.
	lastCommit pglogrepl.LSN
	watermark  pglogrepl.LSN
	inFlight   int
}

type entry struct {
	commit  pglogrepl.LSN // commit LSN; 0 for a position mark
	end     pglogrepl.LSN // what may be confirmed once done; 0 while the tx is open
	pending int           // events announced and not yet acked
}

func (e *entry) done() bool { return e.end != 0 && e.pending == 0 }

// New returns a Tracker whose watermark starts at start, the position the slot
// has already confirmed.
func New(start pglogrepl.LSN) *Tracker {
	return &Tracker{watermark: start}
}

// Begin announces a transaction that commits at commit. It reports false when
// the transaction was already announced in full before (Postgres replays
// from the confirmed position after a reconnect); the caller then skips it.
// A transaction that was announced but not committed (the connection broke
// in its middle) is resumed: Begin reports true and the open entry is kept.
// When the replay starts past it instead, it is closed.
func (t *Tracker) Begin(commit pglogrepl.LSN) (bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	open := t.tail()
	if open != nil && (open.commit == 0 || open.end != 0) {
		open = nil
	}
	if open != nil && open.commit == commit {
		return true, nil // cut by a reconnect: resume it
	}
	// A transaction at or below one already announced is a replay:
	// Postgres replays from the confirmed position, so transactions that
	// were complete but not yet acked come again, before any open one. The
	// watermark only proves commits strictly below it: WAL records are
	// contiguous, so the next commit record can start exactly where the
	// last confirmed one ended, and Postgres itself replays from there.
	if commit <= t.lastCommit || commit < t.watermark {
		return false, nil
	}
	if open != nil {
		// Within a session a transaction never begins while another is
		// open (the decoder refuses that first), so the open one was cut
		// by a reconnect, and the slot now starts past it: another relay
		// (a standby that took the slot while this one was cut off)
		// stored all of it, or the slot could not have been confirmed
		// past it (I1). Close it at its commit LSN, below its real end,
		// so confirming it replays nothing it holds; its events still
		// queued settle from the stream.
		open.end = open.commit
		t.advance()
	}
	t.lastCommit = commit
	t.queue = append(t.queue, entry{commit: commit})
	return true, nil
}

// Add announces one more event of the open transaction at commit. Every Add
// must be matched by exactly one Ack.
func (t *Tracker) Add(commit pglogrepl.LSN) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.open(commit)
	if e == nil {
		panic(fmt.Sprintf("checkpoint: Add for transaction %s that is not open", commit))
	}
	e.pending++
	t.inFlight++
}

// Commit closes the open transaction at commit. Once its events are acked,
// the watermark may move to end, the end of its commit record.
func (t *Tracker) Commit(commit, end pglogrepl.LSN) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.open(commit)
	if e == nil {
		return fmt.Errorf("checkpoint: commit of transaction %s that is not open", commit)
	}
	e.end = end
	t.advance()
	return nil
}

// Ack records that one event of the transaction at commit is stored.
func (t *Tracker) Ack(commit pglogrepl.LSN) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.find(commit)
	if e == nil || e.pending == 0 {
		panic(fmt.Sprintf("checkpoint: ack for transaction %s with nothing pending", commit))
	}
	e.pending--
	t.inFlight--
	t.advance()
}

// Mark records that everything Postgres will ever send below lsn has been
// announced. Postgres sends this position in keepalives; with it the watermark
// moves while the outbox is idle, so the slot does not hold WAL (I5). It never
// moves the watermark past a transaction that is still in flight.
func (t *Tracker) Mark(lsn pglogrepl.LSN) {
	t.mu.Lock()
	defer t.mu.Unlock()
	tail := t.tail()
	switch {
	case tail == nil:
		t.watermark = max(t.watermark, lsn)
		return
	case tail.commit != 0 && tail.end == 0:
		// Keepalives can come in the middle of a transaction's changes; their
		// position is below its commit, so they add nothing.
		return
	case tail.commit == 0:
		tail.end = max(tail.end, lsn)
	default:
		t.queue = append(t.queue, entry{end: lsn})
	}
	t.advance()
}

// Watermark returns the position that is safe to confirm to Postgres: every
// event of every transaction that committed below it is stored.
func (t *Tracker) Watermark() pglogrepl.LSN {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.watermark
}

// InFlight returns the number of events announced and not yet acked.
func (t *Tracker) InFlight() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.inFlight
}

func (t *Tracker) tail() *entry {
	if len(t.queue) == t.head {
		return nil
	}
	return &t.queue[len(t.queue)-1]
}

// find returns the entry of the transaction at commit. Acks nearly always
// concern the oldest entry (PubAcks come in publish order), so scan from the head.
func (t *Tracker) find(commit pglogrepl.LSN) *entry {
	for i := t.head; i < len(t.queue); i++ {
		if t.queue[i].commit == commit {
			return &t.queue[i]
		}
	}
	return nil
}

// open returns the open transaction at commit, which is always the tail.
func (t *Tracker) open(commit pglogrepl.LSN) *entry {
	if e := t.tail(); e != nil && e.commit == commit && e.commit != 0 && e.end == 0 {
		return e
	}
	return nil
}

func (t *Tracker) advance() {
	for t.head < len(t.queue) && t.queue[t.head].done() {
		t.watermark = max(t.watermark, t.queue[t.head].end)
		t.queue[t.head] = entry{}
		t.head++
	}
	// Reuse the backing array once it is drained, or compact when the dead
	// prefix dominates, so memory stays proportional to what is in flight.
	if t.head == len(t.queue) {
		t.queue, t.head = t.queue[:0], 0
	} else if t.head > 1024 && t.head > len(t.queue)/2 {
		n := copy(t.queue, t.queue[t.head:])
		t.queue, t.head = t.queue[:n], 0
	}
}
