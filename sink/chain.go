package sink

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// send publishes one event chained on seq-1, asking for its PubAck on reply
// (on none when reply is "").
// It returns errMsgSize, sending nothing, when the message would be over
// maxMsgSize (the stream's max_msg_size; <= 0 for none). Only Run calls it.
func (s *Sink) send(e *inflight, reply string, maxMsgSize int) error {
	ev := e.ev
	m := &s.msg
	if ev.Invalid != "" {
		m.Subject = s.cfg.DeadLetterSubject
	} else {
		s.subjBuf = s.subjectOf(ev).Render(s.subjBuf[:0], ev)
		m.Subject = string(s.subjBuf)
	}
	m.Reply = reply
	m.Data = ev.Payload
	// The map keeps the base headers' keys from send to send, and each key's
	// value slice is hdrVals[i]: setting a value is a store, not a map write.
	// Only a message with other headers changes the keys, and the next send
	// puts them back.
	h := m.Header
	if s.hdrExtra {
		clear(h)
		for i, k := range baseHeaders {
			h[k] = s.hdrVals[i]
		}
		s.hdrExtra = false
	}
	v := &s.hdrVals
	v[0][0] = ev.ID                           // Nats-Msg-Id
	v[1][0] = strconv.FormatUint(e.seq-1, 10) // Nats-Expected-Last-Sequence
	v[2][0] = ev.ID                           // Outbox-Event-Id
	v[3][0] = ev.Type                         // Outbox-Event-Type
	v[4][0] = ev.AggregateType                // Outbox-Aggregate-Type
	v[5][0] = ev.AggregateID                  // Outbox-Aggregate-Id
	if ev.CommitLSN != s.txLSN || s.txLSNText == "" {
		// Every event of a transaction shares these two: format them once.
		s.txLSN = ev.CommitLSN
		s.txLSNText = formatLSN(ev.CommitLSN)
		s.txTimeText = ev.CommitTime.UTC().Format(time.RFC3339Nano)
	}
	v[6][0] = s.txLSNText                              // Outbox-Commit-LSN
	v[7][0] = strconv.FormatUint(uint64(ev.TxSeq), 10) // Outbox-Tx-Seq
	v[8][0] = s.txTimeText                             // Outbox-Commit-Time
	for _, x := range ev.Headers {
		h[x.Name] = []string{x.Value}
		s.hdrExtra = true
	}
	if ev.Invalid != "" {
		h[HeaderError] = []string{ev.Invalid}
		h[HeaderTable] = []string{ev.Table}
		s.hdrExtra = true
	}
	if maxMsgSize > 0 {
		// Refused by the stream, the message would stop the chain with an
		// error that does not say which event it was (see onAck).
		if n := headerLen(h) + len(m.Data); n > maxMsgSize {
			return errMsgSize{fmt.Sprintf("message of %d bytes (payload %d, headers %d) is over the stream's max_msg_size of %d bytes", n, len(m.Data), n-len(m.Data), maxMsgSize)}
		}
	}
	return s.nc.PublishMsg(m)
}

// headerLen is the length of h as nats.go sends it (NATS/1.0, "k: v" lines,
// a blank line), which is what a stream's max_msg_size counts with the data.
// The values are representable (see Publish), so nats.go sends them as they
// are.
func headerLen(h nats.Header) int {
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(": \r\n") + len(v)
		}
	}
	return n
}

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
// costs nats-server a subject-cache miss for every PubAck, about a tenth of
// its CPU per message (README, Performance). A PubAck names the stream
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
		s.breakLocked(ackErr)
		return
	}
	if ack.Duplicate {
		// Some send of this epoch was stored before, by an earlier run
		// (possible only when the position could not be read back, see
		// lastPosition). Events are stored in order, so the oldest on the
		// wire was stored before too, whichever send this PubAck is for.
		predicted := s.queue[s.head].seq
		s.popLocked(time.Now())
		s.breakLocked(fmt.Errorf("stream had already stored an event, at sequence %d (duplicate), relay predicted %d", ack.Seq, predicted))
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

// formatLSN is LSN.String without fmt: "%X/%X".
func formatLSN(lsn pglogrepl.LSN) string {
	var b [17]byte
	n := appendHex(b[:0], uint32(lsn>>32))
	n = append(n, '/')
	return string(appendHex(n, uint32(lsn)))
}

// appendHex appends v in upper-case hex without leading zeros.
func appendHex(b []byte, v uint32) []byte {
	started := false
	for shift := 28; shift >= 0; shift -= 4 {
		d := (v >> shift) & 0xf
		if d != 0 || started || shift == 0 {
			b = append(b, "0123456789ABCDEF"[d])
			started = true
		}
	}
	return b
}

// errCodeMsgSize is JetStream's "message size exceeds maximum allowed".
const errCodeMsgSize = 10054

type errMsgSize struct{ desc string }

func (e errMsgSize) Error() string { return e.desc }

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
	s.mu.Unlock()
	if st == nil {
		ectx, cancel := context.WithTimeout(ctx, 10*time.Second)
		var err error
		st, err = EnsureStream(ectx, s.js, s.cfg.Stream, s.subject.Prefix, s.streamSubjects()...)
		cancel()
		if err != nil {
			var cfgErr *StreamConfigError
			if errors.As(err, &cfgErr) {
				return s.setFatal(err)
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
		return s.setFatal(err)
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
	defer s.mu.Unlock()
	s.stream = st
	s.maxMsgSize = maxMsgSize
	if found && pos.Less(s.stored) {
		s.fatal = fmt.Errorf("stream %q lost events it had acknowledged: its last message is at %s but %s was stored before; was the stream purged or recreated? The relay stops rather than publish out of order; restore the stream, or delete it and the slot to start over", s.cfg.Stream, pos, s.stored)
		s.cond.Broadcast()
		return s.fatal
	}
	if lastSeq < s.seenSeq {
		// A purge keeps the last sequence; only a new stream starts again.
		s.fatal = fmt.Errorf("stream %q lost events it had acknowledged: its last sequence is %d but the relay saw sequence %d stored; was the stream deleted, recreated or restored from a backup? "+
			"The relay stops rather than carry on as if the stream had them: restore the stream, or restart the relay to carry on in this stream after the last event it stored (%s)", s.cfg.Stream, lastSeq, s.seenSeq, s.stored)
		s.cond.Broadcast()
		return s.fatal
	}
	s.seenSeq = lastSeq
	settled := 0
	if found {
		now := time.Now()
		for s.head < len(s.queue) && s.queue[s.head].ev.Before(pos.CommitLSN, pos.TxSeq) {
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
	s.nextSeq = lastSeq + 1
	s.sent = s.head
	s.broken = nil
	s.resumed = true
	s.resumes.Add(1)
	s.cond.Broadcast()
	s.log.Info("publish chain resumed", "last_seq", lastSeq, "position", pos.String(), "settled", settled, "to_send", len(s.queue)-s.head)
	return nil
}

func (s *Sink) setFatal(err error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fatal = err
	s.cond.Broadcast()
	return err
}

// StreamConfigError means the stream cannot be used as configured; retrying
// will not help.
type StreamConfigError struct{ Err error }

func (e *StreamConfigError) Error() string { return e.Err.Error() }
func (e *StreamConfigError) Unwrap() error { return e.Err }

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return append(bytes.Clone(b[:n]), "..."...)
	}
	return b
}
