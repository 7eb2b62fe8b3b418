package e2e_test

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/binding/spec"
	"github.com/nats-io/nats.go"
)

// TestCloudEvents: with nats.format: cloudevents each message carries the
// CloudEvents attributes as ce- headers, the binary mode of the CloudEvents
// NATS binding, and the CloudEvents Go SDK reads it as a valid event: id,
// source, type, subject (percent-encoded where the binding says), time,
// datacontenttype and data. The relay's own headers stay.
func TestCloudEvents(t *testing.T) {
	e := newEnv(t)
	writeFile(t, e.cfgPath, relayConfig{PGURL: e.pg.URL(), NATSURL: e.natsURL, NATS: "  format: cloudevents\n", HTTP: e.httpAddr}.yaml())
	e.startRelay()

	rows := []struct{ aggID, typ, payload string }{
		{"o-1", "OrderPlaced", `{"n": 1}`},
		{"ägg 1% \"q\"", "order.shipped", `{"n": 2, "note": "ü"}`},
		{"o-2", "Order Cancelled", `{"n": 3}`},
	}
	ids := make([]string, len(rows))
	for i, r := range rows {
		ids[i] = e.insertRow("order", r.aggID, r.typ, r.payload)
	}
	js := e.js()
	e.waitStreamCount(js, len(rows), time.Minute)
	for i, m := range readStream(t, js) {
		r := rows[i]
		ev, err := binding.ToEvent(context.Background(), ceMessage{h: m.Header, data: m.Data})
		if err != nil {
			t.Fatalf("message %d: the CloudEvents SDK cannot read it: %v\nheaders %v", i, err, m.Header)
		}
		if err := ev.Validate(); err != nil {
			t.Errorf("message %d: not a valid CloudEvent: %v", i, err)
		}
		commit, err := time.Parse(time.RFC3339Nano, m.Header.Get("Outbox-Commit-Time"))
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct{ attr, got, want string }{
			{"specversion", ev.SpecVersion(), "1.0"},
			{"id", ev.ID(), ids[i]},
			{"source", ev.Source(), "/postgres/postgres/public.outbox"},
			{"type", ev.Type(), r.typ},
			{"subject", ev.Subject(), r.aggID},
			{"datacontenttype", ev.DataContentType(), "application/json"},
		} {
			if c.got != c.want {
				t.Errorf("message %d: %s = %q, want %q", i, c.attr, c.got, c.want)
			}
		}
		if !ev.Time().Equal(commit) {
			t.Errorf("message %d: time = %s, want the commit time %s", i, ev.Time(), commit)
		}
		if !bytes.Equal(ev.Data(), m.Data) || !strings.Contains(string(ev.Data()), fmt.Sprintf(`"n": %d`, i+1)) {
			t.Errorf("message %d: data = %q, want the payload %q", i, ev.Data(), m.Data)
		}
		if m.Header.Get("Nats-Msg-Id") != ids[i] || m.Header.Get("Outbox-Aggregate-Id") != r.aggID {
			t.Errorf("message %d: the relay's own headers changed: %v", i, m.Header)
		}
	}
}

// ceMessage reads a NATS message in the binary content mode of the
// CloudEvents NATS binding for the SDK, as its NATS JetStream binding does
// (not served by the module proxy here): ce- headers, percent-decoded, are
// the attributes, and the body is the data.
type ceMessage struct {
	h    nats.Header
	data []byte
}

var ceSpecs = spec.WithPrefix("ce-")

func (c ceMessage) ReadEncoding() binding.Encoding { return binding.EncodingBinary }

func (c ceMessage) ReadStructured(context.Context, binding.StructuredWriter) error {
	return binding.ErrNotStructured
}

func (c ceMessage) ReadBinary(ctx context.Context, w binding.BinaryWriter) error {
	version := ceSpecs.Version(c.h.Get(ceSpecs.PrefixedSpecVersionName()))
	if version == nil {
		return binding.ErrUnknownEncoding
	}
	for name, values := range c.h {
		lower := strings.ToLower(name)
		if !strings.HasPrefix(lower, "ce-") || len(values) == 0 {
			continue
		}
		v, err := url.PathUnescape(values[0])
		if err != nil {
			return fmt.Errorf("header %s: %w", name, err)
		}
		if attr := version.Attribute(lower); attr != nil {
			err = w.SetAttribute(attr, v)
		} else {
			err = w.SetExtension(strings.TrimPrefix(lower, "ce-"), v)
		}
		if err != nil {
			return err
		}
	}
	return w.SetData(bytes.NewReader(c.data))
}

func (c ceMessage) GetAttribute(k spec.Kind) (spec.Attribute, interface{}) {
	version := ceSpecs.Version(c.h.Get(ceSpecs.PrefixedSpecVersionName()))
	if version == nil {
		return nil, nil
	}
	attr := version.AttributeFromKind(k)
	if attr == nil {
		return nil, nil
	}
	if v := c.h.Get(attr.PrefixedName()); v != "" {
		if d, err := url.PathUnescape(v); err == nil {
			return attr, d
		}
	}
	return attr, nil
}

func (c ceMessage) GetExtension(name string) interface{} {
	if v := c.h.Get("ce-" + name); v != "" {
		if d, err := url.PathUnescape(v); err == nil {
			return d
		}
	}
	return nil
}

func (c ceMessage) Finish(error) error { return nil }
