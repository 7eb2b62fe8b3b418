package sink_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/testenv"
	"github.com/outboxrelay/outboxrelay/sink"
)

// publisher feeds the eventLog to a sink in the background, as the relay's
// pipeline does, until it is told to stop; so a fault always hits a running
// pipeline, however fast the machine.
type publisher struct {
	stop   chan struct{}
	done   chan error
	handed atomic.Int64 // events handed to Publish
}

func startPublisher(t *testing.T, s *sink.Sink) *publisher {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	p := &publisher{stop: make(chan struct{}), done: make(chan error, 1)}
	go func() {
		l := newEventLog()
		for {
			select {
			case <-p.stop:
				p.done <- nil
				return
			default:
			}
			ev := l.next()
			if err := s.Publish(ctx, ev); err != nil {
				p.done <- fmt.Errorf("Publish(%s): %w", ev.ID, err)
				return
			}
			p.handed.Add(1)
		}
	}()
	return p
}

// finish stops the publisher, waits for the sink to store everything, and
// returns how many events it handed over.
func (p *publisher) finish(t *testing.T, s *sink.Sink, timeout time.Duration) int {
	t.Helper()
	close(p.stop)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatalf("publisher did not stop within %s; sink stats %+v", timeout, s.Stats())
	}
	if err := s.Drain(ctx); err != nil {
		ok, why := s.Healthy()
		t.Fatalf("Drain: %v (healthy=%v: %s; stats %+v)", err, ok, why, s.Stats())
	}
	return int(p.handed.Load())
}

// waitFlowing waits until the sink has stored n more events than now, is
// healthy, and has events in flight.
func waitFlowing(t *testing.T, s *sink.Sink, n uint64) {
	t.Helper()
	target := s.Stats().Published + n
	testenv.WaitFor(t, 20*time.Second, fmt.Sprintf("%d more events stored with more in flight", n), func() (bool, error) {
		if s.Halted() != nil {
			return true, nil
		}
		st := s.Stats()
		ok, why := s.Healthy()
		return ok && st.Published >= target && st.InFlight > 0, fmt.Errorf("stats %+v, healthy %v %s", st, ok, why)
	})
	if err := s.Halted(); err != nil {
		t.Fatalf("sink stopped for good: %v", err)
	}
}

// TestSinkSurvivesNATSKill kills nats-server (-9) under load and restarts it
// on the same store: every event is stored exactly once, in order, and the
// sink resumes by itself.
func TestSinkSurvivesNATSKill(t *testing.T) {
	n := testenv.StartNATS(t)
	nc := connect(t, n.URL())
	a := newAcker()
	s := startSink(t, nc, sink.Config{AckTimeout: 2 * time.Second}, a)

	p := startPublisher(t, s)
	waitFlowing(t, s, 3000)
	if err := n.Kill(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "the sink to notice the kill", func() (bool, error) {
		ok, _ := s.Healthy()
		return !ok, nil
	})
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	waitFlowing(t, s, 1000)
	total := p.finish(t, s, 30*time.Second)

	want := makeEvents(1, total)
	checkExactlyOnceInOrder(t, readStream(t, newJS(t, nc), testStream), want)
	a.check(t, want)
	if got := s.Stats().Resumes; got < 2 {
		t.Errorf("Stats().Resumes = %d, want at least 2 (start and the kill)", got)
	}
	if err := s.Halted(); err != nil {
		t.Errorf("Halted() = %v after recovering", err)
	}
}

// TestSinkSurvivesNATSFreeze stops nats-server (SIGSTOP) for longer than the
// AckTimeout under load, then continues it, several times. The PubAcks that
// come late belong to a broken chain; the sink resumes from the stream and
// stores every event exactly once, in order. Late PubAcks race with the
// resume's read of the stream, hence several freezes.
func TestSinkSurvivesNATSFreeze(t *testing.T) {
	n := testenv.StartNATS(t)
	nc := connect(t, n.URL())
	a := newAcker()
	s := startSink(t, nc, sink.Config{AckTimeout: time.Second, Window: 2048}, a)

	p := startPublisher(t, s)
	var reasons []string
	for range 6 {
		waitFlowing(t, s, 2000)
		if err := n.Freeze(); err != nil {
			t.Fatal(err)
		}
		testenv.WaitFor(t, 10*time.Second, "the sink to see the freeze", func() (bool, error) {
			ok, why := s.Healthy()
			if !ok {
				reasons = append(reasons, why)
			}
			return !ok, nil
		})
		if err := n.Thaw(); err != nil {
			t.Fatal(err)
		}
	}
	waitFlowing(t, s, 1000)
	total := p.finish(t, s, 30*time.Second)

	want := makeEvents(1, total)
	checkExactlyOnceInOrder(t, readStream(t, newJS(t, nc), testStream), want)
	a.check(t, want)
	// The chain may also break on a "wrong last sequence" caused by a late
	// PubAck just before a freeze; at least one freeze must have been seen
	// by the AckTimeout.
	if !slices.ContainsFunc(reasons, func(r string) bool { return strings.Contains(r, "no PubAck") }) {
		t.Errorf("Healthy() reasons while frozen = %q, want a PubAck timeout among them", reasons)
	}
	if got := s.Stats().Resumes; got < 7 {
		t.Errorf("Stats().Resumes = %d, want at least 7 (start and six freezes)", got)
	}
	if err := s.Halted(); err != nil {
		t.Errorf("Halted() = %v after recovering", err)
	}
}
