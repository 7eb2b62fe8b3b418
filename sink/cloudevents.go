package sink

// This file adds the CloudEvents attributes, in the binary content mode of
// the CloudEvents NATS protocol binding, to every message when nats.format
// is cloudevents (docs/consuming.md, "CloudEvents").

import (
	"github.com/outboxrelay/outboxrelay/decode"
)

// CloudEvents configures the ce- headers.
type CloudEvents struct {
	// Sources are the ce-source values, indexed by Event.Source.
	Sources []string
	// DataContentType overrides each event's payload media type
	// (decode.Event.ContentType) when set.
	DataContentType string
}

// ceHeaders are the CloudEvents attributes' headers, in ceVals order.
var ceHeaders = [...]string{"ce-specversion", "ce-id", "ce-source", "ce-type", "ce-subject", "ce-time", "ce-datacontenttype"}

// setCloudEvents sets the ce- header values of ev; time is its commit time
// as RFC 3339, which needs no encoding.
func (s *Sink) setCloudEvents(ev *decode.Event, time string) {
	ce := s.cfg.CloudEvents
	v := &s.ceVals
	v[0][0] = "1.0"
	v[1][0] = ceEncode(ev.ID)
	if ev.Source < len(s.ceSources) {
		v[2][0] = s.ceSources[ev.Source]
	} else {
		v[2][0] = ""
	}
	v[3][0] = ceEncode(ev.Type)
	v[4][0] = ceEncode(ev.AggregateID)
	v[5][0] = time
	switch {
	case ce.DataContentType != "":
		v[6][0] = s.ceContentType
	case ev.ContentType == decode.ContentText:
		v[6][0] = ceContentText
	default:
		v[6][0] = ev.ContentType // no byte to encode
	}
}

// ceContentText is decode.ContentText, encoded.
var ceContentText = ceEncode(decode.ContentText)

// ceEncode encodes an attribute value as the binding says (section
// 3.1.3.2 of the HTTP binding, which the NATS binding follows): every byte
// of its UTF-8 outside printable ASCII, and space, '"' and '%', as %XX.
// Values that need none are returned as they are, without allocating.
func ceEncode(s string) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if ceEscape(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if ceEscape(c) {
			b = append(b, '%', hex[c>>4], hex[c&15])
		} else {
			b = append(b, c)
		}
	}
	return string(b)
}

func ceEscape(c byte) bool { return c <= ' ' || c > '~' || c == '"' || c == '%' }
