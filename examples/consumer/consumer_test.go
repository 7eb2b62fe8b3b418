package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/outboxrelay/outboxrelay/internal/testenv"
)

// TestConsumerOrderAndDuplicates runs the consumer with four workers and a
// handler that takes a random time over events of ten aggregates, against a
// real nats-server. Every event is handled exactly once and each
// aggregate's events in their order, although handlers run in parallel,
// one handling outlasts AckWait (so JetStream redelivers what was in
// flight) and an event is published again with the same Nats-Msg-Id.
func TestConsumerOrderAndDuplicates(t *testing.T) {
	js := startStream(t)
	evs := publishEvents(t, js, 400, 10)
	rec := newRecorder()
	const ackWait = time.Second
	slow := evs[37].ID
	var slowDone atomic.Bool
	handler := func(ctx context.Context, ev Event) error {
		return rec.handle(ctx, ev, func() time.Duration {
			if ev.ID == slow && !slowDone.Swap(true) {
				return ackWait * 3 / 2
			}
			return time.Duration(rand.IntN(3000)) * time.Microsecond
		}())
	}
	c, err := New(Config{Durable: "billing", Workers: 4, Buffer: 16, AckWait: ackWait}, handler, NewMemoryDeduper(10_000))
	if err != nil {
		t.Fatal(err)
	}
	stop := runConsumer(t, c, js)
	rec.waitHandled(t, len(evs))

	// The same event again, once the stream's duplicate window let it in:
	// a consumer must recognise it by Nats-Msg-Id.
	replayed := evs[5]
	testenv.WaitFor(t, 10*time.Second, "the replayed event stored in the stream", func() (bool, error) {
		ack, err := js.PublishMsg(context.Background(), replayed.msg())
		if err != nil {
			return false, err
		}
		return !ack.Duplicate, fmt.Errorf("still inside the duplicate window")
	})
	waitAllAcked(t, js, "billing")
	stop()

	rec.check(t, evs)
	s := c.Stats()
	t.Logf("stats %+v, at most %d handlers at once", s, rec.maxRunning.Load())
	if s.Handled != uint64(len(evs)) {
		t.Errorf("Stats.Handled = %d, want %d", s.Handled, len(evs))
	}
	if s.Redelivered == 0 {
		t.Error("no message was redelivered although a handler outlasted AckWait: the test did not exercise redelivery")
	}
	if s.Duplicates < 2 {
		t.Errorf("Stats.Duplicates = %d, want at least 2 (the replayed event and a redelivered copy)", s.Duplicates)
	}
	if rec.maxRunning.Load() < 2 {
		t.Errorf("at most %d handler ran at once: events were not handled in parallel", rec.maxRunning.Load())
	}
}

// TestConsumerRestart stops the consumer while events are in flight (handed
// to workers or buffered, not acked) and starts it again: the second run
// must not handle a later event of an aggregate before an earlier one that
// JetStream has yet to redeliver, nor handle anything twice.
func TestConsumerRestart(t *testing.T) {
	js := startStream(t)
	evs := publishEvents(t, js, 300, 6)
	rec := newRecorder()
	handler := func(ctx context.Context, ev Event) error {
		return rec.handle(ctx, ev, time.Duration(1000+rand.IntN(2000))*time.Microsecond)
	}
	dedupe := NewMemoryDeduper(10_000) // stands for a store that outlives the process
	cfg := Config{Durable: "shipping", Workers: 3, Buffer: 16, AckWait: time.Second}

	first, err := New(cfg, handler, dedupe)
	if err != nil {
		t.Fatal(err)
	}
	stop := runConsumer(t, first, js)
	rec.waitHandled(t, len(evs)/3)
	stop()
	cons, err := js.Consumer(context.Background(), "OUTBOX", cfg.Durable)
	if err != nil {
		t.Fatal(err)
	}
	if n := cons.CachedInfo().NumAckPending; n == 0 {
		t.Fatal("no event was in flight when the first run stopped: the test did not exercise the restart")
	} else {
		t.Logf("first run stopped with %d handled and %d events delivered but not acked", rec.total(), n)
	}

	second, err := New(cfg, handler, dedupe)
	if err != nil {
		t.Fatal(err)
	}
	stop = runConsumer(t, second, js)
	rec.waitHandled(t, len(evs))
	waitAllAcked(t, js, cfg.Durable)
	stop()
	rec.check(t, evs)
	t.Logf("second run: %+v", second.Stats())
}

// startStream starts nats-server and creates the relay's stream, with a
// short duplicate window so a test can publish an event id again.
func startStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	n := testenv.StartNATS(t)
	nc, err := nats.Connect(n.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	_, err = js.CreateStream(context.Background(), jetstream.StreamConfig{
		Name: "OUTBOX", Subjects: []string{"outbox.>"}, Storage: jetstream.FileStorage, Duplicates: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// testEvent is an event the test published; N is its place in its aggregate.
type testEvent struct {
	ID, Aggregate string
	N             int
}

// msg is the message the relay would publish for e.
func (e testEvent) msg() *nats.Msg {
	m := nats.NewMsg("outbox.order." + e.Aggregate)
	m.Header.Set("Nats-Msg-Id", e.ID)
	m.Header.Set("Outbox-Event-Id", e.ID)
	m.Header.Set("Outbox-Event-Type", "OrderUpdated")
	m.Header.Set("Outbox-Aggregate-Type", "order")
	m.Header.Set("Outbox-Aggregate-Id", e.Aggregate)
	m.Header.Set("Outbox-Tx-Seq", "1")
	m.Data = fmt.Appendf(nil, `{"order_id": %q, "n": %d}`, e.Aggregate, e.N)
	return m
}

// publishEvents publishes n events spread at random over aggs aggregates.
func publishEvents(t *testing.T, js jetstream.JetStream, n, aggs int) []testEvent {
	t.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	next := map[string]int{}
	evs := make([]testEvent, n)
	for i := range evs {
		agg := fmt.Sprintf("o-%d", r.IntN(aggs))
		next[agg]++
		evs[i] = testEvent{ID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), Aggregate: agg, N: next[agg]}
		if _, err := js.PublishMsg(context.Background(), evs[i].msg()); err != nil {
			t.Fatal(err)
		}
	}
	return evs
}

// runConsumer runs c in the background; stop cancels it and checks that
// Run returned nil.
func runConsumer(t *testing.T, c *Consumer, js jetstream.JetStream) (stop func()) {
	return testenv.RunUntilCleanup(t, 30*time.Second, func(ctx context.Context) error { return c.Run(ctx, js) })
}

// waitAllAcked waits until the durable has acked every message of the
// stream.
func waitAllAcked(t *testing.T, js jetstream.JetStream, durable string) {
	t.Helper()
	ctx := context.Background()
	testenv.WaitFor(t, 30*time.Second, "every message acked", func() (bool, error) {
		st, err := js.Stream(ctx, "OUTBOX")
		if err != nil {
			return false, err
		}
		cons, err := js.Consumer(ctx, "OUTBOX", durable)
		if err != nil {
			return false, err
		}
		info := cons.CachedInfo()
		last := st.CachedInfo().State.LastSeq
		return info.AckFloor.Stream == last && info.NumPending == 0 && info.NumAckPending == 0,
			fmt.Errorf("ack floor %d of %d, %d pending, %d awaiting ack", info.AckFloor.Stream, last, info.NumPending, info.NumAckPending)
	})
}

// recorder is the handlers' side effect: what was handled, in which order.
type recorder struct {
	mu       sync.Mutex
	times    map[string]int   // event id -> times handled
	sequence map[string][]int // aggregate -> the N of its events, in handling order
	handled  int

	running, maxRunning atomic.Int32
}

func newRecorder() *recorder {
	return &recorder{times: map[string]int{}, sequence: map[string][]int{}}
}

// handle takes d, then records ev; it gives up without recording if ctx
// ends first.
func (r *recorder) handle(ctx context.Context, ev Event, d time.Duration) error {
	n := r.running.Add(1)
	defer r.running.Add(-1)
	for {
		m := r.maxRunning.Load()
		if n <= m || r.maxRunning.CompareAndSwap(m, n) {
			break
		}
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
	}
	var p struct {
		N int `json:"n"`
	}
	if err := json.Unmarshal(ev.Data, &p); err != nil {
		return fmt.Errorf("event %s: %w", ev.ID, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.times[ev.ID]++
	r.sequence[ev.AggregateID] = append(r.sequence[ev.AggregateID], p.N)
	r.handled++
	return nil
}

func (r *recorder) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.handled
}

func (r *recorder) waitHandled(t *testing.T, n int) {
	t.Helper()
	testenv.WaitFor(t, time.Minute, fmt.Sprintf("%d events handled", n), func() (bool, error) {
		got := r.total()
		return got >= n, fmt.Errorf("%d handled", got)
	})
}

// check fails unless every event was handled exactly once and each
// aggregate's events in order.
func (r *recorder) check(t *testing.T, evs []testEvent) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ev := range evs {
		if got := r.times[ev.ID]; got != 1 {
			t.Errorf("event %s (%s #%d) handled %d times, want once", ev.ID, ev.Aggregate, ev.N, got)
		}
	}
	for agg, seq := range r.sequence {
		for i, n := range seq {
			if n != i+1 {
				t.Errorf("aggregate %s: handled in the order %v, want 1, 2, 3, ...", agg, seq)
				break
			}
		}
	}
}
