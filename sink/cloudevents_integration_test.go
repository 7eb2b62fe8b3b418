package sink_test

import (
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/decode"
	"github.com/outboxrelay/outboxrelay/internal/testenv"
	"github.com/outboxrelay/outboxrelay/sink"
)

// TestSinkCloudEventsHeaders checks the ce- header values of stored
// messages, as the CloudEvents NATS binding encodes them (percent-encoded:
// space, '"', '%' and every byte outside printable ASCII): each event's own
// source, type, subject, time and content type, also after an event with
// column headers and on a dead letter, where the sink's reused header map
// changes keys. TestSinkPublishesTheContract checks that native messages
// have no ce- header.
func TestSinkCloudEventsHeaders(t *testing.T) {
	sources := []string{"/postgres/app/public.outbox", "/postgres/app/sales.orders", "/postgres/app/pg_logical_emit_message/ev 1"}
	encodedSources := []string{"/postgres/app/public.outbox", "/postgres/app/sales.orders", "/postgres/app/pg_logical_emit_message/ev%201"}
	encodedSubjects := map[string]string{ // the aggregate ids of makeEvents
		"3f2c8a9e-1b7d-4c55-9a0e-7f4d2b9c1e08": "3f2c8a9e-1b7d-4c55-9a0e-7f4d2b9c1e08",
		"42":                                   "42",
		"a.b c":                                "a.b%20c",
		"Bär*>%":                               "B%C3%A4r*>%25",
		"tab\there":                            "tab%09here",
	}
	types := []struct{ typ, encoded string }{
		{"OrderPlaced", "OrderPlaced"},
		{`Order "placed" ä`, "Order%20%22placed%22%20%C3%A4"},
	}
	contentTypes := []struct{ typ, encoded string }{
		{decode.ContentJSON, "application/json"},
		{decode.ContentBinary, "application/octet-stream"},
		{decode.ContentText, "text/plain;%20charset=utf-8"},
	}
	for _, c := range []struct {
		name, dataContentType, encoded string // encoded: the configured one's header value
	}{
		{"from the payload column", "", ""},
		{"configured", "application/vnd.acme+json; version=2", "application/vnd.acme+json;%20version=2"},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := testenv.StartNATS(t)
			nc := connect(t, n.URL())
			const total, dead = 24, 7
			evs := makeEvents(1, total)
			for i, ev := range evs {
				ev.Source = i % len(sources)
				ev.Type = types[i%len(types)].typ
				ev.ContentType = contentTypes[i%len(contentTypes)].typ
			}
			evs[dead].Invalid = "aggregate_id is NULL"
			publishWithSink(t, nc, sink.Config{
				DeadLetterSubject: "outbox.dead_letter",
				CloudEvents:       &sink.CloudEvents{Sources: sources, DataContentType: c.dataContentType},
			}, evs, 30*time.Second)

			want := makeEvents(1, total)
			msgs := readStream(t, newJS(t, nc), testStream)
			if len(msgs) != total {
				t.Fatalf("stream holds %d messages, want %d", len(msgs), total)
			}
			for i, m := range msgs {
				ev := want[i]
				headers := map[string]string{
					"ce-specversion":     "1.0",
					"ce-id":              ev.ID,
					"ce-source":          encodedSources[i%len(sources)],
					"ce-type":            types[i%len(types)].encoded,
					"ce-subject":         encodedSubjects[ev.AggregateID],
					"ce-time":            ev.CommitTime.UTC().Format(time.RFC3339Nano),
					"ce-datacontenttype": contentTypes[i%len(contentTypes)].encoded,
				}
				if c.encoded != "" {
					headers["ce-datacontenttype"] = c.encoded
				}
				for k, v := range headers {
					// Exactly these names, lower case as the binding writes them.
					if got := m.Header[k]; len(got) != 1 || got[0] != v {
						t.Errorf("message %d (event %s): header %s = %q, want [%q]", i, ev.ID, k, got, v)
					}
				}
				// The relay's 9 headers, the 7 attributes, the event's column
				// headers, and a dead letter's 2: no header left over from an
				// earlier message.
				wantN := 9 + len(headers) + len(ev.Headers)
				if i == dead {
					wantN += 2
					if m.Subject != "outbox.dead_letter" {
						t.Errorf("message %d: subject %q, want the dead-letter subject", i, m.Subject)
					}
				}
				if len(m.Header) != wantN {
					t.Errorf("message %d (event %s): %d headers %v, want %d", i, ev.ID, len(m.Header), m.Header, wantN)
				}
			}
		})
	}
}
