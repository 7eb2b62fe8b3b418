package sink_test

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxrelay/outboxrelay/decode"
	"github.com/outboxrelay/outboxrelay/internal/testenv"
	"github.com/outboxrelay/outboxrelay/sink"
)

// TestSinkPublishesTheContract publishes 2,000 events and checks every stored
// message against DESIGN.md, "Messages".
func TestSinkPublishesTheContract(t *testing.T) {
	n := testenv.StartNATS(t)
	nc := connect(t, n.URL())
	a := newAcker()
	var latencies int
	s := startSink(t, nc, sink.Config{
		AckTimeout:     30 * time.Second, // nothing here should break the chain
		ObserveLatency: func(time.Duration) { latencies++ },
	}, a)

	const total = 2000
	publishAll(t, s, makeEvents(1, total), 30*time.Second)

	want := makeEvents(1, total) // fresh copies: the sink owns what it was given
	msgs := readStream(t, newJS(t, nc), testStream)
	checkExactlyOnceInOrder(t, msgs, want)
	a.check(t, want)
	if len(msgs) != total {
		t.FailNow()
	}
	bad := 0
	for i, m := range msgs {
		ev := want[i]
		errorf := func(format string, args ...any) {
			if bad++; bad <= 20 {
				t.Errorf("sequence %d (event %s): "+format, append([]any{m.Seq, ev.ID}, args...)...)
			}
		}
		if want := subjectOf(ev); m.Subject != want {
			errorf("subject %q, want %q", m.Subject, want)
		}
		if !bytes.Equal(m.Data, ev.Payload) {
			errorf("data %q, want the payload %q unchanged", m.Data, ev.Payload)
		}
		headers := map[string]string{
			"Nats-Msg-Id":                 ev.ID,
			"Nats-Expected-Last-Sequence": strconv.FormatUint(m.Seq-1, 10), // the chain
			"Outbox-Event-Id":             ev.ID,
			"Outbox-Event-Type":           ev.Type,
			"Outbox-Aggregate-Type":       ev.AggregateType,
			"Outbox-Aggregate-Id":         ev.AggregateID,
			"Outbox-Commit-LSN":           lsnString(ev.CommitLSN),
			"Outbox-Tx-Seq":               strconv.Itoa(int(ev.TxSeq)),
		}
		for _, x := range ev.Headers {
			headers[x.Name] = x.Value
		}
		for k, v := range headers {
			if got := m.Header.Values(k); len(got) != 1 || got[0] != v {
				errorf("header %s = %q, want [%q]", k, got, v)
			}
		}
		ct, err := time.Parse(time.RFC3339, m.Header.Get("Outbox-Commit-Time"))
		if err != nil {
			errorf("header Outbox-Commit-Time: %v", err)
		} else if !ct.Equal(ev.CommitTime) {
			errorf("header Outbox-Commit-Time = %s, want %s", ct, ev.CommitTime)
		}
		for _, k := range []string{"Outbox-Error", "Outbox-Table"} {
			if v := m.Header.Values(k); v != nil {
				errorf("header %s = %q on a message that is not a dead letter", k, v)
			}
		}
		if got, want := len(m.Header), len(headers)+1; got != want {
			errorf("%d headers %v, want %d", got, m.Header, want)
		}
	}
	// The events cross the 32-bit boundary of the LSN: both halves in use.
	if got := msgs[total-1].Header.Get("Outbox-Commit-LSN"); !strings.HasPrefix(got, "1/") {
		t.Errorf("last Outbox-Commit-LSN = %q, want 1/...", got)
	}
	st := s.Stats()
	if st.Published != total || st.DeadLettered != 0 || st.InFlight != 0 {
		t.Errorf("Stats() = %+v, want %d published, 0 dead-lettered, 0 in flight", st, total)
	}
	if st.Resumes != 1 {
		t.Errorf("Stats().Resumes = %d, want 1: a clean run must not break its chain", st.Resumes)
	}
	if latencies != total {
		t.Errorf("ObserveLatency called %d times, want %d", latencies, total)
	}
	if ok, why := s.Healthy(); !ok {
		t.Errorf("Healthy() = false, %q", why)
	}
}

// TestSinkResumesAfterRestart replays events a previous sink already stored,
// as the relay does after a restart from the slot's confirmed LSN.
func TestSinkResumesAfterRestart(t *testing.T) {
	for _, tt := range []struct {
		name string
		// beforeRun: hand B every event before its first resume reads the
		// stream (they are settled by the resume); otherwise after it (they
		// are settled by Publish).
		beforeRun bool
	}{
		{"replay queued before the first resume", true},
		{"replay published after the first resume", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n := testenv.StartNATS(t)
			nc := connect(t, n.URL())
			cfg := sink.Config{AckTimeout: 30 * time.Second}

			aA := publishWithSink(t, nc, cfg, makeEvents(1, 1000), 30*time.Second)
			aA.check(t, makeEvents(1, 1000))

			aB := newAcker()
			sB := newSink(t, nc, cfg, aB)
			if tt.beforeRun {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				for _, ev := range makeEvents(1, 1500) {
					if err := sB.Publish(ctx, ev); err != nil {
						t.Fatalf("Publish(%s) before Run: %v", ev.ID, err)
					}
				}
				cancel()
				run(t, sB)
				ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if err := sB.Drain(ctx); err != nil {
					t.Fatal(err)
				}
			} else {
				run(t, sB)
				waitHealthy(t, sB)
				publishAll(t, sB, makeEvents(1, 1500), 30*time.Second)
			}

			want := makeEvents(1, 1500)
			checkExactlyOnceInOrder(t, readStream(t, newJS(t, nc), testStream), want)
			aB.check(t, want)
			if got := sB.Stats().Resumes; got != 1 {
				t.Errorf("B resumed %d times, want 1: skipping what the stream holds must not break the chain", got)
			}
		})
	}
}

// TestSinkRefusesSharedStream: a message the relay did not write is last in
// the stream, so the chain cannot know its position.
func TestSinkRefusesSharedStream(t *testing.T) {
	n := testenv.StartNATS(t)
	nc := connect(t, n.URL())
	js := newJS(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := sink.EnsureStream(ctx, js, testStream, "outbox"); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "outbox.foreign.1", []byte("not from the relay")); err != nil {
		t.Fatal(err)
	}

	a := newAcker()
	s := startSink(t, nc, sink.Config{}, a)
	if err := s.Publish(ctx, makeEvents(1, 1)[0]); err != nil && !errors.Is(err, sink.ErrSharedStream) {
		t.Fatalf("Publish: %v", err)
	}
	err := waitStopped(t, s, "the sink to stop", 10*time.Second)
	if !errors.Is(err, sink.ErrSharedStream) {
		t.Fatalf("Halted() = %v, want it to wrap ErrSharedStream", err)
	}
	for _, want := range []string{testStream, `"outbox.foreign.1"`, "sources or mirrors"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Halted() = %q, want it to mention %s", err, want)
		}
	}
	if ok, _ := s.Healthy(); ok {
		t.Error("Healthy() = true after the sink stopped")
	}
	if perr := s.Publish(ctx, makeEvents(2, 2)[0]); !errors.Is(perr, sink.ErrSharedStream) {
		t.Errorf("Publish after the stop = %v, want ErrSharedStream", perr)
	}
	if derr := s.Drain(ctx); !errors.Is(derr, sink.ErrSharedStream) {
		t.Errorf("Drain after the stop = %v, want ErrSharedStream", derr)
	}
	// It stopped for good: it wrote nothing and acked nothing.
	if msgs := readStream(t, js, testStream); len(msgs) != 1 {
		t.Errorf("stream holds %d messages, want only the foreign one", len(msgs))
	}
	if a.Total() != 0 {
		t.Errorf("acker got %d acks, want 0", a.Total())
	}
}

// TestSinkChainsOnStreamSequence: another instance (before a fail-over)
// stored events ahead of this sink longer ago than the duplicate window, so
// Nats-Msg-Id cannot catch the replay. Only the chain on the stream sequence
// and the resume from the stream's last position keep the stream exact.
func TestSinkChainsOnStreamSequence(t *testing.T) {
	n := testenv.StartNATS(t)
	nc := connect(t, n.URL())
	js := newJS(t, nc)
	a := newAcker()
	// A window of 16 makes every send ask for its PubAck (Window/16), so the
	// refusals are heard. Were only some to ask, the sink's send of event 21
	// would line up with the other instance's 11..20 and settle them; that
	// is sound too, as they are the same events (pubacks_test.go).
	s := startSink(t, nc, sink.Config{AckTimeout: 30 * time.Second, Window: 16}, a)
	publishAll(t, s, makeEvents(1, 10), 10*time.Second)

	// The other instance stores events 11..20 as the relay does, except
	// that their message ids are not in the dedupe window any more.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, ev := range makeEvents(11, 20) {
		storeAsRelay(ctx, t, js, ev, "expired-"+ev.ID)
	}

	// This sink now gets 11..25 (pipelined): it predicts sequence 11 for
	// event 11, but the stream is at 20.
	publishAll(t, s, makeEvents(11, 25), 15*time.Second)

	msgs := readStream(t, js, testStream)
	want := makeEvents(1, 25)
	if len(msgs) != len(want) {
		t.Errorf("stream holds %d messages, want %d", len(msgs), len(want))
	}
	for i, m := range msgs {
		if i < len(want) && m.Header.Get("Outbox-Event-Id") != want[i].ID {
			t.Errorf("sequence %d holds event %q, want %q", m.Seq, m.Header.Get("Outbox-Event-Id"), want[i].ID)
		}
	}
	a.check(t, want)
	if got := s.Stats().Resumes; got < 2 {
		t.Errorf("Stats().Resumes = %d, want at least 2 (the broken chain resumed)", got)
	}
}

// storeAsRelay stores ev in the stream the way the relay does, with msgID as
// its Nats-Msg-Id.
func storeAsRelay(ctx context.Context, t *testing.T, js jetstream.JetStream, ev *decode.Event, msgID string) {
	t.Helper()
	m := nats.NewMsg(subjectOf(ev))
	m.Data = ev.Payload
	m.Header.Set("Nats-Msg-Id", msgID)
	m.Header.Set("Outbox-Event-Id", ev.ID)
	m.Header.Set("Outbox-Commit-LSN", lsnString(ev.CommitLSN))
	m.Header.Set("Outbox-Tx-Seq", strconv.Itoa(int(ev.TxSeq)))
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatalf("store %s: %v", ev.ID, err)
	}
}

// TestSinkStopsWhenStreamLostEvents: the stream was recreated from an old
// backup while the sink ran, so its last message is older than events the
// sink saw stored. Carrying on would leave a gap; the sink must stop.
func TestSinkStopsWhenStreamLostEvents(t *testing.T) {
	n := testenv.StartNATS(t)
	nc := connect(t, n.URL())
	js := newJS(t, nc)
	a := newAcker()
	s := startSink(t, nc, sink.Config{AckTimeout: 30 * time.Second}, a)
	publishAll(t, s, makeEvents(1, 10), 10*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := js.DeleteStream(ctx, testStream); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: testStream, Subjects: []string{"outbox.>"}}); err != nil {
		t.Fatal(err)
	}
	for _, ev := range makeEvents(1, 5) {
		storeAsRelay(ctx, t, js, ev, ev.ID)
	}

	if err := s.Publish(ctx, makeEvents(11, 11)[0]); err != nil {
		t.Fatal(err)
	}
	err := waitStopped(t, s, "the sink to stop", 10*time.Second)
	for _, want := range []string{"lost events", lsnString(makeEvents(5, 5)[0].CommitLSN), lsnString(makeEvents(10, 10)[0].CommitLSN)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Halted() = %q, want it to contain %q", err, want)
		}
	}
	if msgs := readStream(t, js, testStream); len(msgs) != 5 {
		t.Errorf("stream holds %d messages, want the 5 restored ones and nothing after them", len(msgs))
	}
	a.check(t, makeEvents(1, 10))
}

// A stream deleted while the sink runs, and created again empty by an
// operator or by the sink itself, has none of the events the sink saw
// stored, and its sequence starts again. Carrying on would hide that; the
// sink must stop, and say what happened and what to do.
func TestSinkStopsWhenStreamRecreated(t *testing.T) {
	for _, tc := range []struct {
		name     string
		recreate bool // by the operator; otherwise the sink creates it again
	}{{"recreated empty", true}, {"deleted", false}} {
		t.Run(tc.name, func(t *testing.T) {
			n := testenv.StartNATS(t)
			nc := connect(t, n.URL())
			js := newJS(t, nc)
			a := newAcker()
			s := startSink(t, nc, sink.Config{AckTimeout: 30 * time.Second, MaxResumeBackoff: 200 * time.Millisecond}, a)
			publishAll(t, s, makeEvents(1, 10), 10*time.Second)

			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := js.DeleteStream(ctx, testStream); err != nil {
				t.Fatal(err)
			}
			if tc.recreate {
				if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: testStream, Subjects: []string{"outbox.>"}}); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Publish(ctx, makeEvents(11, 11)[0]); err != nil {
				t.Fatal(err)
			}
			err := waitStopped(t, s, "the sink to stop", 10*time.Second)
			for _, want := range []string{"lost events", "last sequence is 0", "saw sequence 10 stored", "restart the relay"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Halted() = %q, want it to contain %q", err, want)
				}
			}
			if msgs := readStream(t, js, testStream); len(msgs) != 0 {
				t.Errorf("stream holds %d messages, want none: nothing is published after the loss", len(msgs))
			}
			a.check(t, makeEvents(1, 10))
		})
	}
}

// After a purge the stream's last message is gone, so a new sink cannot read
// where the old one stopped, and sends again what the slot had not
// confirmed. The duplicate window then answers each of those with a
// duplicate PubAck, which must settle that event (it is stored) and go on:
// none is stored twice or lost, and the new events follow.
func TestSinkSettlesDuplicatesAfterPurge(t *testing.T) {
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
	if err := st.Purge(ctx); err != nil {
		t.Fatal(err)
	}

	// The slot had confirmed only up to event 2: 3..5 come again, then 6..8.
	aB := newAcker()
	sB := newSink(t, nc, cfg, aB)
	run(t, sB)
	publishAll(t, sB, makeEvents(3, 8), 20*time.Second)
	aB.check(t, makeEvents(3, 8))
	msgs := readStreamFrom(t, js, testStream, 6)
	want := makeEvents(6, 8)
	if len(msgs) != len(want) {
		t.Fatalf("stream holds %d messages after the purge, want %d (events 6..8)", len(msgs), len(want))
	}
	for i, m := range msgs {
		if got := m.Header.Get("Outbox-Event-Id"); got != want[i].ID || m.Seq != uint64(6+i) {
			t.Errorf("message %d: event %s at sequence %d, want %s at %d", i, got, m.Seq, want[i].ID, 6+i)
		}
	}
}

// TestSinkRefusesSourcedLastMessage: a message JetStream copied into the
// stream from another (a stream that sourced others once) is not the
// relay's, even with valid position headers: they are another database's.
func TestSinkRefusesSourcedLastMessage(t *testing.T) {
	n := testenv.StartNATS(t)
	nc := connect(t, n.URL())
	js := newJS(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SHARD2", Subjects: []string{"shard2.>"}}); err != nil {
		t.Fatal(err)
	}
	other := nats.NewMsg("shard2.order.7")
	other.Header.Set(sink.HeaderCommitLSN, "0/16B3748")
	other.Header.Set(sink.HeaderTxSeq, "1")
	if _, err := js.PublishMsg(ctx, other); err != nil {
		t.Fatal(err)
	}
	cfg := jetstream.StreamConfig{Name: testStream, Subjects: []string{"outbox.>"}, Sources: []*jetstream.StreamSource{{Name: "SHARD2"}}}
	st, err := js.CreateStream(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "the sourced message", func() (bool, error) {
		info, err := st.Info(ctx)
		return err == nil && info.State.Msgs == 1, err
	})
	cfg.Sources = nil
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}

	s := startSink(t, nc, sink.Config{}, newAcker())
	if err := s.Publish(ctx, makeEvents(1, 1)[0]); err != nil && !errors.Is(err, sink.ErrSharedStream) {
		t.Fatalf("Publish: %v", err)
	}
	err = waitStopped(t, s, "the sink to stop", 10*time.Second)
	if !errors.Is(err, sink.ErrSharedStream) {
		t.Fatalf("Halted() = %v, want it to wrap ErrSharedStream", err)
	}
	if want := `JetStream copied it from another stream (Nats-Stream-Source: SHARD2 1 `; !strings.Contains(err.Error(), want) {
		t.Errorf("Halted() = %q, want it to say %q", err, want)
	}
	if msgs := readStream(t, js, testStream); len(msgs) != 1 {
		t.Errorf("stream holds %d messages, want only the sourced one", len(msgs))
	}
}
