package sink

import (
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/outboxrelay/outboxrelay/decode"
)

// InvalidEventError stops the relay at an event that cannot be published.
type InvalidEventError struct {
	Event  *decode.Event
	Reason string
	Fix    string
}

func (e *InvalidEventError) Error() string {
	return fmt.Sprintf("event %q (table %s, commit LSN %s, position %d in its transaction) cannot be published: %s; fix: %s",
		e.Event.ID, e.Event.Table, e.Event.CommitLSN, e.Event.TxSeq, e.Reason, e.Fix)
}

// InvalidEventFix is the fix for an event that cannot be published as it is
// while errors.invalid_event is halt.
const InvalidEventFix = "the relay will not skip it. Either set errors.invalid_event: dead_letter and restart, " +
	"to publish it to the dead-letter subject; or skip its whole transaction with " +
	"SELECT pg_replication_slot_advance('<slot>', '<the commit LSN + 1>') while the relay is stopped (its other events are lost)"

// MisfitFix is the fix for an event written while its outbox table lacked a
// configured column. Renaming the column back does not help that event: the
// WAL describes the table as it was when the row was written.
const MisfitFix = "the relay will not skip it, and renaming the column back does not change the rows written meanwhile " +
	"(the WAL keeps the table as it was). Set errors.invalid_event: dead_letter and restart: those rows go to the " +
	"dead-letter subject with this reason and the fields still readable, and the rows written once the table fits " +
	"the configuration again are published as usual. If the new name is to stay, also map the outbox.columns key to it"

// MaxSubjectLen is the longest subject the sink publishes: nats-server's
// default max_control_line (4096) less the rest of the HPUB line.
const MaxSubjectLen = 3900

// whyInvalid says why ev cannot be published as it is, or "" when it can.
func (s *Sink) whyInvalid(ev *decode.Event) string {
	if why := unrepresentable(ev); why != "" {
		return why
	}
	if 3*(len(ev.AggregateType)+len(ev.AggregateID)+len(ev.Type))+256 > MaxSubjectLen {
		// Rare: render to measure. A longer subject would make nats-server
		// drop the connection ("maximum control line exceeded").
		if n := len(s.subjectOf(ev).Render(nil, ev)); n > MaxSubjectLen {
			return fmt.Sprintf("its subject is %d bytes long after escaping, over the %d bytes a NATS subject may have "+
				"(nats-server's max_control_line is 4096): shorten the aggregate id or type, or use a template with fewer of them", n, MaxSubjectLen)
		}
	}
	return ""
}

// oversize says why the send of ev that failed with err was too big, and the
// fix, or returns "" when err is not about size. The server's limit is read
// only then: it takes the connection's lock.
func (s *Sink) oversize(err error, ev *decode.Event) (reason, fix string) {
	if err == nil {
		return "", "" // before tooBig, which errors.As moves to the heap
	}
	var tooBig errMsgSize
	switch {
	case errors.As(err, &tooBig):
		return tooBig.desc, "raise the stream's max_msg_size, make the payload smaller, or set errors.invalid_event: dead_letter"
	case errors.Is(err, nats.ErrMaxPayload):
		return fmt.Sprintf("payload of %d bytes with its headers is over the server's max_payload of %d bytes", len(ev.Payload), s.nc.MaxPayload()),
			"raise max_payload in the nats-server configuration, make the payload smaller, or set errors.invalid_event: dead_letter"
	}
	return "", ""
}

// unrepresentable says why a header value of ev cannot travel in a NATS
// header unchanged (nats.go trims surrounding white space and turns CR/LF
// into spaces), or "" when all can.
func unrepresentable(ev *decode.Event) string {
	// The common case, every value fine, is one pass over each value and
	// nothing else; the name of the one that is not is worked out after.
	ok := representable(ev.ID) && representable(ev.Type) && representable(ev.AggregateType) && representable(ev.AggregateID)
	for i := 0; ok && i < len(ev.Headers); i++ {
		ok = representable(ev.Headers[i].Value)
	}
	if ok {
		return ""
	}
	for _, f := range [...]struct{ name, v string }{{"id", ev.ID}, {"type", ev.Type}, {"aggregate_type", ev.AggregateType}, {"aggregate_id", ev.AggregateID}} {
		if !representable(f.v) {
			return whitespace(f.name, f.v)
		}
	}
	for _, h := range ev.Headers {
		if !representable(h.Value) {
			return whitespace("header "+h.Name, h.Value)
		}
	}
	return ""
}

func whitespace(name, v string) string {
	return fmt.Sprintf("%s %q has surrounding white space or a line break, which a NATS header cannot carry unchanged", name, v)
}

// representable reports whether v has no CR or LF and no white space around
// it (as strings.TrimSpace sees it). It runs for every header value of every
// event, so the common case is one pass over the bytes: a value that begins
// and ends with a printable ASCII byte other than a space has no white space
// around it, Unicode or not.
func representable(v string) bool {
	if v == "" {
		return true
	}
	first, last := v[0], v[len(v)-1]
	if first <= ' ' || first >= 0x7f || last <= ' ' || last >= 0x7f {
		if strings.TrimSpace(v) != v {
			return false
		}
	}
	return strings.IndexByte(v, '\r') < 0 && strings.IndexByte(v, '\n') < 0
}
