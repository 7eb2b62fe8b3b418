package sink_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxrelay/outboxrelay/decode"
	"github.com/outboxrelay/outboxrelay/internal/testenv"
	"github.com/outboxrelay/outboxrelay/sink"
)

// reusedLog is events 1..6 of the eventLog, where event 4 reuses the id of
// event 2 (stored at sequence 2) inside the duplicate window.
func reusedLog() []*decode.Event {
	evs := makeEvents(1, 6)
	evs[3].ID = evs[1].ID
	return evs
}

// wantReuseReason is what the reason for event 4 of reusedLog must say.
func wantReuseReason(evs []*decode.Event) []string {
	return []string{fmt.Sprintf(`id %q was already used by stream sequence 2`, evs[1].ID),
		"commit LSN " + lsnString(evs[1].CommitLSN), fmt.Sprintf("position %d)", evs[1].TxSeq)}
}

// A duplicate PubAck for an event that reused the id of an earlier one must
// halt the sink at that event, with the reason, and never ack it: the slot
// must not pass it. Events 1..3 are stored; nothing from event 4 on is.
func TestSinkHaltsOnReusedID(t *testing.T) {
	n := testenv.StartNATS(t)
	for _, tc := range []struct {
		name   string
		drain1 bool // drain events 1..3 first, so event 4 is the first send of its burst
	}{
		{"in one burst", false},
		{"first of a burst", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc := connect(t, n.URL())
			stream := strings.ReplaceAll(strings.ToUpper(tc.name), " ", "_")
			a := newAcker()
			s := startSink(t, nc, sink.Config{Stream: stream, Subject: strings.ToLower(stream) + ".{aggregate_type}.{aggregate_id}"}, a)
			evs := reusedLog()
			rest := evs
			if tc.drain1 {
				publishAll(t, s, evs[:3], 10*time.Second)
				rest = evs[3:]
			}
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			for _, ev := range rest {
				if err := s.Publish(ctx, ev); err != nil {
					var inv *sink.InvalidEventError
					if !errors.As(err, &inv) {
						t.Fatalf("Publish(%s at %s) = %v, want nil or the halt", ev.ID, lsnString(ev.CommitLSN), err)
					}
					break
				}
			}
			err := waitStopped(t, s, "the sink to halt at the reused id", 10*time.Second)
			var inv *sink.InvalidEventError
			if !errors.As(err, &inv) {
				t.Fatalf("Halted() = %v, want an *InvalidEventError", err)
			}
			if inv.Event.CommitLSN != evs[3].CommitLSN || inv.Event.TxSeq != evs[3].TxSeq {
				t.Errorf("halted at the event at %s#%d, want event 4 at %s#%d", inv.Event.CommitLSN, inv.Event.TxSeq, evs[3].CommitLSN, evs[3].TxSeq)
			}
			for _, want := range append(wantReuseReason(evs), "dead_letter", "Event ids") {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Halted() = %q, want it to contain %q", err, want)
				}
			}
			// Events 1..3 are stored and acked; event 4 and later are not.
			testenv.WaitFor(t, 10*time.Second, "acks of events 1..3", func() (bool, error) {
				return a.Total() >= 3, nil
			})
			checkExactlyOnceInOrder(t, readStream(t, newJS(t, nc), stream), makeEvents(1, 3))
			a.check(t, makeEvents(1, 3))
			if ok, _ := s.Healthy(); ok {
				t.Error("Healthy() = true after the halt")
			}
		})
	}
}

// With a dead-letter subject, the event that reused an id goes there, in
// its place, with the reason in Outbox-Error and a Nats-Msg-Id of its own
// (with its own id the stream would refuse it again); every later event is
// stored, and each is acked once.
func TestSinkDeadLettersReusedID(t *testing.T) {
	n := testenv.StartNATS(t)
	nc := connect(t, n.URL())
	a := newAcker()
	s := startSink(t, nc, sink.Config{DeadLetterSubject: "outbox.dead_letter"}, a)
	publishAll(t, s, reusedLog(), 15*time.Second)

	want := reusedLog()
	msgs := readStream(t, newJS(t, nc), testStream)
	if len(msgs) != len(want) {
		t.Fatalf("stream holds %d messages, want %d", len(msgs), len(want))
	}
	a.check(t, want)
	for i, m := range msgs {
		ev := want[i]
		if got, lsn := m.Header.Get("Outbox-Event-Id"), m.Header.Get("Outbox-Commit-LSN"); got != ev.ID || lsn != lsnString(ev.CommitLSN) {
			t.Errorf("sequence %d holds event %s at %s, want %s at %s", m.Seq, got, lsn, ev.ID, lsnString(ev.CommitLSN))
		}
		if i != 3 {
			if m.Subject == "outbox.dead_letter" || m.Header.Get("Nats-Msg-Id") != ev.ID {
				t.Errorf("sequence %d: subject %q, Nats-Msg-Id %q; want event %s published as it is", m.Seq, m.Subject, m.Header.Get("Nats-Msg-Id"), ev.ID)
			}
			continue
		}
		if m.Subject != "outbox.dead_letter" {
			t.Errorf("the event that reused an id went to %q, want outbox.dead_letter", m.Subject)
		}
		for _, w := range wantReuseReason(want) {
			if got := m.Header.Get("Outbox-Error"); !strings.Contains(got, w) {
				t.Errorf("Outbox-Error = %q, want it to contain %q", got, w)
			}
		}
		if got := m.Header.Get("Nats-Msg-Id"); got == ev.ID || !strings.HasPrefix(got, ev.ID) {
			t.Errorf("dead letter Nats-Msg-Id = %q, want one of its own that starts with the id %q", got, ev.ID)
		}
		if string(m.Data) != string(ev.Payload) {
			t.Errorf("dead letter data = %q, want the payload %q", m.Data, ev.Payload)
		}
	}
	if st := s.Stats(); st.Published != 6 || st.DeadLettered != 1 {
		t.Errorf("Stats() = %+v, want 6 published of which 1 dead-lettered", st)
	}
}

// A duplicate PubAck for the same event, stored by an earlier run, still
// settles it as stored: here the stream's last message is deleted, so a
// new sink cannot read where the old one stopped and sends events 3..5
// again. 3 and 4 are still in the stream (checked: same position), 5 is
// gone (trusted, as before); 6..8 follow, nothing twice.
func TestSinkSettlesReplayAfterLastMessageDeleted(t *testing.T) {
	n := testenv.StartNATS(t)
	nc := connect(t, n.URL())
	js := newJS(t, nc)
	cfg := sink.Config{AckTimeout: 30 * time.Second, MaxResumeBackoff: 100 * time.Millisecond}
	publishWithSink(t, nc, cfg, makeEvents(1, 5), 10*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, testStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMsg(ctx, 5); err != nil {
		t.Fatal(err)
	}

	aB := newAcker()
	sB := newSink(t, nc, cfg, aB)
	run(t, sB)
	publishAll(t, sB, makeEvents(3, 8), 20*time.Second)
	aB.check(t, makeEvents(3, 8))
	all := makeEvents(1, 8)
	for seq := uint64(1); seq <= 8; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if seq == 5 {
			if !errors.Is(err, jetstream.ErrMsgNotFound) {
				t.Errorf("sequence 5: %v, want it deleted", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("sequence %d: %v", seq, err)
		}
		if got := m.Header.Get("Outbox-Event-Id"); got != all[seq-1].ID {
			t.Errorf("sequence %d holds %s, want %s", seq, got, all[seq-1].ID)
		}
	}
	if info, err := st.Info(ctx); err != nil || info.State.LastSeq != 8 || info.State.Msgs != 7 {
		t.Errorf("stream state %+v (%v), want 7 messages up to sequence 8", info.State, err)
	}
}

// The dead letter of a reused id, sent again by a new sink that cannot read
// where the stream ends (its last message deleted), is recognised by its own
// Nats-Msg-Id and position and settled as stored: not sent a second time,
// and not sent again and again.
func TestSinkSettlesReplayedDeadLetterOfReusedID(t *testing.T) {
	n := testenv.StartNATS(t)
	nc := connect(t, n.URL())
	js := newJS(t, nc)
	cfg := sink.Config{DeadLetterSubject: "outbox.dead_letter", AckTimeout: 30 * time.Second, MaxResumeBackoff: 100 * time.Millisecond}
	publishWithSink(t, nc, cfg, reusedLog(), 10*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, testStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMsg(ctx, 6); err != nil {
		t.Fatal(err)
	}

	// The slot had confirmed only up to event 3: 4..6 come again, then 7..8.
	evs := append(reusedLog()[3:], makeEvents(7, 8)...)
	aB := newAcker()
	sB := newSink(t, nc, cfg, aB)
	run(t, sB)
	publishAll(t, sB, evs, 20*time.Second)
	aB.check(t, append(reusedLog()[3:], makeEvents(7, 8)...))
	info, err := st.Info(ctx)
	if err != nil || info.State.LastSeq != 8 || info.State.Msgs != 7 {
		t.Fatalf("stream state %+v (%v), want 7 messages up to sequence 8: the replayed events stored again?", info.State, err)
	}
	for seq, want := range map[uint64]string{4: "outbox.dead_letter", 7: subjectOf(evs[3]), 8: subjectOf(evs[4])} {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("sequence %d: %v", seq, err)
		}
		if m.Subject != want {
			t.Errorf("sequence %d on %q, want %q", seq, m.Subject, want)
		}
	}
}
