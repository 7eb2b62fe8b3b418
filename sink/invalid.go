package sink

import (
	"fmt"
	"strings"

	"github.com/outboxrelay/outboxrelay/decode"
)

// MaxSubjectLen is the longest subject the sink publishes: nats-server's
// default max_control_line (4096) less the rest of the HPUB line.
const MaxSubjectLen = 3900

// unrepresentable says why a header value of ev cannot travel in a NATS
// header unchanged (nats.go trims surrounding white space and turns CR/LF
// into spaces), or "" when all can.
func unrepresentable(ev *decode.Event) string {
	check := func(name, v string) string {
		if !representable(v) {
			return fmt.Sprintf("%s %q has surrounding white space or a line break, which a NATS header cannot carry unchanged", name, v)
		}
		return ""
	}
	for _, f := range [...]struct{ name, v string }{{"id", ev.ID}, {"type", ev.Type}, {"aggregate_type", ev.AggregateType}, {"aggregate_id", ev.AggregateID}} {
		if r := check(f.name, f.v); r != "" {
			return r
		}
	}
	for _, h := range ev.Headers {
		if r := check("header "+h.Name, h.Value); r != "" {
			return r
		}
	}
	return ""
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
