package config

import (
	"mime"
	"net/url"
	"strings"
)

// cloudEvents checks nats.cloudevents for nats.format: cloudevents. The
// values go out as the CloudEvents attributes source (a URI reference) and
// datacontenttype (a media type): a consumer's SDK would refuse every event
// with a bad one, so the relay refuses the config instead.
func (v *validator) cloudEvents(ce CloudEvents) {
	if s := ce.Source; s != "" {
		_, err := url.Parse(s)
		if err != nil || strings.IndexFunc(s, notInURI) >= 0 {
			v.fail("nats.cloudevents.source", "must be a URI reference (RFC 3986), such as /orders or https://example.com/orders, with spaces and other characters outside URIs percent-encoded; got %q", s)
		}
	}
	if s := ce.DataContentType; s != "" {
		// ParseMediaType takes a lone token too ("json"), which is not one.
		if mt, _, err := mime.ParseMediaType(s); err != nil || !strings.Contains(mt, "/") {
			v.fail("nats.cloudevents.datacontenttype", "must be a media type (RFC 2046), type/subtype and parameters, such as application/json or text/plain; charset=utf-8; got %q", s)
		}
	}
}

// notInURI reports whether r may not appear in a URI as it is (RFC 3986,
// section 2): anything but printable ASCII, and the ASCII that no URI
// component allows.
func notInURI(r rune) bool {
	return r <= ' ' || r >= 0x7f || strings.ContainsRune("\"<>\\^`{|}", r)
}
