package sink

// This file tells a replay from a reused event id when JetStream answers a
// publish as a duplicate (docs/consuming.md, "Event ids").

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// storedEvent is the event id and position of a stored message.
type storedEvent struct {
	id  string
	pos Position
	ok  bool // the position headers could be read
}

// readStored reads the message at seq; nil when it is gone (consumed or
// purged).
func readStored(ctx context.Context, st jetstream.Stream, seq uint64) (*storedEvent, error) {
	qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	msg, err := st.GetMsg(qctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the message a duplicate PubAck named (sequence %d): %w", seq, err)
	}
	pos, perr := parsePosition(msg.Header.Get(HeaderCommitLSN), msg.Header.Get(HeaderTxSeq))
	return &storedEvent{id: msg.Header.Get(HeaderMsgID), pos: pos, ok: perr == nil}, nil
}

// reusedLocked handles a duplicate PubAck for the stored message at seq,
// after a resume settled everything the stream holds by position: the
// first queued event with that id is either the stored event itself (a
// replay the stream's last message could not settle, under WorkQueue or
// Interest retention: it is settled now), or another event that reuses the
// id. That one is an invalid event: it goes to the dead-letter subject, or
// the sink halts at it. Never is it acked in silence. s.mu must be held.
func (s *Sink) reusedLocked(seq uint64, dup *storedEvent) {
	if dup == nil {
		// The message is gone, so its position cannot be compared: trust
		// the duplicate window, as before the message could be read back.
		if s.head < len(s.queue) {
			s.log.Warn("a duplicate PubAck named a message that is gone; taking the oldest unsent event as stored", "seq", seq, "event_id", s.queue[s.head].ev.ID)
			s.popLocked(time.Now())
		}
		return
	}
	for i := s.head; i < len(s.queue); i++ {
		e := s.queue[i]
		if e.reused != "" && dup.id == reusedMsgID(e.ev.ID, formatLSN(e.ev.CommitLSN), strconv.FormatUint(uint64(e.ev.TxSeq), 10)) {
			// Its own dead letter, stored by an earlier send: settled, not
			// sent again and again.
			if i == s.head {
				s.popLocked(time.Now())
			}
			return
		}
		if e.ev.ID != dup.id {
			continue
		}
		if dup.ok && e.ev.CommitLSN == dup.pos.CommitLSN && e.ev.TxSeq == dup.pos.TxSeq {
			if i == s.head {
				s.popLocked(time.Now())
			}
			return
		}
		e.reused = reusedID(dup.id, seq, dup)
		if s.cfg.DeadLetterSubject != "" {
			e.ev.Invalid = e.reused
		}
		s.log.Warn("event id reused", "event_id", dup.id, "stream_seq", seq, "lsn", e.ev.CommitLSN.String(), "tx_seq", e.ev.TxSeq)
		return
	}
}

// reusedMsgID is the Nats-Msg-Id of the dead letter of an event that
// reused id: <id>@<commit LSN>#<tx seq>, its own, so that a resend of it is
// still deduplicated.
func reusedMsgID(id, lsn, txSeq string) string { return id + "@" + lsn + "#" + txSeq }

// reusedID is the reason an event whose id the stream already holds
// cannot be published as it is.
func reusedID(id string, seq uint64, dup *storedEvent) string {
	where := ""
	if dup.ok {
		where = fmt.Sprintf(" (the event at commit LSN %s, position %d)", dup.pos.CommitLSN, dup.pos.TxSeq)
	}
	return fmt.Sprintf("id %q was already used by stream sequence %d%s, within the stream's duplicate window, so JetStream would drop this event as a duplicate", id, seq, where)
}

// ReusedIDFix is the fix for an event whose id was used before.
const ReusedIDFix = "give every event a unique id (a UUID, or ids unique across all outbox tables: docs/consuming.md, \"Event ids\"). " +
	"The relay will not skip this event: set errors.invalid_event: dead_letter and restart to publish it to the dead-letter subject"
