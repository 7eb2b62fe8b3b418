package sink_test

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxrelay/outboxrelay/decode"
	"github.com/outboxrelay/outboxrelay/internal/testenv"
	"github.com/outboxrelay/outboxrelay/sink"
)

// TestSinkMaxPayload publishes an event over the server's max_payload.
func TestSinkMaxPayload(t *testing.T) {
	n := testenv.StartNATS(t, testenv.NATSOptions{Config: "max_payload: 4096\n"})
	big := func(evs []*decode.Event) []*decode.Event {
		evs[3].Payload = bytes.Repeat([]byte("x"), 8<<10)
		return evs
	}

	t.Run("halts without a dead-letter subject", func(t *testing.T) {
		nc := connect(t, n.URL())
		if got := nc.MaxPayload(); got != 4096 {
			t.Fatalf("server max_payload = %d, want 4096", got)
		}
		a := newAcker()
		s := startSink(t, nc, sink.Config{Stream: "HALT", Subject: "halt.{aggregate_type}.{aggregate_id}"}, a)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		evs := big(makeEvents(1, 4))
		for _, ev := range evs {
			if err := s.Publish(ctx, ev); err != nil {
				t.Fatalf("Publish(%s): %v", ev.ID, err)
			}
		}
		err := waitStopped(t, s, "the sink to stop", 10*time.Second)
		var inv *sink.InvalidEventError
		if !errors.As(err, &inv) {
			t.Fatalf("Halted() = %v, want an *InvalidEventError", err)
		}
		if inv.Event.ID != "ev-00004" {
			t.Errorf("InvalidEventError.Event.ID = %q, want ev-00004", inv.Event.ID)
		}
		for _, want := range []string{`"ev-00004"`, "max_payload", "public.outbox", lsnString(inv.Event.CommitLSN), "dead_letter"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("Halted() = %q, want it to contain %s", err, want)
			}
		}
		if perr := s.Publish(ctx, makeEvents(5, 5)[0]); !errors.As(perr, &inv) {
			t.Errorf("Publish after the stop = %v, want the *InvalidEventError", perr)
		}
		if ok, _ := s.Healthy(); ok {
			t.Error("Healthy() = true after the sink stopped")
		}
		// The events before it are stored and acked; nothing after it is.
		testenv.WaitFor(t, 10*time.Second, "acks of the first 3 events", func() (bool, error) {
			return a.Total() >= 3, nil
		})
		checkExactlyOnceInOrder(t, readStream(t, newJS(t, nc), "HALT"), makeEvents(1, 3))
		a.check(t, makeEvents(1, 3))
	})

	t.Run("dead-letters with a dead-letter subject", func(t *testing.T) {
		nc := connect(t, n.URL())
		a := newAcker()
		s := startSink(t, nc, sink.Config{
			Stream:            "DL",
			Subject:           "dl.{aggregate_type}.{aggregate_id}",
			DeadLetterSubject: "dl.dead_letter",
		}, a)
		publishAll(t, s, big(makeEvents(1, 6)), 15*time.Second)

		want := makeEvents(1, 6)
		msgs := readStream(t, newJS(t, nc), "DL")
		checkExactlyOnceInOrder(t, msgs, want)
		a.check(t, want)
		if len(msgs) != 6 {
			t.FailNow()
		}
		for i, m := range msgs {
			if i == 3 {
				continue
			}
			if wantSubj := "dl" + strings.TrimPrefix(subjectOf(want[i]), "outbox"); m.Subject != wantSubj {
				t.Errorf("sequence %d: subject %q, want %q", m.Seq, m.Subject, wantSubj)
			}
		}
		dl := msgs[3]
		if dl.Subject != "dl.dead_letter" {
			t.Errorf("dead letter subject = %q, want dl.dead_letter", dl.Subject)
		}
		if len(dl.Data) != 0 {
			t.Errorf("dead letter carries %d bytes of data, want none (it is over max_payload)", len(dl.Data))
		}
		if got := dl.Header.Get("Outbox-Error"); !strings.Contains(got, "max_payload") || !strings.Contains(got, "8192") {
			t.Errorf("Outbox-Error = %q, want the reason (payload of 8192 bytes over max_payload)", got)
		}
		ev := want[3]
		for k, v := range map[string]string{
			"Outbox-Table":          "public.outbox",
			"Nats-Msg-Id":           ev.ID,
			"Outbox-Event-Id":       ev.ID,
			"Outbox-Event-Type":     ev.Type,
			"Outbox-Aggregate-Type": ev.AggregateType,
			"Outbox-Aggregate-Id":   ev.AggregateID,
			"Outbox-Commit-LSN":     lsnString(ev.CommitLSN),
			"Outbox-Tx-Seq":         strconv.Itoa(int(ev.TxSeq)),
			"Trace-Context":         ev.Headers[0].Value,
		} {
			if got := dl.Header.Get(k); got != v {
				t.Errorf("dead letter header %s = %q, want %q", k, got, v)
			}
		}
		if st := s.Stats(); st.Published != 6 || st.DeadLettered != 1 {
			t.Errorf("Stats() = %+v, want 6 published of which 1 dead-lettered", st)
		}
	})
}

// An event the decoder marked invalid goes to the dead-letter subject with
// its original data and the reason, in its place in the order.
func TestSinkDeadLettersInvalidEvent(t *testing.T) {
	n := testenv.StartNATS(t)
	nc := connect(t, n.URL())
	a := newAcker()
	s := startSink(t, nc, sink.Config{DeadLetterSubject: "outbox.dead_letter"}, a)
	evs := makeEvents(1, 5)
	evs[2].AggregateID, evs[2].Invalid = "", "aggregate_id is NULL"
	publishAll(t, s, evs, 15*time.Second)

	want := makeEvents(1, 5)
	msgs := readStream(t, newJS(t, nc), testStream)
	checkExactlyOnceInOrder(t, msgs, want)
	a.check(t, want)
	if len(msgs) != 5 {
		t.FailNow()
	}
	dl := msgs[2]
	if dl.Subject != "outbox.dead_letter" {
		t.Errorf("dead letter subject = %q, want outbox.dead_letter", dl.Subject)
	}
	if !bytes.Equal(dl.Data, want[2].Payload) {
		t.Errorf("dead letter data = %q, want the original payload %q", dl.Data, want[2].Payload)
	}
	if got := dl.Header.Get("Outbox-Error"); got != "aggregate_id is NULL" {
		t.Errorf("Outbox-Error = %q, want %q", got, "aggregate_id is NULL")
	}
	if got := dl.Header.Get("Outbox-Table"); got != "public.outbox" {
		t.Errorf("Outbox-Table = %q, want public.outbox", got)
	}
	if got := dl.Header.Get("Outbox-Event-Id"); got != want[2].ID {
		t.Errorf("Outbox-Event-Id = %q, want %q", got, want[2].ID)
	}
	for i, m := range msgs {
		for _, k := range []string{"Outbox-Error", "Outbox-Table"} {
			if v := m.Header.Values(k); i != 2 && v != nil {
				t.Errorf("message %d, not a dead letter, has header %s = %q", i, k, v)
			}
		}
	}
	if st := s.Stats(); st.DeadLettered != 1 {
		t.Errorf("Stats().DeadLettered = %d, want 1", st.DeadLettered)
	}
}

// Config.DeadLetterSubject: "when empty, such an event halts the sink".
func TestSinkHaltsOnInvalidEventWithoutDeadLetterSubject(t *testing.T) {
	n := testenv.StartNATS(t)
	nc := connect(t, n.URL())
	a := newAcker()
	s := startSink(t, nc, sink.Config{}, a)
	evs := makeEvents(1, 3)
	evs[1].Invalid = "aggregate_id is NULL"
	publishAll(t, s, evs[:1], 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Publish refuses the invalid event; the caller halts there and hands
	// over nothing after it.
	err := s.Publish(ctx, evs[1])
	var inv *sink.InvalidEventError
	if !errors.As(err, &inv) || inv.Event.ID != "ev-00002" {
		t.Fatalf("Publish(ev-00002) = %v, want an *InvalidEventError for ev-00002", err)
	}
	if !strings.Contains(err.Error(), "aggregate_id is NULL") {
		t.Errorf("Publish error %q, want it to give the reason", err)
	}
	if err := s.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	checkExactlyOnceInOrder(t, readStream(t, newJS(t, nc), testStream), makeEvents(1, 1))
	a.check(t, makeEvents(1, 1))
}

// I3 with the stream's own size limit: an event over the existing stream's
// max_msg_size cannot be stored. It must stop the sink at that event with an
// error that names it, or be dead-lettered; not retry forever.
func TestSinkStreamMaxMsgSize(t *testing.T) {
	n := testenv.StartNATS(t)
	nc := connect(t, n.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := newJS(t, nc).CreateStream(ctx, jetstream.StreamConfig{
		Name: testStream, Subjects: []string{"outbox.>"}, MaxMsgSize: 2048,
	}); err != nil {
		t.Fatal(err)
	}
	a := newAcker()
	s := startSink(t, nc, sink.Config{}, a)
	evs := makeEvents(1, 3)
	evs[1].Payload = bytes.Repeat([]byte("y"), 4096)
	for _, ev := range evs {
		if err := s.Publish(ctx, ev); err != nil {
			t.Fatalf("Publish(%s): %v", ev.ID, err)
		}
	}
	err := waitStopped(t, s, "the sink to stop at the oversized event", 5*time.Second)
	var inv *sink.InvalidEventError
	if !errors.As(err, &inv) || inv.Event.ID != "ev-00002" {
		t.Errorf("Halted() = %v, want an *InvalidEventError for ev-00002", err)
	}
}

// With a dead-letter subject, an event over the stream's max_msg_size goes
// there without its payload, in its place in the order, and the events
// after it follow: the size check before sending must not stop the chain.
func TestSinkDeadLettersOverStreamMaxMsgSize(t *testing.T) {
	n := testenv.StartNATS(t)
	nc := connect(t, n.URL())
	js := newJS(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: testStream, Subjects: []string{"outbox.>"}, MaxMsgSize: 2048,
	}); err != nil {
		t.Fatal(err)
	}
	a := newAcker()
	s := startSink(t, nc, sink.Config{DeadLetterSubject: "outbox.dead_letter"}, a)
	evs := makeEvents(1, 4)
	evs[1].Payload = bytes.Repeat([]byte("y"), 4096)
	publishAll(t, s, evs, 15*time.Second)

	msgs := readStream(t, js, testStream)
	a.check(t, makeEvents(1, 4))
	if len(msgs) != 4 {
		t.Fatalf("stream holds %d messages, want 4", len(msgs))
	}
	for i, m := range msgs {
		if got := m.Header.Get("Outbox-Event-Id"); got != evs[i].ID {
			t.Errorf("sequence %d holds %s, want %s", m.Seq, got, evs[i].ID)
		}
	}
	dl := msgs[1]
	if dl.Subject != "outbox.dead_letter" || len(dl.Data) != 0 || !strings.Contains(dl.Header.Get("Outbox-Error"), "max_msg_size of 2048 bytes") {
		t.Errorf("dead letter: subject %q, %d bytes of data, Outbox-Error %q; want outbox.dead_letter, none, and the max_msg_size named",
			dl.Subject, len(dl.Data), dl.Header.Get("Outbox-Error"))
	}
	if got := s.Stats().Resumes; got != 1 {
		t.Errorf("Stats().Resumes = %d, want 1: the oversized event must not break the chain", got)
	}
}

// Outbox-Aggregate-Id is the aggregate id unescaped (DESIGN.md, "Messages"),
// and Nats-Msg-Id the event id. NATS headers cannot carry CR or LF, and
// nats.go trims white space around values, so a value with those cannot be
// sent as it is. It must then not be sent silently altered: the event is
// invalid (it halts the sink, as no dead-letter subject is set).
func TestSinkHeaderValuesAreNotAltered(t *testing.T) {
	n := testenv.StartNATS(t)
	nc := connect(t, n.URL())
	a := newAcker()
	s := startSink(t, nc, sink.Config{}, a)
	evs := makeEvents(1, 3)
	evs[1].AggregateID = " line1\r\nline2 "
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, ev := range evs {
		if err := s.Publish(ctx, ev); err != nil {
			// Refusing the event is fine; altering its header is not.
			var inv *sink.InvalidEventError
			if !errors.As(err, &inv) || inv.Event.ID != "ev-00002" {
				t.Fatalf("Publish(%s) = %v, want nil or an *InvalidEventError for ev-00002", ev.ID, err)
			}
			return
		}
	}
	if err := s.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	msgs := readStream(t, newJS(t, nc), testStream)
	if len(msgs) != 3 {
		t.Fatalf("stream holds %d messages, want 3", len(msgs))
	}
	if got, want := msgs[1].Header.Get("Outbox-Aggregate-Id"), " line1\r\nline2 "; got != want {
		t.Errorf("Outbox-Aggregate-Id = %q, want %q (the subject token %q unescapes to that)", got, want, msgs[1].Subject)
	}
}

// The relay reads the stream's max_msg_size when it resumes, and checks each
// message against it before sending. When an operator lowers it while the
// sink runs, the stream refuses the next big message with an error that does
// not say which one it was; the sink must resume, read the new limit, and
// stop at that event, naming it, with everything before it stored.
func TestSinkStreamMaxMsgSizeLowered(t *testing.T) {
	n := testenv.StartNATS(t)
	nc := connect(t, n.URL())
	js := newJS(t, nc)
	a := newAcker()
	s := startSink(t, nc, sink.Config{AckTimeout: 30 * time.Second}, a)
	publishAll(t, s, makeEvents(1, 3), 10*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, testStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.MaxMsgSize = 2048
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	evs := makeEvents(4, 6)
	evs[1].Payload = bytes.Repeat([]byte("y"), 4096)
	for _, ev := range evs {
		if err := s.Publish(ctx, ev); err != nil {
			t.Fatalf("Publish(%s): %v", ev.ID, err)
		}
	}
	err = waitStopped(t, s, "the sink to stop at the oversized event", 10*time.Second)
	var inv *sink.InvalidEventError
	if !errors.As(err, &inv) || inv.Event.ID != "ev-00005" {
		t.Fatalf("Halted() = %v, want an *InvalidEventError for ev-00005", err)
	}
	if !strings.Contains(err.Error(), "max_msg_size of 2048 bytes") {
		t.Errorf("Halted() = %q, want it to name the stream's max_msg_size of 2048 bytes", err)
	}
	if msgs := readStream(t, js, testStream); len(msgs) != 4 {
		t.Errorf("stream holds %d messages, want ev-00001..ev-00004", len(msgs))
	}
	a.check(t, makeEvents(1, 4))
	if got := s.Stats().Resumes; got < 2 {
		t.Errorf("Stats().Resumes = %d, want at least 2: the stream's refusal should have broken the chain", got)
	}
}
