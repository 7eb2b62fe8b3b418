package sink

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// resume re-establishes the chain: it reads the stream's last message,
// settles every queued event at or before its position as stored, and
// makes the rest wait to be sent again, chained on the stream's last
// sequence. It works whatever the duplicate window is.
func (s *Sink) resume(ctx context.Context) error {
	if !s.nc.IsConnected() {
		return fmt.Errorf("not connected to NATS (%s)", s.nc.Status())
	}
	s.mu.Lock()
	st := s.stream
	// From here on PubAcks of earlier sends are ignored: the stream's last
	// message, read below, settles them instead. Were they still counted,
	// one could settle an event the read does not show yet, and a stale read
	// would look like a stream that lost acknowledged events.
	s.epoch++
	s.reply = s.inbox + strconv.FormatUint(s.epoch, 10)
	s.sent = s.head
	s.unasked = -1 // the epoch's first send asks for its PubAck
	s.probing = false
	s.mu.Unlock()
	if st == nil {
		ectx, cancel := context.WithTimeout(ctx, 10*time.Second)
		var err error
		st, err = EnsureStream(ectx, s.js, s.cfg.Stream, s.subject.Prefix, s.streamSubjects()...)
		cancel()
		if err != nil {
			var cfgErr *StreamConfigError
			if errors.As(err, &cfgErr) {
				return s.setHalt(err)
			}
			return err
		}
	}
	// While a clustered stream elects a leader its API does not answer at
	// all: ask briefly, and let Run retry with backoff, rather than wait.
	qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	lastSeq, pos, found, maxMsgSize, err := lastPosition(qctx, st)
	cancel()
	if errors.Is(err, ErrSharedStream) {
		return s.setHalt(err)
	}
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		// Deleted while the relay ran. The next resume creates it again, and
		// then finds that it lost what it had stored, if it had any.
		s.mu.Lock()
		s.stream = nil
		s.mu.Unlock()
		return fmt.Errorf("stream %q is gone (deleted?); creating it again: %w", s.cfg.Stream, err)
	}
	if err != nil {
		return err
	}

	s.mu.Lock()
	dupSeq := s.dupSeq
	s.dupSeq = 0
	s.mu.Unlock()
	var dup *storedEvent
	if dupSeq != 0 {
		if dup, err = readStored(ctx, st, dupSeq); err != nil {
			s.mu.Lock()
			s.dupSeq = dupSeq // look again at the next resume
			s.mu.Unlock()
			return err
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.stream = st
	s.maxMsgSize = maxMsgSize
	if found && pos.Less(s.stored) {
		return s.haltLocked(fmt.Errorf("stream %q lost events it had acknowledged: its last message is at %s but %s was stored before; was the stream purged or recreated? The relay stops rather than publish out of order; restore the stream, or delete it and the slot to start over", s.cfg.Stream, pos, s.stored))
	}
	if lastSeq < s.seenSeq {
		// A purge keeps the last sequence; only a new stream starts again.
		return s.haltLocked(fmt.Errorf("stream %q lost events it had acknowledged: its last sequence is %d but the relay saw sequence %d stored; was the stream deleted, recreated or restored from a backup? "+
			"The relay stops rather than carry on as if the stream had them: restore the stream, or restart the relay to carry on in this stream after the last event it stored (%s)", s.cfg.Stream, lastSeq, s.seenSeq, s.stored))
	}
	s.seenSeq = lastSeq
	settled := 0
	if found {
		now := time.Now()
		for s.head < len(s.queue) && s.queue[s.head].ev.AtOrBefore(pos.CommitLSN, pos.TxSeq) {
			s.popLocked(now)
			settled++
		}
		if s.last.Less(pos) {
			s.last = pos
		}
		if s.stored.Less(pos) {
			s.stored = pos
		}
	} else if lastSeq > 0 {
		s.log.Warn("the stream's last message is gone (WorkQueue or Interest retention, or a purge); exactly-once now relies on the stream's duplicate window", "last_seq", lastSeq)
	}
	if dupSeq != 0 {
		s.reusedLocked(dupSeq, dup)
	}
	s.nextSeq = lastSeq + 1
	s.sent = s.head
	s.broken = nil
	s.resumed = true
	s.resumes.Add(1)
	s.cond.Broadcast()
	s.log.Info("publish chain resumed", "last_seq", lastSeq, "position", pos.String(), "settled", settled, "to_send", len(s.queue)-s.head)
	return nil
}
