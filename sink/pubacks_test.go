package sink_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxrelay/outboxrelay/internal/testenv"
	"github.com/outboxrelay/outboxrelay/sink"
)

// wire records the messages the sink sends, as a core subscriber sees them.
type wire struct {
	mu      sync.Mutex
	replies []string // each message's reply subject, in order
}

func watchWire(t *testing.T, url string) *wire {
	t.Helper()
	w := &wire{}
	nc := connect(t, url)
	sub, err := nc.Subscribe("outbox.>", func(m *nats.Msg) {
		w.mu.Lock()
		w.replies = append(w.replies, m.Reply)
		w.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = sub.SetPendingLimits(-1, -1)
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *wire) seen() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.replies...)
}

// TestSinkAsksForSomePubAcks: a burst of sends asks for the PubAcks of its
// first send, of one in every Window/16 and of its last, and no others; the
// chain settles the rest.
func TestSinkAsksForSomePubAcks(t *testing.T) {
	n := testenv.StartNATS(t)
	nc := connect(t, n.URL())
	w := watchWire(t, n.URL())
	a := newAcker()
	const window, events = 1024, 1000 // ask every 64 sends
	s := newSink(t, nc, sink.Config{Window: window}, a)
	// Queued before Run, the events go out as one burst after the resume.
	evs := makeEvents(1, events)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, ev := range evs {
		if err := s.Publish(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	run(t, s)
	if err := s.Drain(ctx); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	a.check(t, makeEvents(1, events))
	if msgs := readStream(t, newJS(t, nc), testStream); len(msgs) != events {
		t.Fatalf("stream holds %d messages, want %d", len(msgs), events)
	}

	var replies []string
	testenv.WaitFor(t, 10*time.Second, "the core subscriber to see every send", func() (bool, error) {
		replies = w.seen()
		return len(replies) >= events, nil
	})
	if len(replies) != events {
		t.Fatalf("saw %d sends, want %d (no resume, so no send twice)", len(replies), events)
	}
	every := window / 16
	asked, run := 0, 0
	for i, r := range replies {
		if r == "" {
			if run++; run >= every {
				t.Errorf("send %d: %d sends in a row did not ask for a PubAck, want fewer than %d", i+1, run, every)
			}
			continue
		}
		asked, run = asked+1, 0
	}
	if replies[0] == "" || replies[len(replies)-1] == "" {
		t.Errorf("first send asked: %v, last asked: %v; both must", replies[0] != "", replies[len(replies)-1] != "")
	}
	if want := events/every + 2; asked > want {
		t.Errorf("%d of %d sends asked for a PubAck, want at most %d", asked, events, want)
	}
}

// TestSinkReportsARefusalOfASendThatDidNotAsk: the stream refuses a send in
// the middle of a burst, one that asked for no PubAck, so nats-server says
// nothing about it. The later sends fail the chain; the resume settles the
// sends before the refused one and sends it again, asking, and the stream's
// own reason shows. The sink waits between tries rather than spin.
func TestSinkReportsARefusalOfASendThatDidNotAsk(t *testing.T) {
	n := testenv.StartNATS(t)
	nc := connect(t, n.URL())
	js := newJS(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// One message per subject, and new ones refused: the test aggregates
	// repeat every 5 events, so event 6 is refused.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: testStream, Subjects: []string{"outbox.>"}, Storage: jetstream.FileStorage,
		MaxMsgsPerSubject: 1, Discard: jetstream.DiscardNew, DiscardNewPerSubject: true,
	}); err != nil {
		t.Fatal(err)
	}
	w := watchWire(t, n.URL())
	a := newAcker()
	s := newSink(t, nc, sink.Config{AckTimeout: 30 * time.Second, MaxResumeBackoff: 400 * time.Millisecond}, a)
	for _, ev := range makeEvents(1, 9) {
		if err := s.Publish(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	run(t, s)

	testenv.WaitFor(t, 10*time.Second, "the sink to report the stream's reason", func() (bool, error) {
		_, why := s.Healthy()
		return strings.Contains(why, "maximum messages per subject exceeded"), nil
	})
	if replies := w.seen(); len(replies) < 9 || replies[5] != "" {
		t.Fatalf("the first burst's sends asked for PubAcks %v; want 9 sends, the 6th (refused) not asking", asked(replies))
	}
	a.check(t, makeEvents(1, 5))
	if msgs := readStream(t, js, testStream); len(msgs) != 5 {
		t.Errorf("stream holds %d messages, want ev-00001..ev-00005", len(msgs))
	}
	// Resuming and refused again without a wait, the sink would resume
	// hundreds of times a second; with its backoff (at most 400ms here) a
	// few times.
	before := s.Stats().Resumes
	time.Sleep(time.Second)
	if got := s.Stats().Resumes - before; got > 10 {
		t.Errorf("the sink resumed %d times in a second against a stream that refuses the event, want it to back off", got)
	}
	if s.Halted() != nil {
		t.Errorf("Halted() = %v; a refusal by the stream is retried, not a halt", s.Halted())
	}
}

// asked marks which sends asked for a PubAck.
func asked(replies []string) []bool {
	out := make([]bool, len(replies))
	for i, r := range replies {
		out[i] = r != ""
	}
	return out
}
