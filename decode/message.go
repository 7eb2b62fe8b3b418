package decode

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"

	"github.com/jackc/pglogrepl"
)

// AcceptMessages makes logical decoding messages with this prefix events,
// as if they were rows of an outbox table: a service writes
//
//	SELECT pg_logical_emit_message(true, '<prefix>', '<json>')
//
// in its transaction, where the JSON object has the fields id,
// aggregate_type, aggregate_id, type, payload (any JSON value, published as
// its JSON text) and optionally headers (an object of strings). Messages
// with other prefixes stay KindMessage results. An empty prefix turns this
// off.
func (d *Decoder) AcceptMessages(prefix string) { d.msgPrefix = prefix }

// messageJSON is the content of an outbox message.
type messageJSON struct {
	ID            json.RawMessage   `json:"id"`
	AggregateType json.RawMessage   `json:"aggregate_type"`
	AggregateID   json.RawMessage   `json:"aggregate_id"`
	Type          json.RawMessage   `json:"type"`
	Payload       json.RawMessage   `json:"payload"`
	Headers       map[string]string `json:"headers"`
}

// messageEvent turns an outbox message into an event. Like a row, a
// message that breaks a rule still becomes an event, with Invalid saying
// why; its Payload is then the whole message content, so a dead letter
// keeps the original.
func (d *Decoder) messageEvent(transactional bool, lsn pglogrepl.LSN, content []byte) Result {
	ev := new(Event)
	res := Result{Kind: KindEvent, Event: ev}
	ev.Table = "pg_logical_emit_message(" + d.msgPrefix + ")"
	ev.Source = len(d.tables)
	if transactional {
		d.tx.events++
		ev.CommitLSN, ev.TxSeq, ev.CommitTime, ev.Xid = d.tx.lsn, d.tx.events, d.tx.time, d.tx.xid
	} else {
		// Written at once, even if its transaction rolls back: it has no
		// commit to tie it to, so it cannot be an event as is.
		res.Standalone = true
		res.CommitLSN, res.EndLSN = lsn, lsn+1
		ev.CommitLSN, ev.TxSeq = lsn, 1
		invalid(ev, "message with prefix %q was emitted with transactional=false, so it is sent even if its transaction rolls back; emit it with pg_logical_emit_message(true, ...)", d.msgPrefix)
	}

	var m messageJSON
	dec := json.NewDecoder(bytes.NewReader(content))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		ev.Payload = content
		invalid(ev, "message content is not an outbox JSON object (fields id, aggregate_type, aggregate_id, type, payload, headers): %s", jsonError(err))
		return res
	}
	if dec.More() {
		ev.Payload = content
		invalid(ev, "message content has data after its JSON object")
		return res
	}
	ev.ID = jsonText(ev, m.ID, "id")
	ev.AggregateType = jsonText(ev, m.AggregateType, "aggregate_type")
	ev.AggregateID = jsonText(ev, m.AggregateID, "aggregate_id")
	ev.Type = jsonText(ev, m.Type, "type")
	if p := bytes.TrimSpace(m.Payload); len(p) > 0 && !bytes.Equal(p, []byte("null")) {
		ev.Payload = p
	}
	ev.ContentType = ContentJSON
	if len(m.Headers) > 0 {
		names := make([]string, 0, len(m.Headers))
		for k := range m.Headers {
			names = append(names, k)
		}
		slices.Sort(names)
		for _, k := range names {
			if why := HeaderNameProblem(k); why != "" {
				invalid(ev, "header %q %s", k, why)
				continue
			}
			ev.Headers = append(ev.Headers, Header{Name: k, Value: m.Headers[k]})
		}
	}
	if ev.Invalid != "" && ev.Payload == nil {
		ev.Payload = content
	}
	return res
}

// jsonText returns a field that must be a non-empty string or a number, as
// text; anything else makes ev invalid.
func jsonText(ev *Event, raw json.RawMessage, key string) string {
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) == 0 || bytes.Equal(raw, []byte("null")):
		invalid(ev, "%s is missing", key)
		return ""
	case raw[0] == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			invalid(ev, "%s is not a valid JSON string", key)
			return ""
		}
		if s == "" {
			invalid(ev, "%s is empty", key)
		}
		return s
	case raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9'):
		return string(raw)
	}
	invalid(ev, "%s must be a string or a number, got %.40s", key, raw)
	return ""
}

// HeaderNameProblem says why name cannot be a header the relay sets from
// an outbox column or message, or "" when it can: config checks configured
// header names with it, and the decoder a message's headers. Status and
// Description are refused because nats.go takes a message with an empty
// payload and a Status header for a control message, not an event.
func HeaderNameProblem(name string) string {
	if name == "" {
		return "is empty"
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c > '~' || c == ':' {
			return "is not a valid header name: use printable ASCII without ':' or white space"
		}
	}
	for _, p := range []string{"nats-", "outbox-"} {
		if strings.HasPrefix(strings.ToLower(name), p) {
			return "is reserved: names starting with Nats- or Outbox- are set by NATS or the relay"
		}
	}
	if strings.EqualFold(name, "Status") || strings.EqualFold(name, "Description") {
		return "is reserved: NATS uses Status and Description for control messages, and a consumer would take an event with an empty payload for one; use another name"
	}
	return ""
}

// jsonError shortens encoding/json's errors to what a user can act on.
func jsonError(err error) string {
	return strings.TrimPrefix(err.Error(), "json: ")
}
