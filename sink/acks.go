package sink

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

type pubAck struct {
	Stream    string `json:"stream"`
	Seq       uint64 `json:"seq"`
	Duplicate bool   `json:"duplicate"`
	Error     *struct {
		Code        int    `json:"code"`
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
}

// onAck handles a PubAck, or a publish error, for a send of the epoch named
// in the reply subject.
//
// All sends of an epoch share one reply subject: a unique subject per send
// costs nats-server a subject-cache miss for every PubAck
// (docs/performance.md, "Where the time goes"). A PubAck names the stream
// sequence it stored, which identifies the send, since each send of an epoch
// was chained to take its own sequence; it settles every earlier send too,
// including those that did not ask for a PubAck (see sendQueued). An error
// names nothing, and needs nothing: any error breaks the chain, and the
// resume reads from the stream what was stored.
func (s *Sink) onAck(m *nats.Msg) {
	epoch, err := strconv.ParseUint(strings.TrimPrefix(m.Subject, s.inbox), 10, 64)
	if err != nil {
		return
	}
	var ack pubAck
	var ackErr error
	switch {
	case len(m.Data) == 0 && m.Header.Get("Status") == "503":
		ackErr = errors.New("no responders: the stream has no leader right now, or JetStream is not available")
	case parseAck(m.Data, s.cfg.Stream, &ack):
	case json.Unmarshal(m.Data, &ack) != nil:
		ackErr = fmt.Errorf("unreadable PubAck %q", truncate(m.Data, 200))
	case ack.Error != nil && ack.Error.ErrCode == errCodeMsgSize:
		// send checks max_msg_size, so the stream's must have been lowered
		// since the resume read it; the next resume reads it again.
		ackErr = fmt.Errorf("stream said: %s (err_code %d); its max_msg_size changed, reading it again", ack.Error.Description, ack.Error.ErrCode)
	case ack.Error != nil:
		ackErr = fmt.Errorf("stream said: %s (err_code %d)", ack.Error.Description, ack.Error.ErrCode)
	case ack.Stream != s.cfg.Stream:
		ackErr = fmt.Errorf("PubAck from stream %q, want %q: another stream also captures the subject", ack.Stream, s.cfg.Stream)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if epoch != s.epoch || s.head == s.sent {
		return // for a send before the last resume, or already settled
	}
	if ackErr != nil {
		if s.probing && ack.Error != nil && ack.Error.ErrCode == errCodeWrongLastSeq && !s.staleProbe {
			// The probe found the stream moved on since the resume read
			// it: expected once when a standby takes over, so not a
			// warning. A second in a row is (another writer?).
			s.staleProbe = true
			s.breakWithLocked(ackErr, slog.LevelInfo, "the stream moved on since this relay last read it (another relay stored events meanwhile, as before a standby takes over); reading it again")
			return
		}
		s.breakLocked(ackErr)
		return
	}
	if ack.Duplicate {
		// JetStream dropped a send whose id it had stored within its
		// duplicate window, at ack.Seq: a replay of that very event, or
		// another event with the same id. The resume reads the message at
		// ack.Seq to tell which (reusedID), without the lock.
		s.dupSeq = ack.Seq
		s.breakLocked(fmt.Errorf("stream had already stored an event with the same id, at sequence %d (duplicate), relay predicted %d to %d", ack.Seq, s.queue[s.head].seq, s.queue[s.sent-1].seq))
		return
	}
	// Sends on the wire took consecutive sequences, so ack.Seq names one.
	head, last := s.queue[s.head].seq, s.queue[s.sent-1].seq
	i := s.head + int(ack.Seq-head)
	if ack.Seq < head || ack.Seq > last || s.queue[i].seq != ack.Seq {
		s.breakLocked(fmt.Errorf("stream stored sequence %d, relay predicted %d to %d", ack.Seq, head, last))
		return
	}
	// The chain guarantees that a message stored at seq follows everything
	// sent before it, so every earlier send is stored too.
	now := time.Now()
	for n := i - s.head + 1; n > 0; n-- {
		s.popLocked(now) // may compact the queue: count, do not compare indexes
	}
	s.seenSeq = ack.Seq
	if s.probing {
		// The epoch's first send is stored where it was predicted: the
		// rest may follow it (see sendQueued).
		s.probing, s.staleProbe = false, false
		s.signal()
	}
}

// parseAck reads the common PubAck forms, {"stream":"S","seq":N} and
// {"stream":"S","seq":N,"duplicate":true}, for stream without reflection.
// It returns false for anything else, which json.Unmarshal then reads.
func parseAck(data []byte, stream string, ack *pubAck) bool {
	const pre, mid = `{"stream":"`, `","seq":`
	if len(data) < len(pre)+len(stream)+len(mid)+2 || string(data[:len(pre)]) != pre {
		return false
	}
	rest := data[len(pre):]
	if string(rest[:len(stream)]) != stream || string(rest[len(stream):len(stream)+len(mid)]) != mid {
		return false
	}
	rest = rest[len(stream)+len(mid):]
	var seq uint64
	i := 0
	for ; i < len(rest) && rest[i] >= '0' && rest[i] <= '9' && i < 19; i++ {
		seq = seq*10 + uint64(rest[i]-'0')
	}
	if i == 0 {
		return false
	}
	dup := false
	switch string(rest[i:]) {
	case "}":
	case `,"duplicate":true}`:
		dup = true
	default:
		return false
	}
	*ack = pubAck{Stream: stream, Seq: seq, Duplicate: dup}
	return true
}

// errCodeMsgSize is JetStream's "message size exceeds maximum allowed".
const errCodeMsgSize = 10054

// errCodeWrongLastSeq is JetStream's "wrong last sequence": the send's
// Nats-Expected-Last-Sequence is not the stream's last.
const errCodeWrongLastSeq = 10071

// popLocked settles the oldest event as stored, as of now. s.mu must be
// held.
func (s *Sink) popLocked(now time.Time) {
	e := s.queue[s.head]
	s.queue[s.head] = nil
	s.head++
	s.queuedBytes -= e.size
	s.stored = Position{e.ev.CommitLSN, e.ev.TxSeq}
	s.published.Add(1)
	if e.ev.Invalid != "" {
		s.deadLettered.Add(1)
	}
	if s.cfg.ObserveLatency != nil {
		s.cfg.ObserveLatency(now.Sub(e.ev.CommitTime))
	}
	s.acker.Ack(e.ev.CommitLSN)
	if s.head == len(s.queue) {
		s.queue, s.head, s.sent = s.queue[:0], 0, 0
	} else if s.head > 1024 && s.head > len(s.queue)/2 {
		n := copy(s.queue, s.queue[s.head:])
		clear(s.queue[n:])
		s.queue, s.sent, s.head = s.queue[:n], s.sent-s.head, 0
	}
	s.cond.Broadcast()
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return append(bytes.Clone(b[:n]), "..."...)
	}
	return b
}
