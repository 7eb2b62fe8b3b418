package sink

import (
	"errors"
	"fmt"
	"strconv"
	"time"
	"unsafe"

	"github.com/jackc/pglogrepl"
	"github.com/nats-io/nats.go"
)

// AskEvery is how many sends in a row, at most, go without asking for a
// PubAck in a window of that many events (or bytes): a sixteenth of it.
func AskEvery(window int) int { return window / 16 }

// baseHeaders are the headers of every message, in hdrVals order.
var baseHeaders = [...]string{HeaderMsgID, HeaderExpectedSeq, HeaderEventID, HeaderEventType,
	HeaderAggregateType, HeaderAggregateID, HeaderCommitLSN, HeaderTxSeq, HeaderCommitTime}

// The places in baseHeaders of the two headers whose values are numbers.
const (
	hdrExpectedSeq = 1
	hdrTxSeq       = 7
)

// sendQueued sends every enqueued event not yet sent, each chained on the
// sequence predicted for the one before it.
//
// Only some sends ask for a PubAck: the first of an epoch, the last of each
// burst (nothing else queued), and one in every AskEvery(Window) events or
// AskEvery(WindowBytes) bytes. The chain makes the others' PubAcks redundant. A
// send is stored only right after the sequence it was chained on, so one
// stored at its predicted sequence proves every sequence before it filled;
// the relay is the stream's only writer and every epoch (and every relay on
// the slot) predicts the same event for the same sequence, so each holds
// the event predicted for it. A send that is refused makes every later one
// fail too ("wrong last sequence"), so the next send that asks says so. The
// last send on the wire always asks, so every send is settled, or breaks
// the chain. Fewer PubAcks cost nats-server and the relay less per event
// (docs/performance.md, "PubAcks for some sends").
//
// The epoch's first send goes alone, and the rest wait for its PubAck: it
// proves the prediction the chain starts from. "A refused send makes every
// later one fail" holds only while the prediction is at or ahead of the
// stream. A prediction behind it, from a resume that read the stream before
// another relay stored more (a standby that waited while the active relay
// published), would have sends refused until their predicted sequences
// caught up with the stream's, and the next ones stored after events they
// do not follow; the resume would then settle the refused ones as stored.
// The probe costs one round trip per resume.
func (s *Sink) sendQueued() {
	for {
		// Take every queued event at once: one lock and one clock read for
		// a burst, not for each event.
		s.mu.Lock()
		if s.broken != nil || s.halt != nil || s.sent == len(s.queue) || s.probing {
			s.mu.Unlock()
			return
		}
		now := time.Now()
		batch := append(s.batch[:0], s.queue[s.sent:]...)
		if s.unasked < 0 {
			batch = batch[:1]
			s.probing = true
		}
		for _, e := range batch {
			e.seq, e.sent = s.nextSeq, now
			s.nextSeq++
		}
		s.sent += len(batch)
		reply, maxMsgSize := s.reply, s.maxMsgSize
		s.mu.Unlock()
		s.batch = batch
		for i, e := range batch {
			if !s.sendOne(e, i == len(batch)-1, reply, maxMsgSize) {
				clear(batch)
				return
			}
		}
		clear(batch) // let acked events go
	}
}

// sendOne sends e, the last of its burst or not, and reports whether the
// burst may go on.
func (s *Sink) sendOne(e *inflight, last bool, reply string, maxMsgSize int) bool {
	first := s.unasked < 0
	if e.reused != "" && s.cfg.DeadLetterSubject == "" {
		s.haltAt(e, first, &InvalidEventError{Event: e.ev, Reason: e.reused, Fix: ReusedIDFix})
		return false
	}
	s.unasked++
	s.unaskedBytes += e.size
	if first || last || s.unasked >= AskEvery(s.cfg.Window) || s.unaskedBytes >= AskEvery(s.cfg.WindowBytes) {
		s.unasked, s.unaskedBytes = 0, 0
	} else {
		reply = ""
	}
	err := s.send(e, reply, maxMsgSize)
	if reason, fix := s.oversize(err, e.ev); reason != "" {
		if s.cfg.DeadLetterSubject == "" {
			s.haltAt(e, first, &InvalidEventError{Event: e.ev, Reason: reason, Fix: fix})
			return false
		}
		// Dead-letter it without its data, in the same place in the chain.
		e.ev.Invalid, e.ev.Payload = reason, nil
		var tooBig errMsgSize
		if err = s.send(e, reply, maxMsgSize); errors.As(err, &tooBig) {
			s.haltAt(e, first, &InvalidEventError{Event: e.ev, Reason: reason + "; without its payload, for the dead-letter subject, it is still too big: " + tooBig.desc, Fix: fix})
			return false
		}
	}
	if err != nil {
		s.mu.Lock()
		s.breakLocked(fmt.Errorf("publish: %w", err))
		s.mu.Unlock()
		return false
	}
	return true
}

// haltAt halts the sink at e, which cannot be sent. Sends before it
// in the epoch may not have asked for their PubAcks, so unless e is the
// epoch's first, it breaks the chain instead: the resume settles them from
// the stream, and e, first of the next epoch, halts the sink then.
func (s *Sink) haltAt(e *inflight, first bool, err error) {
	if first {
		s.setHalt(err)
		return
	}
	s.mu.Lock()
	s.breakLocked(fmt.Errorf("event at stream sequence %d cannot be sent; settling the sends before it: %w", e.seq, err))
	s.mu.Unlock()
}

// send publishes one event chained on seq-1, asking for its PubAck on reply
// (on none when reply is "").
// It returns errMsgSize, sending nothing, when the message would be over
// maxMsgSize (the stream's max_msg_size; <= 0 for none). Only Run calls it.
func (s *Sink) send(e *inflight, reply string, maxMsgSize int) error {
	ev := e.ev
	v := &s.hdrVals
	v[0][0] = ev.ID            // Nats-Msg-Id
	v[2][0] = ev.ID            // Outbox-Event-Id
	v[3][0] = ev.Type          // Outbox-Event-Type
	v[4][0] = ev.AggregateType // Outbox-Aggregate-Type
	v[5][0] = ev.AggregateID   // Outbox-Aggregate-Id
	if ev.CommitLSN != s.txLSN || s.txLSNText == "" {
		// Every event of a transaction shares these two: format them once.
		s.txLSN = ev.CommitLSN
		s.txLSNText = formatLSN(ev.CommitLSN)
		s.txTimeText = ev.CommitTime.UTC().Format(time.RFC3339Nano)
	}
	v[6][0] = s.txLSNText  // Outbox-Commit-LSN
	v[8][0] = s.txTimeText // Outbox-Commit-Time
	if rawHeaders && s.cfg.CloudEvents == nil && len(ev.Headers) == 0 && ev.Invalid == "" && e.reused == "" {
		// Only the base headers, the common case: write the block once in
		// wire form (rawheaders.go), the two numbers as digits, and the
		// subject without making a string of it.
		s.hdrBuf = appendHeaders(s.hdrBuf[:0], v, e.seq-1, ev.TxSeq)
		if maxMsgSize > 0 && len(s.hdrBuf)+len(ev.Payload) > maxMsgSize {
			return tooBig(len(s.hdrBuf), len(ev.Payload), maxMsgSize)
		}
		s.subjBuf = s.subjectOf(ev).Render(s.subjBuf[:0], ev)
		// natsPublish copies the subject into nats.go's buffer before it
		// returns (read in linkedNATS), so the string may alias subjBuf.
		subj := unsafe.String(unsafe.SliceData(s.subjBuf), len(s.subjBuf))
		return natsPublish(s.nc, subj, reply, reply != "", s.hdrBuf, ev.Payload)
	}
	// Any other message goes through nats.go's map. The map keeps the base
	// headers' keys from send to send, and each key's value slice is
	// hdrVals[i]: setting a value is a store, not a map write. Only a
	// message with other headers changes the keys, and the next send
	// through the map puts them back.
	m := &s.msg
	if ev.Invalid != "" {
		m.Subject = s.cfg.DeadLetterSubject
	} else {
		s.subjBuf = s.subjectOf(ev).Render(s.subjBuf[:0], ev)
		m.Subject = string(s.subjBuf)
	}
	m.Reply = reply
	m.Data = ev.Payload
	h := m.Header
	if s.hdrExtra {
		clear(h)
		for i, k := range baseHeaders {
			h[k] = s.hdrVals[i]
		}
		if s.cfg.CloudEvents != nil {
			for i, k := range ceHeaders {
				h[k] = s.ceVals[i]
			}
		}
		s.hdrExtra = false
	}
	v[hdrExpectedSeq][0] = strconv.FormatUint(e.seq-1, 10)
	v[hdrTxSeq][0] = strconv.FormatUint(uint64(ev.TxSeq), 10)
	if s.cfg.CloudEvents != nil {
		s.setCloudEvents(ev, s.txTimeText)
	}
	for _, x := range ev.Headers {
		h[x.Name] = []string{x.Value}
		s.hdrExtra = true
	}
	if ev.Invalid != "" {
		h[HeaderError] = []string{ev.Invalid}
		h[HeaderTable] = []string{ev.Table}
		s.hdrExtra = true
	}
	if e.reused != "" {
		// Under the event's id JetStream would drop the dead letter too;
		// under one of its own, a resend of it is still deduplicated.
		h[HeaderMsgID] = []string{reusedMsgID(ev.ID, s.txLSNText, v[hdrTxSeq][0])}
		s.hdrExtra = true
	}
	if maxMsgSize > 0 {
		if n := headerLen(h); n+len(m.Data) > maxMsgSize {
			return tooBig(n, len(m.Data), maxMsgSize)
		}
	}
	return s.nc.PublishMsg(m)
}

// tooBig is the errMsgSize of a message whose headers and data are over
// the stream's max_msg_size. Refused by the stream, the message would stop
// the chain with an error that does not say which event it was (see onAck),
// so the sink checks before it sends.
func tooBig(hdrLen, dataLen, maxMsgSize int) error {
	return errMsgSize{fmt.Sprintf("message of %d bytes (payload %d, headers %d) is over the stream's max_msg_size of %d bytes",
		hdrLen+dataLen, dataLen, hdrLen, maxMsgSize)}
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

type errMsgSize struct{ desc string }

func (e errMsgSize) Error() string { return e.desc }

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
