package decode

import (
	"encoding/hex"
	"errors"
	"fmt"
	"unsafe"
)

// fill turns the outbox row in d.vals into ev. A row that breaks a rule
// still becomes an event, with Invalid saying why: the caller's
// invalid_event policy decides, never the decoder.
func (d *Decoder) fill(ev *Event, rel *relation) {
	m := rel.outbox
	vals := d.vals
	*ev = Event{
		CommitLSN:  d.tx.lsn,
		TxSeq:      d.tx.events,
		CommitTime: d.tx.time,
		Xid:        d.tx.xid,
		Table:      rel.table,
		Source:     m.source,
		// The mapping's own problem first: it explains the empty fields.
		Invalid: m.misfit,
	}

	var req [numReq]string
	for i, f := range m.req {
		v := at(vals, f.idx)
		req[i] = str(v)
		switch {
		case v.kind != colText:
			checkKind(ev, v, f.key, f.column)
		case len(v.data) == 0:
			invalid(ev, "%s (column %q) is empty", f.key, f.column)
		}
	}
	ev.ID, ev.AggregateType, ev.AggregateID, ev.Type = req[reqID], req[reqAggregateType], req[reqAggregateID], req[reqType]

	if len(m.headers) > 0 {
		ev.Headers = make([]Header, 0, len(m.headers))
		for _, h := range m.headers {
			v := at(vals, h.idx)
			s := str(v)
			switch v.kind {
			case colNull: // omitted, as documented on Event.Headers
			case colText:
				if !h.trace {
					ev.Headers = append(ev.Headers, Header{Name: h.header, Value: s})
					break
				}
				parent, state, err := traceContext(s)
				if err != nil {
					invalid(ev, "header %s (column %q): %v", h.header, h.column, err)
					break
				}
				ev.Headers = append(ev.Headers, Header{Name: HeaderTraceparent, Value: parent})
				if state != "" {
					ev.Headers = append(ev.Headers, Header{Name: HeaderTracestate, Value: state})
				}
			default:
				checkKind(ev, v, "header "+h.header, h.column)
			}
		}
	}

	payload(ev, m, at(vals, m.payload.idx))
}

// payload sets ev.Payload. When the payload is invalid, Payload still holds
// the column's text as received, so a dead letter keeps the original data.
func payload(ev *Event, m *mapping, v value) {
	f := m.payload
	ev.ContentType = m.contentType
	switch {
	case v.kind == colNull:
		// An event without a body is legal: the type can say it all.
	case v.kind != colText:
		checkKind(ev, v, f.key, f.column)
	case m.unsupported != "":
		ev.Payload = v.data
		invalid(ev, "%s", m.unsupported)
	case m.bytea:
		b, err := unbytea(v.data)
		if err != nil {
			ev.Payload = v.data
			invalid(ev, "%s (column %q) is not valid bytea text: %v", f.key, f.column, err)
			return
		}
		ev.Payload = b
	default:
		ev.Payload = v.data
	}
}

// at is column idx of a row, or a value of kind colMissing when the
// relation lacks the column (idx -1).
func at(vals []value, idx int) value {
	if idx < 0 {
		return value{kind: colMissing}
	}
	return vals[idx]
}

// text is a value's text, or nothing when it has none.
func text(v value) []byte {
	if v.kind != colText {
		return nil
	}
	return v.data
}

// str is text(v) as a string that aliases the message, as the payload
// does: the message lives exactly as long as its event, so a copy would be
// an allocation per event for nothing.
func str(v value) string {
	b := text(v)
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// checkKind marks ev invalid unless v is a text value.
func checkKind(ev *Event, v value, key, column string) {
	switch v.kind {
	case colNull:
		invalid(ev, "%s (column %q) is NULL", key, column)
	case colUnchanged:
		// Only updates can leave a TOASTed value out, never inserts.
		invalid(ev, "%s (column %q) is an unchanged TOAST value, which an insert cannot carry", key, column)
	case colBinary:
		invalid(ev, "%s (column %q) arrived in binary format; the relay reads text format only", key, column)
	}
}

// invalid adds a reason to ev.Invalid, keeping every reason, so one dead
// letter tells the whole story.
func invalid(ev *Event, format string, args ...any) {
	reason := fmt.Sprintf(format, args...)
	if ev.Invalid != "" {
		reason = ev.Invalid + "; " + reason
	}
	ev.Invalid = reason
}

// unbytea decodes bytea's text form. Postgres writes hex ("\x0102") by
// default and the legacy escape format when bytea_output = escape; the two
// cannot be confused, because escape format doubles every backslash.
func unbytea(s []byte) ([]byte, error) {
	if len(s) >= 2 && s[0] == '\\' && s[1] == 'x' {
		h := s[2:]
		if len(h)%2 != 0 {
			return nil, errors.New("odd number of hex digits")
		}
		b := make([]byte, len(h)/2)
		if _, err := hex.Decode(b, h); err != nil {
			return nil, err
		}
		return b, nil
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c != '\\':
			b = append(b, c)
			i++
		case i+1 < len(s) && s[i+1] == '\\':
			b = append(b, '\\')
			i += 2
		case i+3 < len(s) && isOctal(s[i+1], '3') && isOctal(s[i+2], '7') && isOctal(s[i+3], '7'):
			b = append(b, (s[i+1]-'0')<<6|(s[i+2]-'0')<<3|(s[i+3]-'0'))
			i += 4
		default:
			return nil, fmt.Errorf("bad escape at byte %d", i)
		}
	}
	return b, nil
}

func isOctal(c, max byte) bool { return c >= '0' && c <= max }
