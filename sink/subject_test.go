package sink_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/outboxrelay/outboxrelay/decode"
	"github.com/outboxrelay/outboxrelay/sink"
	"github.com/outboxrelay/outboxrelay/subject"
)

// The grammar and the escaping are tested in package subject; these tests
// cover what the sink adds: events as the values, and the stream.

func TestSubjectRendersEvent(t *testing.T) {
	s, err := sink.ParseSubject("svc.events.{partition}.{aggregate_type}.agg-{aggregate_id}.{type}")
	if err != nil {
		t.Fatal(err)
	}
	if s.Prefix != "svc.events" {
		t.Errorf("Prefix = %q, want svc.events", s.Prefix)
	}
	s.Partitions = 8
	ev := &decode.Event{ID: "e-1", AggregateType: "customer.account", AggregateID: "a b*", Type: "Opened>1"}
	want := fmt.Sprintf("svc.events.%d.customer%%2Eaccount.agg-a%%20b%%2A.Opened%%3E1", subject.Partition("a b*", 8))
	if got := string(s.Render([]byte("keep|"), ev)); got != "keep|"+want {
		t.Errorf("Render(\"keep|\", ev) = %q, want %q", got, "keep|"+want)
	}
}

func TestParseSubjectErrorNamesTemplate(t *testing.T) {
	_, err := sink.ParseSubject("outbox..{aggregate_id}")
	if err == nil || !strings.Contains(err.Error(), `subject template "outbox..{aggregate_id}": token 2 is empty`) {
		t.Errorf("ParseSubject error = %v, want it to name the template and the empty token", err)
	}
}

// The stream captures Prefix+".>", so every subject a template renders must
// fall under it, or each publish gets "no responders" and nothing is stored.
func TestParseSubjectPrefixCapturesRenderedSubjects(t *testing.T) {
	ev := &decode.Event{AggregateType: "Order", AggregateID: "42", Type: "Placed"}
	for _, tmpl := range []string{
		"outbox.{aggregate_type}.{aggregate_id}",
		"outbox.{aggregate_type}.agg-{aggregate_id}",
		"svc.events.{aggregate_id}",
		"outbox.events", // no placeholder at all
	} {
		s, err := sink.ParseSubject(tmpl)
		if err != nil {
			continue // refusing such a template is fine too
		}
		subj := string(s.Render(nil, ev))
		if !sink.Covers([]string{s.Prefix + ".>"}, subj) {
			t.Errorf("ParseSubject(%q): rendered subject %q is not captured by the stream subject %q", tmpl, subj, s.Prefix+".>")
		}
	}
}

func TestPartition(t *testing.T) {
	s, err := sink.ParseSubject("outbox.{partition}.{aggregate_type}.{aggregate_id}")
	if err != nil || !s.UsesPartition() {
		t.Fatalf("ParseSubject: %v, UsesPartition %v", err, s != nil && s.UsesPartition())
	}
	s.Partitions = 8
	ev := &decode.Event{AggregateType: "order", AggregateID: "a.b"}
	want := fmt.Sprintf("outbox.%d.order.a%%2Eb", subject.Partition("a.b", 8))
	if got := string(s.Render(nil, ev)); got != want {
		t.Errorf("Render = %q, want %q", got, want)
	}
	if _, err := sink.New(nil, sink.Config{Stream: "S", Subject: "outbox.{partition}.{aggregate_id}"}, newAcker()); err == nil ||
		!strings.Contains(err.Error(), "nats.partitions") {
		t.Errorf("New with {partition} and no partitions: err = %v, want it to name nats.partitions", err)
	}
}

func TestNewRejectsBadTemplate(t *testing.T) {
	_, err := sink.New(nil, sink.Config{Stream: "S", Subject: "{aggregate_id}"}, newAcker())
	if err == nil || !strings.Contains(err.Error(), "first token must be literal") {
		t.Errorf("New with template %q: err = %v, want the template error", "{aggregate_id}", err)
	}
}
